"""Summary of misspecification.sh's fits.tsv (or several, concatenated in order).

Per (data, form, flow): the edge error against the reference (7120.16 eV, the least-squares
sigmoid edge of the simulated f'', for `edge`; 7120.0 eV for `shifted_reference`), its mean and
rms, and the 90% coverage; P(oxidized) for the mixture. Where a dataset (r, data, form) also
has an `oracle` fit (the model told the simulated effect), the paired errors: each fit's edge
minus the oracle's on the same data, which takes the dataset's own noise out, and the cut of
each flow against the flow off (rms of off - oracle over rms of flow - oracle).

    python3 examples/recovery/misspecification_summary.py [--steps N] FITS.tsv [MORE.tsv ...]

A later row of the same (r, data, form, flow) replaces an earlier one. With --steps N, rows of
a file with a `steps` column count only if it is N.
"""
import math
import sys
from collections import defaultdict

REF = {"edge": 7120.16, "shifted_reference": 7120.0}


def rows(paths, steps=None):
    fits = {}
    for path in paths:
        lines = [l.rstrip("\n") for l in open(path) if l.strip()]
        head = lines[0].split("\t")
        for line in lines[1:]:
            f = dict(zip(head, line.split("\t")))
            if steps is not None and f.get("steps", steps) != steps:
                continue
            fits[(f["r"], f["data"], f["form"], f["flow"])] = f
    return fits


def rms(xs):
    return math.sqrt(sum(x * x for x in xs) / len(xs))


def main(args):
    steps = None
    if args[:1] == ["--steps"]:
        steps, args = args[1], args[2:]
    fits = rows(args, steps)
    groups = defaultdict(list)
    for (r, data, form, flow), f in sorted(fits.items()):
        groups[(data, form, flow)].append(f)
    for (data, form, flow), fs in sorted(groups.items()):
        n = len(fs)
        line = f"data={data} form={form} flow={flow} n={n}"
        if form in REF:
            err = [float(f["edge_mean"]) - REF[form] for f in fs]
            cover = sum(float(f["q05"]) <= REF[form] <= float(f["q95"]) for f in fs)
            line += (f" edge error mean {sum(err) / n:+.3f} eV, rms {rms(err):.3f} eV, "
                     f"90% covers {cover}/{n}")
        else:
            p = [float(f["p_ox"]) for f in fs]
            line += f" P(oxidized) mean {sum(p) / n:.3f}, min {min(p):.3f}"
        print(line)
    paired = defaultdict(list)
    for (r, data, form, flow), f in sorted(fits.items()):
        oracle = fits.get((r, data, form, "oracle"))
        if flow == "oracle" or oracle is None or form not in REF:
            continue
        d = float(f["edge_mean"]) - float(oracle["edge_mean"])
        paired[(data, form, flow)].append((r, d))
    for (data, form, flow), ds in sorted(paired.items()):
        per = ", ".join(f"r{r} {d:+.2f}" for r, d in ds)
        line = (f"paired data={data} form={form} flow={flow} n={len(ds)}: edge - oracle "
                f"mean {sum(d for _, d in ds) / len(ds):+.3f} eV, rms {rms([d for _, d in ds]):.3f} eV ({per})")
        off = dict(paired.get((data, form, "false"), []))
        both = [(off[r], d) for r, d in ds if r in off]
        if flow != "false" and both:
            cut = rms([o for o, _ in both]) / max(rms([d for _, d in both]), 1e-12)
            line += f"; over the {len(both)} with the flow off too: {cut:.1f}x"
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
