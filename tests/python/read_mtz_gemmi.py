"""Reads an MTZ with gemmi and prints what tests/formats_mtz.rs compares (optional test)."""
import json, sys
import gemmi

mtz = gemmi.read_mtz_file(sys.argv[1])
arr = mtz.array
print(json.dumps({
    "spacegroup": mtz.spacegroup.hm if mtz.spacegroup else None,
    "cell": [mtz.cell.a, mtz.cell.b, mtz.cell.c, mtz.cell.alpha, mtz.cell.beta, mtz.cell.gamma],
    "nreflections": mtz.nreflections,
    "columns": [[c.label, c.type, c.dataset_id] for c in mtz.columns],
    "datasets": [[d.id, d.project_name, d.crystal_name, d.dataset_name, d.wavelength] for d in mtz.datasets],
    "resolution_high": mtz.resolution_high(),
    "first_row": [None if v != v else float(v) for v in arr[0]],
    "last_row": [None if v != v else float(v) for v in arr[-1]],
    "nsymop": len(mtz.symops) if hasattr(mtz, "symops") else None,
}))
