"""Run folders keyed by what made them, so that a rerun finds finished runs again.

A step of a benchmark (a training run, a synthetic set, a tuned classical pipeline) is described
by a *spec*: its config, its data (dataset identity and stems) and the keys of the runs it builds
on. The spec's hash names the folder, ``<name>-<key>``; a finished folder holds
:data:`DONE` with the spec, the timings and the code version. The code version is recorded but is
not part of the key, so commits do not invalidate finished runs; a changed config or data gives a
new folder, and the old one stays as it was.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

DONE = "bench_run.json"
KEY_LENGTH = 10


def key_of(spec: Any) -> str:
    """The hash of a JSON-able spec (dataclasses, paths and numpy values allowed)."""
    from sagegan.io import json_ready

    text = json.dumps(json_ready(spec), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:KEY_LENGTH]


@dataclass
class Built:
    """A finished step: its folder, key and what its build reported (``wall_s``, ``cpu_s``...)."""

    run_dir: Path
    key: str
    info: dict


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    w0, c0 = time.monotonic(), time.process_time()
    result = fn()
    return result, time.monotonic() - w0, time.process_time() - c0


def find(parent: Path, name: str, spec: Any) -> Built | None:
    """The finished step ``name`` with this spec under ``parent``, or None."""
    from sagegan.io import read_json

    key = key_of(spec)
    run_dir = Path(parent) / f"{name}-{key}"
    if (run_dir / DONE).exists():
        return Built(run_dir, key, read_json(run_dir / DONE)["info"])
    return None


def build(parent: Path, name: str, spec: Any, make: Callable[[Path], dict], code_version: str | None) -> Built:
    """The finished step ``name`` with this spec: found, or made by ``make(run_dir) -> info``.

    A folder left by an interrupted build (no :data:`DONE`) is removed first.
    """
    from sagegan.io import write_json

    found = find(parent, name, spec)
    if found is not None:
        return found
    key = key_of(spec)
    run_dir = Path(parent) / f"{name}-{key}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    info = make(run_dir)
    write_json(run_dir / DONE, {"key": key, "spec": spec, "info": info, "code_version": code_version,
                                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return Built(run_dir, key, info)


def copy_run(src: Path, dst: Path) -> None:
    """Copy a run folder to resume it elsewhere: without its marker and its cached test results."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(DONE, "eval_*.json"))
