"""Phase 2: SAGE-GAN — the phase 1 segmenter embedded in a cycle-consistent GAN.

Networks: generator G (mask -> image, :class:`StyleUNet`), segmenter S (image -> mask, the phase
1 :class:`AttentionUNet`, fine-tuned), image discriminator D_img (with DiffAugment) and mask
discriminator D_mask (PatchGANs, least-squares loss).

Differences from the reference code (see shared/docs/reference.md, "Known flaws"):
* G is warmed up before its images train S: for ``warmup_steps`` S learns from real pairs only
  and gets no gradient through G; afterwards the share of iterations in which S also learns
  from G(mask) ramps linearly from 0 to ``synthetic_share_max`` (0.6).
* A differentiable mask path (``mask_path="soft"`` or ``"straight-through"``) can let the
  image-cycle and mask-adversarial terms reach S. It did not measurably help (BENCHMARKS.md,
  phase 2 ablation), so ``"detached"``, as in the reference, is the default.
* Optional style encoder (``style_encoder=True``, BicycleGAN's cVAE-GAN + cLR-GAN): the reference
  draws one random z for the paired L1 term, which teaches G to ignore z (one look per mask).
* Native-resolution (canonical-scale) patches, never whole-image resizing; the scheduler of S
  watches validation F1 in "max" mode; the best S is chosen on validation images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import Augment, N_CLASSES, PreparedImage, make_batch, normalise_percentile, prepare
from .io import InputError, Sample, read_json, write_image, write_json
from .losses import (FeaturePerceptualLoss, foreground_boundary_channels, lsgan_d_loss, lsgan_g_loss,
                     segmentation_loss, soft_mask_from_logits, straight_through_mask)
from .nets.patchgan import PatchDiscriminator, diff_augment
from .nets.style_encoder import StyleEncoder
from .nets.style_unet import StyleUNet
from .progress import StepBar, TrainingCallbacks, TrainingLog
from .runs import (DISC_IMAGE_FILE, DISC_MASK_FILE, GENERATOR_FILE, SEGMENTER_FILE, STYLE_ENCODER_FILE, RunFolder,
                   Segmenter, StopSignals, TrainingInterrupted, TrainingState, check_distinct_folders,
                   check_resume_architecture, git_commit, load_module_weights, load_segmenter, resolve_device,
                   save_modules, trim_log)
from .validation import selection_score, split_validation, tune_postprocess

@dataclass
class LossWeights:
    """Weights of the generator + segmenter objective (SAGE-GAN's values by default)."""

    seg_synthetic: float = 200.0    # S(G(mask)) vs mask
    seg_real: float = 100.0         # S(image) vs mask
    cycle_l1: float = 50.0          # G(S(image)) vs image
    cycle_perceptual: float = 100.0
    paired_l1: float = 25.0         # G(mask) vs image
    paired_perceptual: float = 50.0
    adv_image: float = 1.0          # D_img(G(mask)) -> real
    adv_mask: float = 1.0           # D_mask(S(image)) -> real
    # only with the style encoder (GanTrainConfig.style_encoder); BicycleGAN's ratios to the image
    # L1 term (0.01 and 0.5 against 10), scaled to the paired L1 weight here
    style_kl: float = 0.025         # KL(E(image) || N(0, I))
    latent_regression: float = 1.25  # |E(G(mask, z)).mu - z|, z drawn at random


@dataclass
class GanTrainConfig:
    """Every setting of a phase 2 run; saved in the run's config.json."""

    patch_size: int = 256
    batch_size: int = 2
    steps: int = 4000
    max_minutes: float | None = None
    lr_generator: float = 2e-4
    lr_segmenter: float = 1e-4
    lr_discriminator: float = 2e-4
    warmup_steps: int = 500
    ramp_steps: int = 1000
    synthetic_share_max: float = 0.6
    mask_path: str = "detached"     # detached | soft | straight-through (see the module docstring)
    # "frozen": S's BatchNorm layers normalise with their phase 1 running statistics and stop
    # updating them (their scale and shift still learn); "train": batch statistics, as in phase 1.
    # Frozen by default: it measured better (BENCHMARKS.md, phase 2 ablation).
    segmenter_norm: str = "frozen"
    # "bf16": the networks' forward and backward passes run under CPU/GPU autocast in bfloat16
    # (weights, optimiser state and losses stay float32). Faster convolutions on CPUs with
    # AVX-512 BF16 or AMX; fp32 is the default because only fp32 runs were measured for quality.
    precision: str = "fp32"
    seg_loss: str = "ce_dice"
    # True: a style encoder E maps each real patch to a latent z (BicycleGAN). The paired and
    # cycle terms render with E's z, so G must read z to reproduce each image's look; images
    # for the adversarial and synthetic-segmentation terms use random z, as synthesis does.
    # False: one random z for every term, as in the reference (G learns to ignore it).
    style_encoder: bool = False
    generator_widths: tuple[int, ...] = (16, 32, 64, 128)
    latent_dim: int = 128
    disc_channels: int = 32
    perceptual: str = "segmenter"   # segmenter | vgg19 (needs vgg19_weights)
    vgg19_weights: str | None = None
    weights: LossWeights = field(default_factory=LossWeights)
    val_every: int = 250
    val_max_images: int = 16
    sample_every: int = 250
    seed: int = 0
    device: str = "auto"
    augment: Augment = field(default_factory=lambda: Augment(brightness=0.05, contrast=0.1, gamma=0.1,
                                                             blur_prob=0.0, noise_prob=0.0))

    def __post_init__(self) -> None:
        if self.mask_path not in ("soft", "straight-through", "detached"):
            raise ValueError(f"unknown mask path {self.mask_path!r} (soft, straight-through or detached)")
        if self.segmenter_norm not in ("train", "frozen"):
            raise ValueError(f"unknown segmenter norm mode {self.segmenter_norm!r} (train or frozen)")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {self.precision!r} (fp32 or bf16)")
        if self.perceptual == "vgg19" and not self.vgg19_weights:
            raise ValueError("perceptual 'vgg19' needs a local weights file (--vgg19-weights)")
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        if isinstance(self.augment, dict):
            self.augment = Augment(**self.augment)
        self.generator_widths = tuple(self.generator_widths)

    def generator_config(self) -> dict:
        return {"in_channels": 2, "out_channels": 1, "widths": list(self.generator_widths),
                "latent_dim": self.latent_dim, "style_dim": self.latent_dim}

    def style_encoder_config(self) -> dict:
        return {"in_channels": 1, "latent_dim": self.latent_dim}

    @classmethod
    def from_dict(cls, d: dict) -> "GanTrainConfig":
        """The config a run saved; a config without ``segmenter_norm`` trained with "train"."""
        names = {f.name for f in fields(cls)}
        return cls(**{"segmenter_norm": "train", **{k: v for k, v in d.items() if k in names}})


def synthetic_share(step: int, cfg: GanTrainConfig) -> float:
    """Probability that S learns from G(mask) at ``step``: 0 during warm-up, then a linear ramp."""
    if step < cfg.warmup_steps:
        return 0.0
    return cfg.synthetic_share_max * min(1.0, (step - cfg.warmup_steps) / max(cfg.ramp_steps, 1))


@dataclass
class GanNets:
    generator: StyleUNet
    segmenter: torch.nn.Module
    disc_image: PatchDiscriminator
    disc_mask: PatchDiscriminator
    style_encoder: StyleEncoder | None = None


def build_nets(seg: Segmenter, cfg: GanTrainConfig, device: torch.device) -> GanNets:
    gen = StyleUNet(**cfg.generator_config())
    encoder = StyleEncoder(**cfg.style_encoder_config()).to(device) if cfg.style_encoder else None
    # channels-last segmenter: faster convolutions on CPU (see train_seg)
    return GanNets(gen.to(device), seg.net.to(device, memory_format=torch.channels_last),
                   PatchDiscriminator(1, cfg.disc_channels).to(device),
                   PatchDiscriminator(2, cfg.disc_channels).to(device), encoder)


def freeze_batchnorm_statistics(module: torch.nn.Module) -> torch.nn.Module:
    """Put every BatchNorm layer of ``module`` in eval mode (in place), leaving the rest as is.

    The layers then normalise with their running statistics and no longer update them, while
    their affine scale and shift keep training. Phase 1 estimates those statistics from batches
    of 8; a GAN batch of 2 patches gives far noisier ones.
    """
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()
    return module


def _mask_input(logits: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "straight-through":
        return foreground_boundary_channels(straight_through_mask(logits))
    soft = soft_mask_from_logits(logits)
    return soft.detach() if mode == "detached" else soft


def train_gan(train: Sequence[Sample], seg_run: str | Path, out: str | Path, config: GanTrainConfig | None = None,
              val: Sequence[Sample] | None = None, resume: bool = False, progress: bool = True,
              data_source: dict | None = None, callbacks: TrainingCallbacks | None = None,
              overwrite: bool = False, unlabeled: Sequence[np.ndarray] | None = None) -> Path:
    """Train SAGE-GAN from a phase 1 RUN folder; writes a GANRUN folder to ``out``.

    The GANRUN holds ``generator.safetensors``, both discriminators, the fine-tuned
    ``segmenter.safetensors`` (a valid ``--model`` for ``sagegan segment``), ``config.json``
    (with the layout model fitted to the training masks, used by ``sagegan synthesize``),
    ``train_log.csv`` and ``samples/step_*.png`` grids of real vs generated images; with
    ``style_encoder`` also ``style_encoder.safetensors``. ``callbacks`` are called after every
    step and every validation. A non-empty ``out`` is refused unless ``resume`` or ``overwrite``
    (see :class:`sagegan.runs.RunFolder`), and so is ``out`` equal to ``seg_run``. Raises
    :class:`sagegan.runs.TrainingInterrupted` after SIGINT/SIGTERM, once the run is saved.

    ``unlabeled`` images (float arrays, no masks) feed the image side: the cycle
    (image -> S -> mask -> G -> image) then runs on them instead of the labelled images, and the
    image discriminator takes them as real images beside the labelled ones. Each is zoomed to the
    canonical scale by the segmenter's zoom search.
    """
    cfg = config or GanTrainConfig()
    if not train:
        raise InputError("no training images")
    if unlabeled and cfg.style_encoder:
        raise ValueError("--unlabeled and --style-encoder cannot be combined yet: the style encoder's paired and "
                         "cycle terms need the same image")
    check_distinct_folders(out, seg_run, "--seg")
    folder = RunFolder(out, resume=resume, overwrite=overwrite)
    with folder:
        _train(folder, train, seg_run, cfg, val, resume, progress, data_source, callbacks, unlabeled or [])
    return folder.final


def _train(folder: RunFolder, train: Sequence[Sample], seg_run: str | Path, cfg: GanTrainConfig,
           val: Sequence[Sample] | None, resume: bool, progress: bool, data_source: dict | None,
           callbacks: TrainingCallbacks | None, unlabeled: Sequence[np.ndarray] = ()) -> None:
    out = folder.path
    device = resolve_device(cfg.device)
    seg = load_segmenter(seg_run, device)
    if val is None:
        train, val = split_validation(train, 0.1, cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    latent_rng = torch.Generator(device="cpu").manual_seed(cfg.seed)
    train_items = [prepare(s, seg.canonical_diameter_px) for s in train]
    val_items = [prepare(s, seg.canonical_diameter_px) for s in list(val)[: cfg.val_max_images]]
    unlabeled_items = [_unlabeled_item(seg, image, f"unlabeled_{i}") for i, image in enumerate(unlabeled)]
    nets = build_nets(seg, cfg, device)
    run_config = _run_config(seg, seg_run, cfg, train_items, val_items, data_source)
    run_config["data"]["n_unlabeled"] = len(unlabeled_items)
    loop = _GanLoop(folder, cfg, nets, train_items, val_items, run_config, rng, latent_rng, device,
                    callbacks or TrainingCallbacks(), unlabeled_items)
    if resume:
        check_resume_architecture(out, {k: run_config.get(k) for k in ("model", "generator", "style_encoder",
                                                                         "discriminators")})
        loop.state = loop.saved.load(out, device)
        trim_log(loop.log_path, loop.state["step"])  # rows a killed sitting logged after its state
        previous = read_json(out / "config.json") if (out / "config.json").exists() else {}
        # the best segmenter may come from an earlier sitting, and its tuned post-processing
        for key in ("best_validation", "postprocess"):
            if key in previous:
                run_config[key] = previous[key]
        run_config["resumed"] = True
    else:
        if val_items:
            score, f1, dice = selection_score(Segmenter(nets.segmenter, run_config), val_items)
            loop.state["best_f1"] = score
        else:
            f1 = dice = float("nan")
        run_config["best_validation"] = {"step": 0, "f1_50": f1, "dice": dice}
        save_modules(out, {SEGMENTER_FILE: nets.segmenter, **_gan_files(nets)})
    write_json(out / "config.json", run_config)
    with loop.stop:
        interrupted = loop.run(progress)
        _finish(nets, val_items, run_config, loop)
    if interrupted:
        raise TrainingInterrupted(folder.final, loop.stop.signum, loop.state["step"])


def _run_config(seg: Segmenter, seg_run: str | Path, cfg: GanTrainConfig, train_items: Sequence[PreparedImage],
                val_items: Sequence[PreparedImage], data_source: dict | None) -> dict[str, Any]:
    from .layouts import fit_layout_model

    layout = fit_layout_model([_zoom_labels(it.labels, it.scale) for it in train_items])
    return {
        **{k: v for k, v in seg.config.items() if k not in ("train", "best_validation", "stop_reason", "steps")},
        "kind": "sagegan-gan",
        "phase1_run": str(seg_run),
        "phase1_best_validation": seg.config.get("best_validation"),
        "generator": cfg.generator_config(),
        **({"style_encoder": cfg.style_encoder_config()} if cfg.style_encoder else {}),
        "discriminators": {"image": {"in_channels": 1, "base_channels": cfg.disc_channels},
                           "mask": {"in_channels": 2, "base_channels": cfg.disc_channels}},
        "gan": asdict(cfg),
        "layout_model": layout.to_dict(),
        "data": {**(data_source or {}), "n_train": len(train_items), "n_val": len(val_items),
                 "train_stems": [it.stem for it in train_items], "val_stems": [it.stem for it in val_items]},
        "git_commit": git_commit(),
        "torch": torch.__version__,
    }


def _unlabeled_item(seg: Segmenter, image: np.ndarray, stem: str) -> PreparedImage:
    """An image without a mask, at the zoom the segmenter's search gives it (no particles to centre on)."""
    from .infer import search_zoom

    zoom = search_zoom(seg, image)[0] if seg.canonical_diameter_px else 1.0
    empty = np.zeros(image.shape, np.int32)
    return PreparedImage(stem, normalise_percentile(image), empty, empty.astype(np.float32), zoom,
                         (seg.canonical_diameter_px or 1.0) / zoom)


def _gan_files(nets: GanNets) -> dict[str, torch.nn.Module | None]:
    """The GAN's own modules by file name (the segmenter is saved on its own schedule)."""
    return {GENERATOR_FILE: nets.generator, DISC_IMAGE_FILE: nets.disc_image, DISC_MASK_FILE: nets.disc_mask,
            STYLE_ENCODER_FILE: nets.style_encoder}


LOSS_COLUMNS = ("seg_synthetic", "seg_real", "cycle_l1", "cycle_perceptual", "paired_l1", "paired_perceptual",
                "adv_image", "adv_mask", "d_image", "d_mask")
STYLE_LOSS_COLUMNS = ("style_kl", "latent_regression")


class _GanLoop:
    """Phase 2's loop: optimisers, the state ``--resume`` restores, the log, and one step at a time."""

    def __init__(self, folder: RunFolder, cfg: GanTrainConfig, nets: GanNets, train_items, val_items,
                 run_config: dict, rng: np.random.Generator, latent_rng: torch.Generator, device: torch.device,
                 callbacks: TrainingCallbacks, unlabeled_items: Sequence[PreparedImage] = ()):
        self.folder, self.cfg, self.nets, self.device, self.callbacks = folder, cfg, nets, device, callbacks
        self.stop = StopSignals()
        self.train_items, self.val_items, self.run_config = train_items, val_items, run_config
        self.unlabeled_items = list(unlabeled_items)
        self.rng, self.latent_rng = rng, latent_rng
        G, S, E = nets.generator, nets.segmenter, nets.style_encoder
        # The perceptual loss compares features of a frozen copy of the phase 1 encoder
        # (ImageNet VGG weights cannot be had here; a local VGG19 file is accepted).
        if cfg.perceptual == "vgg19":
            from .nets.vgg19 import VGG19Features

            extractor = VGG19Features(cfg.vgg19_weights)
        else:
            extractor = S.encode
        self.perceptual = FeaturePerceptualLoss(extractor).to(device)
        # E learns with G (one optimiser): both serve the image side of the objective
        image_side = list(G.parameters()) + (list(E.parameters()) if E is not None else [])
        self.opt_G = torch.optim.Adam(image_side, lr=cfg.lr_generator, betas=(0.5, 0.999))
        self.opt_S = torch.optim.AdamW(S.parameters(), lr=cfg.lr_segmenter, weight_decay=1e-4)
        self.opt_D = torch.optim.Adam(list(nets.disc_image.parameters()) + list(nets.disc_mask.parameters()),
                                      lr=cfg.lr_discriminator, betas=(0.5, 0.999))
        self.sched_S = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt_S, mode="max", factor=0.5, patience=3)
        modules = {"G": G, "S": S, "Di": nets.disc_image, "Dm": nets.disc_mask, **({"E": E} if E is not None else {})}
        self.saved = TrainingState(modules, {"optG": self.opt_G, "optS": self.opt_S, "optD": self.opt_D},
                                   self.sched_S, rng, {"latent": latent_rng})
        self.state = {"step": 0, "best_f1": -1.0, "elapsed_s": 0.0}
        self.losses = list(LOSS_COLUMNS) + (list(STYLE_LOSS_COLUMNS) if E is not None else [])
        self.running: dict[str, list[float]] = {c: [] for c in self.losses}

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    @property
    def out(self) -> Path:
        """Where the run writes now (see :class:`RunFolder`: it moves once with ``overwrite``)."""
        return self.folder.path

    @property
    def log_path(self) -> Path:
        return self.out / "train_log.csv"

    def run(self, progress: bool) -> bool:
        """Train until the steps or the budget run out, or a stop signal; returns whether a signal stopped it."""
        cfg = self.cfg
        self.start = time.monotonic() - self.state["elapsed_s"]
        budget_s = cfg.max_minutes * 60 if cfg.max_minutes else float("inf")
        columns = ["step", "elapsed_s", "synthetic_share", *self.losses, "val_f1_50", "val_dice"]
        first_step, self.validated, interrupted = self.state["step"], False, False
        with TrainingLog(self.log_path, columns) as log:
            bar = StepBar(cfg.steps, self.state["step"], progress, "training SAGE-GAN")
            try:
                while self.state["step"] < cfg.steps and time.monotonic() - self.start < budget_s:
                    if self.stop.signum is not None:
                        interrupted = True
                        break
                    x, fake, mask, share = self.step(bar)
                    step = self.state["step"]
                    if step % cfg.sample_every == 0:
                        save_sample_grid(self.out / "samples" / f"step_{step:06d}.png", x, fake, mask)
                    if step % cfg.val_every == 0 or step == cfg.steps:
                        self.validate(log, bar, share)
                # A budget or a signal that came before this sitting's first validation: validate
                # once, so that the segmenter it trained is scored.
                if not self.validated and self.state["step"] > first_step:
                    self.validate(log, bar, synthetic_share(self.state["step"] - 1, cfg))
            finally:
                bar.close()
        self.state["elapsed_s"] = time.monotonic() - self.start
        return interrupted

    def step(self, bar: StepBar):
        """One iteration: a batch, the generator + segmenter update, the discriminator update."""
        cfg, nets, device = self.cfg, self.nets, self.device
        image, classes, distance, weights = (torch.from_numpy(a).to(device) for a in
                                             make_batch(self.train_items, cfg.batch_size, cfg.patch_size, self.rng,
                                                        cfg.augment))
        batch = _Batch(x=image[:, None].clamp(0, 1), classes=classes.long(), distance=distance, weights=weights)
        batch.mask = foreground_boundary_channels(batch.classes)
        if self.unlabeled_items:
            image = make_batch(self.unlabeled_items, cfg.batch_size, cfg.patch_size, self.rng, cfg.augment)[0]
            batch.unlabeled = torch.from_numpy(image).to(device)[:, None].clamp(0, 1)
        z = torch.randn(batch.x.shape[0], cfg.latent_dim, generator=self.latent_rng).to(device)
        share = synthetic_share(self.state["step"], cfg)
        warm = self.state["step"] >= cfg.warmup_steps
        s_learns_synthetic = bool(self.rng.random() < share)
        for module in (nets.generator, nets.segmenter, nets.disc_image, nets.disc_mask, nets.style_encoder):
            if module is not None:
                module.train()
        if cfg.segmenter_norm == "frozen":
            freeze_batchnorm_statistics(nets.segmenter)
        terms, fake, mask_of_real, adv_mask_scores = self.generator_step(batch, z, warm, s_learns_synthetic)
        d_image, d_mask, scores_mask = self.discriminator_step(batch, fake, mask_of_real)
        if adv_mask_scores is None:  # D_mask has not changed since the generator step: same value
            terms["adv_mask"] = cfg.weights.adv_mask * lsgan_g_loss(scores_mask[batch.x.shape[0]:].detach())
        self.state["step"] += 1
        for k, v in terms.items():
            self.running[k].append(v.item())
        self.running["d_image"].append(d_image.item())
        self.running["d_mask"].append(d_mask.item())
        loss = float(sum(self.running[k][-1] for k in terms))
        bar.update(1, loss=loss)
        self.callbacks.step(self.state["step"], loss=loss, d_image=self.running["d_image"][-1],
                            d_mask=self.running["d_mask"][-1], elapsed_s=time.monotonic() - self.start)
        return batch.x, fake, batch.mask, share

    def generator_step(self, b: "_Batch", z: torch.Tensor, warm: bool, s_learns_synthetic: bool):
        """Update G (and E) and S on the weighted sum of their terms; returns the terms, G(mask),
        the mask input made from S(x) and, when that mask carries gradients, D_mask's scores of it."""
        cfg, w = self.cfg, self.cfg.weights
        S, D_img, D_mask, E = self.nets.segmenter, self.nets.disc_image, self.nets.disc_mask, self.nets.style_encoder
        with self.autocast():
            out_real = S(b.x).float()
        # Before warm-up ends, S gets no gradient through G (its images are still noise).
        mask_of_real = _mask_input(out_real[:, :N_CLASSES], cfg.mask_path if warm else "detached")
        cycle_x, mask_of_cycle = b.x, mask_of_real
        if b.unlabeled is not None:  # the cycle runs on the unlabelled images
            with self.autocast():
                out_unlabeled = S(b.unlabeled).float()
            cycle_x = b.unlabeled
            mask_of_cycle = _mask_input(out_unlabeled[:, :N_CLASSES], cfg.mask_path if warm else "detached")
        with self.autocast():
            fake, paired, rebuilt, mu, logvar = self.render(b, z, mask_of_cycle)
            if s_learns_synthetic:
                out_fake = S(fake)
            else:  # G still learns to draw images that S segments correctly; S is not updated by them
                out_fake = torch.func.functional_call(S, {n: p.detach() for n, p in S.named_parameters()}, (fake,))
            if cycle_x is b.x:
                cycle_perceptual, paired_perceptual = (t.float() for t in self.perceptual.against(b.x, rebuilt, paired))
            else:
                cycle_perceptual = self.perceptual.against(cycle_x, rebuilt)[0].float()
                paired_perceptual = self.perceptual.against(b.x, paired)[0].float()
            adv_image_scores = D_img(diff_augment(fake)).float()
            # A detached mask gives the mask-adversarial term no path to G or S: its value is
            # taken from the discriminator pass instead of costing a forward and backward.
            adv_mask_scores = D_mask(mask_of_real).float() if mask_of_real.requires_grad else None
        out_fake = out_fake.float()
        terms = {
            "seg_synthetic": w.seg_synthetic * segmentation_loss(out_fake, b.classes, b.distance, kind=cfg.seg_loss),
            "seg_real": w.seg_real * segmentation_loss(out_real, b.classes, b.distance, b.weights, kind=cfg.seg_loss),
            "cycle_l1": w.cycle_l1 * F.l1_loss(rebuilt, cycle_x),
            "cycle_perceptual": w.cycle_perceptual * cycle_perceptual,
            "paired_l1": w.paired_l1 * F.l1_loss(paired, b.x),
            "paired_perceptual": w.paired_perceptual * paired_perceptual,
            "adv_image": w.adv_image * lsgan_g_loss(adv_image_scores),
        }
        if adv_mask_scores is not None:
            terms["adv_mask"] = w.adv_mask * lsgan_g_loss(adv_mask_scores)
        if E is not None:
            terms["style_kl"] = w.style_kl * StyleEncoder.kl_divergence(mu, logvar)
            # G must make random z recoverable from its image, i.e. visible; E is not trained by
            # this term (BicycleGAN), or it could meet G halfway
            with self.autocast():
                mu_fake, _ = torch.func.functional_call(E, {n: p.detach() for n, p in E.named_parameters()}, (fake,))
            terms["latent_regression"] = w.latent_regression * F.l1_loss(mu_fake.float(), z)
        self.opt_G.zero_grad(set_to_none=True)
        self.opt_S.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        self.opt_G.step()
        self.opt_S.step()
        return terms, fake, mask_of_real, adv_mask_scores

    def render(self, b: "_Batch", z: torch.Tensor, mask_of_real: torch.Tensor):
        """G's images in one batched call: G(mask, z), the paired image and the cycle's G(S(x)).

        G normalises per sample (GroupNorm, per-sample modulation), so one batched call equals
        separate calls and is faster on a CPU.
        """
        G, E = self.nets.generator, self.nets.style_encoder
        if E is None:  # G(mask) and G(S(x)), one random z
            fake, rebuilt = G(torch.cat([b.mask, mask_of_real]), torch.cat([z, z])).float().chunk(2)
            return fake, fake, rebuilt, None, None
        # G(mask, random z); G(mask, E(x)) and G(S(x), E(x)) must reproduce x
        mu, logvar = (t.float() for t in E(b.x))
        z_image = StyleEncoder.sample(mu, logvar, self.latent_rng)
        # one latent for all blocks and no style mixing: an image's look is then a function of its
        # z, which the paired and latent-regression terms rely on
        per_block = torch.cat([z, z_image, z_image])[:, None].expand(-1, G.num_styles, -1)
        fake, paired, rebuilt = G(torch.cat([b.mask, b.mask, mask_of_real]), w=G.styles(per_block),
                                  generator=self.latent_rng).float().chunk(3)
        return fake, paired, rebuilt, mu, logvar

    def discriminator_step(self, b: "_Batch", fake: torch.Tensor, mask_of_real: torch.Tensor):
        """Update both discriminators on real and generated inputs, each in one call (instance norm
        and DiffAugment act per sample, so batching changes nothing but the speed)."""
        real = b.x if b.unlabeled is None else torch.cat([b.x, b.unlabeled])
        n = real.shape[0]
        with self.autocast():
            scores_image = self.nets.disc_image(diff_augment(torch.cat([real, fake.detach()]))).float()
            scores_mask = self.nets.disc_mask(torch.cat([b.mask, mask_of_real.detach()])).float()
        d_image = lsgan_d_loss(scores_image[:n], scores_image[n:])
        d_mask = lsgan_d_loss(scores_mask[:b.x.shape[0]], scores_mask[b.x.shape[0]:])
        self.opt_D.zero_grad(set_to_none=True)
        (d_image + d_mask).backward()
        self.opt_D.step()
        return d_image, d_mask, scores_mask

    def validate(self, log: TrainingLog, bar: StepBar, share: float) -> None:
        """Score S on the validation images, log the mean losses, save models and the state."""
        state, S = self.state, self.nets.segmenter
        val_items, run_config = self.val_items, self.run_config
        score, f1, dice = selection_score(Segmenter(S, run_config), val_items) if val_items else (float("nan"),) * 3
        state["elapsed_s"] = time.monotonic() - self.start
        means = {c: float(np.mean(self.running[c])) for c in self.losses}
        log.write([state["step"], round(state["elapsed_s"], 1), round(share, 3)]
                  + [round(means[c], 5) for c in self.losses] + [round(f1, 4), round(dice, 4)])
        for v in self.running.values():
            v.clear()
        if val_items:
            self.sched_S.step(f1)
        if val_items and score >= state["best_f1"]:
            state["best_f1"] = score
            run_config["best_validation"] = {"step": state["step"], "f1_50": f1, "dice": dice}
            save_modules(self.out, {SEGMENTER_FILE: S})
            write_json(self.out / "config.json", run_config)
        save_modules(self.out, _gan_files(self.nets))
        self.saved.save(self.out, state)
        self.folder.checkpointed()
        self.validated = True
        bar.set_description(f"val F1 {f1:.3f} (best {state['best_f1']:.3f})")
        self.callbacks.validation(state["step"], f1_50=f1, dice=dice, elapsed_s=state["elapsed_s"], **means)


@dataclass
class _Batch:
    x: torch.Tensor              # (B, 1, H, W) images in [0, 1]
    classes: torch.Tensor        # (B, H, W) class map
    distance: torch.Tensor
    weights: torch.Tensor
    mask: torch.Tensor | None = None   # (B, 2, H, W) generator input
    unlabeled: torch.Tensor | None = None   # (B, 1, H, W) unlabelled images for the cycle and D_img


def _finish(nets: GanNets, val_items, run_config: dict, loop: _GanLoop) -> None:
    """Save the final GAN modules and state; reload the best segmenter and tune its post-processing."""
    save_modules(loop.out, _gan_files(nets))
    if not val_items:
        save_modules(loop.out, {SEGMENTER_FILE: nets.segmenter})
    loop.saved.save(loop.out, loop.state)
    loop.folder.checkpointed()
    out = loop.out
    if val_items:  # the watershed settings that suit the chosen segmenter, as train-seg does
        load_module_weights(nets.segmenter, out / SEGMENTER_FILE)
        run_config["postprocess"], (f1, dice) = tune_postprocess(Segmenter(nets.segmenter, run_config), val_items)
        run_config["best_validation"] = {**run_config.get("best_validation", {}), "tuned_f1_50": f1,
                                         "tuned_dice": dice}
    run_config.update(steps=loop.state["step"], train_seconds=round(loop.state["elapsed_s"], 1))
    write_json(out / "config.json", run_config)


def _zoom_labels(labels: np.ndarray, scale: float) -> np.ndarray:
    """Labels at canonical scale (nearest neighbour), for fitting the layout model."""
    if abs(scale - 1.0) < 1e-3:
        return labels
    from scipy import ndimage as ndi

    return ndi.zoom(labels, scale, order=0, grid_mode=True, mode="grid-constant")


def save_sample_grid(path: Path, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor) -> Path:
    """PNG: one row per example — mask (foreground), real image, generated image."""
    rows = []
    for m, r, f in zip(mask[:, 0], real[:, 0], fake[:, 0]):
        rows.append(np.concatenate([m.detach().cpu().numpy(), r.detach().cpu().numpy(),
                                    f.detach().cpu().float().numpy()], axis=1))
    return write_image(path, np.clip(np.concatenate(rows, axis=0), 0, 1))
