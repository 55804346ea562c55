#!/usr/bin/env bash
# Label-free adaptation on the simulated pair (issue 19): a segmenter trained on simulated SEM
# (bright particles on a dark support) adapted to simulated TEM (dark particles on a bright,
# noisy support), where the truth is exact.
#
#   bash benchmarks/studies/adapt_sim.sh          # MINUTES=4 SEEDS="0 1" METHODS="pseudo-label copy-paste sage-gan"
#   WORK=work/adapt_sim_both SOURCE_ARGS="--invert-prob 0.5" bash benchmarks/studies/adapt_sim.sh
#                                                 # a source that has seen both polarities: the gap is
#                                                 # noise, support texture and shading alone
#   WORK=work/adapt_sim_hard SOURCE_ARGS="--invert-prob 0.5" TARGET_ARGS="--dose 15 --blur-px 2" \
#     bash benchmarks/studies/adapt_sim.sh        # a harder target: any `simulate` options
#
# Data (all simulated, mixed layouts, 384 px, seeded so every run sees the same images):
#   sem 40          labelled: train the source model (train-seg, the last 8 validate)
#   tem-target 40   what `adapt` sees, unlabelled; the ceiling trains on the same images with
#                   their masks (the last 8 validate)
#   tem-test 16     the test, never seen by any run
# Rows: the source model with no adaptation, each method x seed (`adapt --max-minutes MINUTES`),
# and the ceiling (train-seg --init SOURCE on the target images *with* their masks, same budget).
# Every model segments tem-test with --scale auto and every particle kept (--min-score 0),
# scored by benchmarks/studies/general_model.py. The issue counts the pair only when the source
# model's gap to the ceiling is at least 0.1 F1. Run on a quiet machine: budgets are wall clock.
set -euo pipefail
WORK=${WORK:-work/adapt_sim}
MINUTES=${MINUTES:-4}
SEEDS=${SEEDS-"0 1"}         # SEEDS="" stops after the source model
METHODS=${METHODS-"pseudo-label copy-paste sage-gan"}
SOURCE_ARGS=${SOURCE_ARGS:-}   # extra train-seg options for the source model
TARGET_ARGS=${TARGET_ARGS:-}   # extra simulate options for the target images (tem-target, tem-test)
SAGEGAN=${SAGEGAN:-.venv/bin/sagegan}
PY=${PY:-.venv/bin/python}
mkdir -p "$WORK"

simulate() {  # simulate NAME MODALITY N SEED [OPTIONS...]
  [ -d "$WORK/$1/images" ] || "$SAGEGAN" simulate --out "$WORK/$1" --modality "$2" --n "$3" --seed "$4" \
      --size 384 --layout mixed --nm-per-px 2 "${@:5}" > /dev/null
  ls "$WORK/$1/images" | sed 's/\.[^.]*$//' > "$WORK/$1.txt"
}
simulate sem sem 40 101
simulate tem-target tem 40 201 $TARGET_ARGS
simulate tem-test tem 16 203 $TARGET_ARGS
tail -n 8 "$WORK/sem.txt" > "$WORK/sem.val"
tail -n 8 "$WORK/tem-target.txt" > "$WORK/tem-target.val"

score() {  # score NAME MODEL: tem-test, every particle scored
  local name=$1 model=$2
  if [ ! -f "$WORK/$name.test.json" ]; then
    "$SAGEGAN" segment "$WORK/tem-test/images" --model "$model" --out "$WORK/$name-test" \
        --nm-per-px 2 --min-score 0 > /dev/null
    "$PY" benchmarks/studies/general_model.py --pred "$WORK/$name-test" --truth "$WORK/tem-test/masks" \
        --split "$WORK/tem-test.txt" --nm-per-px 2 --json "$WORK/$name.test.json" > /dev/null
  fi
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1]))['all']; print(sys.argv[2], 'test F1 %.3f Dice %.3f PQ %.3f' % (r['f1_50'], r['dice'], r['pq']))" \
      "$WORK/$name.test.json" "$name"
}

# The source model: simulated SEM only, seed 0; one polarity unless SOURCE_ARGS says otherwise.
[ -f "$WORK/source/config.json" ] && grep -q train_seconds "$WORK/source/config.json" || \
  "$SAGEGAN" train-seg --data "$WORK/sem" --val-split "$WORK/sem.val" --out "$WORK/source" --max-minutes "$MINUTES" --val-every 100 --seed 0 \
      --nm-per-px 2 $SOURCE_ARGS > /dev/null
score source "$WORK/source"

for seed in $SEEDS; do
  for method in $METHODS; do
    name="$method-s$seed"
    [ -f "$WORK/$name/config.json" ] && grep -q train_seconds "$WORK/$name/config.json" || \
      /usr/bin/time -f "$name %e s %M kB" "$SAGEGAN" adapt --images "$WORK/tem-target/images" --model "$WORK/source" \
          --crop-bottom 0 --out "$WORK/$name" --method "$method" --max-minutes "$MINUTES" --seed "$seed" \
          2>> "$WORK/times.txt" > /dev/null || { echo "$name: adapt failed (see $WORK/times.txt)"; continue; }
    score "$name" "$WORK/$name"
  done
  name="ceiling-s$seed"
  [ -f "$WORK/$name/config.json" ] && grep -q train_seconds "$WORK/$name/config.json" || \
    "$SAGEGAN" train-seg --data "$WORK/tem-target" --val-split "$WORK/tem-target.val" --init "$WORK/source" --out "$WORK/$name" --max-minutes "$MINUTES" \
        --val-every 100 --seed "$seed" --nm-per-px 2 > /dev/null
  score "$name" "$WORK/$name"
done
