#!/usr/bin/env bash
# Follow-ups of adapt_bam.sh (issue 19), same machine and settings:
#  1. inductive: the default method adapts on the 30 train-id images only (no labels), tested on the 10 test ids;
#  2. labelled copy-paste: `train-seg --init general --augment copy-paste` on the k = 8 BAM splits of
#     finetune_few_labels.sh (same ids, seeds and steps), against plain fine-tuning there;
#  3. a diagnostic: sage-gan with as many segmenter steps as pseudo-label made in its budget
#     (SG_STEPS, and as many GAN steps before them), i.e. synthetic pairs for free;
#  4. clustered pasting: adapt --method copy-paste --paste-cluster CLUSTER, transductive as in
#     adapt_bam.sh (same budget and seeds), scored on the validation ids (to choose) and the test ids.
set -euo pipefail
source "$(dirname "$0")/bam_common.sh"   # BAM, SAGEGAN, PY, bam_splits, k_split, bam_score
WORK=${WORK:-work/adapt}
FT=${FT:-work/finetune}
MINUTES=${MINUTES:-6}
STEPS=${STEPS:-300}
SEEDS=${SEEDS:-"0 1"}
SG_STEPS=${SG_STEPS:-275}
CLUSTER=${CLUSTER:-0.5}
PART=${PART:-all}   # inductive | copy-paste | sage-gan-steps | cluster-paste | all
bam_splits "$WORK"   # the splits of adapt_bam.sh
awk 'NR % 3 == 1' "$WORK/train.txt" > "$WORK/val.txt"

scored() {  # scored NAME MODEL PART: segment the ids of PART.txt and score them
  local name=$1 model=$2 part=$3
  bam_score "$model" "$WORK/$part.txt" "$WORK/$name-$part" "$WORK/$name.$part.json"
  "$PY" -c "import json; r=json.load(open('$WORK/$name.$part.json'))['all']; print('$name $part F1 %.3f Dice %.3f PQ %.3f' % (r['f1_50'], r['dice'], r['pq']))"
}

if [ "$PART" = all ] || [ "$PART" = inductive ]; then
  name=inductive-pseudo-label-s0
  [ -f "$WORK/$name/config.json" ] && grep -q train_seconds "$WORK/$name/config.json" || \
    "$SAGEGAN" adapt --images "$BAM/images" --split "$WORK/train.txt" --crop-bottom 56 --out "$WORK/$name" \
      --method pseudo-label --max-minutes "$MINUTES" --seed 0 > /dev/null
  scored "$name" "$WORK/$name" test
fi
if [ "$PART" = all ] || [ "$PART" = copy-paste ]; then
  for seed in $SEEDS; do
    k_split "$FT" "init-k8-s$seed" 8 "$seed"   # the k = 8 split of finetune_few_labels.sh for this seed
    name=cp-init-k8-s$seed
    [ -f "$WORK/$name/config.json" ] || "$SAGEGAN" train-seg --images "$BAM/images" --masks "$BAM/masks" \
        --crop-bottom 56 --nm-per-px 7.344 --split "$FT/init-k8-s$seed.train" --val-split "$FT/init-k8-s$seed.val" \
        --out "$WORK/$name" --max-steps "$STEPS" --val-every 100 --seed "$seed" --init general --augment copy-paste > /dev/null
    scored "$name" "$WORK/$name" test
  done
fi
if [ "$PART" = all ] || [ "$PART" = sage-gan-steps ]; then
  name=sage-gan-steps$SG_STEPS-s0
  [ -f "$WORK/$name/config.json" ] && grep -q train_seconds "$WORK/$name/config.json" || \
    "$SAGEGAN" adapt --images "$BAM/images" --crop-bottom 56 --out "$WORK/$name" --method sage-gan \
      --steps "$SG_STEPS" --seed 0 > /dev/null
  scored "$name" "$WORK/$name" test
fi
if [ "$PART" = all ] || [ "$PART" = cluster-paste ]; then
  for seed in $SEEDS; do
    name=copy-paste-cluster$CLUSTER-s$seed
    [ -f "$WORK/$name/config.json" ] && grep -q train_seconds "$WORK/$name/config.json" || \
      "$SAGEGAN" adapt --images "$BAM/images" --crop-bottom 56 --out "$WORK/$name" --method copy-paste \
        --paste-cluster "$CLUSTER" --max-minutes "$MINUTES" --seed "$seed" > /dev/null
    scored "$name" "$WORK/$name" val
    scored "$name" "$WORK/$name" test
  done
fi
