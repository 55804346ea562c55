"""Phase 1: train the Attention U-Net segmenter on a few real image/mask pairs.

One explicit loop: sample patches, forward, loss, backward, step, log; validate every
``val_every`` steps on whole validation images (object F1 at IoU 0.5, Hungarian matching); keep
the best checkpoint; stop early, at ``max_minutes`` or at ``epochs``. ``--resume`` continues from
``last.safetensors``.
"""

from __future__ import annotations

import csv
import math
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import (load_tensors, optimizer_tensors, read_json, restore_optimizer, save_tensors,
                         write_json)
from .data import Augment, PreparedImage, make_batch, median_diameter, prepare
from .infer import (MIN_AREA_FRACTION, MODEL_FILE, Segmenter, calibrate_autocorr, default_min_area,
                    instances_from_maps, predict_maps)
from .io import InputError, Sample
from .losses import OUT_CHANNELS, segmentation_loss
from .nets.attention_unet import AttentionUNet

ARCHS = ("attention-unet", "unet")


@dataclass
class SegTrainConfig:
    """Every setting of a phase 1 run; saved in the run's config.json."""

    arch: str = "attention-unet"
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    norm: str = "batch"
    dropout: float = 0.0
    bottleneck_attention: bool = False
    loss: str = "ce_dice"
    canonical_diameter_px: float | None = 24.0   # None trains at native scale
    patch_size: int = 256
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 200                # an epoch = one patch per training image
    max_minutes: float | None = None
    val_every: int = 200
    val_max_images: int = 24
    patience: int = 10               # validations without improvement before stopping
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown --arch {self.arch!r} (expected {' or '.join(ARCHS)})")
        if self.patch_size % 2 ** (len(self.widths) - 1):
            raise ValueError(f"patch size {self.patch_size} must be divisible by {2 ** (len(self.widths) - 1)}")
        if isinstance(self.augment, dict):
            self.augment = Augment(**self.augment)
        self.widths = tuple(self.widths)

    def model_config(self) -> dict:
        return {"in_channels": 1, "out_channels": OUT_CHANNELS, "widths": list(self.widths), "norm": self.norm,
                "dropout": self.dropout, "attention_gates": self.arch == "attention-unet",
                "bottleneck_attention": self.bottleneck_attention}

    @classmethod
    def from_dict(cls, d: dict) -> "SegTrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown --device {name!r} (expected auto, cpu or cuda)")
    return torch.device(name)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def split_validation(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the samples (at least one when there are two or more)."""
    if len(samples) < 2:
        return list(samples), []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    n_val = max(1, int(round(fraction * len(samples))))
    val = {int(i) for i in order[:n_val]}
    return [s for i, s in enumerate(samples) if i not in val], [s for i, s in enumerate(samples) if i in val]


def validate(seg: Segmenter, val: Sequence[PreparedImage],
             thresholds: Sequence[tuple[float, ...]] = ((0.5, 0.5),)) -> dict[tuple[float, ...], tuple[float, float]]:
    """Mean F1@0.5 and Dice over validation images for each post-processing setting.

    A setting is (fg threshold, seed threshold) or (fg, seed, min area fraction); the fraction
    defaults to the model's. Images are predicted at their ground-truth scale (the oracle zoom),
    once; the settings only change the cheap watershed step.
    """
    from .metrics import evaluate_pair

    seg.net.eval()
    scores: dict[tuple[float, ...], list] = {t: [] for t in thresholds}
    model_fraction = seg.postprocess["min_area_fraction"]
    for item in val:
        maps = predict_maps(seg, item.image, item.scale)
        for setting in thresholds:
            fg, seed, fraction = (*setting, model_fraction)[:3]
            labels = instances_from_maps(maps["probs"], maps["distance"], fg, seed,
                                         default_min_area(seg.canonical_diameter_px, item.scale, fraction))
            r = evaluate_pair(labels, item.labels)
            scores[setting].append((r["f1_50"], r["dice"]))
    return {t: tuple(float(np.mean(v)) for v in zip(*rows)) if rows else (float("nan"), float("nan"))
            for t, rows in scores.items()}


# Checkpoints are chosen by validation F1 at the best of a few watershed settings rather than at
# one fixed setting: models early and late in training, and models trained on a handful of images,
# prefer different thresholds, and at a fixed one a good model can score 0 (seen with k = 8 EMPS
# images, where one such validation image made a run keep its first checkpoint). Ties go to Dice,
# then to the later checkpoint (an uninformative validation set then keeps the latest weights).
SELECTION_GRID = ((0.4, 0.3), (0.4, 0.5), (0.5, 0.4), (0.5, 0.6))
DICE_TIEBREAK = 1e-3


def selection_score(seg: Segmenter, val: Sequence[PreparedImage]) -> tuple[float, float, float]:
    """(score, F1@0.5, Dice) for choosing checkpoints: see ``SELECTION_GRID``; compare with ``>=``."""
    f1, dice = max(validate(seg, val, SELECTION_GRID).values())  # by F1, then Dice
    return f1 + DICE_TIEBREAK * dice, f1, dice


def tune_postprocess(seg: Segmenter, val: Sequence[PreparedImage]) -> tuple[dict[str, float], tuple[float, float]]:
    """Watershed thresholds, then the minimum particle area, that maximise validation F1@0.5.

    Returns the ``postprocess`` settings (as stored in config.json) and their (F1@0.5, Dice).
    """
    # The thresholds are tuned at the default minimum area, whatever the model's config holds, so
    # that re-tuning a tuned model gives the same result.
    grid = [(fg, sd, MIN_AREA_FRACTION) for fg in (0.4, 0.5, 0.6) for sd in (0.3, 0.4, 0.5, 0.6, 0.7)]
    scores = validate(seg, val, grid)
    fg, sd, _ = max(scores, key=lambda t: scores[t][0])
    # A larger minimum area removes fragments and debris (labels, scale bars) at some cost in
    # small particles; on held-out EMPS images the best share was 0.3 of a canonical particle.
    scores = validate(seg, val, [(fg, sd, fraction) for fraction in (0.05, 0.1, 0.2, 0.3, 0.5)])
    (fg, sd, fraction), best = max(scores.items(), key=lambda kv: kv[1][0])
    return {"fg_threshold": fg, "seed_threshold": sd, "min_area_fraction": fraction}, best


def train_segmenter(train: Sequence[Sample], out: str | Path, config: SegTrainConfig | None = None,
                    val: Sequence[Sample] | None = None, resume: bool = False, progress: bool = True,
                    init_weights: str | Path | None = None) -> Path:
    """Train a segmenter; writes ``segmenter.safetensors``, ``config.json`` and ``train_log.csv`` to ``out``.

    Parameters
    ----------
    train : labelled samples (from :func:`sagegan.io.load_pairs`).
    val : validation samples; when None, ``config.val_fraction`` of ``train`` is held out.
    resume : continue from ``out/last.safetensors``.
    init_weights : a segmenter.safetensors to start from (fine-tuning).
    """
    cfg = config or SegTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not train:
        raise InputError("no training images")
    if val is None:
        train, val = split_validation(train, cfg.val_fraction, cfg.seed)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    train_items = [prepare(s, cfg.canonical_diameter_px) for s in train]
    val_items = [prepare(s, cfg.canonical_diameter_px) for s in list(val)[: cfg.val_max_images]]
    net = AttentionUNet.from_config(cfg.model_config())
    if init_weights is not None:
        from .checkpoint import load_module_weights

        load_module_weights(net, init_weights)
    # channels-last convolutions measured ~1.3x faster for a training step on 2 CPU cores
    net = net.to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Validation F1 should rise: the scheduler watches it in "max" mode.
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    steps_per_epoch = max(1, math.ceil(len(train_items) / cfg.batch_size))
    max_steps = cfg.epochs * steps_per_epoch
    run_config: dict[str, Any] = {
        "kind": "sagegan-segmenter",
        "model": cfg.model_config(),
        "canonical_diameter_px": cfg.canonical_diameter_px,
        "normalisation": {"kind": "percentile", "low": 0.5, "high": 99.5},
        "patch_size": cfg.patch_size,
        "postprocess": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area_fraction": MIN_AREA_FRACTION},
        # calibrates --scale auto's first size estimate on the training images
        "autocorr_factor": calibrate_autocorr([s.image for s in train], [s.labels for s in train]),
        "train": asdict(cfg),
        "data": _data_summary(train_items, val_items),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "device": str(device),
    }
    state = {"step": 0, "best_f1": -1.0, "bad_validations": 0, "elapsed_s": 0.0}
    log_path = out / "train_log.csv"
    if resume:
        state = _resume(out, net, opt, sched, rng, device)
    elif log_path.exists():
        log_path.unlink()
    if resume and (out / "config.json").exists():  # keep what the earlier sitting found
        previous = read_json(out / "config.json")
        if "best_validation" in previous:
            run_config["best_validation"] = previous["best_validation"]
        run_config["resumed"] = True
    write_json(out / "config.json", run_config)

    use_amp = device.type == "cuda"
    seg = Segmenter(net, run_config, out)
    start = time.monotonic() - state["elapsed_s"]
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else float("inf")
    log_file = log_path.open("a", newline="")
    log = csv.writer(log_file)
    if log_path.stat().st_size == 0:
        log.writerow(["step", "epoch", "elapsed_s", "loss", "lr", "val_f1_50", "val_dice"])
    bar = _progress(progress, max_steps, state["step"])
    losses: list[float] = []
    stop_reason = "epochs"
    try:
        while state["step"] < max_steps:
            if time.monotonic() - start > budget_s:
                stop_reason = "max_minutes"
                break
            net.train()
            image, classes, distance, weights = (torch.from_numpy(a).to(device) for a in
                                                 make_batch(train_items, cfg.batch_size, cfg.patch_size, rng, cfg.augment))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                outputs = net(image[:, None].contiguous(memory_format=torch.channels_last))
            loss = segmentation_loss(outputs.float(), classes.long(), distance, weights, kind=cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            losses.append(loss.item())
            bar.update(1, loss=losses[-1])
            if state["step"] % cfg.val_every == 0 or state["step"] == max_steps:
                score, f1, dice = selection_score(seg, val_items) if val_items else (float("nan"),) * 3
                state["elapsed_s"] = time.monotonic() - start
                mean_loss = float(np.mean(losses))
                log.writerow([state["step"], round(state["step"] / steps_per_epoch, 2), round(state["elapsed_s"], 1),
                              round(mean_loss, 5), opt.param_groups[0]["lr"], round(f1, 4), round(dice, 4)])
                log_file.flush()
                losses.clear()
                # Without validation images the (negated) training loss picks the checkpoint.
                if not val_items:
                    score = -mean_loss
                sched.step(score)
                if score >= state["best_f1"]:
                    state["best_f1"], state["bad_validations"] = score, 0
                    run_config["best_validation"] = {"step": state["step"], "f1_50": f1, "dice": dice}
                    save_tensors(out / MODEL_FILE, net.state_dict())
                    write_json(out / "config.json", run_config)
                else:
                    state["bad_validations"] += 1
                _save_last(out, net, opt, sched, rng, state)
                bar.set_description(f"val F1 {f1:.3f} (best {state['best_f1']:.3f})")
                if state["bad_validations"] >= cfg.patience:
                    stop_reason = "early_stopping"
                    break
    finally:
        bar.close()
        log_file.close()
    if not (out / MODEL_FILE).exists():  # the budget ended before the first validation
        save_tensors(out / MODEL_FILE, net.state_dict())
    _save_last(out, net, opt, sched, rng, state)
    # Tune the watershed thresholds of the best model on the validation images.
    from .checkpoint import load_module_weights

    load_module_weights(net, out / MODEL_FILE)
    if val_items:
        run_config["postprocess"], (f1, dice) = tune_postprocess(seg, val_items)
        run_config["best_validation"] = {**run_config.get("best_validation", {}), "tuned_f1_50": f1,
                                         "tuned_dice": dice}
    run_config.update(stop_reason=stop_reason, steps=state["step"],
                      train_seconds=round(time.monotonic() - start, 1))
    write_json(out / "config.json", run_config)
    return out


def _data_summary(train: Sequence[PreparedImage], val: Sequence[PreparedImage]) -> dict:
    diam = [it.median_diameter_px for it in train]
    return {"n_train": len(train), "n_val": len(val), "train_stems": [it.stem for it in train],
            "val_stems": [it.stem for it in val],
            "n_train_particles": int(sum(len(np.unique(it.labels)) - 1 for it in train)),
            "median_diameter_px_range": [float(np.nanmin(diam)), float(np.nanmax(diam))] if diam else None}


def _progress(enabled: bool, total: int, done: int):
    from .progress import StepBar

    return StepBar(total, done, enabled, "training segmenter")


def _save_last(out: Path, net, opt, sched, rng: np.random.Generator, state: dict) -> None:
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt_t, opt_s = optimizer_tensors(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    save_tensors(out / "last.safetensors", tensors)
    write_json(out / "last_state.json", {**state, "optimizer": opt_s, "scheduler": sched.state_dict(),
                                         "numpy_rng": rng.bit_generator.state})


def _resume(out: Path, net, opt, sched, rng: np.random.Generator, device) -> dict:
    if not (out / "last.safetensors").exists():
        raise InputError(f"{out}: nothing to resume (no last.safetensors)")
    tensors = load_tensors(out / "last.safetensors")
    saved = read_json(out / "last_state.json")
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    restore_optimizer(opt, {k: v.to(device) for k, v in tensors.items() if k.startswith("opt.")}, saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = saved["numpy_rng"]
    return {k: saved[k] for k in ("step", "best_f1", "bad_validations", "elapsed_s")}
