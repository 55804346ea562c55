# Shared by the BAM TiO2 studies (finetune_few_labels.sh, adapt_bam.sh, adapt_bam_more.sh):
# the splits and the scoring, so that every study compares the same ids the same way. Source it.
# BAM is CC BY-NC-ND: measured here, never in shipped weights.
BAM=${BAM:-../shared/data/bam_tio2_sem}
SAGEGAN=${SAGEGAN:-.venv/bin/sagegan}
PY=${PY:-.venv/bin/python}

bam_splits() {  # bam_splits DIR: DIR/all.txt, train.txt (the first 30 sorted ids), test.txt (the last 10)
  mkdir -p "$1"
  ls "$BAM/images" | sed 's/\.[^.]*$//' | sort > "$1/all.txt"
  head -30 "$1/all.txt" > "$1/train.txt"
  tail -10 "$1/all.txt" > "$1/test.txt"
}

k_split() {  # k_split DIR NAME K SEED: a seeded choice of K train ids, DIR/NAME.{ids,val,train}
  local dir=$1 name=$2 k=$3 seed=$4
  local n_val=$(( k >= 30 ? 3 : (k + 3) / 4 ))   # k = 4: 1 validation image, k = 8: 2, all 30: 3
  bam_splits "$dir"
  "$PY" -c "import random; ids=open('$dir/train.txt').read().split(); random.Random($seed).shuffle(ids); print('\n'.join(ids[:$k]))" > "$dir/$name.ids"
  head -n "$n_val" "$dir/$name.ids" > "$dir/$name.val"
  tail -n +"$((n_val + 1))" "$dir/$name.ids" > "$dir/$name.train"
}

bam_score() {  # bam_score MODEL SPLIT OUT JSON: segment the ids of SPLIT into OUT, every particle scored, to JSON
  local model=$1 split=$2 out=$3 json=$4
  "$SAGEGAN" segment "$BAM/images" --split "$split" --model "$model" --out "$out" \
      --crop-bottom 56 --nm-per-px 7.344 --min-score 0 > /dev/null
  "$PY" benchmarks/studies/general_model.py --pred "$out" --truth "$BAM/masks" \
      --split "$split" --crop-bottom 56 --nm-per-px 7.344 --json "$json" > /dev/null
}
