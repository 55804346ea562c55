#!/usr/bin/env bash
# Follow-ups of adapt_bam.sh (issue 19), same machine and settings:
#  1. inductive: the default method adapts on the 30 train-id images only (no labels), tested on the 10 test ids;
#  2. labelled copy-paste: `train-seg --init general --augment copy-paste` on the k = 8 BAM splits of
#     finetune_few_labels.sh (same ids, seeds and steps), against plain fine-tuning there;
#  3. a diagnostic: sage-gan with as many segmenter steps as pseudo-label made in its budget
#     (SG_STEPS, and as many GAN steps before them), i.e. synthetic pairs for free.
set -euo pipefail
BAM=${BAM:-../shared/data/bam_tio2_sem}
WORK=${WORK:-work/adapt}
FT=${FT:-work/finetune}
MINUTES=${MINUTES:-6}
STEPS=${STEPS:-300}
SEEDS=${SEEDS:-"0 1"}
SAGEGAN=${SAGEGAN:-.venv/bin/sagegan}
PY=${PY:-.venv/bin/python}
SG_STEPS=${SG_STEPS:-275}
PART=${PART:-all}   # inductive | copy-paste | sage-gan-steps | all
mkdir -p "$WORK"
ls "$BAM/images" | sed 's/\.[^.]*$//' | sort > "$WORK/all.txt"   # the splits of adapt_bam.sh
head -30 "$WORK/all.txt" > "$WORK/train.txt"
tail -10 "$WORK/all.txt" > "$WORK/test.txt"

scored() {  # scored NAME MODEL PART: segment the ids of PART.txt and score them
  local name=$1 model=$2 part=$3
  "$SAGEGAN" segment "$BAM/images" --split "$WORK/$part.txt" --model "$model" --out "$WORK/$name-$part" \
      --crop-bottom 56 --nm-per-px 7.344 --min-score 0 > /dev/null
  "$PY" benchmarks/studies/general_model.py --pred "$WORK/$name-$part" --truth "$BAM/masks" \
      --split "$WORK/$part.txt" --crop-bottom 56 --nm-per-px 7.344 --json "$WORK/$name.$part.json" > /dev/null
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
  mkdir -p "$FT"
  ls "$BAM/images" | sed 's/\.[^.]*$//' | sort | head -30 > "$FT/pool.txt"
  for seed in $SEEDS; do
    # the k = 8 split of finetune_few_labels.sh for this seed: 2 validation + 6 training ids
    "$PY" -c "import random; ids=open('$FT/pool.txt').read().split(); random.Random($seed).shuffle(ids); print('\n'.join(ids[:8]))" > "$FT/init-k8-s$seed.ids"
    head -n 2 "$FT/init-k8-s$seed.ids" > "$FT/init-k8-s$seed.val"
    tail -n +3 "$FT/init-k8-s$seed.ids" > "$FT/init-k8-s$seed.train"
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
