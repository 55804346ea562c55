#!/usr/bin/env bash
# Train the bundled general model (src/sagegan/models/general) with the project's own CLI.
#
#   bash scripts/train_general_model.sh                # one sitting; MINUTES (default 140) is the run's total budget
#   MINUTES=200 bash scripts/train_general_model.sh    # again: resumes the same run up to 200 minutes in all
#   .venv/bin/python scripts/export_general_model.py work/general/run   # when its scores are final
#
# Data: the EMPS train split (MIT) and the simulator only; never BAM TiO2 (CC BY-NC-ND) nor the EMPS
# test split. Validation: a fixed tenth of the EMPS train ids (real micrographs only). The run saves
# its state at every validation (every 150 steps, a few minutes on 2 cores), so a sitting that is
# stopped (Ctrl-C, the budget) loses at most that much and the next call continues it.
set -euo pipefail
EMPS=${EMPS:-../shared/data/emps}
WORK=${WORK:-work/general}
MINUTES=${MINUTES:-140}
PY=${PY:-.venv/bin/python}
SAGEGAN=${SAGEGAN:-.venv/bin/sagegan}

if [ ! -d "$WORK/data" ]; then
  "$PY" scripts/general_model_data.py --emps "$EMPS" --out "$WORK/data" --n-sim 200 --seed 0
fi
resume=()
if [ -f "$WORK/run/last.safetensors" ]; then resume=(--resume); fi
"$SAGEGAN" train-seg --data "$WORK/data" --split "$WORK/data/train.txt" --val-split "$WORK/data/val.txt" \
  --out "$WORK/run" --max-minutes "$MINUTES" --epochs 1000 --val-every 150 --val-max-images 37 \
  --scale-jitter 0.5 --invert-prob 0.25 --gradient 0.3 --seed 0 "${resume[@]}"
