"""The benchmark data sets and their splits (benchmark definitions, so they live here).

* ``emps``: the upstream EMPS split, ``train.csv`` / ``test.csv``; test subsets ``ordered`` and
  ``ordered_or_partial`` from ``order_labels.csv``.
* ``bam_tio2``: BAM TiO2 SEM, the first 30 sorted ids train and the last 10 test; the rows from
  712 down (the data bar) are cropped (``crop_bottom`` 56); 7.344 nm/px.
* ``simulated``: micrographs from ``sagegan.simulate`` written under ``OUT/data``, used when the
  real data are missing (``--quick``) or with ``--simulated``.

A :class:`Group` is one (dataset, k, seed): k training images drawn with the seed, 10 % of them
held out for validation. Its :meth:`Group.identity` (dataset identity and stems, no paths) goes
into the keys of the runs trained on it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ORDER_SUBSETS = ("all", "ordered", "ordered_or_partial")
BAM_NM_PER_PX = 7.344
BAM_CROP_BOTTOM = 56
BAM_N_TRAIN = 30
SIM_LAYOUTS = ("hex", "random", "square", "sparse")
VALIDATION_FRACTION = 0.1


@dataclass
class Dataset:
    """Train and test stems of one benchmark data set; images are read when first needed."""

    name: str
    train_stems: list
    test_stems: list
    loader: Callable[[Sequence[str]], list]     # stems -> sagegan.io.Sample list
    identity: dict                              # what defines the data, for run keys (no paths)
    source: dict                                # image and mask folders, for train_gan's data_source
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


def data_root(given: str | None) -> Path:
    """``--data-root``, else ``$SAGEGAN_DATA_ROOT``, else ``../shared/data`` beside the checkout."""
    if given:
        return Path(given)
    if os.environ.get("SAGEGAN_DATA_ROOT"):
        return Path(os.environ["SAGEGAN_DATA_ROOT"])
    return REPO / ".." / "shared" / "data"


def real_data_dir(root: Path, name: str) -> Path:
    return root / {"emps": "emps", "bam_tio2": "bam_tio2_sem"}[name]


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
    with (base / "order_labels.csv").open(newline="") as f:
        return {Path(rec["file"]).stem: rec["order_label_visual"] for rec in csv.DictReader(f)}


def _source(images: Path, masks: Path, crop_bottom: int = 0) -> dict:
    return {"images": str(images.resolve()), "masks": str(masks.resolve()), "crop_bottom": crop_bottom}


def load_emps(root: Path, max_train: int | None = None, max_test: int | None = None) -> Dataset:
    """The upstream split; ``max_test`` takes the order classes in turn, so every subset is tested."""
    from sagegan.io import load_pairs, read_split

    base = root / "emps"
    train_stems, test_stems = read_split(base / "train.csv"), read_split(base / "test.csv")
    order = emps_order_labels(base)
    if max_train is not None:
        train_stems = train_stems[:max_train]
    if max_test is not None:
        groups = [[s for s in test_stems if order.get(s) == "ordered"],
                  [s for s in test_stems if order.get(s) == "partially_ordered"],
                  [s for s in test_stems if order.get(s) not in ("ordered", "partially_ordered")]]
        chosen = set(_round_robin(groups, max_test))
        test_stems = [s for s in test_stems if s in chosen]
    images, masks = base / "images", base / "segmaps"
    split = "upstream train.csv / test.csv" + (" (subsampled: --quick/--max-*)" if max_train or max_test else "")
    return Dataset("emps", train_stems, test_stems, lambda stems: load_pairs(images, masks, stems),
                   {"name": "emps", "split": split}, _source(images, masks), order=order,
                   subsets_used=ORDER_SUBSETS, split=split)


def load_bam(root: Path, max_train: int | None = None, max_test: int | None = None) -> Dataset:
    """First 30 sorted ids train, the rest (10) test; data bar cropped; 7.344 nm/px."""
    from sagegan.io import load_pairs

    base = root / "bam_tio2_sem"
    stems = sorted({p.stem for p in (base / "images").iterdir() if p.suffix.lower() == ".png"})
    train_stems, test_stems = stems[:BAM_N_TRAIN][:max_train], stems[BAM_N_TRAIN:][:max_test]
    images, masks = base / "images", base / "masks"
    split = f"first {BAM_N_TRAIN} sorted ids train, last {len(stems) - BAM_N_TRAIN} test; " \
            f"rows 712+ cropped; {BAM_NM_PER_PX} nm/px"

    def load(st: Sequence[str]) -> list:
        return load_pairs(images, masks, st, crop_bottom=BAM_CROP_BOTTOM, nm_per_px=BAM_NM_PER_PX)

    identity = {"name": "bam_tio2", "split": split, "crop_bottom": BAM_CROP_BOTTOM, "nm_per_px": BAM_NM_PER_PX}
    return Dataset("bam_tio2", train_stems, test_stems, load, identity,
                   _source(images, masks, BAM_CROP_BOTTOM), nm_per_px=BAM_NM_PER_PX, split=split)


def load_simulated(out: Path, quick: bool, max_train: int | None = None, max_test: int | None = None,
                   nm_per_px: float | None = None) -> Dataset:
    """Simulated SEM/TEM micrographs written under ``OUT/data/simulated_<size>px`` (hex and square
    layouts count as ordered)."""
    from sagegan.io import Sample, read_mask, read_micrograph, write_image, write_labels
    from sagegan.simulate import simulate_micrograph

    n_train, n_test = max_train or 12, max_test or 8
    size = 192 if quick else 384
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
        # read back what was written (8-bit), so that training and synthesis see the same pixels
        samples[stem] = Sample(stem, read_micrograph(image_path).image, read_mask(mask_path), nm_per_px,
                               image_path, mask_path)
        order[stem] = "ordered" if layout in ("hex", "square") else "not_ordered"
        (train_stems if i < n_train else test_stems).append(stem)
    split = f"simulated: {n_train} train, {n_test} test, {size} px, hex/square = ordered"
    identity = {"name": "simulated", "split": split, "size": size, "seed": 7, "nm_per_px": nm_per_px}
    return Dataset("simulated", train_stems, test_stems, lambda stems: [samples[s] for s in stems], identity,
                   _source(base / "images", base / "masks"), nm_per_px=nm_per_px, order=order,
                   subsets_used=("all",) if nm_per_px else ORDER_SUBSETS, split=split)


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

    def identity(self) -> dict:
        """What the runs of this group are trained on: the data set and the stems."""
        return {"data": self.ds.identity, "k": self.k, "seed": self.seed, "train_stems": self.train_stems,
                "val_stems": self.val_stems}

    def describe(self) -> dict:
        """The split, for the rows' ``config``."""
        d = {"dataset": self.ds.name, "k": self.k, "seed": self.seed, "n_train": len(self.train_stems),
             "n_val": len(self.val_stems), "split": self.ds.split,
             "validation": "10 % of the labelled images (sagegan.validation.split_validation with this seed)",
             "val_stems": self.val_stems}
        if len(self.train_stems) <= 32:
            d["train_stems"] = self.train_stems
        return d


def make_group(ds: Dataset, k: Any, seed: int, budget_minutes: float, runs_dir: Path) -> Group:
    """k training images drawn at random with ``seed`` (all for k = "all"), 10 % of them held out;
    the group's runs go to ``runs_dir/<dataset>/k<k>_s<seed>``."""
    from sagegan.validation import split_validation

    pool = list(ds.train_stems)
    if k != "all":
        if k > len(pool):
            raise ValueError(f"k={k} but {ds.name} has only {len(pool)} training images")
        idx = np.sort(np.random.default_rng(seed).choice(len(pool), k, replace=False))
        pool = [pool[i] for i in idx]
    train, val = split_validation(pool, VALIDATION_FRACTION, seed)
    return Group(ds, k, seed, list(train), list(val), budget_minutes, runs_dir / ds.name / f"k{k}_s{seed}")
