# The two commands of the README. Both create .venv when it is missing and install everything.
PYTHON ?= python3
VENV ?= .venv
# glibc malloc settings measured to speed up CPU training and inference (see BENCHMARKS.md).
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736

.PHONY: demo test install clean

demo: $(VENV)/.installed
	$(VENV)/bin/sagegan demo --out demo_output

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh

clean:
	rm -rf $(VENV) demo_output .pytest_cache
