#!/usr/bin/env bash
# Kill test (issue 17): train-seg with a fixed seed, steps and threads; SIGKILL at a random step; --resume;
# the final weights must equal an uninterrupted run's bit for bit.
#   bash benchmarks/studies/kill_test.sh   (with sagegan on PATH; W=folder to choose where)
set -euo pipefail
W=${W:-/tmp/sagegan-killtest}; rm -rf "$W"; mkdir -p "$W"
export OMP_NUM_THREADS=2
sagegan simulate --out "$W/data" --n 6 --size 128 --seed 0 >/dev/null
ARGS=(--data "$W/data" --scale native --patch-size 64 --batch-size 4 --epochs 20 --val-every 5 --seed 0 --device cpu)
sagegan train-seg "${ARGS[@]}" --out "$W/whole" 2>/dev/null
sagegan train-seg "${ARGS[@]}" --out "$W/killed" 2>/dev/null & PID=$!
STEP() { python -c "import json;print(json.load(open('$W/killed/last_state.json'))['step'])" 2>/dev/null || echo 0; }
TARGET=$((5 * (1 + RANDOM % 6)))                         # a random validation: 5, 10, ... 30 of 40 steps
until [ "$(STEP)" -ge "$TARGET" ]; do sleep 0.05; done
sleep "0.$((RANDOM % 10))"                                # then a random moment between validations
kill -KILL "$PID" && wait "$PID" || true
echo "killed by SIGKILL; its saved state is at step $(STEP) of 40"
sagegan train-seg "${ARGS[@]}" --out "$W/killed" --resume 2>&1 | tail -n 2
python - "$W" <<'PY'
import sys, torch
from pathlib import Path
from safetensors.torch import load_file
w = Path(sys.argv[1])
for name in ("segmenter.safetensors", "last.safetensors"):
    a, b = load_file(w / "whole" / name), load_file(w / "killed" / name)
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(f"{name}: {'identical' if same else 'DIFFERENT'} ({len(a)} tensors)")
PY
