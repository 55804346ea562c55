"""``sagegan demo``: the whole pipeline on the embedded simulator data (or a user's folder).

simulate a small labelled set -> phase 1 Attention U-Net -> brief SAGE-GAN -> synthesise new
layouts -> fine-tune on real + synthetic -> segment held-out images with and without synthesis
-> score against the truth -> sizes and spatial order -> ``report.html`` showing every step.
Budgets are set so the full demo takes about 10 minutes on 2 CPU cores (``quick``: ~2).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .io import Sample, load_pairs, read_mask, resolve_data_dirs, write_image, write_labels


@dataclass
class DemoBudget:
    """Sizes and time budgets of the demo's stages."""

    n_train: int = 8
    n_heldout: int = 4
    image_size: int = 384
    seg_minutes: float = 3.5
    gan_minutes: float = 2.5
    gan_steps: int = 600
    finetune_minutes: float = 1.5
    n_synthetic: int = 24
    patch_size: int = 128
    seg_batch: int = 8


QUICK = DemoBudget(n_train=4, n_heldout=2, image_size=192, seg_minutes=0.6, gan_minutes=0.3, gan_steps=40,
                   finetune_minutes=0.25, n_synthetic=4, patch_size=64, seg_batch=4)


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


def user_split(data: Path, budget: DemoBudget, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A user's data folder: a quarter of the images (at least one) held out for scoring."""
    images, masks = resolve_data_dirs(data)
    samples = load_pairs(images, masks, progress=True)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_held = max(1, len(samples) // 4) if len(samples) > 1 else 0
    held = [samples[i] for i in order[:n_held]]
    train = [samples[i] for i in order[n_held:]]
    return train, held or train[:1]


def _stage(name: str) -> float:
    print(f"\n== {name}")
    return time.monotonic()


def run_demo(out: str | Path, data: str | Path | None = None, quick: bool = False, seed: int = 0) -> Path:
    """Run the demo; returns the path of ``report.html``."""
    from .checkpoint import read_json, write_json
    from .evaluate import headline
    from .infer import load_segmenter, segment_files
    from .metrics import evaluate_pair, summarize
    from .synthesize import synthesize
    from .train_gan import GanTrainConfig, train_gan
    from .train_seg import SegTrainConfig, train_segmenter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else DemoBudget()
    timings: dict[str, float] = {}
    truth = None
    t = _stage("1/7 data")
    if data is None:
        train, held, truth = simulated_split(out, budget, seed)
        print(f"simulated {len(train)} labelled and {len(held)} held-out SEM micrographs of ordered arrays")
    else:
        train, held = user_split(Path(data), budget, seed)
        for part, items in (("heldout", held),):
            for s in items:
                write_image(out / "data" / part / "images" / f"{s.stem}.png", s.image)
                write_labels(out / "data" / part / "masks" / f"{s.stem}.tif", s.labels)
        print(f"{len(train)} labelled images for training, {len(held)} held out")
    write_json(out / "demo_config.json", {"budget": asdict(budget), "seed": seed, "data": str(data) if data else "simulated",
                                          "train": [s.stem for s in train], "heldout": [s.stem for s in held]})
    timings["data"] = time.monotonic() - t

    seg_cfg = dict(patch_size=budget.patch_size, batch_size=budget.seg_batch, val_every=25 if quick else 50,
                   val_max_images=2, seed=seed, epochs=100000, patience=1000, canonical_diameter_px=24.0)
    t = _stage("2/7 phase 1: Attention U-Net on the labelled images")
    val = train[:1] if len(train) < 4 else train[:2]
    seg_run = train_segmenter(train, out / "phase1", SegTrainConfig(**seg_cfg, max_minutes=budget.seg_minutes), val=val)
    timings["phase1"] = time.monotonic() - t

    t = _stage("3/7 phase 2: SAGE-GAN (generator + segmenter + two discriminators)")
    warm = budget.gan_steps // 4
    gan_cfg = GanTrainConfig(patch_size=budget.patch_size, batch_size=2, steps=budget.gan_steps, max_minutes=budget.gan_minutes,
                             warmup_steps=warm, ramp_steps=warm, val_every=max(budget.gan_steps // 4, 10),
                             sample_every=max(budget.gan_steps // 4, 10), val_max_images=2, seed=seed)
    gan_run = train_gan(train, seg_run, out / "gan", gan_cfg, val=val,
                        data_source={"images": str((out / "data" / "train" / "images").resolve()),
                                     "masks": str((out / "data" / "train" / "masks").resolve())}
                        if data is None else {"images": str(resolve_data_dirs(data)[0].resolve()),
                                              "masks": str(resolve_data_dirs(data)[1].resolve())})
    timings["gan"] = time.monotonic() - t

    t = _stage("4/7 synthesis of new layouts")
    syn_dir = synthesize(gan_run, budget.n_synthetic, out / "synthetic", layouts="new", seed=seed,
                         size=2 * budget.patch_size)
    synthetic = load_pairs(syn_dir / "images", syn_dir / "masks")
    timings["synthesis"] = time.monotonic() - t

    t = _stage("5/7 fine-tune the segmenter on real + synthetic pairs")
    fine_run = train_segmenter(list(train) + synthetic, out / "finetuned",
                               SegTrainConfig(**{**seg_cfg, "lr": 3e-4}, max_minutes=budget.finetune_minutes),
                               val=val, init_weights=Path(gan_run) / "segmenter.safetensors")
    timings["finetune"] = time.monotonic() - t

    t = _stage("6/7 segment the held-out images, with and without synthesis")
    held_dir = out / "data" / "heldout" / "images"
    scores = {}
    for name, run in (("phase 1 only", seg_run), ("SAGE-GAN joint fine-tune", gan_run),
                      ("fine-tuned on real + synthetic", fine_run)):
        pred_dir = out / "segmented" / _slug(name)
        segment_files([held_dir], run, pred_dir, progress=False, save_attention=True)
        rows = [evaluate_pair(read_mask(pred_dir / f"{s.stem}_labels.tif"), s.labels) for s in held]
        scores[name] = {**headline(summarize(rows)), "dir": pred_dir}
    best = max(scores, key=lambda k: scores[k]["mean_f1_50"] or 0)
    timings["segment"] = time.monotonic() - t

    t = _stage("7/7 particle sizes and spatial order, report")
    from .analyze import analyze_labels

    analysis = analyze_labels([str(p) for p in sorted(scores[best]["dir"].glob("*_labels.tif"))],
                              out / "analysis", images=held_dir, title="held-out images")
    timings["analysis"] = time.monotonic() - t
    report = write_demo_report(out, scores, analysis, truth, held, timings, budget, best)
    _print_table(scores, analysis, truth, held, report)
    return report


def _slug(name: str) -> str:
    return {"phase 1 only": "phase1", "SAGE-GAN joint fine-tune": "sagegan", "fine-tuned on real + synthetic":
            "finetuned"}[name]


def _truth_numbers(truth: pd.DataFrame | None, held: list[Sample]) -> dict:
    if truth is None:
        return {}
    t = truth[truth["image"].isin([s.stem for s in held])]
    inner = t[~t["touches_border"]] if "touches_border" in t else t
    lattice = t["lattice_constant_px"].dropna()
    return {"ecd_px_mean": float(inner["diameter_px"].mean()),
            "lattice_constant_px": float(lattice.mean()) if len(lattice) else float("nan"),
            "n_particles": int(len(t))}


def _print_table(scores: dict, analysis: dict, truth, held, report: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sagegan demo — held-out images")
    table.add_column("model")
    for col in ("F1@0.5", "Dice", "PQ"):
        table.add_column(col, justify="right")
    for name, s in scores.items():
        table.add_row(name, *(f"{s[k]:.3f}" if s[k] is not None else "-" for k in
                              ("mean_f1_50", "mean_dice", "mean_pq")))
    Console().print(table)
    batch = analysis["batch"]
    t = _truth_numbers(truth, held)
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


def _curve_figure(log_csv: Path, columns: list[tuple[str, str]], title: str) -> str | None:
    from .report import figure_to_data_uri, new_figure

    if not log_csv.exists():
        return None
    log = pd.read_csv(log_csv)
    if log.empty:
        return None
    fig = new_figure(height_in=3.0)
    ax = fig.add_subplot()
    for col, label in columns:
        if col in log:
            ax.plot(log["step"], log[col], marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(frameon=False)
    return figure_to_data_uri(fig)


def write_demo_report(out: Path, scores: dict, analysis: dict, truth, held: list[Sample], timings: dict,
                      budget: DemoBudget, best: str) -> Path:
    """The demo's report: every stage with its figures and numbers."""
    import imageio.v3 as iio

    from .report import Section, image_to_data_uri, render_html

    sections = []
    figs = [f for f in (_curve_figure(out / "phase1" / "train_log.csv", [("val_f1_50", "val F1@0.5"),
                                                                          ("val_dice", "val Dice")], "phase 1 validation"),
                        _curve_figure(out / "phase1" / "train_log.csv", [("loss", "training loss")], "phase 1 loss"))
            if f]
    sections.append(Section("1. Phase 1 — Attention U-Net", text=(
        "The segmenter is trained on a few labelled images at a canonical particle scale, with a 3-class "
        "(background / interior / boundary) plus normalised-distance head; a watershed on the predicted "
        "distance separates touching particles."), figures=[("training curves", f) for f in figs]))
    gan_figs = [f for f in (_curve_figure(out / "gan" / "train_log.csv", [("paired_l1", "paired L1"),
                            ("cycle_l1", "cycle L1"), ("adv_image", "adversarial (image)")], "SAGE-GAN losses"),
                            _curve_figure(out / "gan" / "train_log.csv", [("val_f1_50", "val F1@0.5")],
                                          "segmenter during SAGE-GAN")) if f]
    samples = sorted((out / "gan" / "samples").glob("step_*.png"))
    if samples:
        gan_figs.append(image_to_data_uri(iio.imread(samples[-1])))
    sections.append(Section("2. Phase 2 — SAGE-GAN", text=(
        "Generator (mask -> image, StyleUNet) and the segmenter are trained jointly against two PatchGAN "
        "discriminators. The sample grid shows, per row: the mask, the real patch, the generated image."),
        figures=[(f"figure {i + 1}", f) for i, f in enumerate(gan_figs)]))
    syn = sorted((out / "synthetic" / "images").glob("*.png"))[:4]
    if syn:
        tiles = []
        for p in syn:
            img = iio.imread(p).astype(np.float32) / 255.0
            lab = read_mask(out / "synthetic" / "masks" / f"{p.stem}.tif")
            tiles.append(np.concatenate([img, (lab > 0).astype(np.float32)], axis=0))
        grid = np.concatenate(tiles, axis=1)
        sections.append(Section("3. Synthetic pairs from new layouts", text=(
            "Layouts drawn from the model fitted to the training masks (size distribution, lattice type, "
            "spacing, coverage) and rendered by the generator: images on top, their exact masks below."),
            figures=[("synthetic images and masks", image_to_data_uri(grid))]))
    rows = [{"model": k, **{m: v[m] for m in ("mean_f1_50", "mean_precision_50", "mean_recall_50", "mean_dice",
                                               "mean_pq")}} for k, v in scores.items()]
    seg_figs = []
    for name, s in scores.items():
        for p in sorted(Path(s["dir"]).glob("*_overlay.png"))[:1]:
            seg_figs.append((f"{name}: outlines on a held-out image", image_to_data_uri(iio.imread(p))))
    for p in sorted(Path(scores[best]["dir"]).glob("*_attention.png"))[:1]:
        seg_figs.append(("finest attention-gate map (best model)", image_to_data_uri(iio.imread(p))))
    sections.append(Section("4. Held-out images — metrics against the truth", table=rows,
                            text="Object F1 at IoU 0.5 with one-to-one (Hungarian) matching, pixel Dice and "
                                 "panoptic quality, averaged over the held-out images.", figures=seg_figs))
    batch = analysis["batch"]
    truth_numbers = _truth_numbers(truth, held)
    keys = ("n_particles", "ecd_px_mean", "nn_distance_px_mean", "lattice_constant_px", "psi6_global", "psi4_global")
    sections.append(Section("5. Particle sizes and spatial order", text=(
        f"Measured on the segmentation of the best model ({best}); the full per-image report is "
        "analysis/report.html."), table=[{"quantity": k, "measured": batch.get(k), "truth": truth_numbers.get(k)}
                                         for k in keys]))
    sections.append(Section("6. Run", table={f"{k} (s)": round(v, 1) for k, v in timings.items()},
                            preformatted=str(asdict(budget))))
    html = render_html("sagegan demo", sections, subtitle="few labels -> segmenter -> synthetic pairs -> particle report")
    path = out / "report.html"
    path.write_text(html)
    return path
