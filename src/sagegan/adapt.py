"""``sagegan adapt``: label-free adaptation of a segmenter to a user's unlabelled micrographs.

The source model (the bundled general model by default) segments every target image; its
confident particles (calibrated score >= ``min_score``) become pseudo-labels. Pixels it is
unsure of, the surroundings of its unconfident particles and background it half believes to be
particle, get weight 0 in the loss. Then, by ``method``:

* ``pseudo-label``: self-training of the source model on the pseudo-labelled target images;
* ``copy-paste``: the same, plus pairs made by pasting the confident particles into new random
  layouts on the target backgrounds (:mod:`sagegan.copy_paste`), whose masks are exact;
* ``sage-gan``: phase 2 learns to render the target images from the pseudo masks (paired term,
  image discriminator and cycle on the target images, segmenter initialised from the source);
  its generator then renders new layouts fitted to the pseudo masks, and the segmenter trains
  on those synthetic pairs plus the pseudo-labelled images.

``source`` adds labelled pairs of the source domain to the segmenter's training set.

Without target labels there is no validation score: the run keeps its **last** weights, and the
source model's post-processing and score calibration. The output is a normal segmenter run
folder (``segment --model RUN``); its config.json records the method, source model, images and
budget under ``adapt``. ``steps`` fixes the segmenter's steps (and, for sage-gan, as many GAN
steps before them), so a seeded run repeats; ``max_minutes`` caps the whole run's wall clock,
for sage-gan ``gan_share`` of it for the GAN.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .data import Augment
from .io import InputError, Sample, read_json, read_micrographs
from .runs import (CONFIG_FILE, SEGMENTER_FILE, RunFolder, Segmenter, check_run_folder, load_segmenter,
                   model_provenance, resolve_model)

METHODS = ("pseudo-label", "copy-paste", "sage-gan")
DEFAULT_METHOD = "pseudo-label"
DEFAULT_STEPS = 600
# fewer confident particles than this, over all images, are too few to learn from or fit a layout to
MIN_CONFIDENT_PARTICLES = 20
# background pixels whose particle probability exceeds this (but stays under the model's
# threshold) are left out of the loss: the source model half believes they are particle
UNSURE_FOREGROUND = 0.2


@dataclass
class AdaptConfig:
    """Every setting of an adaptation run; saved under ``adapt`` in the run's config.json."""

    method: str = DEFAULT_METHOD
    steps: int | None = None             # segmenter steps; DEFAULT_STEPS when no budget is given
    max_minutes: float | None = None     # a cap on the whole run
    seed: int = 0
    min_score: float = 0.5               # a pseudo-label's least calibrated score
    crop_bottom: int | str = 0          # rows of the data bar, or "auto" to find it
    lr: float = 1e-3
    batch_size: int = 8
    scale_jitter: float = 0.4
    pasted_per_image: int = 2            # copy-paste: pasted pairs per target image
    paste_cluster: float = 0.0           # copy-paste: share of particles pasted touching another
    synthetic_per_image: int = 4         # sage-gan: generated pairs per target image
    gan_share: float = 0.6               # sage-gan: share of --max-minutes for the GAN
    gan_patch_size: int = 128
    gan_batch_size: int = 4
    gan_options: dict = field(default_factory=dict)   # other GanTrainConfig settings (e.g. generator_widths)
    patch_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.steps is None and self.max_minutes is None:
            self.steps = DEFAULT_STEPS
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"--max-minutes must be positive, got {self.max_minutes}")
        if not 0.0 <= self.min_score < 1.0:
            raise ValueError(f"--min-score must be in [0, 1), got {self.min_score}")
        if not 0.0 <= self.paste_cluster <= 1.0:
            raise ValueError(f"--paste-cluster must be in [0, 1], got {self.paste_cluster}")


@dataclass
class PseudoLabel:
    """One target image as the source model sees it."""

    sample: Sample            # confident particles as labels, unsure pixels as ``ignore``
    all_labels: np.ndarray    # every particle the model found
    zoom: float
    n_confident: int


def pseudo_label(seg: Segmenter, image: np.ndarray, stem: str, min_score: float,
                 nm_per_px: float | None = None) -> PseudoLabel:
    """The source model's confident particles on one image, and the pixels it is unsure of."""
    from skimage.segmentation import relabel_sequential

    from .infer import segment_image

    result = segment_image(seg, image, min_score=0.0)
    labels, scores = result.labels, result.scores
    keep = np.concatenate([[False], np.asarray(scores) >= min_score])
    confident = relabel_sequential(np.where(keep[labels], labels, 0).astype(np.int32))[0]
    unsure = (labels > 0) & ~keep[labels]
    reach = max(1, int(round(2.0 / result.scale)))  # 2 px at the model's canonical scale
    ignore = ndi.binary_dilation(unsure, iterations=reach) if unsure.any() else unsure
    ignore |= (labels == 0) & (result.probs[0] < 1.0 - UNSURE_FOREGROUND)
    ignore &= confident == 0
    return PseudoLabel(Sample(stem, image, confident, nm_per_px, ignore=ignore), labels, result.scale,
                       int(keep.sum()))


def adapt(images: str | Path | Sequence[str | Path], out: str | Path, model: str | Path | None = None,
          config: AdaptConfig | None = None, source: str | Path | None = None, resume: bool = False,
          progress: bool = True, split: str | Path | None = None) -> Path:
    """Adapt ``model`` to the unlabelled ``images`` (a folder, files or patterns; only the stems
    listed in ``split`` when given); writes a segmenter run folder to ``out``.

    Raises :class:`sagegan.runs.TrainingInterrupted` after SIGINT/SIGTERM, once the run is saved
    (continue with ``resume``).
    """
    cfg = config or AdaptConfig()
    start = time.monotonic()
    out = Path(out)
    source_folder = resolve_model(model)
    check_run_folder(out, resume)  # before the slow part
    targets = read_micrographs(images, cfg.crop_bottom, split)
    seg = load_segmenter(source_folder)
    pseudo = _pseudo_labels(seg, targets, cfg.min_score, progress)
    n_confident = sum(p.n_confident for p in pseudo)
    if n_confident < MIN_CONFIDENT_PARTICLES:
        raise InputError(f"{images}: only {n_confident} particle(s) with a score of at least {cfg.min_score:g} in "
                         f"{len(pseudo)} image(s), too few to adapt on (at least {MIN_CONFIDENT_PARTICLES}); "
                         "add images, or lower --min-score")
    source_pairs = _source_pairs(source, cfg.crop_bottom) if source is not None else []
    record = {"adapt": {**asdict(cfg), "source_model": {"path": str(source_folder), **model_provenance(seg)},
                        "images": [str(Path(p)) for p in ([images] if isinstance(images, (str, Path)) else images)],
                        "split": str(split) if split is not None else None,
                        "target_stems": [p.sample.stem for p in pseudo], "n_confident_particles": n_confident,
                        "n_found_particles": int(sum(len(np.unique(p.all_labels)) - 1 for p in pseudo)),
                        "source_data": str(source) if source is not None else None,
                        "checkpoint": "last (no target labels: no validation score)"}}
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    with RunFolder(out, resume=True) as folder:
        record["zoom_guide"] = _keep_zoom_guide(seg, folder.path)
        train = [p.sample for p in pseudo] + source_pairs
        init = source_folder / SEGMENTER_FILE
        if cfg.method == "copy-paste":
            from .copy_paste import copy_paste_pairs

            train += copy_paste_pairs([p.sample for p in pseudo], cfg.pasted_per_image * len(pseudo), rng,
                                      all_particles=[p.all_labels for p in pseudo], cluster=cfg.paste_cluster)
        elif cfg.method == "sage-gan":
            synthetic, init = _sage_gan_pairs(pseudo, source_folder, out, cfg, start, progress)
            train += synthetic
        seg_minutes = None if cfg.max_minutes is None else max(0.05, cfg.max_minutes - (time.monotonic() - start) / 60)
        _train_segmenter(train, folder, cfg, source_folder, init, seg_minutes, record, progress)
    return folder.final


ZOOM_GUIDE_DIR = "zoom_guide"


def _keep_zoom_guide(source: Segmenter, out: Path) -> str:
    """Copy the model whose zoom search the adapted one keeps into ``out``; returns its folder name.

    An adapted model segments well at the right zoom, but its own search can pick a zoom 2-4x off
    (training on its own confident particles, or on pasted or rendered ones, makes it confident at
    the wrong scale too), whereas the source's search is what produced the pseudo-labels; on the
    simulated pair's adaptation images the source's search scored higher (BENCHMARKS.md). The
    source's own guide is kept when it has one, so adapting twice still uses the first search.
    """
    import shutil

    guide = source.zoom_guide or source
    target = out / ZOOM_GUIDE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, SEGMENTER_FILE):
        shutil.copyfile(guide.path / name, target / name)
    return ZOOM_GUIDE_DIR


def _pseudo_labels(seg: Segmenter, targets, min_score: float, progress: bool) -> list[PseudoLabel]:
    iterator = targets
    if progress:
        from rich.progress import track

        iterator = track(targets, description="pseudo-labelling")
    return [pseudo_label(seg, image, stem, min_score, nm) for stem, image, nm in iterator]


def _source_pairs(source: str | Path, crop_bottom: int) -> list[Sample]:
    from .io import load_pairs, resolve_data_dirs

    images_dir, masks_dir = resolve_data_dirs(source, None, None)
    return load_pairs(images_dir, masks_dir, None, crop_bottom=crop_bottom)


def _sage_gan_pairs(pseudo: list[PseudoLabel], source_folder: Path, out: Path, cfg: AdaptConfig, start: float,
                    progress: bool) -> tuple[list[Sample], Path]:
    """Train the GAN on (pseudo mask, target image) pairs and render new layouts with it; returns
    the synthetic pairs and the GAN's segmenter weights (the segmenter's starting point)."""
    from .io import load_pairs
    from .synthesize import synthesize
    from .train_gan import GanTrainConfig, train_gan

    gan_dir, synthetic_dir = out / "gan", out / "synthetic"
    # the generator must see every particle the model found; the segmenter's term skips unsure pixels
    pairs = [Sample(p.sample.stem, p.sample.image, p.all_labels, p.sample.nm_per_px, ignore=p.sample.ignore)
             for p in pseudo]
    steps = cfg.steps or 10 ** 6
    minutes = None
    if cfg.max_minutes is not None:
        minutes = max(0.05, cfg.gan_share * (cfg.max_minutes - (time.monotonic() - start) / 60))
    gan_cfg = GanTrainConfig(steps=steps, max_minutes=minutes, seed=cfg.seed, device=cfg.device,
                             patch_size=cfg.gan_patch_size, batch_size=cfg.gan_batch_size,
                             warmup_steps=min(500, max(1, steps // 4)) if cfg.steps else 100,
                             ramp_steps=min(1000, max(1, steps // 2)) if cfg.steps else 200,
                             val_every=max(1, min(250, steps)), sample_every=max(1, min(250, steps)),
                             **cfg.gan_options)
    finished = (gan_dir / "config.json").exists() and "train_seconds" in read_json(gan_dir / "config.json")
    if not finished:
        resume = (gan_dir / "last.safetensors").exists()
        train_gan(pairs, source_folder, gan_dir, gan_cfg, val=[], resume=resume, overwrite=not resume and
                  gan_dir.exists(), progress=progress)
    record = synthetic_dir / "synthesis.json"
    if not (record.exists() and read_json(record).get("complete", True)):
        synthesize(gan_dir, cfg.synthetic_per_image * len(pseudo), synthetic_dir, layouts="new", seed=cfg.seed,
                   progress=progress, overwrite=True)
    return load_pairs(synthetic_dir / "images", synthetic_dir / "masks", None), gan_dir / SEGMENTER_FILE


def _train_segmenter(train: list[Sample], folder: RunFolder, cfg: AdaptConfig, source_folder: Path, init: Path,
                     minutes: float | None, record: dict, progress: bool) -> None:
    from .train_seg import SegTrainConfig, config_from_init, train_segmenter

    steps = cfg.steps or 10 ** 6
    seg_cfg = config_from_init(SegTrainConfig(
        lr=cfg.lr, batch_size=cfg.batch_size, patch_size=cfg.patch_size, epochs=10 ** 6, max_steps=steps, max_minutes=minutes,
        val_every=max(1, min(100, steps)), seed=cfg.seed, device=cfg.device, checkpoint="last",
        augment=Augment(scale_jitter=cfg.scale_jitter)), source_folder)
    resume = (folder.path / "last.safetensors").exists()
    train_segmenter(train, folder, seg_cfg, val=[], resume=resume, progress=progress, init_weights=init,
                    record=record)
