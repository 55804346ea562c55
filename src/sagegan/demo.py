"""``sagegan demo``: the whole pipeline on the embedded simulator data (or a user's folder).

simulate a small labelled set -> phase 1 Attention U-Net -> brief SAGE-GAN -> synthesise new
layouts -> fine-tune on real + synthetic -> segment held-out images with and without synthesis,
and with the bundled general model -> score against the truth -> sizes and spatial order ->
``report.html`` showing every step.

Training is fixed in steps and seeded, so a busy machine takes longer but reports the same
numbers. The step counts are chosen to keep the demo under 10 minutes on 2 quiet CPU cores
(BENCHMARKS.md says how they were estimated); ``quick`` is a smoke test of every stage.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .io import InputError, Sample, load_pairs, read_json, read_mask, resolve_data_dirs, write_image, write_labels
from .report import demo_truth_numbers, write_demo_report

#: Row names of the held-out table, and the folders under ``segmented/`` their labels go to.
PHASE1, JOINT, FINETUNED, BUNDLED = ("phase 1 only", "SAGE-GAN joint fine-tune", "fine-tuned on real + synthetic",
                                     "bundled general model, no training")
SLUGS = {PHASE1: "phase1", JOINT: "sagegan", FINETUNED: "finetuned", BUNDLED: "general"}
KEPT_PHASE1 = "kept phase 1's segmenter: no joint improvement on validation"


@dataclass
class DemoBudget:
    """Sizes and training steps of the demo's stages.

    ``max_minutes`` caps each training stage only as a safety net for a very slow machine; a
    stage it stops is flagged in the report, since its numbers then depend on the machine.
    """

    n_train: int = 8
    n_heldout: int = 4
    image_size: int = 384
    seg_steps: int = 600
    gan_steps: int = 240
    finetune_steps: int = 200
    n_validations: int = 8          # per phase 1 run; phase 2 and the fine-tune validate 4 times
    max_minutes: float | None = 15.0
    n_synthetic: int = 24
    patch_size: int = 128
    seg_batch: int = 8


QUICK = DemoBudget(n_train=4, n_heldout=2, image_size=192, seg_steps=40, gan_steps=12, finetune_steps=12,
                   n_validations=4, n_synthetic=4, patch_size=64, seg_batch=4)


def simulated_split(out: Path, budget: DemoBudget, seed: int) -> tuple[list[Sample], list[Sample], pd.DataFrame]:
    """Ordered SEM arrays (hexagonal and square, several grains): a labelled part and a held-out part."""
    from .simulate import simulate_micrograph

    samples, truths = [], []
    for i in range(budget.n_train + budget.n_heldout):
        layout = ("hex", "square", "hex", "random")[i % 4]
        sim = simulate_micrograph(budget.image_size, layout=layout, modality="sem", seed=[seed, i],
                                  mean_diameter_px=18.0, n_grains=2)
        stem = f"{'train' if i < budget.n_train else 'heldout'}_{i:02d}"
        part = "train" if i < budget.n_train else "heldout"
        write_image(out / "data" / part / "images" / f"{stem}.png", sim.image)
        write_labels(out / "data" / part / "masks" / f"{stem}.tif", sim.labels)
        samples.append(Sample(stem, sim.image, sim.labels))
        truths.append(sim.truth.assign(image=stem))
    return samples[: budget.n_train], samples[budget.n_train:], pd.concat(truths, ignore_index=True)


def user_split(data: Path, budget: DemoBudget, seed: int,
               mask_kind: str = "auto") -> tuple[list[Sample], list[Sample]]:
    """A user's data folder (masks read as ``mask_kind`` says, :func:`sagegan.io.read_mask`):
    a quarter of the images (at least one) held out for scoring."""
    images, masks = resolve_data_dirs(data)
    samples = load_pairs(images, masks, progress=True, mask_kind=mask_kind)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_held = max(1, len(samples) // 4) if len(samples) > 1 else 0
    held = [samples[i] for i in order[:n_held]]
    train = [samples[i] for i in order[n_held:]]
    return train, held or train[:1]


def recipe_config(budget: DemoBudget, seed: int):
    """The demo's recipe: small patches, budgets in steps, new layouts, a gentle fine-tune."""
    from .pipeline import Budget, RecipeConfig
    from .train_gan import GanTrainConfig
    from .train_seg import SegTrainConfig

    def steps(n: int) -> Budget:
        return Budget(steps=n, minutes=budget.max_minutes)

    seg = SegTrainConfig(patch_size=budget.patch_size, batch_size=budget.seg_batch,
                         val_every=max(1, budget.seg_steps // budget.n_validations), val_max_images=2, seed=seed,
                         epochs=100000, patience=1000, canonical_diameter_px=24.0)
    warm = budget.gan_steps // 4
    # every quarter: the last step validates and leaves a sample grid for the report
    every = max(1, budget.gan_steps // 4)
    gan = GanTrainConfig(patch_size=budget.patch_size, batch_size=2, warmup_steps=warm, ramp_steps=warm,
                         val_every=every, sample_every=every, val_max_images=2, seed=seed)
    final_seg = replace(seg, lr=3e-4, val_every=max(1, budget.finetune_steps // 4))
    return RecipeConfig(seg=seg, phase1=steps(budget.seg_steps), gan=gan, phase2=steps(budget.gan_steps),
                        n_synthetic=budget.n_synthetic, synthetic_layouts="new", synthetic_size=2 * budget.patch_size,
                        synthesis_seed=seed, final="finetune", final_seg=final_seg,
                        final_budget=steps(budget.finetune_steps))


def _data_source(out: Path, data: str | Path | None, mask_kind: str = "auto") -> dict:
    """Where the GAN run can re-read its training pairs, and how to read their masks."""
    if data is None:
        return {"images": str((out / "data" / "train" / "images").resolve()),
                "masks": str((out / "data" / "train" / "masks").resolve())}
    images, masks = resolve_data_dirs(data)
    return {"images": str(images.resolve()), "masks": str(masks.resolve()), "mask_kind": mask_kind}


def _fresh_folder(out: Path) -> Path:
    """``out``, empty: an earlier demo there is moved to ``OUT.bak-<time>`` (nothing is deleted);
    a non-empty folder that is not a demo's is refused."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / "demo_config.json").exists():
            raise InputError(f"{out}: folder is not empty and holds no earlier demo; choose another --out")
        from .runs import unique_sibling

        backup = unique_sibling(out, "bak")
        out.rename(backup)
        print(f"moved the earlier demo in {out} to {backup}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _stage(name: str) -> float:
    print(f"\n== {name}")
    return time.monotonic()


def run_demo(out: str | Path, data: str | Path | None = None, quick: bool = False, seed: int = 0,
             mask_kind: str = "auto") -> Path:
    """Run the demo; returns the path of ``report.html``. ``mask_kind`` says how to read the
    masks of a user's ``data`` folder (:func:`sagegan.io.read_mask`)."""
    from .io import write_json
    from .pipeline import run_recipe

    out = _fresh_folder(Path(out))
    budget = QUICK if quick else DemoBudget()
    timings: dict[str, float] = {}
    truth = None
    t = _stage("1/7 data")
    if data is None:
        train, held, truth = simulated_split(out, budget, seed)
        print(f"simulated {len(train)} labelled and {len(held)} held-out SEM micrographs of ordered arrays")
    else:
        train, held = user_split(Path(data), budget, seed, mask_kind)
        for part, items in (("heldout", held),):
            for s in items:
                write_image(out / "data" / part / "images" / f"{s.stem}.png", s.image)
                write_labels(out / "data" / part / "masks" / f"{s.stem}.tif", s.labels)
        print(f"{len(train)} labelled images for training, {len(held)} held out")
    write_json(out / "demo_config.json", {"budget": asdict(budget), "seed": seed, "data": str(data) if data else "simulated",
                                          "train": [s.stem for s in train], "heldout": [s.stem for s in held]})
    timings["data"] = time.monotonic() - t

    _stage("2-5/7 the SAGE-GAN recipe: phase 1 (Attention U-Net on the labelled images), phase 2 "
               "(generator + segmenter + two discriminators), synthesis of new layouts, fine-tuning on "
               "real + synthetic pairs")
    recipe = run_recipe(train, train[:1] if len(train) < 4 else train[:2], out, recipe_config(budget, seed),
                        data_source=_data_source(out, data, mask_kind))
    timings.update(phase1=recipe.seconds["phase1"], gan=recipe.seconds["gan"],
                   synthesis=recipe.seconds["synthesis"], finetune=recipe.seconds["final"])

    t = _stage("6/7 segment the held-out images: with and without synthesis, and with the bundled general model")
    held_dir = out / "data" / "heldout" / "images"
    scores = {PHASE1: score_heldout(recipe.phase1, held, held_dir, out / "segmented" / SLUGS[PHASE1])}
    if kept_phase1(recipe.gan):  # its segmenter is phase 1's: scoring it again would repeat that row
        scores[JOINT] = {**dict.fromkeys(METRIC_KEYS), "note": KEPT_PHASE1}
    else:
        scores[JOINT] = score_heldout(recipe.gan, held, held_dir, out / "segmented" / SLUGS[JOINT])
    scores[FINETUNED] = score_heldout(recipe.final, held, held_dir, out / "segmented" / SLUGS[FINETUNED])
    bundled, bundled_line = bundled_model()
    if bundled is not None:
        scores[BUNDLED] = {**score_heldout(bundled, held, held_dir, out / "segmented" / SLUGS[BUNDLED]),
                           "reference": True}
    # the analysis shows what this run trained; the bundled model is a reference beside it
    trained = [k for k in (PHASE1, JOINT, FINETUNED) if scores[k].get("labels")]
    best = max(trained, key=lambda k: scores[k]["mean_f1_50"] or 0)
    timings["segment"] = time.monotonic() - t

    t = _stage("7/7 particle sizes and spatial order, report")
    from .report import analyze_labels

    analysis = analyze_labels([str(p) for p in scores[best]["labels"]],
                              out / "analysis", images=held_dir, title="held-out images")
    timings["analysis"] = time.monotonic() - t
    report = write_demo_report(out, scores, analysis, truth, held, timings, budget, best, bundled=bundled_line)
    _print_table(scores, analysis, truth, held, report)
    return report


#: The held-out metrics of each row (keys of :func:`sagegan.evaluate.headline`).
METRIC_KEYS = ("mean_f1_50", "mean_precision_50", "mean_recall_50", "mean_dice", "mean_pq")


def score_heldout(model: str | Path, held: list[Sample], held_dir: Path, pred_dir: Path) -> dict:
    """Segment the held-out images with ``model`` into ``pred_dir`` and score them against their truth.

    Returns the :func:`~sagegan.evaluate.headline` numbers with ``dir`` (the segmentation) and
    ``labels`` (one label file per held-out sample, in order).
    """
    from .evaluate import headline
    from .infer import segment_files
    from .metrics import evaluate_pair, summarize

    segment_files([held_dir], model, pred_dir, progress=False, save_attention=True)
    labels = [pred_dir / f"{s.stem}_labels.tif" for s in held]
    rows = [evaluate_pair(read_mask(path, kind="labels"), s.labels) for path, s in zip(labels, held)]
    return {**headline(summarize(rows)), "dir": pred_dir, "labels": labels}


def kept_phase1(gan_run: str | Path) -> bool:
    """Whether phase 2 kept the segmenter it started from: its best validation was at step 0."""
    best = read_json(Path(gan_run) / "config.json").get("best_validation") or {}
    return best.get("step") == 0


def bundled_model() -> tuple[Path | None, str]:
    """The bundled general model's folder, or None when this install ships none; and a line
    saying which model it is, or that there is none."""
    from .runs import resolve_model

    try:
        folder = resolve_model(None)
    except InputError:
        return None, "This install ships no bundled general model yet, so there is nothing to compare here."
    version = read_json(folder / "config.json").get("version", "unversioned")
    return folder, (f"The general model bundled with sagegan (version {version}), applied to the held-out images "
                    "as it is: no training on this data, particle size found by the zoom search.")


def _print_table(scores: dict, analysis: dict, truth, held, report: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sagegan demo — held-out images")
    table.add_column("model")
    for col in ("F1@0.5", "Dice", "PQ"):
        table.add_column(col, justify="right")
    for name, s in scores.items():
        if s.get("note"):
            table.add_row(name, s["note"], "", "")
            continue
        table.add_row(name, *(f"{s[k]:.3f}" if s[k] is not None else "-" for k in
                              ("mean_f1_50", "mean_dice", "mean_pq")))
    Console().print(table)
    batch = analysis["batch"]
    t = demo_truth_numbers(truth, held)
    sizes = Table(title="particles (best model) vs simulator truth")
    sizes.add_column("quantity")
    sizes.add_column("measured", justify="right")
    sizes.add_column("truth", justify="right")
    for key in ("n_particles", "ecd_px_mean", "lattice_constant_px", "psi6_global", "psi4_global"):
        measured = batch.get(key)
        sizes.add_row(key, "-" if measured is None else f"{measured:.3f}" if isinstance(measured, float) else str(measured),
                      f"{t[key]:.3f}" if key in t and isinstance(t[key], float) else str(t.get(key, "-")))
    Console().print(sizes)
    print(f"report: {report}")
