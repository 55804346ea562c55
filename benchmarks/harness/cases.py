"""What a benchmark run runs: its settings and the declarative list of cases.

A :class:`Case` is one (benchmark, dataset, method, k, seed, budget). :func:`plan` lists the
cases that the command line asks for; the runner runs them in that order. Benchmarks:

* ``emps``: every method on the upstream EMPS split (k = all, seed 0);
* ``few_labels``: every method on k EMPS training images drawn with each seed (``--ks``,
  ``--seeds``; k = all with seed 0 only);
* ``bam_tio2``: every method on BAM TiO2 (k = all, seed 0);
* ``generator``: the SAGE-GAN generator of the k = all group of each dataset (Fréchet distance,
  TSTR next to TRTR);
* ``speed``: inference and training speed on a simulated image.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

BENCHMARKS = ("emps", "few_labels", "bam_tio2", "generator", "speed")
# the registered methods (methods.REGISTRY), in the order of tables and figures
METHODS = ("classical", "unet", "attention_unet", "copy_paste", "sage_gan", "sage_gan_retrain")
SEGMENTATION_BENCHMARKS = {"emps": "emps", "few_labels": "emps", "bam_tio2": "bam_tio2"}  # benchmark -> dataset


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
        """Full-size settings, or tiny ones with ``--quick``; options given override both."""
        q = args.quick

        def pick(given: Any, quick: Any, full: Any) -> Any:
            return given if given is not None else (quick if q else full)

        budget = pick(args.budget_minutes, 0.3, 45.0)
        return cls(
            quick=q, budget_minutes=budget, few_budget_minutes=pick(args.few_budget_minutes, budget, 15.0),
            max_train=pick(args.max_train, 8, None), max_test=pick(args.max_test, 4, None),
            seg_widths=(8, 16, 32) if q else (16, 32, 64, 128, 256),
            seg_patch=64 if q else 256, seg_batch=4 if q else 8,
            seg_val_every=10 if q else 100, seg_val_max_images=2 if q else 24,
            gan_patch=64 if q else 256, gan_generator_widths=(8, 16, 32) if q else (16, 32, 64, 128),
            gan_latent_dim=16 if q else 128, gan_disc_channels=8 if q else 32,
            gan_val_every=5 if q else 100, gan_val_max_images=2 if q else 8,
            gan_seconds_per_step=args.gan_seconds_per_step,
            n_synthetic_retrain=4 if q else 0,  # 0: 4 per real training image, 64..400
            n_fd=pick(args.n_fd, 8, 512), classical_max_images=4 if q else 24,
            speed_size=pick(args.speed_size, 512, 2048), speed_patch=pick(args.speed_patch, 64, 256),
            speed_repeats=1 if q else 3, device=args.device,
            few_ks=tuple(parse_k(k) for k in (args.ks or (["4"] if q else ["8", "all"]))),
            few_seeds=tuple(pick(args.seeds, [0], [0, 1, 2])),
            gan_style_encoder=args.gan_style_encoder, synthesis_styles=args.synthesis_styles)


def parse_k(text: str) -> int | str:
    if str(text).lower() == "all":
        return "all"
    k = int(text)
    if k < 2:
        raise argparse.ArgumentTypeError("k must be at least 2 (one image is held out for validation)")
    return k


@dataclass(frozen=True)
class Case:
    """One unit of a benchmark: a method on one (dataset, k, seed) with its wall-clock budget."""

    benchmark: str
    dataset: str
    method: str
    k: Any
    seed: int
    budget_minutes: float | None

    @property
    def group(self) -> tuple:
        """Cases with the same group share their labelled images and their runs."""
        return (self.dataset, self.k, self.seed, self.budget_minutes)


def plan(settings: Settings, benchmarks: tuple[str, ...], methods: tuple[str, ...],
         generator_datasets: tuple[str, ...] | None = None) -> list[Case]:
    """The cases of ``benchmarks`` (in that order) for ``methods``."""
    cases: list[Case] = []
    B = settings.budget_minutes
    for benchmark in benchmarks:
        if benchmark in ("emps", "bam_tio2"):
            cases += [Case(benchmark, SEGMENTATION_BENCHMARKS[benchmark], m, "all", 0, B) for m in methods]
        elif benchmark == "few_labels":
            for k in settings.few_ks:
                budget = B if k == "all" else settings.few_budget_minutes
                for seed in ([0] if k == "all" else settings.few_seeds):
                    cases += [Case(benchmark, "emps", m, k, seed, budget) for m in methods]
        elif benchmark == "generator":
            names = generator_datasets or (("emps",) if settings.quick else ("emps", "bam_tio2"))
            cases += [Case(benchmark, name, "sage_gan", "all", 0, B) for name in names]
        elif benchmark == "speed":
            cases.append(Case(benchmark, "simulated", "attention_unet", None, 0, None))
        else:
            raise ValueError(f"unknown benchmark {benchmark!r}")
    return cases
