"""The ``sagegan`` command line: argument parsing only, every command calls the Python API.

Heavy modules (torch, scikit-image, matplotlib) are imported inside the commands, so that
``sagegan --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.exceptions import TyperException

from . import MALLOC_ENV, MALLOC_ENV_INFERENCE, __version__, reexec_with_malloc_settings
from .io import InputError

app = typer.Typer(
    name="sagegan",
    help="Few-label nanoparticle segmentation for electron micrographs: Attention U-Net, "
         "SAGE-GAN synthesis, particle sizes and spatial order.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sagegan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Few-label nanoparticle segmentation for electron micrographs."""
    _warnings_as_one_line()


def _warnings_as_one_line() -> None:
    """Print each :class:`sagegan.io.InputWarning` (a doubtful input file, e.g. an unknown pixel
    size) as one ``sagegan: warning: <file>: <problem>`` line on stderr; other warnings as usual."""
    import warnings

    from .io import InputWarning

    shown = warnings.showwarning
    if getattr(shown, "_sagegan", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            typer.echo(f"sagegan: warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show._sagegan = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def _crop_rows(value: str) -> int | str:
    """``--crop-bottom``: a number of rows, or auto."""
    if value.strip().lower() == "auto":
        return "auto"
    if not value.strip().isdigit():
        raise typer.BadParameter(f"a number of rows or auto, got {value!r}")
    return int(value)


def _pixel_size(value: str | None) -> float | str | None:
    """``--nm-per-px``: a number, or auto | auto-bar | metadata."""
    from .io import InputError, pixel_size_mode

    if value is None:
        return None
    try:
        mode, number = pixel_size_mode(value)
    except InputError:
        raise typer.BadParameter(f"a positive number, or auto, auto-bar or metadata; got {value!r}") from None
    return number if mode == "user" else mode


# Options shared by the commands that read data, spelled once.
DATA = typer.Option(None, "--data", help="Data folder with images/ and masks/.")
IMAGES = typer.Option(None, "--images", help="Folder of images (instead of --data).")
MASKS = typer.Option(None, "--masks", help="Folder of masks (instead of --data).")
SPLIT = typer.Option(None, "--split", help="Text/CSV file whose first column lists the stems to use.")
CROP = typer.Option("auto", "--crop-bottom", callback=_crop_rows, help="Rows to drop at the bottom (the "
                    "microscope's data bar), or auto: find an SEM data bar and drop it (0 keeps every row).")
_NM_HELP = ("Pixel size in nm (overrides the files), or where to find it: metadata (the file's), auto (the "
            "metadata, else the pixel size or field width printed in the data bar, else the scale bar and its "
            "label read by OCR), auto-bar (the image, whatever the metadata says).")
NM = typer.Option(None, "--nm-per-px", callback=_pixel_size, help=_NM_HELP + " Default here: metadata.")
NM_AUTO = typer.Option("auto", "--nm-per-px", callback=_pixel_size, help=_NM_HELP)
TRUTH_CROP = typer.Option("auto", "--crop-bottom", callback=_crop_rows, help="Rows to drop at the bottom of "
                          "the truth masks, or auto: the rows `segment` dropped from each micrograph (its data bar).")
SCALE_BAR_NM = typer.Option(None, "--scale-bar-nm", min=0.0, help="The scale bar's length in nm, when its "
                            "label cannot be read: the bar is found and measured, and gives the pixel size.")
MASK_KIND = typer.Option("auto", "--mask-kind", help="auto | binary | labels: how to read the masks. auto "
                         "decides from each mask's content and refuses ambiguous ones; binary thresholds at "
                         "half the maximum and splits 4-connected particles; labels keeps the ids.")
SEED = typer.Option(0, "--seed", help="Random seed.")
WORKERS = typer.Option(None, "--workers", min=1, help="Run on a local Dask cluster of N worker processes (one "
                       "image per task; needs sagegan[dask]).")
SCHEDULER = typer.Option(None, "--scheduler", help="Run on an existing Dask cluster (its scheduler's address, "
                         "e.g. tcp://host:8786); inputs and --out must be on storage the workers share.")


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Output data folder."),
    n: int = typer.Option(8, "--n", min=1, help="Number of images."),
    size: int = typer.Option(512, "--size", min=16, help="Image side in px."),
    layout: str = typer.Option("hex", "--layout", help="hex | square | random | sparse | mixed"),
    modality: str = typer.Option("sem", "--modality", help="sem | tem"),
    seed: int = SEED,
    nm_per_px: Optional[float] = typer.Option(None, "--nm-per-px",
                                              help="Nominal pixel size recorded with the set."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the pairs sagegan generated in a non-empty "
                                   "--out (all of them; other files are never removed)."),
    scale_bar: bool = typer.Option(False, "--scale-bar", help="Burn a labelled scale bar into every image (styles, "
                                   "fonts, sizes and corners vary; pixel size --nm-per-px or drawn per image), for "
                                   "testing calibration from the image."),
    shape: Optional[str] = typer.Option(None, "--shape", help="disc | sphere | cube | rod (default disc)."),
    diameter_px: Optional[float] = typer.Option(None, "--diameter-px", help="Mean particle diameter in px "
                                                "(default 24)."),
    dose: Optional[float] = typer.Option(None, "--dose", help="Electrons per px at full brightness (default 150; "
                                         "lower is noisier)."),
    blur_px: Optional[float] = typer.Option(None, "--blur-px", help="Defocus / probe blur sigma in px "
                                            "(default 0.8)."),
    gradient: Optional[float] = typer.Option(None, "--gradient", help="Uneven illumination, as a fraction in "
                                             "[0, 1] (default 0.15)."),
) -> None:
    """Simulate micrographs of nanoparticle arrays with exact instance masks."""
    from .simulate import simulate_dataset

    given = {"shape": shape, "mean_diameter_px": diameter_px, "dose": dose, "blur_sigma_px": blur_px,
             "background_gradient": gradient}
    folder = simulate_dataset(out, n=n, size=size, layout=layout, modality=modality, seed=seed,
                              nm_per_px=nm_per_px, overwrite=overwrite, scale_bar=scale_bar,
                              **{k: v for k, v in given.items() if v is not None})
    typer.echo(f"wrote {n} image/mask pairs to {folder} (images/, masks/, truth.csv, simulation.json)")


@app.command("check-data")
def check_data(
    data: Optional[Path] = DATA, images: Optional[Path] = IMAGES, masks: Optional[Path] = MASKS,
    split: Optional[Path] = SPLIT, crop_bottom: str = CROP, nm_per_px: Optional[str] = NM,
    mask_kind: str = MASK_KIND,
) -> None:
    """Read a data folder as training would, and summarise it (or name the first problem)."""
    from .io import load_pairs, resolve_data_dirs

    images_dir, masks_dir = resolve_data_dirs(data, images, masks)
    samples = load_pairs(images_dir, masks_dir, split, crop_bottom=crop_bottom, nm_per_px=nm_per_px,
                         progress=True, mask_kind=mask_kind)
    n_particles = sum(int(len(set(s.labels[s.labels > 0].tolist()))) for s in samples)
    sides = sorted({s.image.shape for s in samples})
    calibrated = sum(s.nm_per_px is not None for s in samples)
    hint = " (from metadata; --nm-per-px auto also reads data bars and scale bars)" if (
        nm_per_px is None and calibrated < len(samples)) else ""
    typer.echo(f"{len(samples)} image/mask pairs, {n_particles} particles, sizes "
               f"{sides[0][1]}x{sides[0][0]} .. {sides[-1][1]}x{sides[-1][0]} px, "
               f"{calibrated} with a pixel size{hint}")


@app.command("train-seg")
def train_seg(
    data: Optional[Path] = DATA, images: Optional[Path] = IMAGES, masks: Optional[Path] = MASKS,
    split: Optional[Path] = SPLIT,
    val_split: Optional[Path] = typer.Option(None, "--val-split", help="Stems for validation (default: "
                                             "10 % of the training stems, held out)."),
    out: Path = typer.Option(..., "--out", help="RUN folder to write."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Hard time budget."),
    epochs: int = typer.Option(1000, "--epochs", min=1, help="Epochs (one patch per image each)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many steps "
                                            "(a fixed amount of training, whatever the machine's load)."),
    seed: int = SEED,
    init: Optional[str] = typer.Option(None, "--init", help="general | RUN: start from this model's weights, "
                                       "architecture, canonical scale and post-processing (fine-tuning)."),
    arch: str = typer.Option("attention-unet", "--arch", help="attention-unet | unet"),
    loss: str = typer.Option("ce_dice", "--loss", help="ce_dice | focal_tversky"),
    scale: str = typer.Option("canonical", "--scale", help="canonical (zoom particles to "
                              "--diameter px) | native"),
    diameter: float = typer.Option(24.0, "--diameter", min=1.0, help="Canonical particle diameter in px."),
    widths: str = typer.Option("16,32,64,128,256", "--widths", help="Channels per level."),
    norm: str = typer.Option("batch", "--norm", help="batch | group | instance"),
    dropout: float = typer.Option(0.0, "--dropout", help="Decoder dropout."),
    bottleneck_attention: bool = typer.Option(False, "--bottleneck-attention",
                                              help="Add multi-head self-attention at the bottleneck."),
    patch_size: int = typer.Option(256, "--patch-size", min=16),
    scale_jitter: float = typer.Option(0.4, "--scale-jitter", min=0.0, help="Random zoom in [1/(1+j), 1+j] "
                                       "around the canonical scale; wider tolerates a rougher --scale auto."),
    invert_prob: float = typer.Option(0.0, "--invert-prob", min=0.0, max=1.0, help="Share of patches with "
                                      "inverted contrast (teaches both polarities: bright SEM, dark TEM particles)."),
    gradient: float = typer.Option(0.0, "--gradient", min=0.0, max=1.0, help="Strength of a random "
                                   "illumination ramp added to patches."),
    augment: str = typer.Option("none", "--augment", help="none | copy-paste: add pairs made by pasting the "
                                "labelled particles into new random layouts on the images' backgrounds (two per "
                                "training image)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    val_every: int = typer.Option(150, "--val-every", min=1, help="Steps between validations."),
    val_max_images: int = typer.Option(24, "--val-max-images", min=1, help="Validation images scored (the "
                                       "first of the validation split)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN/last.safetensors."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in a non-empty RUN; the old one is "
                                   "moved to RUN.bak-<time> once the new one has its first checkpoint."),
    crop_bottom: str = CROP, nm_per_px: Optional[str] = NM, mask_kind: str = MASK_KIND,
) -> None:
    """Phase 1: train the Attention U-Net segmenter on labelled images."""
    from .io import load_pairs, resolve_data_dirs
    from .data import Augment
    from .runs import SEGMENTER_FILE, TrainingInterrupted, check_run_folder, resolve_model
    from .train_seg import SegTrainConfig, config_from_init, train_segmenter

    if scale not in ("canonical", "native"):
        raise ValueError(f"--scale must be canonical or native, got {scale!r}")
    if augment not in ("none", "copy-paste"):
        raise ValueError(f"--augment must be none or copy-paste, got {augment!r}")
    cfg = SegTrainConfig(arch=arch, loss=loss, widths=_int_list(widths, "--widths"), norm=norm,
                         dropout=dropout, bottleneck_attention=bottleneck_attention,
                         canonical_diameter_px=diameter if scale == "canonical" else None,
                         patch_size=patch_size, batch_size=batch_size, lr=lr, epochs=epochs, max_steps=max_steps,
                         max_minutes=max_minutes, val_every=val_every, val_max_images=val_max_images,
                         seed=seed, device=device, copy_paste_per_image=2.0 if augment == "copy-paste" else 0.0,
                         augment=Augment(scale_jitter=scale_jitter, invert_prob=invert_prob, gradient=gradient))
    init_weights = None
    if init is not None:
        init_folder = resolve_model(init)
        cfg = config_from_init(cfg, init_folder)
        init_weights = init_folder / SEGMENTER_FILE
    check_run_folder(out, resume, overwrite)  # before reading any data
    images_dir, masks_dir = resolve_data_dirs(data, images, masks)
    train = load_pairs(images_dir, masks_dir, split, crop_bottom=crop_bottom, nm_per_px=nm_per_px, progress=True,
                       mask_kind=mask_kind)
    val = None
    if val_split is not None:
        val = load_pairs(images_dir, masks_dir, val_split, crop_bottom=crop_bottom, nm_per_px=nm_per_px,
                         mask_kind=mask_kind)
    try:
        run = train_segmenter(train, out, cfg, val=val, resume=resume, overwrite=overwrite,
                              init_weights=init_weights)
    except TrainingInterrupted as stop:
        _interrupted("train-seg", stop)
    from .ddp import ranks_from_env

    if ranks_from_env().main:  # under torchrun, rank 0 wrote the run and speaks for it
        typer.echo(f"segmenter written to {run}")
        typer.echo(_training_verdict(run))


STOP_REASONS = {"max_minutes": "its time budget (--max-minutes) ran out",
                "epochs": "it ran all its steps (--epochs, --max-steps)",
                "early_stopping": "validation stopped improving (early stop)"}


def _training_verdict(run: Path) -> str:
    """One line: why training stopped and its best validation scores; a warning when they are poor."""
    from .io import read_json

    config = read_json(Path(run) / "config.json")
    reason = config.get("stop_reason")
    why = STOP_REASONS.get(reason, reason or "unknown")
    best = config.get("best_validation") or {}
    f1, dice = best.get("tuned_f1_50", best.get("f1_50")), best.get("tuned_dice", best.get("dice"))
    if f1 is None:
        return f"training stopped after {config.get('steps')} steps because {why}; no validation images, no scores"
    line = (f"training stopped after {config.get('steps')} steps because {why}; best validation "
            f"F1@0.5 {f1:.3f}, Dice {dice:.3f} (step {best.get('step')})")
    if f1 < 0.3:
        line += ("\nsagegan: warning: validation F1 is below 0.3: the model finds few particles correctly; "
                 "check the masks (sagegan check-data), train longer, or label more images")
    return line


def _interrupted(command: str, stop) -> None:
    """A training command stopped by SIGINT/SIGTERM: one line saying how to resume, exit 128 + signal."""
    import shlex

    args = sys.argv[1:]
    if command in args:  # the same command line, continued
        args = [a for a in args[args.index(command):] if a != "--overwrite"]
        hint = "sagegan " + shlex.join(args + ([] if "--resume" in args else ["--resume"]))
    else:
        hint = f"sagegan {command} <the same options> --out {shlex.quote(str(stop.run_dir))} --resume"
    typer.echo(f"sagegan: interrupted at step {stop.step}; resume with: {hint}", err=True)
    raise typer.Exit(stop.exit_status)


@app.command()
def segment(
    inputs: List[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    model: Optional[str] = typer.Option(None, "--model", help="RUN (or GANRUN) folder, or general (the model "
                                        "bundled with sagegan, the default; general@VERSION pins its version)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    nm_per_px: Optional[str] = NM_AUTO,
    scale_bar_nm: Optional[float] = SCALE_BAR_NM,
    diameter_nm: Optional[float] = typer.Option(None, "--diameter-nm", min=0.0, help="Typical particle diameter "
                                                "in nm (needs the pixel size): replaces the zoom search."),
    diameter_px: Optional[float] = typer.Option(None, "--diameter-px", min=0.0, help="Typical particle diameter "
                                                "in px: replaces the zoom search."),
    min_score: Optional[float] = typer.Option(None, "--min-score", min=0.0, max=1.0, help="Drop particles scoring "
                                              "below this (the score column); default: the model's tuned value."),
    overlay_ids: bool = typer.Option(False, "--overlay-ids", help="Write each particle's id (its label value "
                                     "and particles.csv id) on the overlay."),
    tta: bool = typer.Option(False, "--tta", help="Average over four flips (4x the network passes, a little "
                             "more accurate; BENCHMARKS.md)."),
    scale: str = typer.Option("auto", "--scale", help="auto | zoom factor applied before prediction."),
    min_area: Optional[int] = typer.Option(None, "--min-area", min=0, help="Drop predicted particles smaller "
                                           "than this (px); default: the model's tuned share of a "
                                           "canonical particle's area (config.json postprocess)."),
    save_attention: bool = typer.Option(False, "--save-attention", help="Also write <stem>_attention.png."),
    save_rois: bool = typer.Option(False, "--save-rois", help="Also write <stem>_rois.zip: one ImageJ polygon ROI "
                                   "per particle, named by its particles.csv id (Fiji's ROI Manager opens it)."),
    save_geojson: bool = typer.Option(False, "--save-geojson", help="Also write <stem>_particles.geojson: the "
                                      "particle outlines and measurements as QuPath detections."),
    ome: bool = typer.Option(False, "--ome", help="Write <stem>_labels.tif as OME-TIFF with the pixel size as "
                             "PhysicalSizeX/Y (instead of ImageJ tags)."),
    analyze: bool = typer.Option(False, "--analyze", help="Also run `sagegan analyze` on the images of this "
                                 "run, into OUT/analysis/."),
    split: Optional[Path] = typer.Option(None, "--split", help="Only the inputs whose stems this file lists."),
    crop_bottom: str = CROP,
    max_pixels: int = typer.Option(100_000_000, "--max-pixels", min=1, help="Refuse larger images (pixels; "
                                   "memory grows with the pixel count, BENCHMARKS.md)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16: the network's arithmetic (bf16 is "
                                  "faster on CPUs with bf16 units; BENCHMARKS.md)."),
    workers: Optional[int] = WORKERS,
    scheduler: Optional[str] = SCHEDULER,
) -> None:
    """Segment micrographs of any size into particle instances.

    OUT/segment_manifest.json records every output with its input: sagegan's own outputs are never
    taken as inputs, and a re-run into OUT replaces only the outputs of the images given. A bad image
    is reported and the others finish; the command then exits with status 2.
    """
    from .infer import segment_batch
    from .io import BatchError

    zoom: str | float = scale if scale == "auto" else _positive_float(scale, "--scale")
    batch = segment_batch(inputs, model, out, nm_per_px=nm_per_px, scale=zoom, tta=tta, min_area_px=min_area,
                          save_attention=save_attention, crop_bottom=crop_bottom, split=split,
                          report=lambda line: typer.echo(f"sagegan: {line}", err=True), max_pixels=max_pixels,
                          diameter_px=diameter_px, diameter_nm=diameter_nm, min_score=min_score,
                          overlay_ids=overlay_ids, workers=workers, scheduler=scheduler, precision=precision,
                          save_rois=save_rois, save_geojson=save_geojson, ome=ome, scale_bar_nm=scale_bar_nm)
    typer.echo(f"{len(batch.label_files)} image(s), {len(batch.particles)} particles -> {out}")
    if (line := batch.calibration_line()) is not None:
        typer.echo(f"sagegan: {line}", err=True)
    if analyze and batch.label_files:
        from .report import analyze_labels

        analyze_labels([str(p) for p in batch.label_files], Path(out) / "analysis", images=None,
                       nm_per_px=nm_per_px, workers=workers, scheduler=scheduler, scale_bar_nm=scale_bar_nm)
        typer.echo(f"report: {Path(out) / 'analysis' / 'report.html'}")
    if batch.failures:
        raise BatchError(batch.failures, len(batch.names))


def _int_list(text: str, option: str) -> tuple[int, ...]:
    """``"16,32,64"`` -> (16, 32, 64); anything else is a one-line error naming the option."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"{option} must be positive integers separated by commas, got {text!r}")
    return values


def _positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{option} must be 'auto' or a positive number, got {text!r}")
    return value


@app.command()
def analyze(
    labels: List[str] = typer.Argument(..., help="Label images (as `segment` writes them) or masks: files, "
                                       "folders or globs."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the micrographs (same stems)."),
    nm_per_px: Optional[str] = NM_AUTO,
    scale_bar_nm: Optional[float] = SCALE_BAR_NM,
    title: str = typer.Option("sagegan particle report", "--title"),
    mask_kind: str = MASK_KIND,
    workers: Optional[int] = WORKERS,
    scheduler: Optional[str] = SCHEDULER,
) -> None:
    """Particle sizes and spatial order -> particles.csv, summary.json and report.html."""
    from .report import analyze_labels

    on_cluster = workers is not None or scheduler is not None
    summary = analyze_labels(labels, out, images=images, nm_per_px=nm_per_px, title=title, mask_kind=mask_kind,
                             workers=workers, scheduler=scheduler, progress=on_cluster, scale_bar_nm=scale_bar_nm)
    batch = summary["batch"]
    typer.echo(f"{batch.get('n_particles')} particles in {batch.get('n_images')} image(s); "
               f"report: {Path(out) / 'report.html'}")


@app.command("train-gan")
def train_gan(
    data: Optional[Path] = DATA, images: Optional[Path] = IMAGES, masks: Optional[Path] = MASKS,
    split: Optional[Path] = SPLIT,
    val_split: Optional[Path] = typer.Option(None, "--val-split", help="Stems for validation (default: the "
                                             "phase 1 run's validation stems)."),
    seg: Path = typer.Option(..., "--seg", help="Phase 1 RUN folder (the segmenter to embed)."),
    out: Path = typer.Option(..., "--out", help="GANRUN folder to write."),
    unlabeled: Optional[Path] = typer.Option(None, "--unlabeled", help="Folder (or file pattern) of extra images "
                                             "without masks: the cycle runs on them, and the image discriminator "
                                             "takes them as real images."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Hard time budget."),
    steps: int = typer.Option(4000, "--steps", min=1, help="GAN iterations."),
    seed: int = SEED,
    warmup_steps: int = typer.Option(500, "--warmup-steps", help="Generator-only warm-up before its images "
                                     "train the segmenter."),
    ramp_steps: int = typer.Option(1000, "--ramp-steps", help="Steps over which the synthetic share rises to 0.6."),
    mask_path: str = typer.Option("detached", "--mask-path", help="detached | soft | straight-through: "
                                   "whether the cycle and mask-adversarial terms reach the segmenter "
                                   "(soft/straight-through) or not (detached; measured better)."),
    seg_norm: str = typer.Option("frozen", "--seg-norm", help="frozen | train: whether the segmenter's BatchNorm "
                                 "statistics stay at phase 1's or keep updating from the GAN's small batches."),
    seg_loss: str = typer.Option("ce_dice", "--seg-loss", help="ce_dice | focal_tversky"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16: bf16 runs the networks under "
                                  "autocast (faster on CPUs with AVX-512 BF16/AMX; weights and losses stay fp32)."),
    vgg19_weights: Optional[Path] = typer.Option(None, "--vgg19-weights", help="Local VGG19 weights for the "
                                                 "perceptual loss (default: the segmenter's own encoder)."),
    style_encoder: bool = typer.Option(False, "--style-encoder/--no-style-encoder", help="Encode each real patch's "
                                       "style into the latent z for the paired and cycle terms (BicycleGAN), so "
                                       "that different z give differently looking images."),
    batch_size: int = typer.Option(2, "--batch-size", min=1),
    patch_size: int = typer.Option(256, "--patch-size", min=16),
    val_every: int = typer.Option(250, "--val-every", min=1),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    resume: bool = typer.Option(False, "--resume", help="Continue from GANRUN/last.safetensors."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in a non-empty GANRUN; the old one "
                                   "is moved to GANRUN.bak-<time> once the new one has its first checkpoint."),
    crop_bottom: str = CROP, nm_per_px: Optional[str] = NM, mask_kind: str = MASK_KIND,
) -> None:
    """Phase 2: train SAGE-GAN around a phase 1 segmenter."""
    from .io import read_json
    from .io import load_pairs, resolve_data_dirs
    from .runs import TrainingInterrupted, check_distinct_folders, check_run_folder
    from .train_gan import GanTrainConfig, train_gan as run_train_gan

    cfg = GanTrainConfig(steps=steps, max_minutes=max_minutes, seed=seed, warmup_steps=warmup_steps,
                         ramp_steps=ramp_steps, mask_path=mask_path, segmenter_norm=seg_norm, seg_loss=seg_loss,
                         precision=precision, style_encoder=style_encoder,
                         perceptual="vgg19" if vgg19_weights else "segmenter",
                         vgg19_weights=str(vgg19_weights) if vgg19_weights else None, batch_size=batch_size,
                         patch_size=patch_size, val_every=val_every, sample_every=val_every, device=device)
    check_distinct_folders(out, seg, "--seg")  # before reading any data
    check_run_folder(out, resume, overwrite)
    images_dir, masks_dir = resolve_data_dirs(data, images, masks)
    samples = load_pairs(images_dir, masks_dir, split, crop_bottom=crop_bottom, nm_per_px=nm_per_px, progress=True,
                         mask_kind=mask_kind)
    if val_split is not None:
        val_stems = set(_stems(val_split))
    else:  # keep the phase 1 validation images out of GAN training too
        val_stems = set(read_json(seg / "config.json").get("data", {}).get("val_stems", []))
    val = [s for s in samples if s.stem in val_stems]
    if val_split is not None and not val:
        val = load_pairs(images_dir, masks_dir, val_split, crop_bottom=crop_bottom, nm_per_px=nm_per_px,
                         mask_kind=mask_kind)
    train = [s for s in samples if s.stem not in val_stems]
    source = {"images": str(images_dir.resolve()), "masks": str(masks_dir.resolve()),
              "split": str(split.resolve()) if split else None, "crop_bottom": crop_bottom,
              "mask_kind": mask_kind, "unlabeled": str(unlabeled.resolve()) if unlabeled else None}
    extra = None
    if unlabeled is not None:
        from .io import read_micrographs

        extra = [image for _, image, _ in read_micrographs(unlabeled, crop_bottom)]
    try:
        run = run_train_gan(train, seg, out, cfg, val=val or None, resume=resume, data_source=source,
                            overwrite=overwrite, unlabeled=extra)
    except TrainingInterrupted as stop:
        _interrupted("train-gan", stop)
    typer.echo(f"SAGE-GAN written to {run}")


def _stems(split: Path) -> list:
    from .io import read_split

    return read_split(split)


@app.command()
def adapt(
    images: Path = typer.Option(..., "--images", help="Folder (or file pattern) of unlabelled micrographs of the "
                                "target domain, in any format segment reads."),
    out: Path = typer.Option(..., "--out", help="RUN folder to write (a segmenter run: segment --model RUN)."),
    model: Optional[str] = typer.Option(None, "--model", help="general (default) | general@VERSION | RUN: the "
                                        "source model to adapt."),
    method: str = typer.Option("pseudo-label", "--method", help="pseudo-label | copy-paste | sage-gan"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Segmenter training steps (sage-gan: as many "
                                        "GAN steps before them); a seeded run repeats exactly. Default 600 "
                                        "unless --max-minutes is given."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Cap on the whole run's wall clock."),
    seed: int = SEED,
    min_score: float = typer.Option(0.5, "--min-score", min=0.0, max=0.99, help="Least score of a particle taken "
                                    "as a pseudo-label."),
    source: Optional[Path] = typer.Option(None, "--source", help="Labelled data folder of the source domain "
                                          "(images/ + masks/) to train on as well."),
    split: Optional[Path] = typer.Option(None, "--split", help="Only the images whose stems this file lists."),
    paste_cluster: float = typer.Option(0.0, "--paste-cluster", min=0.0, max=1.0, help="copy-paste: share of "
                                        "the particles pasted touching another (agglomerates) instead of at random."),
    crop_bottom: str = CROP,
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in RUN."),
) -> None:
    """Adapt a segmenter to your unlabelled micrographs (no labels needed)."""
    from .adapt import AdaptConfig, adapt as run_adapt
    from .runs import TrainingInterrupted

    cfg = AdaptConfig(method=method, steps=steps, max_minutes=max_minutes, seed=seed, min_score=min_score,
                      crop_bottom=crop_bottom, device=device, paste_cluster=paste_cluster)
    try:
        run = run_adapt(images, out, model=model, config=cfg, source=source, resume=resume, split=split)
    except TrainingInterrupted as stop:
        _interrupted("adapt", stop)
    typer.echo(f"adapted segmenter written to {run} (segment --model {run})")


@app.command()
def synthesize(
    model: Path = typer.Option(..., "--model", help="GANRUN folder."),
    n: int = typer.Option(..., "--n", min=1, help="Number of pairs."),
    out: Path = typer.Option(..., "--out", help="Output data folder."),
    layouts: str = typer.Option("mixed", "--layouts", help="real | new | mixed"),
    styles: str = typer.Option("random", "--styles", help="random | real: latent z from N(0, I), or encoded from "
                               "random patches of the training images (needs a run trained with --style-encoder)."),
    seed: int = SEED,
    size: int = typer.Option(256, "--size", min=16, help="Side of the synthetic images (px)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training data folder for `real` layouts and styles "
                                        "(default: where the GAN run read it)."),
    images: Optional[Path] = IMAGES, masks: Optional[Path] = MASKS,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the pairs sagegan generated in a non-empty "
                                   "--out (all of them; other files are never removed)."),
    mask_kind: str = typer.Option("auto", "--mask-kind", help="auto | binary | labels: how to read the masks of "
                                  "the training data (auto: as the GAN run recorded, else from their content)."),
) -> None:
    """Render synthetic image/mask pairs with a trained SAGE-GAN generator."""
    from .synthesize import synthesize as run_synthesize

    folder = run_synthesize(model, n, out, layouts=layouts, seed=seed, size=size, data=data, images=images,
                            masks=masks, styles=styles, overwrite=overwrite, mask_kind=mask_kind)
    typer.echo(f"wrote {n} synthetic pairs to {folder}")


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predictions (<stem>_labels.tif or any mask)."),
    truth: Path = typer.Option(..., "--truth", help="Folder of ground-truth masks."),
    split: Optional[Path] = SPLIT,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the summary (and rows) as JSON."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write per-image metrics as CSV."),
    crop_bottom: str = TRUTH_CROP,
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Score the images that have a prediction "
                                       "when --pred lacks some (default: refuse)."),
    mask_kind: str = typer.Option("auto", "--mask-kind", help="auto | binary | labels: how to read the masks of "
                                  "--truth and --pred. auto decides from each file's content and refuses "
                                  "micrographs and ambiguous masks."),
) -> None:
    """Score predictions against ground truth: Dice, IoU, object P/R/F1, PQ, size errors."""
    from .io import _listing, write_json
    from .evaluate import evaluate_folders, headline

    table, summary = evaluate_folders(pred, truth, split, crop_bottom=crop_bottom, progress=True,
                                      allow_missing=allow_missing, mask_kind=mask_kind)
    missing = summary["missing_predictions"]
    if missing:
        typer.echo(f"sagegan: {pred} lacks predictions for {len(missing)} of the {len(missing) + len(table)} images "
                   f"with ground truth; scored the other {len(table)} (left out: {_listing(missing)})", err=True)
    if csv_out:
        table.to_csv(csv_out, index=False)
    if json_out:
        write_json(json_out, {"summary": summary, "headline": headline(summary),
                              "images": table.to_dict(orient="records")})
    for key, value in headline(summary).items():
        typer.echo(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_output"), "--out", help="Output folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Run on your own data folder instead."),
    quick: bool = typer.Option(False, "--quick", help="A few dozen training steps instead of hundreds (a smoke test, about a minute)."),
    seed: int = SEED,
    mask_kind: str = typer.Option("auto", "--mask-kind", help="auto | binary | labels: how to read the masks "
                                  "of --data."),
) -> None:
    """The main job: simulate data, train, synthesise, segment, analyse, report."""
    from .demo import run_demo

    run_demo(out, data=data, quick=quick, seed=seed, mask_kind=mask_kind)


HEAVY_COMMANDS = {"train-seg", "train-gan", "adapt", "segment", "synthesize", "evaluate", "demo", "analyze"}
INFERENCE_COMMANDS = {"segment", "evaluate", "analyze"}


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: every failure is one line on stderr, never a traceback (unless ``--debug``).

    Exit status 2 for bad input or usage (the message names the file or option), 130 when
    interrupted, 1 for an internal error. ``--debug`` anywhere on the command line (or
    ``SAGEGAN_DEBUG=1``) shows the traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        os.environ["SAGEGAN_DEBUG"] = "1"  # survives the re-exec below
    debug = bool(os.environ.get("SAGEGAN_DEBUG"))
    if HEAVY_COMMANDS & set(args[:3]):
        inference = INFERENCE_COMMANDS & set(args[:3])
        reexec_with_malloc_settings(["-m", "sagegan", *args], MALLOC_ENV_INFERENCE if inference else MALLOC_ENV)
    try:
        status = app(args=args, prog_name="sagegan", standalone_mode=False)
    except typer.Exit as exc:
        status = exc.exit_code
    except typer.Abort:
        _fail("interrupted", 130)
    except TyperException as exc:  # usage: unknown option, invalid value...
        message = _one_line(exc.format_message())
        if not message:  # no arguments at all: the help has been shown
            sys.exit(exc.exit_code)
        _fail(message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if debug:
            raise
        _fail(*_describe(exc))
    sys.exit(status if isinstance(status, int) else 0)


def _describe(exc: Exception) -> tuple[str, int]:
    """The one line (and exit status) for an exception that reached the command line."""
    if isinstance(exc, (InputError, ValueError)):  # bad input, argument checks of the Python API
        return _one_line(str(exc)), 2
    if isinstance(exc, OSError):  # unwritable output, full disk, missing folder...
        where = exc.filename or ""
        what = exc.strerror or str(exc)
        return (f"{where}: {what}" if where else what), 2
    return (f"internal error: {type(exc).__name__}: {_one_line(str(exc))} "
            "(run with --debug for the traceback)"), 1


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str, status: int) -> None:
    typer.echo(f"sagegan: error: {message}" if status != 130 else f"sagegan: {message}", err=True)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    main()
