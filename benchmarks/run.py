#!/usr/bin/env python
"""sagegan's benchmarks: the classical pipeline, a plain U-Net, the Attention U-Net, SAGE-GAN.

    python benchmarks/run.py --out bench_out                        # everything (hours on a CPU)
    python benchmarks/run.py --out bench_out --only emps speed      # some benchmarks
    python benchmarks/run.py --quick --out /tmp/bench               # smoke run of every code path

Writes ``OUT/results.json`` (a JSON list of rows, rewritten atomically after each row) and PNG
figures. A rerun skips the rows already in the file (key: benchmark, dataset, method, k, seed,
subset), so a full run can be done in several sittings; trained models are kept under
``OUT/runs/<dataset>/<k>_s<seed>/<method>`` and reused by later benchmarks and sittings.

Benchmarks (``--only``):

* ``emps``: the upstream EMPS split; train on train.csv (10 % held out for validation), test on
  all 99 test images at native resolution (``segment_image(scale="auto")``); rows for the subsets
  ``all``, ``ordered`` and ``ordered_or_partial`` (``order_labels.csv``).
* ``few_labels``: k EMPS training images drawn at random (seeded), k = 8 with seeds 0, 1, 2 and
  k = all (``--ks``, ``--seeds``); same test set; ``few_labels.png`` plots F1@0.5 against k.
* ``bam_tio2``: BAM TiO2 SEM, rows 712+ (data bar) cropped, first 30 sorted ids train, last 10
  test, 7.344 nm/px; adds the signed error of the mean particle diameter in nm.
* ``generator``: Fréchet distance between real test patches and synthetic images on the phase 1
  encoder's features, and TSTR (a fresh segmenter trained only on synthetic pairs, tested on the
  real test images) next to the same recipe trained on the real pairs.
* ``speed``: inference MPix/s next to MONAI's AttentionUnet with sliding-window inference in the
  same process, peak RSS, training seconds per iteration of the segmenter and of SAGE-GAN.

Methods: ``classical`` (threshold + watershed, tuned on the training split only), ``unet``,
``attention_unet``, ``sage_gan`` (the jointly fine-tuned segmenter of a SAGE-GAN run started
from the attention_unet run) and ``sage_gan_retrain`` (a fresh Attention U-Net trained on the real
pairs plus synthetic pairs of real and new layouts). Every learned method gets the same
wall-clock budget per (dataset, k, seed), all of its phases together:

* ``unet``, ``attention_unet``: the whole budget B for training;
* ``sage_gan``: phase 1 = the attention_unet run as it stood at 0.5 B (the attention_unet row
  resumes that same run to B), then phase 2 until 1.0 B;
* ``sage_gan_retrain``: the same phase 1 (0.5 B), the SAGE-GAN run as it stood at 0.75 B, then
  synthesis + a fresh segmenter on real + synthetic pairs until 1.0 B.

Budgets are wall-clock (``max_minutes`` of the trainers); each row also records the CPU seconds
(``time.process_time``, all threads) that its phases and its test took.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
try:  # run from a checkout without installing
    import sagegan  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(REPO / "src"))

import numpy as np

BENCHMARKS = ("emps", "few_labels", "bam_tio2", "generator", "speed")
METHODS = ("classical", "unet", "attention_unet", "sage_gan", "sage_gan_retrain")
KEY = ("benchmark", "dataset", "method", "k", "seed", "subset")
ORDER_SUBSETS = ("all", "ordered", "ordered_or_partial")
# The main metrics copied into every segmentation row (mean over test images; "pooled_" prefix:
# from counts and areas summed over the test images).
ROW_METRICS = ("f1_50", "precision_50", "recall_50", "f1_75", "f1_50_95", "pq", "mean_matched_iou", "dice", "iou",
               "count_error", "count_rel_error", "mean_diameter_rel_error", "ecd_wasserstein_px")
POOLED_METRICS = ("f1_50", "precision_50", "recall_50", "f1_75", "f1_50_95", "pq", "mean_matched_iou", "dice",
                  "iou", "count_rel_error")
BAM_NM_PER_PX = 7.344
BAM_CROP_BOTTOM = 56
MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# Shares of the budget B at which the phases of the SAGE-GAN methods end (cumulative).
PHASE1_END, GAN_SNAPSHOT_END = 0.5, 0.75
MIN_PHASE_S = 1.0


# ------------------------------------------------------------------------------------ settings


@dataclass
class Settings:
    """Everything that sizes a run; saved into each row's ``config``."""

    quick: bool
    budget_minutes: float
    few_budget_minutes: float
    max_train: int | None
    max_test: int | None
    seg_widths: tuple[int, ...]
    seg_patch: int
    seg_batch: int
    seg_val_every: int
    seg_val_max_images: int
    gan_patch: int
    gan_generator_widths: tuple[int, ...]
    gan_latent_dim: int
    gan_disc_channels: int
    gan_val_every: int
    gan_val_max_images: int
    gan_seconds_per_step: float
    n_synthetic_retrain: int
    n_fd: int
    classical_max_images: int
    speed_size: int
    speed_patch: int
    speed_repeats: int
    device: str
    few_ks: tuple = ()
    few_seeds: tuple = ()
    gan_style_encoder: bool = False
    synthesis_styles: str = "random"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        q = args.quick
        budget = args.budget_minutes if args.budget_minutes is not None else (0.3 if q else 45.0)
        few = args.few_budget_minutes if args.few_budget_minutes is not None else (budget if q else 15.0)
        ks = tuple(_parse_k(k) for k in (args.ks or (["4"] if q else ["8", "all"])))
        seeds = tuple(args.seeds if args.seeds is not None else ([0] if q else [0, 1, 2]))
        return cls(
            quick=q, budget_minutes=budget, few_budget_minutes=few,
            max_train=args.max_train if args.max_train is not None else (8 if q else None),
            max_test=args.max_test if args.max_test is not None else (4 if q else None),
            seg_widths=(8, 16, 32) if q else (16, 32, 64, 128, 256),
            seg_patch=64 if q else 256, seg_batch=4 if q else 8,
            seg_val_every=10 if q else 100, seg_val_max_images=2 if q else 24,
            gan_patch=64 if q else 256, gan_generator_widths=(8, 16, 32) if q else (16, 32, 64, 128),
            gan_latent_dim=16 if q else 128, gan_disc_channels=8 if q else 32,
            gan_val_every=5 if q else 100, gan_val_max_images=2 if q else 8,
            gan_seconds_per_step=args.gan_seconds_per_step,
            n_synthetic_retrain=4 if q else 0,  # 0: 4 per real training image, 64..400
            n_fd=args.n_fd if args.n_fd is not None else (8 if q else 512),
            classical_max_images=4 if q else 24,
            speed_size=args.speed_size if args.speed_size is not None else (512 if q else 2048),
            speed_patch=args.speed_patch if args.speed_patch is not None else (64 if q else 256),
            speed_repeats=1 if q else 3,
            device=args.device, few_ks=ks, few_seeds=seeds, gan_style_encoder=args.gan_style_encoder,
            synthesis_styles=args.synthesis_styles)


def _parse_k(text: str) -> int | str:
    if str(text).lower() == "all":
        return "all"
    k = int(text)
    if k < 2:
        raise argparse.ArgumentTypeError("k must be at least 2 (one image is held out for validation)")
    return k


# ------------------------------------------------------------------------------------ results


def _clean(obj: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples and Paths to lists/strings."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if hasattr(obj, "__dataclass_fields__"):
        return _clean(asdict(obj))
    return obj


def row_key(row: dict) -> tuple:
    return tuple(str(row.get(k)) for k in KEY)


class ResultStore:
    """``results.json``: a list of rows, rewritten atomically after each added row."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            text = path.read_text().strip()
            self.rows = json.loads(text) if text else []
            if not isinstance(self.rows, list):
                raise SystemExit(f"{path}: expected a JSON list of rows")
        self.added = 0

    def has(self, **key: Any) -> bool:
        want = tuple(str(key.get(k)) for k in KEY)
        return any(row_key(r) == want for r in self.rows)

    def add(self, row: dict) -> None:
        row = _clean(row)
        self.rows = [r for r in self.rows if row_key(r) != row_key(row)] + [row]
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(self.rows, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, self.path)
        self.added += 1


# ------------------------------------------------------------------------------------ data


@dataclass
class Dataset:
    """Train and test stems of one benchmark data set; images are read when first needed."""

    name: str
    train_stems: list
    test_stems: list
    loader: Callable[[Sequence[str]], list]     # stems -> sagegan.io.Sample list
    images_dir: Path
    masks_dir: Path
    crop_bottom: int = 0
    nm_per_px: float | None = None
    order: dict = field(default_factory=dict)   # stem -> ordered | partially_ordered | not_ordered
    split: str = ""
    subsets_used: tuple = ("all",)
    _cache: dict = field(default_factory=dict, repr=False)

    def samples(self, stems: Sequence[str]) -> list:
        missing = [s for s in stems if s not in self._cache]
        if missing:
            for sample in self.loader(missing):
                self._cache[sample.stem] = sample
        return [self._cache[s] for s in stems]

    @property
    def train(self) -> list:
        return self.samples(self.train_stems)

    @property
    def test(self) -> list:
        return self.samples(self.test_stems)

    def subsets(self) -> dict[str, set]:
        """Test stems of each subset that holds at least one test image."""
        stems = list(self.test_stems)
        out = {"all": set(stems)}
        if "ordered" in self.subsets_used:
            out["ordered"] = {s for s in stems if self.order.get(s) == "ordered"}
            out["ordered_or_partial"] = {s for s in stems if self.order.get(s) in ("ordered", "partially_ordered")}
        return {k: v for k, v in out.items() if v}

    def source(self) -> dict:
        return {"images": str(self.images_dir.resolve()), "masks": str(self.masks_dir.resolve()),
                "crop_bottom": self.crop_bottom}


def data_root(args: argparse.Namespace) -> Path:
    if args.data_root:
        return Path(args.data_root)
    if os.environ.get("SAGEGAN_DATA_ROOT"):
        return Path(os.environ["SAGEGAN_DATA_ROOT"])
    return REPO / ".." / "shared" / "data"


def _round_robin(groups: Sequence[Sequence[str]], n: int) -> list[str]:
    picked: list[str] = []
    iters = [list(g) for g in groups]
    while len(picked) < n and any(iters):
        for g in iters:
            if g and len(picked) < n:
                picked.append(g.pop(0))
    return picked


def emps_order_labels(base: Path) -> dict[str, str]:
    """stem -> ordered | partially_ordered | not_ordered, from EMPS's ``order_labels.csv``."""
    import csv

    with (base / "order_labels.csv").open(newline="") as f:
        return {Path(rec["file"]).stem: rec["order_label_visual"] for rec in csv.DictReader(f)}


def load_emps(root: Path, settings: Settings) -> Dataset:
    from sagegan.io import load_pairs, read_split

    base = root / "emps"
    train_stems, test_stems = read_split(base / "train.csv"), read_split(base / "test.csv")
    order = emps_order_labels(base)
    if settings.max_train is not None:
        train_stems = train_stems[: settings.max_train]
    if settings.max_test is not None:  # one of each order class in turn, so every subset is exercised
        groups = [[s for s in test_stems if order.get(s) == "ordered"],
                  [s for s in test_stems if order.get(s) == "partially_ordered"],
                  [s for s in test_stems if order.get(s) not in ("ordered", "partially_ordered")]]
        chosen = set(_round_robin(groups, settings.max_test))
        test_stems = [s for s in test_stems if s in chosen]
    images, masks = base / "images", base / "segmaps"
    return Dataset("emps", train_stems, test_stems, lambda stems: load_pairs(images, masks, stems), images, masks,
                   order=order, subsets_used=ORDER_SUBSETS,
                   split="upstream train.csv / test.csv" + (" (subsampled: --quick/--max-*)"
                                                            if settings.max_train or settings.max_test else ""))


def load_bam(root: Path, settings: Settings) -> Dataset:
    from sagegan.io import _stem, load_pairs

    base = root / "bam_tio2_sem"
    stems = sorted({_stem(p.name) for p in (base / "images").iterdir() if p.suffix.lower() == ".png"})
    train_stems, test_stems = stems[:30], stems[30:]
    if settings.max_train is not None:
        train_stems = train_stems[: settings.max_train]
    if settings.max_test is not None:
        test_stems = test_stems[: settings.max_test]
    images, masks = base / "images", base / "masks"
    return Dataset("bam_tio2", train_stems, test_stems,
                   lambda st: load_pairs(images, masks, st, crop_bottom=BAM_CROP_BOTTOM, nm_per_px=BAM_NM_PER_PX),
                   images, masks, crop_bottom=BAM_CROP_BOTTOM, nm_per_px=BAM_NM_PER_PX,
                   split="first 30 sorted ids train, last 10 test; rows 712+ cropped; 7.344 nm/px")


SIM_LAYOUTS = ("hex", "random", "square", "sparse")


def load_simulated(out: Path, settings: Settings, nm_per_px: float | None = None) -> Dataset:
    """Simulated SEM/TEM micrographs written under ``OUT/data/simulated`` (used without real data)."""
    from sagegan.io import Sample, read_mask, read_micrograph, write_image, write_labels
    from sagegan.simulate import simulate_micrograph

    n_train = settings.max_train or 12
    n_test = settings.max_test or 8
    size = 192 if settings.quick else 384
    base = out / "data" / f"simulated_{size}px"
    samples, order = {}, {}
    train_stems, test_stems = [], []
    for i in range(n_train + n_test):
        layout = SIM_LAYOUTS[i % len(SIM_LAYOUTS)]
        stem = f"{'train' if i < n_train else 'test'}_{i:03d}"
        image_path, mask_path = base / "images" / f"{stem}.png", base / "masks" / f"{stem}.tif"
        if not (image_path.exists() and mask_path.exists()):
            sim = simulate_micrograph(size, layout=layout, modality="tem" if i % 3 == 2 else "sem", seed=[7, i],
                                      mean_diameter_px=16.0, n_grains=2)
            write_image(image_path, sim.image)
            write_labels(mask_path, sim.labels)
        # Read back what was written (8-bit image), so training and synthesis see the same pixels.
        samples[stem] = Sample(stem, read_micrograph(image_path).image, read_mask(mask_path), nm_per_px,
                               image_path, mask_path)
        order[stem] = "ordered" if layout in ("hex", "square") else "not_ordered"
        (train_stems if i < n_train else test_stems).append(stem)
    return Dataset("simulated", train_stems, test_stems, lambda stems: [samples[s] for s in stems],
                   base / "images", base / "masks", nm_per_px=nm_per_px, order=order,
                   subsets_used=("all",) if nm_per_px else ORDER_SUBSETS,
                   split=f"simulated: {n_train} train, {n_test} test, {size} px, hex/square = ordered")


# ------------------------------------------------------------------------------------ context


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def commit_id() -> str | None:
    head = _git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return head + ("+dirty" if dirty else "")


def machine_info(device: str) -> tuple[str, dict]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from sagegan.train_seg import resolve_device

    dev = resolve_device(device)
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else None
    info = {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": str(dev), "gpu": gpu,
            "malloc_env": {v: os.environ.get(v) for v in MALLOC_VARS}}
    text = f"{cpu}, {os.cpu_count()} cpus, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return text + (f", {gpu}" if gpu else ", cpu"), info


class Bench:
    """Shared state of one invocation: settings, the result store, data and run folders."""

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
        self.root = data_root(args)
        self.methods = tuple(args.methods or METHODS)
        self.progress = (not args.no_progress) and self.console.is_terminal
        self.machine, self.environment = machine_info(self.settings.device)
        self.commit = commit_id()
        self._data: dict[str, Dataset | None] = {}
        self.failures: list[str] = []
        self.touched: list[dict] = []

    # -- data
    def real_available(self, name: str) -> bool:
        if self.args.simulated:
            return False
        sub = {"emps": "emps", "bam_tio2": "bam_tio2_sem"}[name]
        return (self.root / sub / "images").is_dir()

    def dataset(self, name: str) -> Dataset | None:
        """``emps`` or ``bam_tio2``; without the real data: ``simulated`` in --quick, else None."""
        if name in self._data:
            return self._data[name]
        ds: Dataset | None
        if self.real_available(name):
            self.console.log(f"{name}: {self.root.resolve()}")
            ds = load_emps(self.root, self.settings) if name == "emps" else load_bam(self.root, self.settings)
        elif self.settings.quick or self.args.simulated:
            if not self.args.simulated:
                self.console.log(f"[yellow]{name}: no data under {self.root} (give --data-root or "
                                 f"SAGEGAN_DATA_ROOT); --quick runs on simulated data instead")
            ds = load_simulated(self.out, self.settings, nm_per_px=2.0 if name == "bam_tio2" else None)
        else:
            self.console.log(f"[yellow]skipping {name}: no data under {self.root} (give --data-root or "
                             "SAGEGAN_DATA_ROOT)")
            ds = None
        self._data[name] = ds
        return ds

    # -- rows
    def base_row(self, benchmark: str, dataset: str, method: str, k: Any, seed: int, subset: str) -> dict:
        return {"benchmark": benchmark, "dataset": dataset, "method": method, "k": k, "seed": seed, "subset": subset,
                "dice": None, "f1_50": None, "pq": None, "cpu_seconds": None, "train_seconds": None,
                "n_test_images": None, "commit": self.commit,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": self.machine, "environment": self.environment, "quick": self.settings.quick}

    def add(self, row: dict) -> None:
        self.store.add(row)
        self.touched.append(row)
        f1 = row.get("f1_50")
        extra = f" F1@0.5 {f1:.3f}" if isinstance(f1, float) and math.isfinite(f1) else ""
        self.console.log(f"[green]row[/green] {row['benchmark']} / {row['dataset']} / {row['method']} "
                         f"k={row['k']} seed={row['seed']} {row['subset']}{extra}")

    def group_dir(self, dataset: str, k: Any, seed: int) -> Path:
        return self.out / "runs" / dataset / f"k{k}_s{seed}"


# ------------------------------------------------------------------------------------ timing


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    w0, c0 = time.monotonic(), time.process_time()
    result = fn()
    return result, time.monotonic() - w0, time.process_time() - c0


# Config fields added after runs were made, with the value that reproduces the behaviour from before
# they existed: finished runs fingerprinted without them stay valid while the field keeps that value.
# One dict per addition, oldest first, so that runs marked between two additions stay valid too.
LATE_FIELD_DEFAULTS = (
    {"precision": "fp32"},
    {"style_encoder": False, "style_kl": 0.025, "latent_regression": 1.25, "synthesis_styles": "random"},
)


class Fingerprint(str):
    """A run's fingerprint; ``legacy`` holds the ones the same run had before each LATE_FIELD_DEFAULTS addition."""

    legacy: frozenset = frozenset()


class Stamp(list):
    """[run folder as dataset/group/method, its fingerprint, its wall seconds]: a run inside the fingerprint
    of runs built on it. ``legacy`` is the form used before (the folder path as ``--out`` gave it), so that
    runs marked then stay valid when ``--out`` is given the same way."""

    legacy: list = []


def _with_legacy_stamps(obj: Any) -> Any:
    if isinstance(obj, Stamp):
        return list(obj.legacy)
    if isinstance(obj, dict):
        return {k: _with_legacy_stamps(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_with_legacy_stamps(v) for v in obj]
    return obj


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _without_late_defaults(obj: Any, late: dict) -> Any:
    if isinstance(obj, dict):
        return {k: _without_late_defaults(v, late) for k, v in obj.items() if not (k in late and v == late[k])}
    if isinstance(obj, list):
        return [_without_late_defaults(v, late) for v in obj]
    return obj


def _fingerprint(obj: Any) -> Fingerprint:
    clean = _clean(obj)
    fp = Fingerprint(_digest(clean))
    # the config as it was before addition i: without the fields of additions i, i + 1, ...
    before = [{k: v for added in LATE_FIELD_DEFAULTS[i:] for k, v in added.items()}
              for i in range(len(LATE_FIELD_DEFAULTS))] + [{}]
    forms = [clean, _clean(_with_legacy_stamps(obj))]
    fp.legacy = frozenset(_digest(_without_late_defaults(form, late)) for form in forms for late in before) - {str(fp)}
    return fp


MARK = "bench_run.json"


def _done(run_dir: Path, fingerprint: str) -> dict | None:
    mark = run_dir / MARK
    if mark.exists():
        info = json.loads(mark.read_text())
        if info.get("fingerprint") == fingerprint or info.get("fingerprint") in getattr(fingerprint, "legacy", ()):
            return info
    return None


def _mark(run_dir: Path, fingerprint: str, **info: Any) -> dict:
    info = _clean({"fingerprint": str(fingerprint), **info})
    (run_dir / MARK).write_text(json.dumps(info, indent=1) + "\n")
    return info


def resume_for(run_dir: Path, cfg: Any, seconds: float, train: Callable[[Any], Any]) -> tuple[float, float]:
    """Train the run in ``run_dir`` ``seconds`` more (wall-clock): ``train(cfg)`` resumes it with ``max_minutes`` set
    to the time it has already trained plus ``seconds``. Returns (wall s, CPU s)."""
    elapsed = json.loads((run_dir / "last_state.json").read_text())["elapsed_s"]
    _, wall, cpu = timed(lambda: train(replace(cfg, max_minutes=(elapsed + seconds) / 60)))
    return wall, cpu


def _fresh(run_dir: Path) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)


# ------------------------------------------------------------------------------------ groups


@dataclass
class Group:
    """One (dataset, k, seed): its labelled images split into train / validation, and its budget."""

    ds: Dataset
    k: Any
    seed: int
    train_stems: list
    val_stems: list
    budget_minutes: float
    dir: Path

    @property
    def train(self) -> list:
        return self.ds.samples(self.train_stems)

    @property
    def val(self) -> list:
        return self.ds.samples(self.val_stems)

    @property
    def labelled(self) -> list:
        return self.train + self.val

    @property
    def n_labelled(self) -> int:
        return len(self.train_stems) + len(self.val_stems)

    def describe(self) -> dict:
        d = {"dataset": self.ds.name, "k": self.k, "seed": self.seed, "n_train": len(self.train_stems),
             "n_val": len(self.val_stems), "split": self.ds.split, "validation": "10 % of the labelled images "
             "(sagegan.train_seg.split_validation with this seed)", "val_stems": self.val_stems}
        if len(self.train_stems) <= 32:
            d["train_stems"] = self.train_stems
        return d


def make_group(b: Bench, ds: Dataset, k: Any, seed: int, budget_minutes: float) -> Group:
    """k training images drawn at random with ``seed`` (all for k="all"), 10 % of them held out."""
    from sagegan.train_seg import split_validation

    pool = list(ds.train_stems)
    if k != "all":
        if k > len(pool):
            raise ValueError(f"k={k} but {ds.name} has only {len(pool)} training images")
        idx = np.sort(np.random.default_rng(seed).choice(len(pool), k, replace=False))
        pool = [pool[i] for i in idx]
    train, val = split_validation(pool, 0.1, seed)
    return Group(ds, k, seed, train, val, budget_minutes, b.group_dir(ds.name, k, seed))


# ------------------------------------------------------------------------------------ configs


def seg_config(b: Bench, arch: str, minutes: float, seed: int):
    from sagegan.train_seg import SegTrainConfig

    s = b.settings
    return SegTrainConfig(arch=arch, widths=s.seg_widths, patch_size=s.seg_patch, batch_size=s.seg_batch,
                          epochs=100_000, max_minutes=minutes, val_every=s.seg_val_every,
                          val_max_images=s.seg_val_max_images, patience=10_000 if s.quick else 10, seed=seed,
                          device=s.device)


def gan_config(b: Bench, minutes: float, seed: int, budget_minutes: float):
    from sagegan.train_gan import GanTrainConfig

    s = b.settings
    if s.quick:
        warm, ramp = 3, 3
    else:  # warm-up ends at 20 % and the ramp at 50 % of the steps the phase 2 budget should allow
        expected = max(50, int((1 - PHASE1_END) * budget_minutes * 60 / s.gan_seconds_per_step))
        warm, ramp = int(0.2 * expected), int(0.3 * expected)
    return GanTrainConfig(patch_size=s.gan_patch, batch_size=2, steps=1_000_000, max_minutes=minutes,
                          warmup_steps=warm, ramp_steps=ramp, generator_widths=s.gan_generator_widths,
                          latent_dim=s.gan_latent_dim, disc_channels=s.gan_disc_channels,
                          val_every=s.gan_val_every, sample_every=10 * s.gan_val_every,
                          val_max_images=s.gan_val_max_images, seed=seed, device=s.device,
                          style_encoder=s.gan_style_encoder)


# ------------------------------------------------------------------------------------ training


@dataclass
class Trained:
    """What a method produced: the folder to load, timings and how the budget was spent."""

    run_dir: Path
    wall_s: float
    cpu_s: float
    config: dict
    budget_note: str
    extra: dict = field(default_factory=dict)

    @property
    def stamp(self) -> "Stamp":
        """Identifies this training (its place in the results folder and its marker), so that runs built
        on it notice a retrain, wherever the results folder is and however ``--out`` names it."""
        mark = self.run_dir / MARK
        info = json.loads(mark.read_text()) if mark.exists() else {}
        stamp = Stamp(["/".join(self.run_dir.parts[-3:]), info.get("fingerprint"), info.get("wall_s")])
        stamp.legacy = [str(self.run_dir), info.get("fingerprint"), info.get("wall_s")]
        return stamp


def train_plain(b: Bench, g: Group, name: str, arch: str) -> Trained:
    """``unet``: one training run with the whole budget."""
    from sagegan.train_seg import train_segmenter

    run_dir = g.dir / name
    cfg = seg_config(b, arch, g.budget_minutes, g.seed)
    fp = _fingerprint({"cfg": cfg, "group": g.describe()})
    info = _done(run_dir, fp)
    if info is None:
        _fresh(run_dir)
        b.console.log(f"training {name} on {g.ds.name} k={g.k} seed={g.seed} for {g.budget_minutes:g} min")
        _, wall, cpu = timed(lambda: train_segmenter(g.train, run_dir, cfg, val=g.val, progress=b.progress))
        info = _mark(run_dir, fp, wall_s=wall, cpu_s=cpu)
    return Trained(run_dir, info["wall_s"], info["cpu_s"], {"seg": asdict(cfg)},
                   f"training: the whole budget ({g.budget_minutes:g} min wall-clock)")


def train_attention(b: Bench, g: Group) -> tuple[Trained, Trained]:
    """The attention_unet run, snapshotted at 0.5 B (SAGE-GAN's phase 1) and resumed to B.

    Returns (phase 1 snapshot, full run).
    """
    from sagegan.train_seg import train_segmenter

    full, half = g.dir / "attention_unet", g.dir / "phase1_half"
    B = g.budget_minutes * 60
    cfg = seg_config(b, "attention-unet", PHASE1_END * g.budget_minutes, g.seed)
    fp = _fingerprint({"cfg": cfg, "group": g.describe(), "budget": g.budget_minutes})
    info_half, info_full = _done(half, fp), _done(full, fp)
    if info_half is None or info_full is None:
        _fresh(full), _fresh(half)
        b.console.log(f"training attention_unet on {g.ds.name} k={g.k} seed={g.seed}: "
                      f"{PHASE1_END * g.budget_minutes:g} min (SAGE-GAN phase 1 snapshot), then on to "
                      f"{g.budget_minutes:g} min")
        _, w1, c1 = timed(lambda: train_segmenter(g.train, full, cfg, val=g.val, progress=b.progress))
        shutil.copytree(full, half)
        info_half = _mark(half, fp, wall_s=w1, cpu_s=c1)
        w2 = c2 = 0.0
        stop = json.loads((full / "config.json").read_text()).get("stop_reason")
        left = B - w1
        if stop != "early_stopping" and left > MIN_PHASE_S:
            w2, c2 = resume_for(full, cfg, left, lambda c: train_segmenter(g.train, full, c, val=g.val, resume=True,
                                                                            progress=b.progress))
        info_full = _mark(full, fp, wall_s=w1 + w2, cpu_s=c1 + c2, snapshot_wall_s=w1)
    seg = asdict(cfg)
    return (Trained(half, info_half["wall_s"], info_half["cpu_s"], {"seg": seg}, "phase 1 snapshot"),
            Trained(full, info_full["wall_s"], info_full["cpu_s"], {"seg": {**seg, "max_minutes": g.budget_minutes}},
                    f"training: the whole budget ({g.budget_minutes:g} min wall-clock); its state at "
                    f"{PHASE1_END:g} B is SAGE-GAN's phase 1"))


def train_sage(b: Bench, g: Group, phase1: Trained) -> tuple[Trained, Trained]:
    """SAGE-GAN phase 2 from the phase 1 snapshot, snapshotted at 0.75 B and resumed to B.

    Returns (GAN snapshot for sage_gan_retrain, full GAN run for sage_gan).
    """
    from sagegan.train_gan import train_gan

    full, snap = g.dir / "sage_gan", g.dir / "sage_gan_snapshot"
    B = g.budget_minutes * 60
    first = max(MIN_PHASE_S, GAN_SNAPSHOT_END * B - phase1.wall_s)
    cfg = gan_config(b, first / 60, g.seed, g.budget_minutes)
    fp = _fingerprint({"cfg": cfg, "group": g.describe(), "phase1": phase1.stamp, "budget": g.budget_minutes})
    info_snap, info_full = _done(snap, fp), _done(full, fp)
    if info_snap is None or info_full is None:
        _fresh(full), _fresh(snap)
        b.console.log(f"training SAGE-GAN on {g.ds.name} k={g.k} seed={g.seed}: {first / 60:.2f} min "
                      "(snapshot), then to the end of the budget")
        _, w1, c1 = timed(lambda: train_gan(g.train, phase1.run_dir, full, cfg, val=g.val, progress=b.progress,
                                            data_source=g.ds.source()))
        shutil.copytree(full, snap)
        info_snap = _mark(snap, fp, wall_s=w1, cpu_s=c1)
        left = B - phase1.wall_s - w1
        w2 = c2 = 0.0
        if left > MIN_PHASE_S:
            w2, c2 = resume_for(full, cfg, left, lambda c: train_gan(g.train, phase1.run_dir, full, c, val=g.val,
                                                                      resume=True, progress=b.progress,
                                                                      data_source=g.ds.source()))
        info_full = _mark(full, fp, wall_s=w1 + w2, cpu_s=c1 + c2, snapshot_wall_s=w1)
    gan = asdict(cfg)
    return (Trained(snap, info_snap["wall_s"], info_snap["cpu_s"], {"gan": gan}, "phase 2 snapshot"),
            Trained(full, info_full["wall_s"], info_full["cpu_s"], {"gan": {**gan, "max_minutes": "to the budget"}},
                    "phase 2"))


def n_synthetic_for(b: Bench, n_train: int) -> int:
    if b.settings.n_synthetic_retrain:
        return b.settings.n_synthetic_retrain
    return int(min(400, max(64, 4 * n_train)))


def train_retrain(b: Bench, g: Group, phase1: Trained, gan_snap: Trained) -> Trained:
    """A fresh Attention U-Net on real + synthetic (``mixed``: real and new layouts) pairs."""
    from sagegan.io import load_pairs
    from sagegan.synthesize import synthesize
    from sagegan.train_seg import train_segmenter

    run_dir, syn_dir = g.dir / "sage_gan_retrain", g.dir / "synthetic_retrain"
    B = g.budget_minutes * 60
    n_syn = n_synthetic_for(b, len(g.train_stems))
    cfg = seg_config(b, "attention-unet", g.budget_minutes, g.seed)
    fp = _fingerprint({"cfg": cfg, "group": g.describe(), "gan": gan_snap.stamp, "n": n_syn,
                       "budget": g.budget_minutes})
    info = _done(run_dir, fp)
    if info is None:
        _fresh(run_dir), _fresh(syn_dir)
        b.console.log(f"sage_gan_retrain on {g.ds.name} k={g.k} seed={g.seed}: {n_syn} synthetic pairs "
                      "(mixed layouts), then a fresh segmenter on real + synthetic")
        size = 2 * b.settings.seg_patch if b.settings.quick else b.settings.seg_patch

        def make_synthetic():
            synthesize(gan_snap.run_dir, n_syn, syn_dir, layouts="mixed", seed=g.seed, size=size,
                       progress=b.progress)
            return load_pairs(syn_dir / "images", syn_dir / "masks")

        synthetic, w_syn, c_syn = timed(make_synthetic)
        left = B - phase1.wall_s - gan_snap.wall_s - w_syn
        cfg = replace(cfg, max_minutes=max(MIN_PHASE_S, left) / 60)
        _, w, c = timed(lambda: train_segmenter(list(g.train) + synthetic, run_dir, cfg, val=g.val,
                                                progress=b.progress))
        info = _mark(run_dir, fp, wall_s=w, cpu_s=c, synth_wall_s=w_syn, synth_cpu_s=c_syn, n_synthetic=n_syn,
                     retrain_minutes=cfg.max_minutes)
    wall = phase1.wall_s + gan_snap.wall_s + info["synth_wall_s"] + info["wall_s"]
    cpu = phase1.cpu_s + gan_snap.cpu_s + info["synth_cpu_s"] + info["cpu_s"]
    return Trained(run_dir, wall, cpu,
                   {"seg_phase1": phase1.config["seg"], "gan": gan_snap.config["gan"],
                    "retrain": {**asdict(cfg), "max_minutes": info["retrain_minutes"]},
                    "n_synthetic": info["n_synthetic"], "synthetic_layouts": "mixed", "retrain_init": "fresh"},
                   f"phase 1 ({PHASE1_END:g} B) + SAGE-GAN (to {GAN_SNAPSHOT_END:g} B) + synthesis + fresh "
                   f"segmenter on real + synthetic (to 1.0 B); B = {g.budget_minutes:g} min wall-clock",
                   {"phase_seconds": {"phase1": phase1.wall_s, "phase2": gan_snap.wall_s,
                                      "synthesis": info["synth_wall_s"], "retrain": info["wall_s"]},
                    "n_synthetic": info["n_synthetic"]})


def tune_classical_method(b: Bench, g: Group) -> Trained:
    from sagegan.classical import DEFAULT_GRID, QUICK_GRID, tune_classical

    run_dir = g.dir / "classical"
    grid = QUICK_GRID if b.settings.quick else DEFAULT_GRID
    fp = _fingerprint({"grid": grid, "group": g.describe(), "max": b.settings.classical_max_images})
    info = _done(run_dir, fp)
    if info is None:
        _fresh(run_dir)
        run_dir.mkdir(parents=True)
        b.console.log(f"tuning classical on {g.ds.name} k={g.k} seed={g.seed} (training images only)")
        params, wall, cpu = timed(lambda: tune_classical(g.labelled, grid, max_images=b.settings.classical_max_images,
                                                         seed=g.seed))
        info = _mark(run_dir, fp, wall_s=wall, cpu_s=cpu, params=params.to_dict())
    return Trained(run_dir, info["wall_s"], info["cpu_s"],
                   {"classical_params": info["params"], "grid": grid,
                    "tuned_on": f"at most {b.settings.classical_max_images} of the {g.n_labelled} labelled images"},
                   "tuning (grid search, mean F1@0.5 on training images; no time limit)",
                   {"params": info["params"]})


def train_method(b: Bench, g: Group, method: str) -> Trained:
    if method == "classical":
        return tune_classical_method(b, g)
    if method == "unet":
        return train_plain(b, g, "unet", "unet")
    half, full = train_attention(b, g)
    if method == "attention_unet":
        return full
    snap, gan = train_sage(b, g, half)
    if method == "sage_gan":
        return Trained(gan.run_dir, half.wall_s + gan.wall_s, half.cpu_s + gan.cpu_s,
                       {"seg_phase1": half.config["seg"], "gan": gan.config["gan"]},
                       f"phase 1 (the attention_unet run at {PHASE1_END:g} B) + SAGE-GAN phase 2 to 1.0 B; "
                       f"B = {g.budget_minutes:g} min wall-clock",
                       {"phase_seconds": {"phase1": half.wall_s, "phase2": gan.wall_s}})
    if method == "sage_gan_retrain":
        return train_retrain(b, g, half, snap)
    raise ValueError(f"unknown method {method!r}")


# ------------------------------------------------------------------------------------ evaluation


def predictor(b: Bench, trained: Trained, method: str) -> Callable[[np.ndarray], np.ndarray]:
    if method == "classical":
        from sagegan.classical import ClassicalParams, segment_classical

        params = ClassicalParams.from_dict(trained.extra["params"])
        return lambda image: segment_classical(image, params)
    from sagegan.infer import load_segmenter, segment_image
    from sagegan.train_seg import resolve_device

    seg = load_segmenter(trained.run_dir, resolve_device(b.settings.device))
    return lambda image: segment_image(seg, image, scale="auto").labels


def _sizes_nm(labels: np.ndarray, nm_per_px: float) -> tuple[float, int]:
    """Sum and count of the ECDs (nm) of the particles that do not touch the border."""
    from sagegan.particles import measure

    if not labels.any():
        return 0.0, 0
    df = measure(labels, nm_per_px=nm_per_px)
    inner = df[~df["touches_border"].astype(bool)]
    return float(inner["ecd_nm"].sum()), int(len(inner))


def evaluate(b: Bench, predict: Callable, test: Sequence, cache_dir: Path, label: str) -> tuple[list[dict], float, float]:
    """Per-image metrics of ``predict`` on ``test`` (cached in ``cache_dir``), wall and CPU seconds."""
    from sagegan.metrics import evaluate_pair

    stems = [s.stem for s in test]
    cache = cache_dir / f"eval_{_fingerprint([stems, [s.nm_per_px for s in test]])}.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        return saved["records"], saved["wall_s"], saved["cpu_s"]

    def run() -> list[dict]:
        records = []
        items: Iterable = test
        if b.progress:
            from rich.progress import track

            items = track(test, description=f"testing {label}", console=b.console)
        for s in items:
            pred = predict(s.image)
            rec = {"stem": s.stem, "metrics": evaluate_pair(pred, s.labels)}
            if s.nm_per_px:
                rec["pred_ecd_sum_nm"], rec["pred_ecd_n"] = _sizes_nm(pred, s.nm_per_px)
                rec["true_ecd_sum_nm"], rec["true_ecd_n"] = _sizes_nm(s.labels, s.nm_per_px)
            records.append(rec)
        return records

    records, wall, cpu = timed(run)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(_clean({"stems": stems, "records": records, "wall_s": wall, "cpu_s": cpu})) + "\n")
    return records, wall, cpu


def metric_fields(records: list[dict]) -> dict:
    from sagegan.metrics import summarize

    summary = summarize([r["metrics"] for r in records])
    out = {k: summary["mean"].get(k) for k in ROW_METRICS}
    out.update({f"pooled_{k}": summary["pooled"].get(k) for k in POOLED_METRICS})
    if records and "pred_ecd_sum_nm" in records[0]:
        pn, tn = sum(r["pred_ecd_n"] for r in records), sum(r["true_ecd_n"] for r in records)
        pred_mean = sum(r["pred_ecd_sum_nm"] for r in records) / pn if pn else float("nan")
        true_mean = sum(r["true_ecd_sum_nm"] for r in records) / tn if tn else float("nan")
        out.update(pred_mean_ecd_nm=pred_mean, true_mean_ecd_nm=true_mean,
                   mean_diameter_error_nm=pred_mean - true_mean,
                   mean_diameter_error_rel=(pred_mean - true_mean) / true_mean if tn else float("nan"),
                   n_pred_particles_sized=pn, n_true_particles_sized=tn,
                   diameter_note="mean ECD over all test particles not touching the image border, predicted minus true")
    return out


def segmentation_rows(b: Bench, benchmark: str, g: Group, method: str, trained: Trained,
                      records: list[dict], test_wall: float, test_cpu: float, extra: dict | None = None) -> list[dict]:
    rows = []
    for subset, stems in g.ds.subsets().items():
        recs = [r for r in records if r["stem"] in stems]
        if not recs:
            continue
        row = b.base_row(benchmark, g.ds.name, method, g.k, g.seed, subset)
        row.update(metric_fields(recs))
        row.update({
            "n_test_images": len(recs), "n_train_images": len(g.train_stems), "n_val_images": len(g.val_stems),
            "n_labelled_images": g.n_labelled,
            "train_seconds": trained.wall_s, "train_cpu_seconds": trained.cpu_s,
            "test_seconds": test_wall, "test_cpu_seconds": test_cpu, "cpu_seconds": trained.cpu_s + test_cpu,
            "budget_minutes": None if method == "classical" else g.budget_minutes,
            "budget_note": trained.budget_note,
            "metric_averaging": "mean over test images; pooled_*: counts and areas summed over the test images",
            "test_stems": sorted(stems) if len(stems) <= 12 else f"{len(stems)} images ({subset})",
            "inference": ({"kind": "classical"} if method == "classical" else
                          {"function": "sagegan.infer.segment_image", "scale": "auto", "tta": False}),
            "run_dir": str(trained.run_dir), "config": {**trained.config, "group": g.describe(),
                                                        "settings": asdict(b.settings), "argv": sys.argv[1:]},
            **trained.extra, **(extra or {}),
        })
        rows.append(row)
    return rows


def run_segmentation(b: Bench, benchmark: str, g: Group, methods: Sequence[str]) -> dict[str, Trained]:
    """Train / reuse and test each method of one group; adds the rows not already present."""
    subsets = list(g.ds.subsets())
    done = {}
    for method in methods:
        if all(b.store.has(benchmark=benchmark, dataset=g.ds.name, method=method, k=g.k, seed=g.seed, subset=s)
               for s in subsets):
            b.console.log(f"[dim]skip {benchmark} / {g.ds.name} / {method} k={g.k} seed={g.seed}: in results.json")
            continue
        try:
            trained = train_method(b, g, method)
            predict = predictor(b, trained, method)
            records, wall, cpu = evaluate(b, predict, g.ds.test, trained.run_dir, f"{method} ({g.ds.name})")
            for row in segmentation_rows(b, benchmark, g, method, trained, records, wall, cpu):
                b.add(row)
            done[method] = trained
        except Exception as exc:  # keep going: the other rows can still be computed
            b.failures.append(f"{benchmark}/{g.ds.name}/{method}/k={g.k}/seed={g.seed}: {exc!r}")
            b.console.print_exception(max_frames=8)
            with (b.out / "errors.log").open("a") as f:
                f.write(f"{_dt.datetime.now().isoformat()} {b.failures[-1]}\n{traceback.format_exc()}\n")
    return done


# ------------------------------------------------------------------------------------ benchmarks


def bench_emps(b: Bench) -> None:
    ds = b.dataset("emps")
    if ds is None:
        return
    g = make_group(b, ds, "all", 0, b.settings.budget_minutes)
    run_segmentation(b, "emps", g, b.methods)
    figure_segmentation(b, "emps")


def bench_few_labels(b: Bench) -> None:
    ds = b.dataset("emps")
    if ds is None:
        return
    for k in b.settings.few_ks:
        seeds = [0] if k == "all" else list(b.settings.few_seeds)
        budget = b.settings.budget_minutes if k == "all" else b.settings.few_budget_minutes
        for seed in seeds:
            if k != "all" and k > len(ds.train_stems):
                b.console.log(f"[yellow]few_labels: k={k} is more than the {len(ds.train_stems)} training images; "
                              "skipped")
                continue
            run_segmentation(b, "few_labels", make_group(b, ds, k, seed, budget), b.methods)
    figure_few_labels(b)


def bench_bam(b: Bench) -> None:
    ds = b.dataset("bam_tio2")
    if ds is None:
        return
    run_segmentation(b, "bam_tio2", make_group(b, ds, "all", 0, b.settings.budget_minutes), b.methods)
    figure_segmentation(b, "bam_tio2")


def bench_generator(b: Bench) -> None:
    names = b.args.generator_datasets or (["emps"] + ([] if b.settings.quick else ["bam_tio2"]))
    for name in names:
        ds = b.dataset(name)
        if ds is None:
            continue
        try:
            generator_for(b, ds)
        except Exception as exc:
            b.failures.append(f"generator/{ds.name}: {exc!r}")
            b.console.print_exception(max_frames=8)
            with (b.out / "errors.log").open("a") as f:
                f.write(f"{_dt.datetime.now().isoformat()} {b.failures[-1]}\n{traceback.format_exc()}\n")
    figure_generator(b)


# -- generator: Fréchet distance on the phase 1 encoder, and TSTR

FD_LAYOUTS = ("real", "new", "mixed")


def encoder_features(seg, images: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
    """Global-average-pooled outputs of every encoder stage, concatenated: (N, sum(widths)).

    Images may differ in size (``synthesize --layouts real`` keeps the size of a training mask
    smaller than the patch): they are batched by shape, and the rows keep the input order.
    """
    import torch

    from sagegan.data import normalise_percentile

    device = next(seg.net.parameters()).device
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    feats: list[np.ndarray | None] = [None] * len(images)
    seg.net.eval()
    with torch.inference_mode():
        for indices in by_shape.values():
            for j in range(0, len(indices), batch):
                chunk = indices[j:j + batch]
                x = torch.from_numpy(np.stack([normalise_percentile(images[i]) for i in chunk]))[:, None]
                stages = seg.net.encode(x.to(device))
                pooled = torch.cat([f.float().mean(dim=(2, 3)) for f in stages], 1).cpu().numpy()
                for i, row in zip(chunk, pooled):
                    feats[i] = row
    return np.stack(feats).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (scipy.linalg.sqrtm).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; ``eps`` is added to the diagonals when
    the product is singular (fewer samples than feature dimensions).
    """
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(s_a.shape[0]) * eps
        covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    covmean = np.real(covmean)
    fd = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
    return max(fd, 0.0)  # tiny negative values are round-off


def real_patches(samples: Sequence, canonical: float | None, n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` patches at the canonical particle scale (as the GAN saw them), spread over the images."""
    from sagegan.data import prepare, sample_patch

    rng = np.random.default_rng(seed)
    items = [prepare(s, canonical) for s in samples]
    out = []
    for i in range(n):
        item = items[i % len(items)]
        out.append(sample_patch(item, size, rng, None, foreground_bias=0.5)[0])
    return out


def generator_for(b: Bench, ds: Dataset) -> None:
    g = make_group(b, ds, "all", 0, b.settings.budget_minutes)
    if not any(generator_needs(b, ds, g)):
        b.console.log(f"[dim]skip generator / {ds.name}: in results.json")
        return
    half, full = train_attention(b, g)
    _, gan = train_sage(b, g, half)
    generator_rows(b, ds, g, full, gan, generator_seconds=half.wall_s + gan.wall_s)


def styles_suffix(b: Bench) -> str:
    """Suffix of the generator rows' methods and folders: none for random z, "_real_styles" for encoded z."""
    return "" if b.settings.synthesis_styles == "random" else f"_{b.settings.synthesis_styles}_styles"


def generator_needs(b: Bench, ds: Dataset, g: Group) -> tuple[bool, bool]:
    """Whether the Fréchet-distance rows and the TSTR/TRTR rows of this group are still missing."""
    sfx = styles_suffix(b)
    fd_methods = [f"generator_{lay}_layouts{sfx}" for lay in FD_LAYOUTS] + ["real_train_patches"]
    need_fd = not all(b.store.has(benchmark="generator", dataset=ds.name, method=m, k=g.k, seed=g.seed, subset="all")
                      for m in fd_methods)
    need_tstr = not all(b.store.has(benchmark="generator", dataset=ds.name, method=m, k=g.k, seed=g.seed, subset=s)
                        for m in ("tstr" + sfx, "trtr") for s in ds.subsets())
    return need_fd, need_tstr


def generator_rows(b: Bench, ds: Dataset, g: Group, full: Trained, gan: Trained, generator_seconds: float) -> None:
    """FD and TSTR rows of the generator of ``gan`` (trained in ``generator_seconds``, phase 1 included);
    ``full``, the attention_unet run on the real pairs, gives the features and the TRTR reference.
    The synthetic sets and the TSTR run live in ``g.dir``."""
    from sagegan.infer import load_segmenter
    from sagegan.io import load_pairs, read_micrograph
    from sagegan.synthesize import synthesize
    from sagegan.train_seg import resolve_device, split_validation, train_segmenter

    need_fd, need_tstr = generator_needs(b, ds, g)
    sfx, styles = styles_suffix(b), b.settings.synthesis_styles
    seg = load_segmenter(full.run_dir, resolve_device(b.settings.device))
    canonical = seg.canonical_diameter_px
    size = b.settings.gan_patch
    n = b.settings.n_fd
    syn_dirs = {}
    syn_wall = {}
    for lay in FD_LAYOUTS:
        d = g.dir / f"synthetic_fd_{lay}{sfx}"
        fp = _fingerprint({"gan": gan.stamp, "n": n, "size": size, "layouts": lay, "synthesis_styles": styles})
        info = _done(d, fp)
        if info is None:
            _fresh(d)
            b.console.log(f"synthesising {n} {lay}-layout pairs ({styles} styles) from {gan.run_dir}")
            _, wall, cpu = timed(lambda: synthesize(gan.run_dir, n, d, layouts=lay, seed=1000, size=size,
                                                    progress=b.progress, styles=styles))
            info = _mark(d, fp, wall_s=wall, cpu_s=cpu)
        syn_dirs[lay], syn_wall[lay] = d, info["wall_s"]
        if lay == "mixed":
            syn_stamp = [info["fingerprint"], info["wall_s"]]

    common = {"k": g.k, "seed": g.seed,
              "gan_run": str(gan.run_dir), "feature_extractor": str(full.run_dir),
              "fd_features": "global-average-pooled outputs of each encoder stage of the phase 1 segmenter "
                             "(attention_unet run), concatenated; images percentile-normalised",
              "fd_implementation": "numpy covariance + scipy.linalg.sqrtm (not MONAI's FIDMetric)",
              "patch_size": size, "synthesis_styles": styles}
    if need_fd:
        feats_test, fd_wall, fd_cpu = timed(lambda: encoder_features(seg, real_patches(ds.test, canonical, n, size, 1)))
        train_feats = encoder_features(seg, real_patches(g.train, canonical, n, size, 2))
        for method, feats, extra in [(f"generator_{lay}_layouts{sfx}", None, {"layouts": lay}) for lay in FD_LAYOUTS] + \
                [("real_train_patches", train_feats, {"layouts": None})]:
            if feats is None:
                lay = extra["layouts"]
                paths = sorted((syn_dirs[lay] / "images").glob("*.png"))
                feats = encoder_features(seg, [read_micrograph(p).image for p in paths])
            row = b.base_row("generator", ds.name, method, g.k, g.seed, "all")
            row.update(common, **extra)
            row.update({"frechet_distance": frechet_distance(feats_test, feats), "n_real_patches": len(feats_test),
                        "n_test_images": len(ds.test_stems),
                        "n_compared": len(feats), "feature_dim": int(feats.shape[1]),
                        "fd_note": (f"only {min(len(feats), len(feats_test))} samples for {feats.shape[1]} feature "
                                    "dimensions: rank-deficient covariances, the distance is biased and only "
                                    "comparable between rows with the same n"
                                    if min(len(feats), len(feats_test)) <= feats.shape[1] else
                                    "comparable between rows with the same n and features (FD is biased in n)"),
                        "train_seconds": generator_seconds if method != "real_train_patches" else None,
                        "synthesis_seconds": syn_wall.get(extra["layouts"]), "cpu_seconds": fd_cpu,
                        "note": ("reference: real training patches vs real test patches (the floor)"
                                 if method == "real_train_patches" else
                                 f"{extra['layouts']} layouts from the SAGE-GAN generator vs real test patches"),
                        "config": {"gan": gan.config.get("gan"), "settings": asdict(b.settings), "argv": sys.argv[1:]}})
            b.add(row)
    if need_tstr:
        # TSTR: a fresh segmenter (the attention_unet recipe and budget) trained only on synthetic pairs.
        tstr_dir = g.dir / f"tstr{sfx}"
        syn = load_pairs(syn_dirs["mixed"] / "images", syn_dirs["mixed"] / "masks")
        syn_train, syn_val = split_validation(syn, 0.1, g.seed)
        cfg = seg_config(b, "attention-unet", g.budget_minutes, g.seed)
        fp = _fingerprint({"cfg": cfg, "syn": syn_stamp, "n": len(syn)})
        info = _done(tstr_dir, fp)
        if info is None:
            _fresh(tstr_dir)
            b.console.log(f"TSTR: training a fresh segmenter on {len(syn_train)} synthetic pairs only "
                          f"({g.budget_minutes:g} min)")
            _, wall, cpu = timed(lambda: train_segmenter(syn_train, tstr_dir, cfg, val=syn_val, progress=b.progress))
            info = _mark(tstr_dir, fp, wall_s=wall, cpu_s=cpu)
        tstr = Trained(tstr_dir, info["wall_s"], info["cpu_s"], {"seg": asdict(cfg), "synthetic": str(syn_dirs["mixed"])},
                       f"training: the whole budget ({g.budget_minutes:g} min) on synthetic pairs only "
                       "(validation: 10 % of the synthetic pairs)")
        results = {}
        for method, trained in (("trtr", full), ("tstr" + sfx, tstr)):
            records, wall, cpu = evaluate(b, predictor(b, trained, "attention_unet"), ds.test, trained.run_dir,
                                          f"{method} ({ds.name})")
            results[method] = (trained, records, wall, cpu)
        real_f1 = {}
        for method in ("trtr", "tstr" + sfx):
            trained, records, wall, cpu = results[method]
            note = ("the attention_unet run (real pairs)" if method == "trtr" else
                    f"a fresh attention_unet trained only on {len(syn_train)} synthetic pairs (mixed layouts, "
                    f"{styles} styles)")
            for row in segmentation_rows(b, "generator", g, method, trained, records, wall, cpu,
                                         {**common, "note": note, "n_synthetic_train": len(syn_train)
                                          if method != "trtr" else None}):
                if method == "trtr":
                    real_f1[row["subset"]] = row["f1_50"]
                else:
                    ref = real_f1.get(row["subset"])
                    ratio = row["f1_50"] / ref if ref else None
                    row.update(tstr_over_real_f1_50=ratio, target_ratio=0.8,
                               meets_target=(ratio >= 0.8) if ratio is not None else None,
                               target_note="the project's target: TSTR / real F1@0.5 >= 0.8 on the ordered subset")
                b.add(row)


# -- speed


def bench_speed(b: Bench) -> None:
    if b.store.has(benchmark="speed", dataset="simulated", method="attention_unet", k=None, seed=0, subset="all"):
        b.console.log("[dim]skip speed: in results.json")
        return
    s = b.settings
    params = {"size": s.speed_size, "patch": s.speed_patch, "repeats": s.speed_repeats, "device": s.device,
              "quick": s.quick, "workdir": str(b.out / "runs" / "speed_tmp")}
    b.console.log(f"speed: inference on a {s.speed_size}x{s.speed_size} image, training iterations at "
                  f"{s.speed_patch}x{s.speed_patch} (in a fresh process, for a clean peak RSS)")
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--speed-child", json.dumps(params)],
                              capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"speed child failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:
        b.failures.append(f"speed: {exc!r}")
        b.console.print(f"[red]{exc}")
        return
    finally:
        shutil.rmtree(b.out / "runs" / "speed_tmp", ignore_errors=True)
    row = b.base_row("speed", "simulated", "attention_unet", None, 0, "all")
    row.update(result)
    row.update(cpu_seconds=result["child_cpu_seconds"], train_seconds=None, n_test_images=1,
               config={"settings": asdict(s), "argv": sys.argv[1:]})
    b.add(row)
    figure_speed(b)


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _peak_rss_mb() -> tuple[float, float]:
    """(VmHWM of this process image, resource.getrusage ru_maxrss), in MiB.

    On Linux ru_maxrss survives fork + exec: a child started by a large parent reports at least
    the parent's peak, so the high-water mark of /proc/self/status is the figure to use there.
    """
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, maxrss
    except (OSError, ValueError, IndexError):
        pass
    return maxrss, maxrss


class _step_clock:
    """Context manager: replaces sagegan.progress.StepBar so that each training step is time-stamped.

    ``__enter__`` returns the wall-clock stamps; ``cpu_stamps`` holds the process CPU times (all
    threads) at the same moments, which stay meaningful on a busy machine.
    """

    def __enter__(self) -> list:
        import sagegan.progress as progress

        stamps: list[float] = []
        cpu_stamps = self.cpu_stamps = []
        self.module, self.original = progress, progress.StepBar

        class StampingBar(self.original):
            def __init__(self, total, done=0, enabled=True, description=""):
                super().__init__(total, done, False, description)

            def update(self, steps=1, loss=None):
                stamps.append(time.monotonic())
                cpu_stamps.append(time.process_time())

        progress.StepBar = StampingBar
        return stamps

    def __exit__(self, *exc) -> None:
        self.module.StepBar = self.original


def speed_samples(patch: int) -> list:
    """The four simulated labelled images the training-speed measurements train on."""
    from sagegan.io import Sample
    from sagegan.simulate import simulate_micrograph

    sims = [simulate_micrograph(max(2 * patch, 256), layout=SIM_LAYOUTS[i % 4], seed=[3, i], mean_diameter_px=24.0)
            for i in range(4)]
    return [Sample(f"s{i}", sim.image, sim.labels) for i, sim in enumerate(sims)]


def speed_child(params: dict) -> dict:
    """Runs in a fresh process: inference (ours vs MONAI, interleaved) then training iterations."""
    c0 = time.process_time()
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import AttentionUnet

    from sagegan.infer import Segmenter, _tile_side, predict_maps
    from sagegan.nets.attention_unet import AttentionUNet
    from sagegan.simulate import simulate_micrograph
    from sagegan.train_seg import SegTrainConfig, resolve_device

    device = resolve_device(params["device"])
    size, repeats = int(params["size"]), int(params["repeats"])
    torch.manual_seed(0)
    cfg = SegTrainConfig()
    net = AttentionUNet.from_config(cfg.model_config()).to(device).eval()
    seg = Segmenter(net, {"model": cfg.model_config(), "canonical_diameter_px": cfg.canonical_diameter_px})
    unit = simulate_micrograph(512, layout="hex", modality="sem", seed=0).image
    reps = -(-size // unit.shape[0])
    image = np.ascontiguousarray(np.tile(unit, (reps, reps))[:size, :size])
    tile, min_overlap = 1088, 64   # predict_maps' defaults; MONAI gets the same tiles below
    mpix = image.size / 1e6
    baseline_rss = _rss_mb()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours():
        predict_maps(seg, image, scale=1.0, tta=False, tile=tile, min_overlap=min_overlap)
        sync()

    monai_net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=4, channels=(16, 32, 64, 128, 256),
                              strides=(2, 2, 2, 2)).to(device).eval()
    roi = tuple(_tile_side(n, tile, min_overlap, net.divisor) for n in image.shape)
    overlap = tuple(0.0 if n <= r else min_overlap / r for n, r in zip(image.shape, roi))
    x = torch.from_numpy(image)[None, None].to(device)

    def monai_run():
        with torch.inference_mode():
            sliding_window_inference(x, roi, sw_batch_size=1, predictor=monai_net, overlap=overlap, mode="gaussian",
                                     padding_mode="reflect")
        sync()

    ours()                        # warm-up
    peak_ours, maxrss_ours = _peak_rss_mb()  # before MONAI has run: the peak of our inference
    monai_run()                   # warm-up
    t_ours, t_monai = [], []
    for _ in range(repeats):      # interleaved, so that load changes hit both alike
        t_ours.append(timed(ours)[1])
        t_monai.append(timed(monai_run)[1])
    ours_s, monai_s = float(np.median(t_ours)), float(np.median(t_monai))

    # -- training: real train_segmenter / train_gan runs; a progress-bar hook stamps the end of each
    # step, and the median interval between stamps is one iteration (setup and saving excluded).
    from sagegan.train_gan import GanTrainConfig, train_gan
    from sagegan.train_seg import train_segmenter

    patch = int(params["patch"])
    samples = speed_samples(patch)
    work = Path(params["workdir"])
    shutil.rmtree(work, ignore_errors=True)
    n_steps = 4 if params["quick"] else 8
    with _step_clock() as stamps:
        seg_run = train_segmenter(samples, work / "seg", replace(cfg, epochs=n_steps, batch_size=8, patch_size=patch,
                                                                 val_every=10 ** 6, device=params["device"]),
                                  val=[], progress=False)
        seg_s = float(np.median(np.diff(stamps)))
    gcfg = GanTrainConfig(patch_size=patch, batch_size=2, steps=n_steps, warmup_steps=1, ramp_steps=1,
                          val_every=10 ** 6, sample_every=10 ** 6, seed=0, device=params["device"])
    with _step_clock() as stamps:
        train_gan(samples, seg_run, work / "gan", gcfg, val=[], progress=False)
        gan_s = float(np.median(np.diff(stamps)))
    malloc = {v: os.environ.get(v) for v in MALLOC_VARS}
    return {
        "image_size": size, "tile": tile, "overlap": overlap, "repeats": repeats,
        "inference_seconds": ours_s, "inference_mpix_per_s": mpix / ours_s,
        "monai_inference_seconds": monai_s, "monai_inference_mpix_per_s": mpix / monai_s,
        "speed_ratio_vs_monai": monai_s / ours_s,
        "inference_note": ("sagegan.infer.predict_maps(scale=1, tta=False): percentile normalisation, sliding "
                           "window (Gaussian blending, sw_batch_size 2), softmax + distance maps, default "
                           "AttentionUNet widths (16..256), untrained weights; MONAI: "
                           "monai.networks.nets.AttentionUnet(channels=(16,32,64,128,256), strides=(2,2,2,2)) "
                           "with monai.inferers.sliding_window_inference at the same roi, overlap and blending; "
                           "median of interleaved repeats after one warm-up each, same process"),
        "peak_rss_mb": peak_ours, "ru_maxrss_mb": maxrss_ours, "baseline_rss_mb": baseline_rss,
        "rss_note": "peak RSS of a fresh process (VmHWM of /proc/self/status) after our inference, before MONAI "
                    "ran; ru_maxrss_mb: resource.getrusage's figure at the same point, which on Linux also "
                    "carries the parent process's peak across fork + exec; baseline: RSS after imports, model "
                    "and image were built",
        "seg_train_s_per_iter": seg_s, "seg_train_batch": 8, "seg_train_patch": patch,
        "seg_train_note": f"a real train_segmenter run of {n_steps} steps (default widths); median interval between "
                          "the ends of consecutive steps (batch sampling with augmentation, forward, loss, backward, "
                          "AdamW step); setup, validation and saving excluded",
        "gan_train_s_per_iter": gan_s, "gan_train_batch": 2, "gan_train_patch": patch,
        "gan_train_note": f"a real train_gan run of {n_steps} steps (default GanTrainConfig networks, after warm-up "
                          "from step 1); median interval between the ends of consecutive steps: one iteration = "
                          "generator + segmenter update and both discriminators' update; setup and saving excluded",
        "malloc_env": malloc, "malloc_env_set": all(malloc.values()),
        "malloc_note": "benchmarks/run.py re-executes itself with the sagegan CLI's glibc malloc settings unless "
                       "they are set already or SAGEGAN_NO_MALLOC_TUNING is set",
        "torch_threads": torch.get_num_threads(), "device": str(device),
        "child_cpu_seconds": time.process_time() - c0,
    }


# ------------------------------------------------------------------------------------ figures


def _rows(b: Bench, benchmark: str) -> list[dict]:
    return [r for r in b.store.rows if r.get("benchmark") == benchmark]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_segmentation(b: Bench, benchmark: str) -> None:
    rows = [r for r in _rows(b, benchmark) if r.get("f1_50") is not None]
    if not rows:
        return
    plt = _plt()
    subsets = [s for s in ORDER_SUBSETS if any(r["subset"] == s for r in rows)]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    metrics = ["f1_50", "dice"] + (["mean_diameter_error_rel"] if any(r.get("mean_diameter_error_rel") is not None
                                                                        for r in rows) else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / max(len(subsets), 1)
    for ax, metric in zip(axes[0], metrics):
        for j, subset in enumerate(subsets):
            vals = []
            for m in methods:
                hit = [r.get(metric) for r in rows if r["method"] == m and r["subset"] == subset]
                vals.append(hit[-1] if hit and hit[-1] is not None else np.nan)
            ax.bar(np.arange(len(methods)) + j * width, vals, width, label=subset)
        ax.set_xticks(np.arange(len(methods)) + width * (len(subsets) - 1) / 2)
        ax.set_xticklabels(methods, rotation=25, ha="right", fontsize=8)
        ax.set_title(metric)
        if metric != "mean_diameter_error_rel":
            ax.set_ylim(0, 1)
        else:
            ax.axhline(0, color="k", lw=0.5)
    axes[0][0].legend(fontsize=7)
    ds = sorted({r["dataset"] for r in rows})
    fig.suptitle(f"{benchmark} ({', '.join(ds)})", fontsize=10)
    _save(fig, b.out / f"{benchmark}.png")


def figure_few_labels(b: Bench) -> None:
    rows = [r for r in _rows(b, "few_labels") if r.get("f1_50") is not None and r["subset"] == "all"]
    if not rows:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHODS:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        by_k: dict[Any, list] = {}
        for r in mine:
            by_k.setdefault(r.get("n_labelled_images") or r["k"], []).append(r["f1_50"])
        ks = sorted(by_k)
        mean = [float(np.mean(by_k[k])) for k in ks]
        sd = [float(np.std(by_k[k], ddof=1)) if len(by_k[k]) > 1 else 0.0 for k in ks]
        ax.errorbar(ks, mean, yerr=sd, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images k (incl. 10 % validation)")
    ax.set_ylabel("F1@0.5 on the test images (mean ± sd over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"few labels ({', '.join(sorted({r['dataset'] for r in rows}))})", fontsize=10)
    _save(fig, b.out / "few_labels.png")


def figure_generator(b: Bench) -> None:
    rows = _rows(b, "generator")
    if not rows:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    fd = [r for r in rows if r.get("frechet_distance") is not None]
    labels = [f"{r['dataset']}\n{r['method'].replace('generator_', '').replace('_layouts', '')}" for r in fd]
    axes[0].bar(range(len(fd)), [r["frechet_distance"] for r in fd])
    axes[0].set_xticks(range(len(fd)))
    axes[0].set_xticklabels(labels, fontsize=7)
    axes[0].set_title("Fréchet distance to real test patches (phase 1 encoder)")
    seg_rows = [r for r in rows if r.get("f1_50") is not None]
    keys = sorted({(r["dataset"], r["subset"]) for r in seg_rows})
    methods = ["trtr"] + sorted({r["method"] for r in seg_rows if r["method"].startswith("tstr")})
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        vals = []
        for key in keys:
            hit = [r["f1_50"] for r in seg_rows if (r["dataset"], r["subset"]) == key and r["method"] == method]
            vals.append(hit[-1] if hit else np.nan)
        label = ("trained on real" if method == "trtr" else "trained on synthetic"
                 + (f" ({method[len('tstr_'):].replace('_', ' ')})" if method != "tstr" else ""))
        axes[1].bar(np.arange(len(keys)) + width * j, vals, width, label=label)
    axes[1].set_xticks(np.arange(len(keys)) + 0.4 - width / 2)
    axes[1].set_xticklabels([f"{d}\n{s}" for d, s in keys], fontsize=7)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("F1@0.5 on real test images")
    axes[1].legend(fontsize=7)
    _save(fig, b.out / "generator.png")


def figure_speed(b: Bench) -> None:
    rows = _rows(b, "speed")
    if not rows:
        return
    r = rows[-1]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.bar(["sagegan", "MONAI"], [r["inference_mpix_per_s"], r["monai_inference_mpix_per_s"]])
    ax.set_ylabel("inference MPix/s")
    ax.set_title(f"{r['image_size']}² image, tile {r['tile']}, {r['device']}", fontsize=9)
    _save(fig, b.out / "speed.png")


# ------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (results.json, figures, runs/)")
    p.add_argument("--quick", action="store_true", help="tiny budgets and test sets: checks every code path")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                   help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    p.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                   help=f"methods to run (default: all): {', '.join(METHODS)}")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock budget per learned method per (dataset, k, seed) (default 45; quick 0.3)")
    p.add_argument("--few-budget-minutes", type=float, default=None,
                   help="the budget for few_labels with k < all (default 15; quick: --budget-minutes)")
    p.add_argument("--data-root", default=None,
                   help="folder holding emps/ and bam_tio2_sem/ (default: $SAGEGAN_DATA_ROOT or ../shared/data)")
    p.add_argument("--simulated", action="store_true", help="use simulated data even when the real data exist")
    p.add_argument("--ks", nargs="+", default=None, help="few_labels k values, e.g. 4 8 16 32 all (default 8 all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="few_labels seeds for k < all (default 0 1 2)")
    p.add_argument("--max-train", type=int, default=None, help="use at most N training images (quick: 8)")
    p.add_argument("--max-test", type=int, default=None, help="use at most N test images (quick: 4)")
    p.add_argument("--n-fd", type=int, default=None, help="generator: patches / synthetic images per set (512)")
    p.add_argument("--generator-datasets", nargs="+", choices=("emps", "bam_tio2"), default=None, metavar="NAME",
                   help="generator: the datasets to measure (default: emps bam_tio2; quick: emps)")
    p.add_argument("--speed-size", type=int, default=None, help="speed: image side in px (2048; quick 512)")
    p.add_argument("--speed-patch", type=int, default=None, help="speed: training patch side (256; quick 64)")
    p.add_argument("--gan-seconds-per-step", type=float, default=3.0,
                   help="expected SAGE-GAN seconds per step, to place warm-up and ramp within the budget")
    p.add_argument("--gan-style-encoder", action="store_true",
                   help="train SAGE-GAN with the style encoder (GanTrainConfig.style_encoder); use another --out")
    p.add_argument("--synthesis-styles", default="random", choices=("random", "real"),
                   help="generator benchmark: latent z of the synthetic images (synthesize --styles); rows of "
                        "'real' carry the suffix _real_styles")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off without a terminal)")
    args = p.parse_args(argv)
    try:
        args.ks = [str(_parse_k(k)) for k in args.ks] if args.ks else None
    except (ValueError, argparse.ArgumentTypeError) as exc:
        p.error(f"--ks: {exc}")
    return args


def _reexec_with_malloc_settings(script: str | None = None) -> None:
    """As the sagegan CLI does: glibc malloc settings that speed up CPU training (set before start).

    ``script``: the file to run again (default: this one; other benchmark scripts pass theirs).
    """
    from sagegan.cli import MALLOC_ENV

    if sys.platform != "linux" or os.environ.get("SAGEGAN_NO_MALLOC_TUNING") or all(k in os.environ for k in MALLOC_ENV):
        return
    os.execve(sys.executable, [sys.executable, str(Path(script or __file__).resolve()), *sys.argv[1:]],
              {**os.environ, **MALLOC_ENV})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--speed-child"]:
        print(json.dumps(_clean(speed_child(json.loads(argv[1])))))
        return 0
    args = parse_args(argv)
    _reexec_with_malloc_settings()
    b = Bench(args)
    s = b.settings
    b.console.rule("sagegan benchmarks" + (" (quick)" if s.quick else ""))
    b.console.print(f"out: {b.out.resolve()}   data: {b.root.resolve()}{' (ignored: --simulated)' if args.simulated else ''}")
    b.console.print(f"budget per learned method: {s.budget_minutes:g} min wall-clock per (dataset, k, seed)"
                    f" (few_labels k < all: {s.few_budget_minutes:g} min); machine: {b.machine}")
    b.console.print(f"rows already in results.json: {len(b.store.rows)}")
    start = time.monotonic()
    runners = {"emps": bench_emps, "few_labels": bench_few_labels, "bam_tio2": bench_bam,
               "generator": bench_generator, "speed": bench_speed}
    for name in args.only or BENCHMARKS:
        b.console.rule(name)
        try:
            runners[name](b)
        except Exception as exc:
            b.failures.append(f"{name}: {exc!r}")
            b.console.print_exception(max_frames=8)
    print_summary(b, time.monotonic() - start)
    if b.failures:
        b.console.print("[red]failed:[/red]\n  " + "\n  ".join(b.failures))
        return 1
    return 0


def print_summary(b: Bench, seconds: float) -> None:
    from rich.table import Table

    table = Table(title=f"rows added in this run: {b.store.added} ({seconds / 60:.1f} min); "
                        f"results.json holds {len(b.store.rows)}")
    for col in ("benchmark", "dataset", "method", "k", "seed", "subset", "n test", "F1@0.5", "Dice", "PQ", "other",
                "train s"):
        table.add_column(col)

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    for r in b.touched:
        other = ""
        if r.get("frechet_distance") is not None:
            other = f"FD {r['frechet_distance']:.2f}"
        elif r.get("inference_mpix_per_s") is not None:
            other = f"{r['inference_mpix_per_s']:.3f} MPix/s (x{r['speed_ratio_vs_monai']:.2f} MONAI)"
        elif r.get("mean_diameter_error_nm") is not None:
            other = f"ΔD {r['mean_diameter_error_nm']:+.2f} nm"
        elif r.get("tstr_over_real_f1_50") is not None:
            other = f"TSTR/real {r['tstr_over_real_f1_50']:.2f}"
        table.add_row(r["benchmark"], r["dataset"], r["method"], str(r["k"]), str(r["seed"]), r["subset"],
                      fmt(r.get("n_test_images")), fmt(r.get("f1_50")), fmt(r.get("dice")), fmt(r.get("pq")), other,
                      fmt(r.get("train_seconds")))
    b.console.print(table)


if __name__ == "__main__":
    sys.exit(main())
