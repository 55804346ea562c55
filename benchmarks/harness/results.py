"""Benchmark results: JSON rows with a schema, kept in ``OUT/results.json``.

A results file is a JSON list of rows. Every row is a flat object; :data:`SCHEMA` names the
fields each kind of row must have, with their types and meaning, and :func:`check_row` checks a
row against it before it is written (a row may carry further fields: configs, notes, extra
measurements). A row is identified by :data:`KEY`; the code version and the machine are recorded
in the row but are not part of the key, so a rerun after a commit keeps the finished rows.

Rows of the earlier format (no ``schema`` field, ``commit`` instead of ``code_version``) are
converted once by ``benchmarks/migrate_results.py``; :class:`ResultStore` refuses them.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
KEY = ("benchmark", "dataset", "method", "k", "seed", "subset")
KINDS = ("segmentation", "frechet", "speed")

NUMBER = (Real, type(None))  # a number, or None where it could not be computed (NaN, no data)
INT = (int, type(None))
TEXT = (str, type(None))

# field -> (allowed types, meaning); bool is not accepted where a number is asked for
COMMON = {
    "schema": ((int,), "row format version, SCHEMA_VERSION"),
    "kind": ((str,), "segmentation | frechet | speed: which fields follow"),
    "benchmark": ((str,), "emps | few_labels | bam_tio2 | generator | speed"),
    "dataset": ((str,), "emps | bam_tio2 | simulated"),
    "method": ((str,), "the method (segmentation rows), or what a generator / speed row measures"),
    "k": ((int, str, type(None)), "labelled images drawn (int), 'all', or None (speed)"),
    "seed": ((int,), "seed of the draw of the k images, the split and the training"),
    "subset": ((str,), "test subset: all | ordered | ordered_or_partial"),
    "code_version": (TEXT, "git commit of the checkout, '+dirty' when tracked files differed; not in the key"),
    "date": ((str,), "UTC time the row was written, ISO 8601"),
    "machine": ((str,), "CPU, cores, torch version and device, in words"),
    "environment": ((dict, type(None)), "machine details: hostname, platform, python, torch threads, malloc"),
    "quick": ((bool, type(None)), "written by a --quick smoke run"),
    "cpu_seconds": (NUMBER, "CPU seconds (all threads) of training and testing the row"),
    "train_seconds": (NUMBER, "wall-clock seconds of training, all phases together"),
    "n_test_images": (INT, "test images the row is measured on"),
    "f1_50": (NUMBER, "mean F1 at IoU 0.5 over the test images (segmentation rows)"),
    "dice": (NUMBER, "mean Dice (segmentation rows)"),
    "pq": (NUMBER, "mean panoptic quality (segmentation rows)"),
}
SEGMENTATION = {
    "precision_50": (NUMBER, "mean precision at IoU 0.5"),
    "recall_50": (NUMBER, "mean recall at IoU 0.5"),
    "pooled_f1_50": (NUMBER, "F1 at IoU 0.5 from counts summed over the test images"),
    "n_train_images": (INT, "labelled images trained on"),
    "n_val_images": (INT, "labelled images held out for validation"),
    "n_labelled_images": (INT, "n_train_images + n_val_images"),
    "train_cpu_seconds": (NUMBER, "CPU seconds of training"),
    "test_seconds": (NUMBER, "wall-clock seconds of testing"),
    "budget_minutes": (NUMBER, "wall-clock budget B of the method, all phases (None: no budget)"),
    "budget_note": (TEXT, "how the budget was spent"),
    "run_dir": (TEXT, "the run folder that was tested"),
    "config": ((dict,), "training configs, the group (split) and the harness settings"),
}
FRECHET = {
    "frechet_distance": (NUMBER, "Fréchet distance to real test patches on the phase 1 encoder's features"),
    "layouts": (TEXT, "real | new | mixed layouts of the synthetic images; None for real_train_patches"),
    "synthesis_styles": ((str,), "random | real: the latent z of the synthetic images"),
    "n_real_patches": (INT, "real test patches compared against"),
    "n_compared": (INT, "images of the compared set"),
    "feature_dim": (INT, "feature dimensions"),
}
SPEED = {
    "image_size": (INT, "side of the square test image, px"),
    "inference_mpix_per_s": (NUMBER, "sagegan inference speed"),
    "monai_inference_mpix_per_s": (NUMBER, "MONAI AttentionUnet + sliding window at the same tiles"),
    "speed_ratio_vs_monai": (NUMBER, "MONAI seconds / sagegan seconds"),
    "peak_rss_mb": (NUMBER, "peak RSS of the measuring process after sagegan's inference"),
    "seg_train_s_per_iter": (NUMBER, "segmenter training seconds per iteration (median)"),
    "gan_train_s_per_iter": (NUMBER, "SAGE-GAN training seconds per iteration (median)"),
}
SCHEMA = {"segmentation": {**COMMON, **SEGMENTATION}, "frechet": {**COMMON, **FRECHET},
          "speed": {**COMMON, **SPEED}}


def row_key(row: dict) -> tuple:
    """A row's identity: the :data:`KEY` fields as strings (so that k = 8 and "8" are one row)."""
    return tuple(str(row.get(k)) for k in KEY)


def _names(types: tuple) -> str:
    return "/".join({Real: "number", type(None): "null"}.get(t, t.__name__) for t in types)


def check_row(row: dict) -> list[str]:
    """What is wrong with ``row`` against :data:`SCHEMA` (an empty list when nothing is)."""
    kind = row.get("kind")
    if kind not in SCHEMA:
        return [f"kind {kind!r} is not one of {', '.join(KINDS)}"]
    problems = []
    if row.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema {row.get('schema')!r}, expected {SCHEMA_VERSION}")
    for name, (types, _) in SCHEMA[kind].items():
        if name not in row:
            problems.append(f"{name} missing")
            continue
        value = row[name]
        if isinstance(value, bool) and bool not in types:
            problems.append(f"{name} is a bool, expected {_names(types)}")
        elif not isinstance(value, types):
            problems.append(f"{name} is {type(value).__name__}, expected {_names(types)}")
    return problems


def require_valid(row: dict) -> dict:
    problems = check_row(row)
    if problems:
        name = "/".join(row_key(row))
        raise ValueError(f"benchmark row {name} does not fit the schema: {'; '.join(problems)}")
    return row


def read_rows(path: Path) -> list[dict]:
    """The rows of a results file ([] for an empty or missing one); rows of the earlier format
    are refused with the command that converts them."""
    from sagegan.io import read_json

    path = Path(path)
    if not path.exists() or not path.read_text().strip():
        return []
    rows = read_json(path)
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a JSON list of rows")
    if any(r.get("schema") != SCHEMA_VERSION for r in rows):
        raise SystemExit(f"{path}: rows of an earlier format; convert them once with "
                         f"`python benchmarks/migrate_results.py {path} NEW.json`")
    return rows


class ResultStore:
    """``results.json``: a list of rows, rewritten atomically after each added row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = read_rows(self.path)
        self.added = 0

    def has(self, **key: Any) -> bool:
        want = row_key(key)
        return any(row_key(r) == want for r in self.rows)

    def add(self, row: dict) -> dict:
        """Check ``row`` against the schema and write it, replacing a row with the same key."""
        from sagegan.io import json_ready, write_json

        row = require_valid(json_ready(row))
        self.rows = [r for r in self.rows if row_key(r) != row_key(row)] + [row]
        write_json(self.path, self.rows, indent=1)
        self.added += 1
        return row
