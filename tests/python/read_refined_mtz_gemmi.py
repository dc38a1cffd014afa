"""gemmi's view of refined_sf.mtz and of our reciprocal ASU (optional tests in tests/run_refined_mtz.rs).

  read_refined_mtz_gemmi.py mtz FILE.mtz
      one JSON object: space group, cell, row count, title, columns with types, datasets with
      wavelengths, how many rows gemmi's CCP4 reciprocal ASU accepts, duplicated indices, and
      every row keyed by "h,k,l".
  read_refined_mtz_gemmi.py asu CASES.json
      CASES.json: {"HM symbol": [[h, k, l, ah, ak, al, plus], ...]} (our reduction of hkl to the
      ASU index ah ak al, plus = 1 when hkl is equivalent to it, 0 when to its Friedel mate);
      prints {"checked": n, "mismatches": [first few disagreements with gemmi's to_asu]}.
"""
import json
import sys

import gemmi


def read_mtz(path):
    mtz = gemmi.read_mtz_file(path)
    asu = gemmi.ReciprocalAsu(mtz.spacegroup)
    labels = [c.label for c in mtz.columns]
    arr = mtz.array
    rows = {}
    for r in arr:
        hkl = tuple(int(x) for x in r[:3])
        rows[",".join(map(str, hkl))] = {
            lab: (None if v != v else float(v)) for lab, v in zip(labels[3:], r[3:])
        }
    in_asu = sum(1 for r in arr if asu.is_in([int(x) for x in r[:3]]))
    return {
        "spacegroup": mtz.spacegroup.hm,
        "spacegroup_number": mtz.spacegroup.number,
        "cell": [mtz.cell.a, mtz.cell.b, mtz.cell.c, mtz.cell.alpha, mtz.cell.beta, mtz.cell.gamma],
        "nreflections": mtz.nreflections,
        "title": mtz.title,
        "columns": [[c.label, c.type] for c in mtz.columns],
        "datasets": [[d.id, d.project_name, d.crystal_name, d.dataset_name, d.wavelength]
                     for d in mtz.datasets],
        "nsymop": len(mtz.spacegroup.operations()),
        "in_asu": in_asu,
        "duplicates": len(arr) - len(rows),
        "rows": rows,
    }


def check_asu(path):
    with open(path) as f:
        cases = json.load(f)
    checked, mismatches = 0, []
    for hm, rows in cases.items():
        sg = gemmi.SpaceGroup(hm)
        asu = gemmi.ReciprocalAsu(sg)
        ops = sg.operations()
        for h, k, l, ah, ak, al, plus in rows:
            (gh, gk, gl), isym = asu.to_asu([h, k, l], ops)
            checked += 1
            # gemmi: odd isym = an operator maps hkl onto the ASU index, even = onto its mate.
            # A centric index is reached both ways; gemmi may report either.
            centric = sg.operations().is_reflection_centric([h, k, l])
            same = [gh, gk, gl] == [ah, ak, al] and (centric or (isym % 2 == 1) == bool(plus))
            if not same and len(mismatches) < 10:
                mismatches.append([hm, [h, k, l], [ah, ak, al, plus], [gh, gk, gl, isym]])
    return {"checked": checked, "mismatches": mismatches}


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    print(json.dumps(read_mtz(path) if mode == "mtz" else check_asu(path)))
