"""The generator benchmark: how close SAGE-GAN's synthetic images come to the real ones.

For the k = all group of a data set:

* Fréchet distance between real test patches (at the canonical particle scale, as the GAN saw
  them) and synthetic images of real, new and mixed layouts, on the encoder features of the
  phase 1 segmenter (the attention_unet run); real training patches give the floor;
* TSTR: a fresh segmenter (the attention_unet recipe and budget) trained only on synthetic pairs
  and tested on the real test images, next to TRTR (the attention_unet run itself).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .cache import timed
from .context import Context
from .datasets import Dataset, Group
from .evaluation import score_trained
from .methods import Trained, attention_runs, sage_gan_runs, seg_config

FD_LAYOUTS = ("real", "new", "mixed")
FD_NOTE = ("global-average-pooled outputs of each encoder stage of the phase 1 segmenter (attention_unet run), "
           "concatenated; images percentile-normalised")
TSTR_TARGET = 0.8


def styles_suffix(ctx: Context) -> str:
    """Suffix of the rows' methods and folders: none for random z, "_real_styles" for encoded z."""
    styles = ctx.settings.synthesis_styles
    return "" if styles == "random" else f"_{styles}_styles"


def fd_methods(ctx: Context) -> list[str]:
    return [f"generator_{lay}_layouts{styles_suffix(ctx)}" for lay in FD_LAYOUTS] + ["real_train_patches"]


def generator_needs(ctx: Context, ds: Dataset, g: Group) -> tuple[bool, bool]:
    """Whether the Fréchet-distance rows and the TSTR/TRTR rows of this group are still missing."""
    def has(method: str, subset: str) -> bool:
        return ctx.store.has(benchmark="generator", dataset=ds.name, method=method, k=g.k, seed=g.seed, subset=subset)

    need_fd = not all(has(m, "all") for m in fd_methods(ctx))
    need_tstr = not all(has(m, s) for m in ("tstr" + styles_suffix(ctx), "trtr") for s in ds.subsets())
    return need_fd, need_tstr


def run_generator(ctx: Context, ds: Dataset, budget_minutes: float) -> None:
    """The generator rows of ``ds``'s k = all group (its attention_unet and sage_gan runs)."""
    g = ctx.group(ds, "all", 0, budget_minutes)
    if not any(generator_needs(ctx, ds, g)):
        ctx.console.log(f"[dim]skip generator / {ds.name}: in results.json")
        return
    half, full = attention_runs(ctx, g)
    _, gan = sage_gan_runs(ctx, g, half)
    generator_rows(ctx, ds, g, full, gan, generator_seconds=half.wall_s + gan.wall_s)


def real_patches(samples: Sequence, canonical: float | None, n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` patches at the canonical particle scale (as the GAN saw them), spread over the images."""
    from sagegan.data import prepare, sample_patch

    rng = np.random.default_rng(seed)
    items = [prepare(s, canonical) for s in samples]
    return [sample_patch(items[i % len(items)], size, rng, None, foreground_bias=0.5)[0] for i in range(n)]


def synthetic_sets(ctx: Context, g: Group, gan: Trained) -> dict[str, tuple[Path, str, float]]:
    """layouts -> (folder of synthetic pairs from ``gan``, its key, synthesis wall seconds)."""
    from sagegan.synthesize import synthesize

    n, size, styles = ctx.settings.n_fd, ctx.settings.gan_patch, ctx.settings.synthesis_styles
    sets = {}
    for lay in FD_LAYOUTS:
        def make(d: Path, lay: str = lay) -> dict:
            ctx.console.log(f"synthesising {n} {lay}-layout pairs ({styles} styles) from {gan.run_dir}")
            _, wall, cpu = timed(lambda: synthesize(gan.run_dir, n, d, layouts=lay, seed=1000, size=size,
                                                    progress=ctx.progress, styles=styles))
            return {"wall_s": wall, "cpu_s": cpu}

        spec = {"gan": gan.key, "n": n, "size": size, "layouts": lay, "synthesis_styles": styles}
        built = ctx.build(g, f"synthetic_fd_{lay}{styles_suffix(ctx)}", spec, make)
        sets[lay] = (built.run_dir, built.key, built.info["wall_s"])
    return sets


def frechet_rows(ctx: Context, ds: Dataset, g: Group, full: Trained, gan: Trained, sets: dict,
                 generator_seconds: float, common: dict) -> None:
    """Fréchet distance of each synthetic set, and of real training patches, to real test patches."""
    from sagegan.infer import encoder_features
    from sagegan.io import read_micrograph
    from sagegan.metrics import frechet_distance
    from sagegan.runs import load_segmenter, resolve_device

    seg = load_segmenter(full.run_dir, resolve_device(ctx.settings.device))
    n, size = ctx.settings.n_fd, ctx.settings.gan_patch
    canonical = seg.canonical_diameter_px
    feats_test, _, fd_cpu = timed(lambda: encoder_features(seg, real_patches(ds.test, canonical, n, size, 1)))
    compared = {m: None for m in fd_methods(ctx)[:-1]}
    compared["real_train_patches"] = encoder_features(seg, real_patches(g.train, canonical, n, size, 2))
    for method, lay in zip(fd_methods(ctx), [*FD_LAYOUTS, None]):
        feats = compared[method]
        if feats is None:
            paths = sorted((sets[lay][0] / "images").glob("*.png"))
            feats = encoder_features(seg, [read_micrograph(p).image for p in paths])
        few = min(len(feats), len(feats_test)) <= feats.shape[1]
        row = ctx.base_row("frechet", "generator", ds.name, method, g.k, g.seed, "all")
        row.update(common, layouts=lay)
        row.update({"frechet_distance": frechet_distance(feats_test, feats), "n_real_patches": len(feats_test),
                    "n_test_images": len(ds.test_stems), "n_compared": len(feats), "feature_dim": int(feats.shape[1]),
                    "fd_note": (f"only {min(len(feats), len(feats_test))} samples for {feats.shape[1]} feature "
                                "dimensions: rank-deficient covariances, the distance is biased and only "
                                "comparable between rows with the same n" if few else
                                "comparable between rows with the same n and features (FD is biased in n)"),
                    "train_seconds": generator_seconds if lay else None,
                    "synthesis_seconds": sets[lay][2] if lay else None, "cpu_seconds": fd_cpu,
                    "note": (f"{lay} layouts from the SAGE-GAN generator vs real test patches" if lay else
                             "reference: real training patches vs real test patches (the floor)"),
                    "config": {"gan": gan.config.get("gan"), "settings": asdict(ctx.settings),
                               "argv": sys.argv[1:]}})
        ctx.add(row)


def tstr_rows(ctx: Context, ds: Dataset, g: Group, full: Trained, mixed: tuple[Path, str, float],
              common: dict) -> None:
    """TSTR (a fresh segmenter on synthetic pairs only) and TRTR (``full``) on the real test images."""
    from sagegan.io import load_pairs
    from sagegan.train_seg import train_segmenter
    from sagegan.validation import split_validation

    sfx, styles = styles_suffix(ctx), ctx.settings.synthesis_styles
    syn = load_pairs(mixed[0] / "images", mixed[0] / "masks")
    syn_train, syn_val = split_validation(syn, 0.1, g.seed)
    cfg = seg_config(ctx.settings, "attention-unet", g.budget_minutes, g.seed)

    def train(run_dir: Path) -> dict:
        ctx.console.log(f"TSTR: training a fresh segmenter on {len(syn_train)} synthetic pairs only "
                        f"({g.budget_minutes:g} min)")
        _, wall, cpu = timed(lambda: train_segmenter(syn_train, run_dir, cfg, val=syn_val, progress=ctx.progress))
        return {"wall_s": wall, "cpu_s": cpu}

    built = ctx.build(g, f"tstr{sfx}", {"cfg": cfg, "synthetic": mixed[1], "n": len(syn)}, train)
    tstr = Trained.of(built, {"seg": asdict(cfg), "synthetic": str(mixed[0])},
                      f"training: the whole budget ({g.budget_minutes:g} min) on synthetic pairs only "
                      "(validation: 10 % of the synthetic pairs)")
    real_rows = score_trained(ctx, "generator", g, "trtr", full, {**common, "n_synthetic_train": None,
                                                                  "note": "the attention_unet run (real pairs)"})
    note = f"a fresh attention_unet trained only on {len(syn_train)} synthetic pairs (mixed layouts, {styles} styles)"
    syn_rows = score_trained(ctx, "generator", g, "tstr" + sfx, tstr,
                             {**common, "note": note, "n_synthetic_train": len(syn_train)})
    real_f1 = {row["subset"]: row["f1_50"] for row in real_rows}
    for row in syn_rows:
        ref = real_f1.get(row["subset"])
        ratio = row["f1_50"] / ref if ref else None
        row.update(tstr_over_real_f1_50=ratio, target_ratio=TSTR_TARGET,
                   meets_target=(ratio >= TSTR_TARGET) if ratio is not None else None,
                   target_note="the project's target: TSTR / real F1@0.5 >= 0.8 on the ordered subset")
    for row in real_rows + syn_rows:
        ctx.add(row)


def generator_rows(ctx: Context, ds: Dataset, g: Group, full: Trained, gan: Trained, generator_seconds: float) -> None:
    """FD and TSTR rows of the generator of ``gan`` (trained in ``generator_seconds``, phase 1
    included); ``full``, the attention_unet run on the real pairs, gives the features and TRTR."""
    need_fd, need_tstr = generator_needs(ctx, ds, g)
    sets = synthetic_sets(ctx, g, gan)
    common = {"k": g.k, "seed": g.seed, "gan_run": str(gan.run_dir), "feature_extractor": str(full.run_dir),
              "fd_features": FD_NOTE, "fd_implementation": "sagegan.metrics.frechet_distance (numpy covariance + "
              "scipy.linalg.sqrtm, not MONAI's FIDMetric)", "patch_size": ctx.settings.gan_patch,
              "synthesis_styles": ctx.settings.synthesis_styles}
    if need_fd:
        frechet_rows(ctx, ds, g, full, gan, sets, generator_seconds, common)
    if need_tstr:
        tstr_rows(ctx, ds, g, full, sets["mixed"], common)
