#!/usr/bin/env bash
# The oracle profile of the edge (issue 6): for an oxidized rubredoxin dataset of N images
# simulated with seed SEED (as edge_calibration.sh's replicate SEED - 9000 is), and for each
# NOISE seed given (new photon noise of the same configuration; none: the dataset's own), the
# log-likelihood of `edge_ev` (shifted_reference) with every other latent pinned at the truth
# (truth_profile.py), scanned over 7118.5-7121.5 eV. Prints per dataset the peak's offset
# from the exact 7120.0 eV, the sd from the profile's curvature, and their ratio z. A fit of
# the same data that reports an edge far from this peak was moved by its inference (wrong
# modes, the guide), not by the data; over noise redraws the peaks scatter as the curvature's
# sd says if the likelihood is regular.
#
#   cargo build --release && examples/recovery/truth_profile.sh WORK SEED N [NOISE ...]
#
# Environment: SPREADC (default target/release/spreadc), MODEL (models/rubredoxin_fe.spread),
# THREADS (1). Each dataset costs one SVI step, two summaries and 31 passes over its images.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${SPREADC:-target/release/spreadc}
M=${MODEL:-models/rubredoxin_fe.spread}
W=$1; SEED=$2; N=$3; shift 3
NOISES=("$@")
[ ${#NOISES[@]} = 0 ] && NOISES=("$SEED")
mkdir -p "$W"
echo '{"frac_oxidized": 1.0}' > "$W/truth_ox.json"
run=(run "$M" --particles 1 --seed 0 --set fdp_model=shifted_reference --threads "${THREADS:-1}" --draws 10)
for ns in "${NOISES[@]}"; do
  d="$W/data_s${SEED}_n${N}_ns$ns"
  f="$W/profile_s${SEED}_n${N}_ns$ns"
  [ -f "$d/truth.json" ] || "$S" simulate "$M" --out "$d" --images "$N" --seed "$SEED" \
    --noise-seed "$ns" --truth "$W/truth_ox.json" > "$d.log" 2>&1
  if ! grep -qs "^wrote" "$f.log"; then
    rm -rf "$f"
    "$S" "${run[@]}" --data "$d" --out "$f" --steps 1 > "$f.init.log" 2>&1
    python3 examples/recovery/truth_profile.py pin "$f/checkpoint.msgpack" "$f/checkpoint.msgpack" "$d/truth.json"
    "$S" "${run[@]}" --data "$d" --out "$f" --steps 1 --resume \
      --scan edge_ev=7118.5:7121.5:0.1 --scan-draws 1 > "$f.log" 2>&1
  fi
  python3 examples/recovery/truth_profile.py peak "$f"
done
