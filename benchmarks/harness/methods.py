"""The registered methods. Each takes a context and a group and returns what it trained.

Every learned method gets the same wall-clock budget B per (dataset, k, seed), all of its phases
together:

* ``unet``, ``attention_unet``: the whole budget for training;
* ``sage_gan``: phase 1 = the attention_unet run as it stood at 0.5 B (the attention_unet method
  resumes that same run to B), then SAGE-GAN phase 2 until B;
* ``sage_gan_retrain``: the same phase 1, the SAGE-GAN run as it stood at 0.75 B, then the
  ``sagegan.pipeline`` recipe's synthesis (real and new layouts) and a fresh segmenter on real +
  synthetic pairs until B;
* ``copy_paste``: attention_unet for the whole budget, with copy-paste pairs (``train-seg
  --augment copy-paste``);
* ``classical``: threshold + watershed, tuned on the labelled images (no time limit).

Runs are shared between methods through :meth:`Context.build`: the phase 1 snapshot and the GAN
snapshot are trained once per group. Budgets are wall-clock (``max_minutes`` of the trainers);
every method also reports the CPU seconds of its phases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cache import Built, copy_run, timed
from .cases import Settings
from .context import Context
from .datasets import Group

# Shares of the budget B at which the phases of the SAGE-GAN methods end (cumulative).
PHASE1_END, GAN_SNAPSHOT_END = 0.5, 0.75
MIN_PHASE_S = 1.0


@dataclass
class Trained:
    """What a method produced: the folder to test, timings and how the budget was spent."""

    run_dir: Path
    key: str
    wall_s: float
    cpu_s: float
    config: dict
    budget_note: str
    extra: dict = field(default_factory=dict)
    classical_params: dict | None = None

    @classmethod
    def of(cls, built: Built, config: dict, budget_note: str, **kw: Any) -> "Trained":
        return cls(built.run_dir, built.key, built.info["wall_s"], built.info["cpu_s"], config, budget_note, **kw)

    def predictor(self, device: str) -> Callable[[np.ndarray], np.ndarray]:
        """image -> instance labels."""
        if self.classical_params is not None:
            from sagegan.classical import ClassicalParams, segment_classical

            params = ClassicalParams.from_dict(self.classical_params)
            return lambda image: segment_classical(image, params)
        from sagegan.infer import segment_image
        from sagegan.runs import load_segmenter, resolve_device

        seg = load_segmenter(self.run_dir, resolve_device(device))
        return lambda image: segment_image(seg, image, scale="auto").labels


Method = Callable[[Context, Group], Trained]
REGISTRY: dict[str, Method] = {}


def register(name: str) -> Callable[[Method], Method]:
    def add(fn: Method) -> Method:
        REGISTRY[name] = fn
        return fn
    return add


# ------------------------------------------------------------------------------------ configs


def seg_config(s: Settings, arch: str, minutes: float, seed: int):
    from sagegan.train_seg import SegTrainConfig

    return SegTrainConfig(arch=arch, widths=s.seg_widths, patch_size=s.seg_patch, batch_size=s.seg_batch,
                          epochs=100_000, max_minutes=minutes, val_every=s.seg_val_every,
                          val_max_images=s.seg_val_max_images, patience=10_000 if s.quick else 10, seed=seed,
                          device=s.device)


def gan_config(s: Settings, minutes: float, seed: int, budget_minutes: float):
    from sagegan.train_gan import GanTrainConfig

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


def n_synthetic_for(s: Settings, n_train: int) -> int:
    return s.n_synthetic_retrain or int(min(400, max(64, 4 * n_train)))


# ------------------------------------------------------------------------------------ shared runs


def elapsed_s(run_dir: Path) -> float:
    """Wall-clock seconds a run has trained, as its saved training state counts them."""
    from sagegan.io import read_json
    from sagegan.runs import LAST_STATE_JSON

    return float(read_json(run_dir / LAST_STATE_JSON)["elapsed_s"])


def resume_for(run_dir: Path, cfg: Any, seconds: float, train: Callable[[Any], Any]) -> tuple[float, float]:
    """Train the run in ``run_dir`` ``seconds`` more (wall-clock): ``train(cfg)`` resumes it with
    ``max_minutes`` set to the time it has trained plus ``seconds``. Returns (wall s, CPU s)."""
    _, wall, cpu = timed(lambda: train(replace(cfg, max_minutes=(elapsed_s(run_dir) + seconds) / 60)))
    return wall, cpu


def attention_runs(ctx: Context, g: Group) -> tuple[Trained, Trained]:
    """The attention_unet run at 0.5 B (SAGE-GAN's phase 1) and the same run resumed to B."""
    from sagegan.train_seg import train_segmenter

    B = g.budget_minutes * 60
    cfg = seg_config(ctx.settings, "attention-unet", PHASE1_END * g.budget_minutes, g.seed)

    def first_leg(run_dir: Path) -> dict:
        ctx.console.log(f"training attention_unet on {g.ds.name} k={g.k} seed={g.seed}: "
                        f"{PHASE1_END * g.budget_minutes:g} min (SAGE-GAN phase 1 snapshot)")
        _, wall, cpu = timed(lambda: train_segmenter(g.train, run_dir, cfg, val=g.val, progress=ctx.progress))
        return {"wall_s": wall, "cpu_s": cpu}

    half = ctx.build(g, "phase1_half", {"cfg": cfg, "budget": g.budget_minutes}, first_leg)

    def to_budget(run_dir: Path) -> dict:
        from sagegan.io import read_json

        copy_run(half.run_dir, run_dir)
        w1, c1 = half.info["wall_s"], half.info["cpu_s"]
        w2 = c2 = 0.0
        stop = read_json(run_dir / "config.json").get("stop_reason")
        if stop != "early_stopping" and B - w1 > MIN_PHASE_S:
            ctx.console.log(f"resuming attention_unet on {g.ds.name} k={g.k} seed={g.seed} to {g.budget_minutes:g} min")
            w2, c2 = resume_for(run_dir, cfg, B - w1, lambda c: train_segmenter(
                g.train, run_dir, c, val=g.val, resume=True, progress=ctx.progress))
        return {"wall_s": w1 + w2, "cpu_s": c1 + c2, "snapshot_wall_s": w1}

    full = ctx.build(g, "attention_unet", {"phase1": half.key, "budget": g.budget_minutes}, to_budget)
    seg = asdict(cfg)
    return (Trained.of(half, {"seg": seg}, "phase 1 snapshot"),
            Trained.of(full, {"seg": {**seg, "max_minutes": g.budget_minutes}},
                       f"training: the whole budget ({g.budget_minutes:g} min wall-clock); its state at "
                       f"{PHASE1_END:g} B is SAGE-GAN's phase 1"))


def sage_gan_runs(ctx: Context, g: Group, phase1: Trained) -> tuple[Trained, Trained]:
    """SAGE-GAN phase 2 from the phase 1 snapshot, at 0.75 B (snapshot) and resumed to B."""
    from sagegan.train_gan import train_gan

    B = g.budget_minutes * 60
    first = max(MIN_PHASE_S, GAN_SNAPSHOT_END * B - phase1.wall_s)
    cfg = gan_config(ctx.settings, first / 60, g.seed, g.budget_minutes)

    def gan(run_dir: Path, resume: bool = False, c: Any = cfg) -> Path:
        return train_gan(g.train, phase1.run_dir, run_dir, c, val=g.val, resume=resume, progress=ctx.progress,
                         data_source=g.ds.source)

    def first_leg(run_dir: Path) -> dict:
        ctx.console.log(f"training SAGE-GAN on {g.ds.name} k={g.k} seed={g.seed}: {first / 60:.2f} min (snapshot)")
        _, wall, cpu = timed(lambda: gan(run_dir))
        return {"wall_s": wall, "cpu_s": cpu}

    snap = ctx.build(g, "sage_gan_snapshot", {"phase1": phase1.key, "cfg": cfg, "budget": g.budget_minutes},
                     first_leg)

    def to_budget(run_dir: Path) -> dict:
        copy_run(snap.run_dir, run_dir)
        w1, c1 = snap.info["wall_s"], snap.info["cpu_s"]
        left = B - phase1.wall_s - w1
        w2 = c2 = 0.0
        if left > MIN_PHASE_S:
            ctx.console.log(f"resuming SAGE-GAN on {g.ds.name} k={g.k} seed={g.seed} to the end of the budget")
            w2, c2 = resume_for(run_dir, cfg, left, lambda c: gan(run_dir, True, c))
        return {"wall_s": w1 + w2, "cpu_s": c1 + c2, "snapshot_wall_s": w1}

    full = ctx.build(g, "sage_gan", {"snapshot": snap.key, "budget": g.budget_minutes}, to_budget)
    config = asdict(cfg)
    return (Trained.of(snap, {"gan": config}, "phase 2 snapshot"),
            Trained.of(full, {"gan": {**config, "max_minutes": "to the budget"}}, "phase 2"))


# ------------------------------------------------------------------------------------ methods


@register("classical")
def classical(ctx: Context, g: Group) -> Trained:
    from sagegan.classical import DEFAULT_GRID, QUICK_GRID, tune_classical

    grid = QUICK_GRID if ctx.settings.quick else DEFAULT_GRID
    most = ctx.settings.classical_max_images

    def tune(run_dir: Path) -> dict:
        run_dir.mkdir(parents=True)
        ctx.console.log(f"tuning classical on {g.ds.name} k={g.k} seed={g.seed} (training images only)")
        params, wall, cpu = timed(lambda: tune_classical(g.labelled, grid, max_images=most, seed=g.seed))
        return {"wall_s": wall, "cpu_s": cpu, "params": params.to_dict()}

    built = ctx.build(g, "classical", {"grid": grid, "max": most}, tune)
    params = built.info["params"]
    return Trained.of(built, {"classical_params": params, "grid": grid,
                              "tuned_on": f"at most {most} of the {g.n_labelled} labelled images"},
                      "tuning (grid search, mean F1@0.5 on training images; no time limit)",
                      extra={"params": params}, classical_params=params)


def whole_budget_run(ctx: Context, g: Group, name: str, cfg: Any, what: str) -> Trained:
    """One segmenter trained with ``cfg`` for the whole budget (``what`` names it in the log)."""
    from sagegan.train_seg import train_segmenter

    def train(run_dir: Path) -> dict:
        ctx.console.log(f"training {what} on {g.ds.name} k={g.k} seed={g.seed} for {g.budget_minutes:g} min")
        _, wall, cpu = timed(lambda: train_segmenter(g.train, run_dir, cfg, val=g.val, progress=ctx.progress))
        return {"wall_s": wall, "cpu_s": cpu}

    built = ctx.build(g, name, {"cfg": cfg}, train)
    return Trained.of(built, {"seg": asdict(cfg)}, f"training: the whole budget ({g.budget_minutes:g} min wall-clock)")


@register("unet")
def unet(ctx: Context, g: Group) -> Trained:
    return whole_budget_run(ctx, g, "unet", seg_config(ctx.settings, "unet", g.budget_minutes, g.seed), "unet")


@register("attention_unet")
def attention_unet(ctx: Context, g: Group) -> Trained:
    return attention_runs(ctx, g)[1]


@register("copy_paste")
def copy_paste(ctx: Context, g: Group) -> Trained:
    """attention_unet for the whole budget with ``train-seg --augment copy-paste``: pairs made by
    pasting the labelled particles into new layouts (2 per labelled image), the cheap rival of GAN
    synthesis (issue 19)."""
    cfg = replace(seg_config(ctx.settings, "attention-unet", g.budget_minutes, g.seed), copy_paste_per_image=2.0)
    return whole_budget_run(ctx, g, "copy_paste", cfg, "attention_unet with copy-paste")


@register("sage_gan")
def sage_gan(ctx: Context, g: Group) -> Trained:
    half, _ = attention_runs(ctx, g)
    _, gan = sage_gan_runs(ctx, g, half)
    return Trained(gan.run_dir, gan.key, half.wall_s + gan.wall_s, half.cpu_s + gan.cpu_s,
                   {"seg_phase1": half.config["seg"], "gan": gan.config["gan"]},
                   f"phase 1 (the attention_unet run at {PHASE1_END:g} B) + SAGE-GAN phase 2 to 1.0 B; "
                   f"B = {g.budget_minutes:g} min wall-clock",
                   {"phase_seconds": {"phase1": half.wall_s, "phase2": gan.wall_s}})


@register("sage_gan_retrain")
def sage_gan_retrain(ctx: Context, g: Group) -> Trained:
    """The recipe of ``sagegan.pipeline`` from the shared phase 1 and GAN snapshots: synthesis of
    real and new layouts, then a fresh segmenter on real + synthetic pairs until B."""
    from sagegan.pipeline import Budget, RecipeConfig, run_recipe

    half, _ = attention_runs(ctx, g)
    snap, _ = sage_gan_runs(ctx, g, half)
    s = ctx.settings
    seg = seg_config(s, "attention-unet", g.budget_minutes, g.seed)
    left = max(MIN_PHASE_S, g.budget_minutes * 60 - half.wall_s - snap.wall_s) / 60
    recipe = RecipeConfig(seg=seg, n_synthetic=n_synthetic_for(s, len(g.train_stems)), synthetic_layouts="mixed",
                          synthetic_size=2 * s.seg_patch if s.quick else s.seg_patch, synthesis_seed=g.seed,
                          final="retrain", final_budget=Budget(minutes=left), deadline_minutes=left)
    # the GAN stage is the shared snapshot, so the recipe's own gan config and phase budgets are unused

    def run(run_dir: Path) -> dict:
        ctx.console.log(f"sage_gan_retrain on {g.ds.name} k={g.k} seed={g.seed}: {recipe.n_synthetic} synthetic "
                        "pairs (mixed layouts), then a fresh segmenter on real + synthetic")
        result, wall, cpu = timed(lambda: run_recipe(g.train, g.val, run_dir, recipe, progress=ctx.progress,
                                                     phase1_run=half.run_dir, gan_run=snap.run_dir))
        return {"wall_s": wall, "cpu_s": cpu, "seconds": result.seconds,
                "final": str(Path(result.final).relative_to(run_dir))}

    built = ctx.build(g, "sage_gan_retrain", {"phase1": half.key, "gan": snap.key, "recipe": recipe}, run)
    seconds = built.info["seconds"]
    return Trained(built.run_dir / built.info["final"], built.key, half.wall_s + snap.wall_s + built.info["wall_s"],
                   half.cpu_s + snap.cpu_s + built.info["cpu_s"],
                   {"seg_phase1": half.config["seg"], "gan": snap.config["gan"], "recipe": asdict(recipe),
                    "n_synthetic": recipe.n_synthetic, "synthetic_layouts": "mixed", "retrain_init": "fresh"},
                   f"phase 1 ({PHASE1_END:g} B) + SAGE-GAN (to {GAN_SNAPSHOT_END:g} B) + synthesis + fresh "
                   f"segmenter on real + synthetic (to 1.0 B); B = {g.budget_minutes:g} min wall-clock",
                   {"phase_seconds": {"phase1": half.wall_s, "phase2": snap.wall_s,
                                      "synthesis": seconds.get("synthesis"), "retrain": seconds.get("final")},
                    "n_synthetic": recipe.n_synthetic})
