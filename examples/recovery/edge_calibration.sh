#!/usr/bin/env bash
# Calibration of the edge position (issue 6, part 2): R replicate datasets of N images of
# oxidized rubredoxin (simulation seeds 9000 + r), each fitted with `--set fdp_model=edge`
# (300 steps, fit seed r). Coverage of the posterior's 90% interval (summary.json q05..q95) and
# 50% interval (mean ± 0.674 sd: the summary has no q25/q75, and edge_ev's posterior is a
# normal in unconstrained space) of `edge_ev`, against the least-squares edge of the model's
# own edge form fitted to the simulated f'' (7120.16 eV, examples/recovery/README.md).
#
#   cargo build --release && examples/recovery/edge_calibration.sh [WORK_DIR] [R] [N]
#
# Prints one line per replicate and the coverage; outputs and logs in WORK_DIR
# (default target/recovery/edge_calibration).
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${SPREADC:-target/release/spreadc}
W=${1:-target/recovery/edge_calibration}
R=${2:-20}
N=${3:-4}
REF=7120.16
mkdir -p "$W"
echo '{"frac_oxidized": 1.0}' > "$W/truth_ox.json"
: > "$W/edges.tsv"
for r in $(seq 0 $((R - 1))); do
  d="$W/data_$r"
  [ -f "$d/truth.json" ] || "$S" simulate models/rubredoxin_fe.spread --out "$d" --images "$N" \
    --seed $((9000 + r)) --truth "$W/truth_ox.json" > "$W/sim_$r.log" 2>&1
  start=$(date +%s)
  "$S" run models/rubredoxin_fe.spread --data "$d" --out "$W/fit_$r" --steps 300 --particles 1 \
    --seed "$r" --set fdp_model=edge > "$W/fit_$r.log" 2>&1
  wall=$(( $(date +%s) - start ))
  python3 - "$W/fit_$r/summary.json" "$r" "$wall" >> "$W/edges.tsv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
e = next(q["elements"][0] for q in s["quantities"] if q["name"] == "edge_ev")
print(sys.argv[2], e["mean"], e["sd"], e["q05"], e["q95"], sys.argv[3], sep="\t")
PY
  tail -1 "$W/edges.tsv"
done
python3 - "$W/edges.tsv" "$REF" <<'PY'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
ref = float(sys.argv[2])
n = len(rows)
c90 = sum(float(r[3]) <= ref <= float(r[4]) for r in rows)
c50 = sum(abs(float(r[1]) - ref) <= 0.674 * float(r[2]) for r in rows)
err = [float(r[1]) - ref for r in rows]
mean_err = sum(err) / n
rms = (sum(e * e for e in err) / n) ** 0.5
sd = sum(float(r[2]) for r in rows) / n
print(f"replicates {n}: 90% coverage {c90}/{n} = {100*c90/n:.0f}%, 50% coverage {c50}/{n} = "
      f"{100*c50/n:.0f}%; edge error mean {mean_err:+.2f} eV, rms {rms:.2f} eV; mean posterior sd {sd:.2f} eV")
PY
