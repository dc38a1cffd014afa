#!/usr/bin/env bash
# Model correction, first comparison (issue 6, part 3): data simulated with an effect the fitting
# model lacks (the SQUARE lattice transform: sinc² spot profiles with fringes) and, as a control,
# with the model's own GAUSS transform; each fitted with the default GAUSS model, the correction
# flow off and on, for the oxidation-state mixture and the sigmoid edge.
#
#   cargo build --release && examples/recovery/misspecification.sh [WORK_DIR]
#
# Prints one line per fit; each fit's output folder and log are in WORK_DIR (default
# target/recovery/misspecification). About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${SPREADC:-target/release/spreadc}
W=${1:-target/recovery/misspecification}
mkdir -p "$W"
echo '{"frac_oxidized": 1.0}' > "$W/truth_fixed.json"
for shape in square gauss; do
  [ -f "$W/data_$shape/truth.json" ] || "$S" simulate models/rubredoxin_fe.spread --out "$W/data_$shape" \
    --images 16 --seed 77 --truth "$W/truth_fixed.json" --set shape=$shape > "$W/sim_$shape.log"
  for fdp_model in ox_red_mixture edge; do
    for corr in false true; do
      name=${shape}_${fdp_model}_flow_$corr
      start=$(date +%s)
      "$S" run models/rubredoxin_fe.spread --data "$W/data_$shape" --out "$W/$name" --steps 300 \
        --particles 1 --seed 0 --set use_correction=$corr --set fdp_model=$fdp_model > "$W/$name.log" 2>&1
      wall=$(( $(date +%s) - start ))
      result=$(grep -E "^oxidation state|^edge_ev|final ELBO" "$W/$name.log" | tr -s ' ' | tr '\n' ';')
      echo "data=$shape model=$fdp_model flow=$corr wall=${wall}s $result"
    done
  done
done
