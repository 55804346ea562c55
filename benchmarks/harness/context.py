"""The shared state of one benchmark invocation: settings, results, data, run folders, console."""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import subprocess
import traceback
from pathlib import Path
from typing import Any, Callable

from sagegan import MALLOC_ENV

from . import cache
from .cases import Settings
from .datasets import REPO, Dataset, Group, data_root, load_bam, load_emps, load_simulated, make_group, real_data_dir
from .results import SCHEMA_VERSION, ResultStore

MALLOC_VARS = tuple(MALLOC_ENV)


def code_version() -> str | None:
    """The checkout's git commit, with ``+dirty`` when tracked files differ from it."""
    from sagegan.runs import git_commit

    head = git_commit()
    if not head:
        return None
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=REPO).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return head + ("+dirty" if dirty else "")


def machine_info(device: str) -> tuple[str, dict]:
    """(the machine in words, its details) for the rows."""
    import torch

    from sagegan.runs import resolve_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = resolve_device(device)
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else None
    info = {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": str(dev), "gpu": gpu,
            "malloc_env": {v: os.environ.get(v) for v in MALLOC_VARS}}
    text = f"{cpu}, {os.cpu_count()} cpus, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return text + (f", {gpu}" if gpu else ", cpu"), info


class Context:
    """Settings, the results store, data sets and run folders of one invocation."""

    def __init__(self, args: argparse.Namespace):
        from rich.console import Console

        self.args = args
        self.settings = Settings.from_args(args)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = ResultStore(self.out / "results.json")
        self.console = Console(highlight=False)
        if not self.console.is_terminal:
            self.console = Console(highlight=False, width=150)
        self.root = data_root(args.data_root)
        self.progress = (not args.no_progress) and self.console.is_terminal
        self.machine, self.environment = machine_info(self.settings.device)
        self.code_version = code_version()
        self.reuse_only = False  # True: a step that is not finished yet is an error, not trained
        self._data: dict[str, Dataset | None] = {}
        self.failures: list[str] = []
        self.touched: list[dict] = []

    # -- data
    def dataset(self, name: str) -> Dataset | None:
        """``emps`` or ``bam_tio2``; without the real data: ``simulated`` in --quick, else None."""
        if name not in self._data:
            self._data[name] = self._load(name)
        return self._data[name]

    def use_dataset(self, name: str, ds: Dataset) -> None:
        """Use ``ds`` for ``name`` (the very same split and images as another context's)."""
        self._data[name] = ds

    def _load(self, name: str) -> Dataset | None:
        s = self.settings
        if not self.args.simulated and (real_data_dir(self.root, name) / "images").is_dir():
            self.console.log(f"{name}: {self.root.resolve()}")
            load = load_emps if name == "emps" else load_bam
            return load(self.root, s.max_train, s.max_test)
        hint = f"no data under {self.root} (give --data-root or SAGEGAN_DATA_ROOT)"
        if s.quick or self.args.simulated:
            if not self.args.simulated:
                self.console.log(f"[yellow]{name}: {hint}; --quick runs on simulated data instead")
            return load_simulated(self.out, s.quick, s.max_train, s.max_test,
                                  nm_per_px=2.0 if name == "bam_tio2" else None)
        self.console.log(f"[yellow]skipping {name}: {hint}")
        return None

    def group(self, ds: Dataset, k: Any, seed: int, budget_minutes: float) -> Group:
        return make_group(ds, k, seed, budget_minutes, self.out / "runs")

    # -- run folders
    def build(self, g: Group, name: str, spec: dict, make: Callable[[Path], dict]) -> cache.Built:
        """The finished step ``name`` of group ``g`` with this spec (see :mod:`.cache`)."""
        spec = {"group": g.identity(), **spec}
        if self.reuse_only:
            found = cache.find(g.dir, name, spec)
            if found is None:
                raise SystemExit(f"{g.dir}: no finished {name} run with these settings")
            return found
        return cache.build(g.dir, name, spec, make, self.code_version)

    # -- rows
    def base_row(self, kind: str, benchmark: str, dataset: str, method: str, k: Any, seed: int,
                 subset: str) -> dict:
        return {"schema": SCHEMA_VERSION, "kind": kind, "benchmark": benchmark, "dataset": dataset,
                "method": method, "k": k, "seed": seed, "subset": subset, "dice": None, "f1_50": None, "pq": None,
                "cpu_seconds": None, "train_seconds": None, "n_test_images": None,
                "code_version": self.code_version,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": self.machine, "environment": self.environment, "quick": self.settings.quick}

    def add(self, row: dict) -> None:
        row = self.store.add(row)
        self.touched.append(row)
        f1 = row.get("f1_50")
        extra = f" F1@0.5 {f1:.3f}" if isinstance(f1, float) and math.isfinite(f1) else ""
        self.console.log(f"[green]row[/green] {row['benchmark']} / {row['dataset']} / {row['method']} "
                         f"k={row['k']} seed={row['seed']} {row['subset']}{extra}")

    def fail(self, what: str, exc: BaseException) -> None:
        """Record a failure and keep going: the other rows can still be computed."""
        self.failures.append(f"{what}: {exc!r}")
        self.console.print_exception(max_frames=8)
        with (self.out / "errors.log").open("a") as f:
            f.write(f"{_dt.datetime.now().isoformat()} {self.failures[-1]}\n{traceback.format_exc()}\n")
