#!/usr/bin/env bash
# Label-free adaptation of the bundled general model to BAM TiO2 SEM (issue 19), at equal CPU.
#
#   bash benchmarks/studies/adapt_bam.sh          # MINUTES=6 SEEDS="0 1" METHODS="pseudo-label copy-paste sage-gan"
#
# Transductive, as a user works: every method adapts on all 40 BAM images (no labels), data bar
# cropped, with the same wall-clock budget (--max-minutes, pseudo-labelling included). Each model
# then segments the 10 test ids (the last 10 sorted) and 10 validation ids (every third of the
# first 30), scored by benchmarks/studies/general_model.py. The ceiling fine-tunes the general
# model with labels (--init general) on the 30 train ids (27 train + 3 validation), same budget.
# BAM is CC BY-NC-ND: measured here, never in shipped weights. Run on a quiet machine: the
# budget is wall clock.
set -euo pipefail
source "$(dirname "$0")/bam_common.sh"   # BAM, SAGEGAN, PY, bam_splits, k_split, bam_score
WORK=${WORK:-work/adapt}
MINUTES=${MINUTES:-6}
SEEDS=${SEEDS:-"0 1"}
METHODS=${METHODS:-"pseudo-label copy-paste sage-gan"}
CEILING=${CEILING:-1}
bam_splits "$WORK"
awk 'NR % 3 == 1' "$WORK/train.txt" > "$WORK/val.txt"
head -n 3 "$WORK/train.txt" > "$WORK/ceiling.val"
tail -n +4 "$WORK/train.txt" > "$WORK/ceiling.train"

score() {  # score NAME MODEL
  local name=$1 model=$2
  for part in test val; do
    [ -f "$WORK/$name.$part.json" ] && continue
    bam_score "$model" "$WORK/$part.txt" "$WORK/$name-$part" "$WORK/$name.$part.json"
  done
  "$PY" - "$WORK" "$name" <<'PY'
import json, sys
work, name = sys.argv[1:]
row = [name]
for part in ("val", "test"):
    r = json.load(open(f"{work}/{name}.{part}.json"))["all"]
    row += [f"{part} F1 {r['f1_50']:.3f} Dice {r['dice']:.3f} PQ {r['pq']:.3f}"]
print(" | ".join(row))
PY
}

score none general
for seed in $SEEDS; do
  for method in $METHODS; do
    name="$method-s$seed"
    [ -f "$WORK/$name/config.json" ] && grep -q train_seconds "$WORK/$name/config.json" || \
      /usr/bin/time -f "$name %e s %M kB" "$SAGEGAN" adapt --images "$BAM/images" --crop-bottom 56 \
        --out "$WORK/$name" --method "$method" --max-minutes "$MINUTES" --seed "$seed" 2>> "$WORK/times.txt" > /dev/null
    score "$name" "$WORK/$name"
  done
  if [ "$CEILING" = 1 ]; then
    name="ceiling-s$seed"
    [ -f "$WORK/$name/config.json" ] || "$SAGEGAN" train-seg --images "$BAM/images" --masks "$BAM/masks" \
        --crop-bottom 56 --nm-per-px 7.344 --split "$WORK/ceiling.train" --val-split "$WORK/ceiling.val" \
        --init general --out "$WORK/$name" --max-minutes "$MINUTES" --val-every 100 --seed "$seed" > /dev/null
    score "$name" "$WORK/$name"
  fi
done
