#!/usr/bin/env bash
# Fine-tuning the bundled general model from few labels, against training from scratch (issue 18).
#
#   bash benchmarks/studies/finetune_few_labels.sh            # STEPS=600 SEEDS="0 1" KS="4 8" ALL=1 by default
#
# BAM TiO2 (CC BY-NC-ND: measured here, never in shipped weights), fixed split: train = the first
# 30 sorted ids, test = the last 10. k counts every labelled image used, validation included:
# k = 4 is 3 training + 1 validation image, k = 8 is 6 + 2, "all" is 27 + 3. Every run trains a
# fixed number of steps (--max-steps, so the machine's load does not change the result); the
# early stop is disabled by the large patience of a short run. Each model then segments the 10
# test images (data bar cropped) and benchmarks/studies/general_model.py scores them.
set -euo pipefail
source "$(dirname "$0")/bam_common.sh"   # BAM, SAGEGAN, PY, bam_splits, k_split, bam_score
WORK=${WORK:-work/finetune}
STEPS=${STEPS:-600}
SEEDS=${SEEDS:-"0 1"}
KS=${KS-"4 8"}      # KS="" runs no k (only ALL)
ALL=${ALL:-1}   # 0: skip the from-scratch run on all 30 images

run() {  # run NAME K SEED INIT...
  local name=$1 k=$2 seed=$3; shift 3
  k_split "$WORK" "$name" "$k" "$seed"   # the first validate, the rest train
  [ -f "$WORK/$name/config.json" ] || "$SAGEGAN" train-seg --images "$BAM/images" --masks "$BAM/masks" \
      --crop-bottom 56 --nm-per-px 7.344 --split "$WORK/$name.train" --val-split "$WORK/$name.val" \
      --out "$WORK/$name" --max-steps "$STEPS" --val-every 100 --seed "$seed" "$@"
  bam_score "$WORK/$name" "$WORK/test.txt" "$WORK/$name-test" "$WORK/$name.json"
  "$PY" -c "import json; r=json.load(open('$WORK/$name.json'))['all']; print('$name', r['f1_50'], r['dice'], r['pq'])"
}

for seed in $SEEDS; do
  for k in $KS; do
    run "init-k$k-s$seed" "$k" "$seed" --init general
    run "scratch-k$k-s$seed" "$k" "$seed"
  done
  if [ "$ALL" = 1 ]; then run "scratch-all-s$seed" 30 "$seed"; fi
done
