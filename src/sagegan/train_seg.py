"""Phase 1: train the Attention U-Net segmenter on a few real image/mask pairs.

One explicit loop: sample patches, forward, loss, backward, step, log; validate every
``val_every`` steps on whole validation images (object F1 at IoU 0.5, Hungarian matching); keep
the best checkpoint; stop early, at ``max_minutes``, at ``epochs`` or on SIGINT/SIGTERM (which
stop as the time budget does, then raise :class:`sagegan.runs.TrainingInterrupted`). ``--resume``
continues from ``last.safetensors``; the run folder is guarded by :class:`sagegan.runs.RunFolder`.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data import Augment, PreparedImage, make_batch, prepare
from .ddp import Ranks, distributed_context, sync_batchnorm
from .infer import calibrate_autocorr
from .io import InputError, Sample, read_json, write_json
from .losses import OUT_CHANNELS, segmentation_loss
from .nets.attention_unet import AttentionUNet
from .progress import StepBar, TrainingCallbacks, TrainingLog
from .runs import (CONFIG_FILE, DEFAULT_POSTPROCESS, SEGMENTER_FILE, RunFolder, Segmenter, StopSignals, TrainingInterrupted,
                   TrainingState, check_resume_architecture, git_commit, load_module_weights, resolve_device,
                   save_tensors, trim_log, weights_sha256)
from .validation import calibrate_scores, selection_score, split_validation, tune_postprocess

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
    max_steps: int | None = None     # a cap on the steps that ``epochs`` gives
    max_minutes: float | None = None
    val_every: int = 200
    val_max_images: int = 24
    patience: int = 10               # validations without improvement before stopping
    # Checkpoints are chosen on an exponential moving average of the validation score (this weight
    # on the past), so that one lucky validation on a few images does not pick the model.
    selection_smoothing: float = 0.5
    # "best": the checkpoint of the best (smoothed) validation score; "last": the latest weights
    # (label-free adaptation, which has no validation labels)
    checkpoint: str = "best"
    # pairs made by copy-paste (sagegan.copy_paste) from the training pairs' own particles, per
    # training image, added to the training set once at the start; 0: none
    copy_paste_per_image: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown --arch {self.arch!r} (expected {' or '.join(ARCHS)})")
        if self.checkpoint not in ("best", "last"):
            raise ValueError(f"unknown checkpoint choice {self.checkpoint!r} (expected best or last)")
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


def config_from_init(cfg: SegTrainConfig, init_folder: str | Path) -> SegTrainConfig:
    """``cfg`` with the architecture and canonical scale of the model in ``init_folder``, whose weights
    a fine-tuning run starts from (the other settings, e.g. steps and learning rate, stay ``cfg``'s)."""
    config = read_json(Path(init_folder) / CONFIG_FILE)
    model = config.get("model") or {}
    if "widths" not in model:
        raise InputError(f"{Path(init_folder) / CONFIG_FILE}: no 'model' section; is this a sagegan model folder?")
    return replace(cfg, widths=tuple(model["widths"]), norm=model.get("norm", cfg.norm),
                   dropout=model.get("dropout", cfg.dropout),
                   arch="attention-unet" if model.get("attention_gates", True) else "unet",
                   bottleneck_attention=model.get("bottleneck_attention", False),
                   canonical_diameter_px=config.get("canonical_diameter_px"))


def train_segmenter(train: Sequence[Sample], out: str | Path | RunFolder, config: SegTrainConfig | None = None,
                    val: Sequence[Sample] | None = None, resume: bool = False, progress: bool = True,
                    init_weights: str | Path | None = None, callbacks: TrainingCallbacks | None = None,
                    overwrite: bool = False, record: dict | None = None) -> Path:
    """Train a segmenter; writes ``segmenter.safetensors``, ``config.json`` and ``train_log.csv`` to ``out``.

    Parameters
    ----------
    train : labelled samples (from :func:`sagegan.io.load_pairs`).
    val : validation samples; when None, ``config.val_fraction`` of ``train`` is held out.
    resume : continue from ``out/last.safetensors``.
    init_weights : a segmenter.safetensors to start from (fine-tuning).
    callbacks : hooks called after every step and every validation.
    overwrite : replace the run in a non-empty ``out`` (kept as ``out.bak-<time>``); without it, or
        ``resume``, a non-empty ``out`` is refused. A :class:`RunFolder` that the caller holds is
        used as it is.
    record : extra keys for the run's config.json (e.g. how ``sagegan adapt`` made the data).

    Under ``torchrun`` every process calls this; they train with DDP and rank 0 alone writes
    ``out`` (:mod:`sagegan.ddp`).

    Raises :class:`sagegan.runs.TrainingInterrupted` after SIGINT/SIGTERM, once the run is saved.
    """
    cfg = config or SegTrainConfig()
    if not train:
        raise InputError("no training images")
    with distributed_context(cfg.device) as ranks:
        if not ranks.main:  # reads ``out`` (to resume) but never writes it
            path = out.path if isinstance(out, RunFolder) else Path(out)
            _train(_ReadOnlyFolder(path), train, cfg, val, resume, False, init_weights, callbacks, record, ranks)
            return path
        if isinstance(out, RunFolder):
            _train(out, train, cfg, val, resume, progress, init_weights, callbacks, record, ranks)
            return out.final
        folder = RunFolder(out, resume=resume, overwrite=overwrite)
        with folder:
            _train(folder, train, cfg, val, resume, progress, init_weights, callbacks, record, ranks)
        return folder.final


class _ReadOnlyFolder:
    """The run folder as ranks other than 0 see it: they may read it (to resume), never write it."""

    def __init__(self, path: Path):
        self.path = self.final = path

    def checkpointed(self) -> None:
        pass


def _train(folder: RunFolder, train: Sequence[Sample], cfg: SegTrainConfig, val: Sequence[Sample] | None,
           resume: bool, progress: bool, init_weights: str | Path | None,
           callbacks: TrainingCallbacks | None, record: dict | None = None, ranks: Ranks = Ranks()) -> None:
    out = folder.path
    if val is None:
        train, val = split_validation(train, cfg.val_fraction, cfg.seed)
    device = ranks.device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    # each rank draws its patches from its own stream (one process: the seed's stream, as always)
    rng = np.random.default_rng([cfg.seed, ranks.rank] if ranks.active else cfg.seed)
    if cfg.copy_paste_per_image > 0:
        from .copy_paste import copy_paste_pairs

        n_pasted = max(1, int(round(cfg.copy_paste_per_image * len(train))))
        train = list(train) + copy_paste_pairs(list(train), n_pasted, np.random.default_rng(cfg.seed + 1))
    train_items = [prepare(s, cfg.canonical_diameter_px) for s in train]
    val_items = [prepare(s, cfg.canonical_diameter_px) for s in list(val)[: cfg.val_max_images]]
    net = AttentionUNet.from_config(cfg.model_config())
    if init_weights is not None:
        load_module_weights(net, init_weights)
    # channels-last convolutions are faster for a training step on CPU (BENCHMARKS.md)
    net = sync_batchnorm(net, device, ranks).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Validation F1 should rise: the scheduler watches it in "max" mode.
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    run_config = _run_config(cfg, train, train_items, val_items, device)
    if init_weights is not None:
        # Fine-tuning keeps the starting model's post-processing until validation re-tunes it.
        init_folder = Path(init_weights).parent
        init_config = read_json(init_folder / CONFIG_FILE) if (init_folder / CONFIG_FILE).exists() else {}
        run_config["postprocess"] = {**run_config["postprocess"], **init_config.get("postprocess", {})}
        run_config["init"] = {"path": str(init_folder), "name": init_config.get("name"),
                              "version": init_config.get("version"), "sha256": weights_sha256(init_weights)}
    run_config.update(record or {})
    if ranks.active:
        run_config["distributed"] = {"world_size": ranks.world_size, "backend": torch.distributed.get_backend(),
                                     "batch_per_rank": ranks.local_batch(cfg.batch_size)}
    saved = TrainingState({"model": net}, {"opt": opt}, sched, rng)
    loop = _Loop(folder, cfg, train_items, val_items, Segmenter(net, run_config, folder.final), opt, sched, saved,
                 device, callbacks or TrainingCallbacks(), ranks)
    if resume:
        check_resume_architecture(out, {"model": cfg.model_config()})
        loop.state = saved.load(out, device)
        if ranks.main:
            trim_log(loop.log_path, loop.state["step"])  # rows a killed sitting logged after its state
    if resume and (out / "config.json").exists():  # keep what the earlier sitting found and tuned
        previous = read_json(out / "config.json")
        for key in ("best_validation", "postprocess"):
            if key in previous:
                run_config[key] = previous[key]
        run_config["resumed"] = True
    if ranks.main:
        write_json(out / "config.json", run_config)
    with loop.stop:
        stop_reason = loop.run(progress)
        if ranks.main:
            _finish(net, val_items, run_config, loop, stop_reason)
    if stop_reason == "interrupted":
        raise TrainingInterrupted(folder.final, loop.stop.signum, loop.state["step"])


def _run_config(cfg: SegTrainConfig, train: Sequence[Sample], train_items: Sequence[PreparedImage],
                val_items: Sequence[PreparedImage], device: torch.device) -> dict[str, Any]:
    return {
        "kind": "sagegan-segmenter",
        "model": cfg.model_config(),
        "canonical_diameter_px": cfg.canonical_diameter_px,
        "normalisation": {"kind": "percentile", "low": 0.5, "high": 99.5},
        "patch_size": cfg.patch_size,
        "postprocess": dict(DEFAULT_POSTPROCESS),
        # calibrates --scale auto's first size estimate on the training images
        "autocorr_factor": calibrate_autocorr([s.image for s in train], [s.labels for s in train]),
        "train": asdict(cfg),
        "data": _data_summary(train_items, val_items),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "device": str(device),
    }


class _Loop:
    """Phase 1's loop and the state it carries between steps (saved by ``--resume``)."""

    def __init__(self, folder: RunFolder, cfg: SegTrainConfig, train_items, val_items, seg: Segmenter, opt, sched,
                 saved: TrainingState, device: torch.device, callbacks: TrainingCallbacks, ranks: Ranks = Ranks()):
        self.folder, self.cfg, self.train_items, self.val_items = folder, cfg, train_items, val_items
        self.seg, self.net, self.opt, self.sched, self.saved = seg, seg.net, opt, sched, saved
        self.ranks = ranks
        self.train_net = ranks.wrap(seg.net, device)  # DDP around the net under torchrun
        self.batch_size = ranks.local_batch(cfg.batch_size)
        self.device, self.callbacks = device, callbacks
        self.stop = StopSignals()
        self.state = {"step": 0, "best_f1": -1.0, "bad_validations": 0, "elapsed_s": 0.0}
        self.steps_per_epoch = max(1, math.ceil(len(train_items) / cfg.batch_size))
        self.max_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.max_steps = min(self.max_steps, cfg.max_steps)
        self.losses: list[float] = []

    @property
    def out(self) -> Path:
        """Where the run writes now (see :class:`RunFolder`: it moves once with ``overwrite``)."""
        return self.folder.path

    @property
    def log_path(self) -> Path:
        return self.out / "train_log.csv"

    def run(self, progress: bool) -> str:
        """Train until the epochs, the budget, patience or a stop signal end it; returns why it stopped."""
        cfg = self.cfg
        self.start = time.monotonic() - self.state["elapsed_s"]
        budget_s = cfg.max_minutes * 60 if cfg.max_minutes else float("inf")
        first_step, self.validated = self.state["step"], False
        reason = "epochs"
        ranks = self.ranks
        columns = ["step", "epoch", "elapsed_s", "loss", "lr", "val_f1_50", "val_dice"]
        with TrainingLog(self.log_path, columns) if ranks.main else nullcontext() as log:
            bar = StepBar(self.max_steps, self.state["step"], progress and ranks.main, "training segmenter")
            try:
                while self.state["step"] < self.max_steps:
                    # every rank stops at the same step: a signal to any of them, rank 0's clock
                    code = STOP_CODES["interrupted"] if self.stop.signum is not None else 0
                    if ranks.main and time.monotonic() - self.start > budget_s:
                        code = max(code, STOP_CODES["max_minutes"])
                    code = ranks.agree(code)
                    if code:
                        reason = STOP_REASONS[code]
                        break
                    self.train_step(bar)
                    if self.state["step"] % cfg.val_every == 0 or self.state["step"] == self.max_steps:
                        if ranks.main:
                            self.validate(log, bar)
                        ranks.share_learning_rate(self.opt)
                        if ranks.agree(int(ranks.main and self.state["bad_validations"] >= cfg.patience)):
                            reason = "early_stopping"
                            break
                # A budget or a signal that came before this sitting's first validation: validate
                # once, so that the weights it trained are scored (and a new run has a model).
                if ranks.main and not self.validated and (self.state["step"] > first_step
                                                          or not (self.out / SEGMENTER_FILE).exists()):
                    self.validate(log, bar)
            finally:
                bar.close()
        return reason

    def train_step(self, bar: StepBar) -> None:
        cfg, device = self.cfg, self.device
        self.net.train()
        image, classes, distance, weights = (torch.from_numpy(a).to(device) for a in
                                             make_batch(self.train_items, self.batch_size, cfg.patch_size,
                                                        self.saved.rng, cfg.augment))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs = self.train_net(image[:, None].contiguous(memory_format=torch.channels_last))
        loss = segmentation_loss(outputs.float(), classes.long(), distance, weights, kind=cfg.loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.state["step"] += 1
        self.losses.append(loss.item())
        bar.update(1, loss=self.losses[-1])
        self.callbacks.step(self.state["step"], loss=self.losses[-1], elapsed_s=time.monotonic() - self.start)

    def validate(self, log: TrainingLog, bar: StepBar) -> None:
        """Score the validation images, log, keep the best checkpoint, save the training state."""
        state, run_config = self.state, self.seg.config
        score, f1, dice = selection_score(self.seg, self.val_items) if self.val_items else (float("nan"),) * 3
        state["elapsed_s"] = time.monotonic() - self.start
        mean_loss = float(np.mean(self.losses)) if self.losses else float("nan")
        lr = self.opt.param_groups[0]["lr"]
        log.write([state["step"], round(state["step"] / self.steps_per_epoch, 2), round(state["elapsed_s"], 1),
                   round(mean_loss, 5), lr, round(f1, 4), round(dice, 4)])
        self.losses.clear()
        # Without validation images the (negated) training loss picks the checkpoint.
        if not self.val_items:
            score = -mean_loss
        self.sched.step(score)
        if "smoothed" in state and math.isfinite(state["smoothed"]):
            score = self.cfg.selection_smoothing * state["smoothed"] + (1.0 - self.cfg.selection_smoothing) * score
        state["smoothed"] = score
        if score >= state["best_f1"] or self.cfg.checkpoint == "last":
            state["best_f1"], state["bad_validations"] = score, 0
            run_config["best_validation"] = {"step": state["step"], "f1_50": f1, "dice": dice,
                                             "smoothed_score": score}
            save_tensors(self.out / SEGMENTER_FILE, self.net.state_dict())
            write_json(self.out / "config.json", run_config)
        else:
            state["bad_validations"] += 1
        self.saved.save(self.out, state)
        self.folder.checkpointed()
        self.validated = True
        bar.set_description(f"val F1 {f1:.3f} (best {state['best_f1']:.3f})")
        self.callbacks.validation(state["step"], f1_50=f1, dice=dice, loss=mean_loss, lr=lr,
                                  elapsed_s=state["elapsed_s"])


# why the ranks stop (the largest code any rank reports wins)
STOP_CODES = {"interrupted": 2, "max_minutes": 1}
STOP_REASONS = {code: reason for reason, code in STOP_CODES.items()}


def _finish(net: AttentionUNet, val_items, run_config: dict, loop: _Loop, stop_reason: str) -> None:
    """Save the last state, reload the best weights and tune their post-processing."""
    if not (loop.out / SEGMENTER_FILE).exists():  # no validation score was ever finite
        save_tensors(loop.out / SEGMENTER_FILE, net.state_dict())
    loop.saved.save(loop.out, loop.state)
    loop.folder.checkpointed()
    out = loop.out
    load_module_weights(net, out / SEGMENTER_FILE)
    if val_items:
        run_config["postprocess"], (f1, dice) = tune_postprocess(Segmenter(net, run_config, out), val_items)
        run_config["best_validation"] = {**run_config.get("best_validation", {}), "tuned_f1_50": f1,
                                         "tuned_dice": dice}
        scoring, run_config["score_calibration_fit"] = calibrate_scores(Segmenter(net, run_config, out), val_items)
        run_config["postprocess"].update(scoring)
    run_config.update(stop_reason=stop_reason, steps=loop.state["step"],
                      train_seconds=round(time.monotonic() - loop.start, 1))
    write_json(out / "config.json", run_config)


def _data_summary(train: Sequence[PreparedImage], val: Sequence[PreparedImage]) -> dict:
    diam = [it.median_diameter_px for it in train]
    return {"n_train": len(train), "n_val": len(val), "train_stems": [it.stem for it in train],
            "val_stems": [it.stem for it in val],
            "n_train_particles": int(sum(len(np.unique(it.labels)) - 1 for it in train)),
            "median_diameter_px_range": [float(np.nanmin(diam)), float(np.nanmax(diam))] if diam else None}
