#!/usr/bin/env bash
# Create .venv (if missing) and install sagegan with the CPU build of torch.
# torch goes in first and is then pinned by a constraints file, so that no other package can
# pull a multi-GB CUDA build. A suitable torch that is already installed is reused.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

torch_ok='import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 1) else 1)'

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "$torch_ok" 2>/dev/null; then
    echo "sagegan: reusing the torch of $PYTHON"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
if ! "$VENV/bin/python" -c "$torch_ok" 2>/dev/null; then
  echo "sagegan: installing $TORCH_SPEC (CPU build)"
  $PIP install -q "$TORCH_SPEC"
fi
# Hold whatever torch is now present for the rest of the install.
"$VENV/bin/python" -c 'import torch; print("torch==" + torch.__version__)' > "$VENV/constraints.txt"
$PIP install -q -c "$VENV/constraints.txt" -e ".[dev]"
touch "$VENV/.installed"
