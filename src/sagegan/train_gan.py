"""Phase 2: SAGE-GAN — the phase 1 segmenter embedded in a cycle-consistent GAN.

Networks: generator G (mask -> image, :class:`StyleUNet`), segmenter S (image -> mask, the phase
1 :class:`AttentionUNet`, fine-tuned), image discriminator D_img (with DiffAugment) and mask
discriminator D_mask (PatchGANs, least-squares loss).

Differences from the reference code (see shared/docs/reference.md, "Known flaws"):
* G is warmed up before its images train S: for ``warmup_steps`` S learns from real pairs only
  and gets no gradient through G; afterwards the share of iterations in which S also learns
  from G(mask) ramps linearly from 0 to ``synthetic_share_max`` (0.6).
* A differentiable mask path (``mask_path="soft"`` or ``"straight-through"``) can let the
  image-cycle and mask-adversarial terms reach S. It did not measurably help (from one k = 8
  phase 1 snapshot, with frozen BN statistics: soft F1 0.430 / Dice 0.712, detached 0.454 /
  0.718; benchmarks/phase2_ablation.py), so ``"detached"``, as in the reference, is the default.
* Optional style encoder (``style_encoder=True``, BicycleGAN's cVAE-GAN + cLR-GAN): the reference
  draws one random z for the paired L1 term, which teaches G to ignore z (one look per mask).
* Native-resolution (canonical-scale) patches, never whole-image resizing; the scheduler of S
  watches validation F1 in "max" mode; the best S is chosen on validation images.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import (load_module_weights, load_tensors, optimizer_tensors, read_json, restore_optimizer,
                         save_tensors, write_json)
from .data import Augment, make_batch, prepare
from .gan_losses import (FeaturePerceptualLoss, VGG19Features, foreground_boundary_channels, lsgan_d_loss,
                         lsgan_g_loss, soft_mask_from_logits, straight_through_mask)
from .infer import MODEL_FILE, Segmenter, load_segmenter
from .io import InputError, Sample
from .losses import N_CLASSES, segmentation_loss
from .nets.patchgan import PatchDiscriminator, diff_augment
from .nets.style_encoder import StyleEncoder
from .nets.style_unet import StyleUNet
from .train_seg import git_commit, resolve_device, selection_score, split_validation, tune_postprocess

GENERATOR_FILE = "generator.safetensors"
DISC_IMAGE_FILE = "disc_image.safetensors"
DISC_MASK_FILE = "disc_mask.safetensors"
STYLE_ENCODER_FILE = "style_encoder.safetensors"


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
    # Frozen by default: from one k = 8 phase 1 snapshot, 7.5 minutes of SAGE-GAN gave test F1
    # 0.430 / Dice 0.712 frozen against 0.382 / 0.637 with statistics from batches of 2
    # (benchmarks/phase2_ablation.py, BENCHMARKS.md).
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
        """The config a run saved; runs from before ``segmenter_norm`` existed trained with "train"."""
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
    # channels-last segmenter: ~1.3x faster convolutions on CPU (see train_seg)
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
              data_source: dict | None = None) -> Path:
    """Train SAGE-GAN from a phase 1 RUN folder; writes a GANRUN folder to ``out``.

    The GANRUN holds ``generator.safetensors``, both discriminators, the fine-tuned
    ``segmenter.safetensors`` (a valid ``--model`` for ``sagegan segment``), ``config.json``
    (with the layout model fitted to the training masks, used by ``sagegan synthesize``),
    ``train_log.csv`` and ``samples/step_*.png`` grids of real vs generated images; with
    ``style_encoder`` also ``style_encoder.safetensors``.
    """
    from .masks import fit_layout_model

    cfg = config or GanTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not train:
        raise InputError("no training images")
    device = resolve_device(cfg.device)
    seg = load_segmenter(seg_run, device)
    canonical = seg.canonical_diameter_px
    if val is None:
        train, val = split_validation(train, 0.1, cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen_rng = torch.Generator(device="cpu").manual_seed(cfg.seed)
    train_items = [prepare(s, canonical) for s in train]
    val_items = [prepare(s, canonical) for s in list(val)[: cfg.val_max_images]]
    nets = build_nets(seg, cfg, device)
    G, S, D_img, D_mask, E = nets.generator, nets.segmenter, nets.disc_image, nets.disc_mask, nets.style_encoder

    # The perceptual loss compares features of a frozen copy of the phase 1 encoder
    # (ImageNet VGG weights cannot be had here; a local VGG19 file is accepted).
    extractor = VGG19Features(cfg.vgg19_weights) if cfg.perceptual == "vgg19" else S.encode
    perceptual = FeaturePerceptualLoss(extractor).to(device)
    # E learns with G (one optimiser): both serve the image side of the objective
    image_side = list(G.parameters()) + (list(E.parameters()) if E is not None else [])
    opt_G = torch.optim.Adam(image_side, lr=cfg.lr_generator, betas=(0.5, 0.999))
    opt_S = torch.optim.AdamW(S.parameters(), lr=cfg.lr_segmenter, weight_decay=1e-4)
    opt_D = torch.optim.Adam(list(D_img.parameters()) + list(D_mask.parameters()), lr=cfg.lr_discriminator,
                             betas=(0.5, 0.999))
    sched_S = torch.optim.lr_scheduler.ReduceLROnPlateau(opt_S, mode="max", factor=0.5, patience=3)

    layout = fit_layout_model([_zoom_labels(it.labels, it.scale) for it in train_items])
    run_config: dict[str, Any] = {
        **{k: v for k, v in seg.config.items() if k not in ("train", "best_validation", "stop_reason", "steps")},
        "kind": "sagegan-gan",
        "phase1_run": str(seg_run),
        "phase1_best_validation": seg.config.get("best_validation"),
        "generator": cfg.generator_config(),
        **({"style_encoder": cfg.style_encoder_config()} if E is not None else {}),
        "discriminators": {"image": {"in_channels": 1, "base_channels": cfg.disc_channels},
                           "mask": {"in_channels": 2, "base_channels": cfg.disc_channels}},
        "gan": asdict(cfg),
        "layout_model": layout.to_dict(),
        "data": {**(data_source or {}), "n_train": len(train_items), "n_val": len(val_items),
                 "train_stems": [it.stem for it in train_items], "val_stems": [it.stem for it in val_items]},
        "git_commit": git_commit(),
        "torch": torch.__version__,
    }
    modules = {"G": G, "S": S, "Di": D_img, "Dm": D_mask, **({"E": E} if E is not None else {})}
    optims = {"optG": opt_G, "optS": opt_S, "optD": opt_D}
    state = {"step": 0, "best_f1": -1.0, "elapsed_s": 0.0}
    log_path = out / "train_log.csv"
    if resume:
        state = _resume(out, modules, optims, sched_S, rng, gen_rng, device)
    else:
        if log_path.exists():
            log_path.unlink()
        score, f1, dice = selection_score(Segmenter(S, run_config), val_items) if val_items else (float("nan"),) * 3
        state["best_f1"] = score if val_items else -1.0
        run_config["best_validation"] = {"step": 0, "f1_50": f1, "dice": dice}
        _save_models(out, nets)
    write_json(out / "config.json", run_config)

    w = cfg.weights
    log_file = log_path.open("a", newline="")
    log = csv.writer(log_file)
    losses = ["seg_synthetic", "seg_real", "cycle_l1", "cycle_perceptual", "paired_l1", "paired_perceptual",
              "adv_image", "adv_mask", "d_image", "d_mask"]
    if E is not None:
        losses += ["style_kl", "latent_regression"]
    columns = ["step", "elapsed_s", "synthetic_share", *losses, "val_f1_50", "val_dice"]
    if log_path.stat().st_size == 0:
        log.writerow(columns)
    from .progress import StepBar

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    bar = StepBar(cfg.steps, state["step"], progress, "training SAGE-GAN")
    start = time.monotonic() - state["elapsed_s"]
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else float("inf")
    running: dict[str, list[float]] = {c: [] for c in losses}
    try:
        while state["step"] < cfg.steps and time.monotonic() - start < budget_s:
            step = state["step"]
            image, classes, distance, weights = (torch.from_numpy(a).to(device) for a in
                                                 make_batch(train_items, cfg.batch_size, cfg.patch_size, rng, cfg.augment))
            x = image[:, None].clamp(0, 1)
            classes = classes.long()
            mask = foreground_boundary_channels(classes)
            z = torch.randn(x.shape[0], cfg.latent_dim, generator=gen_rng).to(device)
            share = synthetic_share(step, cfg)
            warm = step >= cfg.warmup_steps
            S_learns_synthetic = bool(rng.random() < share)
            G.train(), S.train(), D_img.train(), D_mask.train()
            if E is not None:
                E.train()
            if cfg.segmenter_norm == "frozen":
                freeze_batchnorm_statistics(S)

            # ---- generator + segmenter
            with autocast():
                out_real = S(x).float()
            # Before warm-up ends, S gets no gradient through G (its images are still noise).
            mask_of_real = _mask_input(out_real[:, :N_CLASSES], cfg.mask_path if warm else "detached")
            with autocast():
                # G's calls batched into one: G normalises per sample (GroupNorm, per-sample
                # modulation), so this equals separate calls and is faster on a CPU.
                if E is None:  # G(mask) and G(S(x)), one random z
                    fake, rebuilt = G(torch.cat([mask, mask_of_real]), torch.cat([z, z])).float().chunk(2)
                    paired = fake
                else:  # G(mask, random z); G(mask, E(x)) and G(S(x), E(x)) must reproduce x
                    mu, logvar = (t.float() for t in E(x))
                    z_image = StyleEncoder.sample(mu, logvar, gen_rng)
                    # one latent for all blocks and no style mixing: an image's look is then a
                    # function of its z, which the paired and latent-regression terms rely on
                    per_block = torch.cat([z, z_image, z_image])[:, None].expand(-1, G.num_styles, -1)
                    styles = G.styles(per_block)
                    fake, paired, rebuilt = G(torch.cat([mask, mask, mask_of_real]), w=styles,
                                              generator=gen_rng).float().chunk(3)
                if S_learns_synthetic:
                    out_fake = S(fake)
                else:  # G still learns to draw images that S segments correctly; S is not updated by them
                    out_fake = torch.func.functional_call(S, {n: p.detach() for n, p in S.named_parameters()},
                                                          (fake,))
                cycle_perceptual, paired_perceptual = (t.float() for t in perceptual.against(x, rebuilt, paired))
                adv_image_scores = D_img(diff_augment(fake)).float()
                # A detached mask gives the mask-adversarial term no path to G or S: its value is
                # taken from the discriminator pass below instead of costing a forward and backward.
                adv_mask_scores = D_mask(mask_of_real).float() if mask_of_real.requires_grad else None
            out_fake = out_fake.float()
            terms = {
                "seg_synthetic": w.seg_synthetic * segmentation_loss(out_fake, classes, distance, kind=cfg.seg_loss),
                "seg_real": w.seg_real * segmentation_loss(out_real, classes, distance, weights, kind=cfg.seg_loss),
                "cycle_l1": w.cycle_l1 * F.l1_loss(rebuilt, x),
                "cycle_perceptual": w.cycle_perceptual * cycle_perceptual,
                "paired_l1": w.paired_l1 * F.l1_loss(paired, x),
                "paired_perceptual": w.paired_perceptual * paired_perceptual,
                "adv_image": w.adv_image * lsgan_g_loss(adv_image_scores),
            }
            if adv_mask_scores is not None:
                terms["adv_mask"] = w.adv_mask * lsgan_g_loss(adv_mask_scores)
            if E is not None:
                terms["style_kl"] = w.style_kl * StyleEncoder.kl_divergence(mu, logvar)
                # G must make random z recoverable from its image, i.e. visible; E is not
                # trained by this term (BicycleGAN), or it could meet G halfway
                with autocast():
                    mu_fake, _ = torch.func.functional_call(E, {n: p.detach() for n, p in E.named_parameters()},
                                                            (fake,))
                terms["latent_regression"] = w.latent_regression * F.l1_loss(mu_fake.float(), z)
            opt_G.zero_grad(set_to_none=True)
            opt_S.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            opt_G.step()
            opt_S.step()

            # ---- discriminators: real and fake in one call each (instance norm and DiffAugment
            # act per sample, so batching changes nothing but the speed)
            n = x.shape[0]
            with autocast():
                scores_image = D_img(diff_augment(torch.cat([x, fake.detach()]))).float()
                scores_mask = D_mask(torch.cat([mask, mask_of_real.detach()])).float()
            if adv_mask_scores is None:  # D_mask has not changed since the generator step: same value
                terms["adv_mask"] = w.adv_mask * lsgan_g_loss(scores_mask[n:].detach())
            d_image = lsgan_d_loss(scores_image[:n], scores_image[n:])
            d_mask = lsgan_d_loss(scores_mask[:n], scores_mask[n:])
            opt_D.zero_grad(set_to_none=True)
            (d_image + d_mask).backward()
            opt_D.step()

            state["step"] += 1
            for k, v in terms.items():
                running[k].append(v.item())
            running["d_image"].append(d_image.item())
            running["d_mask"].append(d_mask.item())
            bar.update(1, loss=float(sum(running[k][-1] for k in terms)))
            if state["step"] % cfg.sample_every == 0:
                save_sample_grid(out / "samples" / f"step_{state['step']:06d}.png", x, fake, mask)
            if state["step"] % cfg.val_every == 0 or state["step"] == cfg.steps:
                score, f1, dice = (selection_score(Segmenter(S, run_config), val_items) if val_items
                                   else (float("nan"),) * 3)
                state["elapsed_s"] = time.monotonic() - start
                log.writerow([state["step"], round(state["elapsed_s"], 1), round(share, 3)]
                             + [round(float(np.mean(running[c])), 5) for c in losses]
                             + [round(f1, 4), round(dice, 4)])
                log_file.flush()
                for v in running.values():
                    v.clear()
                if val_items:
                    sched_S.step(f1)
                if val_items and score >= state["best_f1"]:
                    state["best_f1"] = score
                    run_config["best_validation"] = {"step": state["step"], "f1_50": f1, "dice": dice}
                    save_tensors(out / MODEL_FILE, S.state_dict())
                    write_json(out / "config.json", run_config)
                save_tensors(out / GENERATOR_FILE, G.state_dict())
                save_tensors(out / DISC_IMAGE_FILE, D_img.state_dict())
                save_tensors(out / DISC_MASK_FILE, D_mask.state_dict())
                if E is not None:
                    save_tensors(out / STYLE_ENCODER_FILE, E.state_dict())
                _save_last(out, modules, optims, sched_S, rng, gen_rng, state)
                bar.set_description(f"val F1 {f1:.3f} (best {state['best_f1']:.3f})")
    finally:
        bar.close()
        log_file.close()
    state["elapsed_s"] = time.monotonic() - start
    save_tensors(out / GENERATOR_FILE, G.state_dict())
    save_tensors(out / DISC_IMAGE_FILE, D_img.state_dict())
    save_tensors(out / DISC_MASK_FILE, D_mask.state_dict())
    if E is not None:
        save_tensors(out / STYLE_ENCODER_FILE, E.state_dict())
    if not val_items:
        save_tensors(out / MODEL_FILE, S.state_dict())
    _save_last(out, modules, optims, sched_S, rng, gen_rng, state)
    if val_items:  # the watershed settings that suit the chosen segmenter, as train-seg does
        load_module_weights(S, out / MODEL_FILE)
        run_config["postprocess"], (f1, dice) = tune_postprocess(Segmenter(S, run_config), val_items)
        run_config["best_validation"] = {**run_config.get("best_validation", {}), "tuned_f1_50": f1,
                                         "tuned_dice": dice}
    run_config.update(steps=state["step"], train_seconds=round(state["elapsed_s"], 1))
    write_json(out / "config.json", run_config)
    return out


def _zoom_labels(labels: np.ndarray, scale: float) -> np.ndarray:
    """Labels at canonical scale (nearest neighbour), for fitting the layout model."""
    if abs(scale - 1.0) < 1e-3:
        return labels
    from scipy import ndimage as ndi

    return ndi.zoom(labels, scale, order=0, grid_mode=True, mode="grid-constant")


def _save_models(out: Path, nets: GanNets) -> None:
    save_tensors(out / GENERATOR_FILE, nets.generator.state_dict())
    save_tensors(out / DISC_IMAGE_FILE, nets.disc_image.state_dict())
    save_tensors(out / DISC_MASK_FILE, nets.disc_mask.state_dict())
    save_tensors(out / MODEL_FILE, nets.segmenter.state_dict())
    if nets.style_encoder is not None:
        save_tensors(out / STYLE_ENCODER_FILE, nets.style_encoder.state_dict())


def save_sample_grid(path: Path, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor) -> Path:
    """PNG: one row per example — mask (foreground), real image, generated image."""
    from .io import write_image

    rows = []
    for m, r, f in zip(mask[:, 0], real[:, 0], fake[:, 0]):
        rows.append(np.concatenate([m.detach().cpu().numpy(), r.detach().cpu().numpy(),
                                    f.detach().cpu().float().numpy()], axis=1))
    return write_image(path, np.clip(np.concatenate(rows, axis=0), 0, 1))


def _save_last(out: Path, modules: dict, optims: dict, sched, rng, gen_rng, state: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for prefix, module in modules.items():
        tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    for prefix, opt in optims.items():
        t, s = optimizer_tensors(opt, prefix)
        tensors.update(t)
        scalars[prefix] = s
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.latent"] = gen_rng.get_state()
    save_tensors(out / "last.safetensors", tensors)
    write_json(out / "last_state.json", {**state, "optimizers": scalars, "scheduler": sched.state_dict(),
                                         "numpy_rng": rng.bit_generator.state})


def _resume(out: Path, modules: dict, optims: dict, sched, rng, gen_rng, device) -> dict:
    if not (out / "last.safetensors").exists():
        raise InputError(f"{out}: nothing to resume (no last.safetensors)")
    tensors = load_tensors(out / "last.safetensors")
    saved = read_json(out / "last_state.json")
    for prefix, module in modules.items():
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    for prefix, opt in optims.items():
        restore_optimizer(opt, {k: v.to(device) for k, v in tensors.items() if k.startswith(prefix + ".")},
                          saved["optimizers"][prefix], prefix)
    sched.load_state_dict(saved["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    gen_rng.set_state(tensors["rng.latent"])
    rng.bit_generator.state = saved["numpy_rng"]
    return {k: saved[k] for k in ("step", "best_f1", "elapsed_s")}


def load_generator(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[StyleUNet, dict]:
    """The generator of a GANRUN folder and the folder's config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: model folder not found")
    config = read_json(run_dir / "config.json")
    if "generator" not in config:
        raise InputError(f"{run_dir / 'config.json'}: no 'generator' section; is this a `sagegan train-gan` folder?")
    gen = StyleUNet(**config["generator"])
    load_module_weights(gen, run_dir / GENERATOR_FILE)
    return gen.to(device).eval(), config
