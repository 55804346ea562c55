#!/usr/bin/env bash
# Behaviour fingerprint of the pipeline through the public CLI only, so that two checkouts (before
# and after a refactor) can be compared: fixed seeds, fixed step counts, fixed threads, no
# wall-clock budgets. Prints one JSON object: the training logs' losses, hashes of the weights,
# of the segment labels and of the synthetic pairs.
#   bash benchmarks/studies/behaviour_check.sh OUTDIR [SAGEGAN]  > fingerprint.json
# DATA=folder reuses a data folder instead of simulating one (to compare training alone).
set -euo pipefail
OUT=$1
SAGEGAN=${2:-sagegan}
PY=$(dirname "$(command -v "$SAGEGAN")")/python
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 PYTHONHASHSEED=0
rm -rf "$OUT" && mkdir -p "$OUT"
{
if [ -n "${DATA:-}" ]; then cp -r "$DATA" "$OUT/data"
else "$SAGEGAN" simulate --out "$OUT/data" --n 6 --size 192 --layout mixed --seed 3; fi
"$SAGEGAN" train-seg --data "$OUT/data" --out "$OUT/seg" --epochs 15 --val-every 10 --seed 0 \
    --patch-size 64 --batch-size 4 --device cpu
"$SAGEGAN" train-gan --data "$OUT/data" --seg "$OUT/seg" --out "$OUT/gan" --steps 12 --val-every 6 \
    --warmup-steps 4 --ramp-steps 4 --patch-size 64 --seed 0 --device cpu
"$SAGEGAN" segment "$OUT/data/images" --model "$OUT/seg" --out "$OUT/pred"
"$SAGEGAN" segment "$OUT/data/images" --model "$OUT/gan" --out "$OUT/pred_gan" --scale 1.3 --tta
"$SAGEGAN" synthesize --model "$OUT/gan" --n 4 --out "$OUT/syn" --seed 0 --size 64 --layouts mixed
} > "$OUT/log.txt" 2>&1
"$PY" - "$OUT" <<'PYEOF'
import hashlib, json, sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
def digest(paths):
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode()); h.update(p.read_bytes())
    return h.hexdigest()[:16]
def losses(run):
    log = pd.read_csv(run / "train_log.csv")
    return log.drop(columns=[c for c in log if c == "elapsed_s"]).round(5).to_dict(orient="list")
print(json.dumps({
    "seg_log": losses(out / "seg"), "gan_log": losses(out / "gan"),
    "seg_weights": digest([out / "seg" / "segmenter.safetensors"]),
    "seg_last": digest([out / "seg" / "last.safetensors"]),
    "gan_weights": digest((out / "gan").glob("*.safetensors")),
    "seg_postprocess": json.loads((out / "seg" / "config.json").read_text())["postprocess"],
    "labels": digest((out / "pred").glob("*_labels.tif")),
    "labels_gan": digest((out / "pred_gan").glob("*_labels.tif")),
    "particles_csv": digest([out / "pred" / "particles.csv"]),
    "synthetic": digest(list((out / "syn").rglob("*.png")) + list((out / "syn").rglob("*.tif"))),
}, indent=1))
PYEOF
