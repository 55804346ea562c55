"""The SAGE-GAN recipe as one library function: phase 1 -> phase 2 -> synthesis -> final segmenter.

    phase 1   train_segmenter on the labelled pairs                      -> out/phase1
    phase 2   train_gan around the phase 1 segmenter                     -> out/gan
    synthesis synthetic image/mask pairs from the GAN's generator        -> out/synthetic
    final     "finetune": the GAN's segmenter trained on real + synthetic -> out/finetuned
              "retrain":  a fresh segmenter trained on real + synthetic   -> out/retrained

Every stage has an explicit :class:`Budget` in steps or wall-clock minutes (steps make a run
repeat exactly; minutes cap it), and the whole recipe can be given a deadline. ``sagegan demo``,
the benchmarks and label-free adaptation call :func:`run_recipe`; a finished phase 1 or GAN run
can be passed in instead of being trained again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .io import Sample, load_pairs
from .progress import TrainingCallbacks
from .runs import SEGMENTER_FILE
from .synthesize import synthesize
from .train_gan import GanTrainConfig, train_gan
from .train_seg import SegTrainConfig, train_segmenter

FINAL_STAGES = ("finetune", "retrain")
# the shortest stage a deadline leaves, so that a stage always validates and saves once
MIN_STAGE_SECONDS = 1.0


@dataclass
class Budget:
    """How long a stage trains: ``steps`` (optimisation steps) and/or ``minutes`` (wall clock).

    Both None leaves the stage's own config as it is; both given stop at whichever comes first.
    """

    steps: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"a budget needs at least one step, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"a budget needs a positive number of minutes, got {self.minutes}")

    def seg_config(self, cfg: SegTrainConfig) -> SegTrainConfig:
        if self.steps is not None:
            cfg = replace(cfg, max_steps=self.steps, epochs=max(cfg.epochs, self.steps))
        return cfg if self.minutes is None else replace(cfg, max_minutes=self.minutes)

    def gan_config(self, cfg: GanTrainConfig) -> GanTrainConfig:
        if self.steps is not None:
            cfg = replace(cfg, steps=self.steps)
        return cfg if self.minutes is None else replace(cfg, max_minutes=self.minutes)


@dataclass
class RecipeConfig:
    """Every setting of the recipe; the budgets override the stage configs' own limits."""

    seg: SegTrainConfig = field(default_factory=SegTrainConfig)
    phase1: Budget = field(default_factory=Budget)
    gan: GanTrainConfig = field(default_factory=GanTrainConfig)
    phase2: Budget = field(default_factory=Budget)
    n_synthetic: int = 24
    synthetic_layouts: str = "new"          # real | new | mixed (see sagegan.synthesize)
    synthetic_styles: str = "random"        # random | real
    synthetic_size: int = 256
    synthesis_seed: int | None = None       # default: the phase 1 seed
    final: str | None = "finetune"          # finetune | retrain | None (stop after synthesis)
    final_seg: SegTrainConfig | None = None  # default: ``seg``
    final_budget: Budget = field(default_factory=Budget)
    # wall-clock minutes for every stage run_recipe runs itself; the final stage gets what is left
    deadline_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.final is not None and self.final not in FINAL_STAGES:
            raise ValueError(f"final stage must be one of {', '.join(FINAL_STAGES)} or None, got {self.final!r}")
        if self.n_synthetic < 1 and self.final is not None:
            raise ValueError("the final stage needs at least one synthetic pair")


@dataclass
class RecipeResult:
    """The run folders of each stage, and the wall-clock seconds of the stages that ran here."""

    phase1: Path
    gan: Path
    synthetic: Path | None = None
    final: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def run_recipe(train: Sequence[Sample], val: Sequence[Sample] | None, out: str | Path,
               config: RecipeConfig | None = None, data_source: dict | None = None,
               callbacks: TrainingCallbacks | None = None, progress: bool = True,
               phase1_run: str | Path | None = None, gan_run: str | Path | None = None) -> RecipeResult:
    """Run the recipe on labelled ``train`` pairs (``val`` chooses checkpoints in every stage).

    ``phase1_run`` / ``gan_run`` reuse finished runs instead of training those stages.
    ``data_source`` (where the pairs were read: ``images``, ``masks``, ``split``, ``crop_bottom``)
    is recorded in the GAN run, so that ``synthesize --layouts real`` can re-read them.
    """
    cfg = config or RecipeConfig()
    out = Path(out)
    started = time.monotonic()
    seconds: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.monotonic()
        result = fn()
        seconds[name] = time.monotonic() - t
        return result

    if phase1_run is None:
        phase1_run = timed("phase1", lambda: train_segmenter(
            train, out / "phase1", cfg.phase1.seg_config(cfg.seg), val=val, progress=progress, callbacks=callbacks))
    if gan_run is None:
        gan_run = timed("gan", lambda: train_gan(
            train, phase1_run, out / "gan", cfg.phase2.gan_config(cfg.gan), val=val, progress=progress,
            data_source=data_source, callbacks=callbacks))
    result = RecipeResult(Path(phase1_run), Path(gan_run), seconds=seconds)
    if cfg.final is None and cfg.n_synthetic < 1:
        return result
    seed = cfg.seg.seed if cfg.synthesis_seed is None else cfg.synthesis_seed
    result.synthetic = timed("synthesis", lambda: synthesize(
        gan_run, cfg.n_synthetic, out / "synthetic", layouts=cfg.synthetic_layouts, seed=seed,
        size=cfg.synthetic_size, progress=progress, styles=cfg.synthetic_styles, overwrite=True))
    if cfg.final is None:
        return result
    # synthesize wrote these masks as label maps: read them as such, never guess
    synthetic = load_pairs(result.synthetic / "images", result.synthetic / "masks", mask_kind="labels")
    budget = _final_budget(cfg, time.monotonic() - started)
    final_cfg = budget.seg_config(cfg.final_seg or cfg.seg)
    init = Path(gan_run) / SEGMENTER_FILE if cfg.final == "finetune" else None
    folder = out / ("finetuned" if cfg.final == "finetune" else "retrained")
    result.final = timed("final", lambda: train_segmenter(
        list(train) + synthetic, folder, final_cfg, val=val, progress=progress, init_weights=init,
        callbacks=callbacks))
    return result


def _final_budget(cfg: RecipeConfig, elapsed_s: float) -> Budget:
    """The final stage's budget, capped by what the deadline leaves."""
    if cfg.deadline_minutes is None:
        return cfg.final_budget
    left_min = max(MIN_STAGE_SECONDS, cfg.deadline_minutes * 60 - elapsed_s) / 60
    minutes = left_min if cfg.final_budget.minutes is None else min(cfg.final_budget.minutes, left_min)
    return replace(cfg.final_budget, minutes=minutes)
