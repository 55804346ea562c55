"""Every loss of both phases, and the mask paths from the segmenter to the generator.

* Segmentation: the segmenter outputs ``N_CLASSES`` logits (background, interior, boundary) and
  one distance channel (sigmoid -> normalised distance to the particle's boundary); the class
  term is cross-entropy + soft Dice (or focal + Tversky), plus an MSE on the distance.
* Least-squares adversarial losses (Mao et al., 2017), as used by cGAN-Seg and SAGE-GAN.
* A perceptual loss on the features of a frozen network: by default the encoder of our own
  trained segmenter (ImageNet VGG19 weights cannot be downloaded here);
  :class:`sagegan.nets.vgg19.VGG19Features` loads VGG19 from a local file for those who have one.
* Differentiable mask paths from the segmenter's logits to the generator's input, so that the
  image-cycle and adversarial terms can train the segmenter (the reference code cuts this
  gradient with an argmax).
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .data import BACKGROUND, BOUNDARY, N_CLASSES
from .nets import freeze as _freeze

OUT_CHANNELS = N_CLASSES + 1


def soft_dice_loss(probs: torch.Tensor, onehot: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice over the foreground classes (batch pooled), averaged over classes."""
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice[1:].mean()


def tversky_loss(probs: torch.Tensor, onehot: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                 eps: float = 1.0) -> torch.Tensor:
    """1 - Tversky index over the foreground classes; beta > alpha punishes misses more."""
    dims = (0, 2, 3)
    tp = (probs * onehot).sum(dims)
    fp = (probs * (1 - onehot)).sum(dims)
    fn = ((1 - probs) * onehot).sum(dims)
    index = (tp + eps) / (tp + alpha * fp + beta * fn + eps)
    return 1.0 - index[1:].mean()


def segmentation_loss(outputs: torch.Tensor, classes: torch.Tensor, distance: torch.Tensor,
                      weights: torch.Tensor | None = None, kind: str = "ce_dice",
                      distance_weight: float = 2.0, focal_gamma: float = 2.0) -> torch.Tensor:
    """Class loss (``ce_dice`` or ``focal_tversky``) plus a weighted MSE on the distance channel.

    Parameters
    ----------
    outputs : (B, 4, H, W) raw network output.
    classes : (B, H, W) long, 0/1/2.
    distance : (B, H, W) float, normalised distance target.
    weights : (B, H, W) per-pixel weights of the class term (gaps between touching particles);
        pixels of weight 0 (unknown labels) are left out of every term.
    """
    logits = outputs[:, :N_CLASSES]
    onehot = F.one_hot(classes, N_CLASSES).permute(0, 3, 1, 2).to(logits.dtype)
    probs = logits.softmax(1)
    known = None
    if weights is not None and bool((weights == 0).any()):
        known = (weights > 0).to(logits.dtype)
        probs, onehot = probs * known[:, None], onehot * known[:, None]
    ce = F.cross_entropy(logits, classes, reduction="none")
    if kind == "ce_dice":
        pixel = ce
        overlap = soft_dice_loss(probs, onehot)
    elif kind == "focal_tversky":
        pt = (probs * onehot).sum(1).clamp_min(1e-6)
        pixel = (1 - pt) ** focal_gamma * ce
        overlap = tversky_loss(probs, onehot)
    else:
        raise ValueError(f"unknown loss {kind!r} (expected ce_dice or focal_tversky)")
    if weights is not None:
        pixel = pixel * weights
    dist_pred = torch.sigmoid(outputs[:, N_CLASSES])
    if known is None:
        return pixel.mean() + overlap + distance_weight * F.mse_loss(dist_pred, distance)
    n_known = known.sum().clamp_min(1.0)
    dist_term = ((dist_pred - distance) ** 2 * known).sum() / n_known
    return pixel.sum() / n_known + overlap + distance_weight * dist_term


# --------------------------------------------------------------------------------------------
# Least-squares GAN
# --------------------------------------------------------------------------------------------

def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``0.5 * (mean((D(real) - 1)^2) + mean(D(fake)^2))``.

    Minimum 0 when every real patch scores 1 and every fake patch 0. The 0.5 (pix2pix/CycleGAN
    convention) slows the discriminator relative to the generator. Pass ``d_fake`` computed on
    detached fakes.
    """
    return 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss ``mean((D(fake) - 1)^2)``: minimum 0 when the fakes score as real."""
    return F.mse_loss(d_fake, torch.ones_like(d_fake))


# --------------------------------------------------------------------------------------------
# Perceptual loss
# --------------------------------------------------------------------------------------------

def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class FeaturePerceptualLoss(nn.Module):
    """Weighted mean absolute (L1) distance between the features of two images.

    ``loss = sum_i weight_i * mean(|f_i(image) - f_i(target)|)`` over the feature maps ``f_i``
    that the extractor returns. L1 rather than MSE: it is less dominated by the few largest
    feature differences (e.g. at particle edges), and matches cGAN-Seg's image-cycle L1 term;
    ``distance="mse"`` is available.

    Parameters
    ----------
    encoder_fn : the feature extractor: an ``nn.Module`` or a bound method of one (typically
        ``segmenter.encode`` of a trained :class:`~sagegan.nets.attention_unet.AttentionUNet`,
        or a :class:`VGG19Features`), returning a tensor or a list of feature maps. For these,
        the module is copied (see ``copy_extractor``), put in eval mode and its parameters are
        frozen. Any other callable is used as given; freezing it is then the caller's job.
    layer_weights : one weight per returned feature map; None gives each ``1 / n_maps``. A weight
        of 0 skips that map.
    normalise : applied to both images before the extractor (e.g. the intensity normalisation
        the segmenter was trained with); must be differentiable. Default: identity.
    distance : ``"l1"`` or ``"mse"``.
    copy_extractor : freeze a private copy (default) rather than the module itself, so that
        passing the segmenter that is being trained jointly can never freeze it; the loss then
        keeps the weights the segmenter had when the loss was made. A module already frozen
        (no parameter requires grad, e.g. :class:`VGG19Features`) is used without copying.

    Notes
    -----
    Gradients flow to ``image`` (and to ``target`` if it requires grad) but never into the
    extractor. ``.train()`` on this loss leaves the extractor in eval mode, so its batch-norm
    statistics stay fixed.

    Examples
    --------
    >>> from sagegan.nets.attention_unet import AttentionUNet
    >>> loss_fn = FeaturePerceptualLoss(AttentionUNet(1, 3, widths=(8, 16)).encode)
    >>> image = torch.rand(1, 1, 32, 32, requires_grad=True)
    >>> loss_fn(image, image.detach()).item()
    0.0
    """

    def __init__(self, encoder_fn: Callable[[torch.Tensor], Sequence[torch.Tensor] | torch.Tensor],
                 layer_weights: Sequence[float] | None = None,
                 normalise: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 distance: str = "l1", copy_extractor: bool = True):
        super().__init__()
        if distance not in ("l1", "mse"):
            raise ValueError(f"distance must be 'l1' or 'mse', got {distance!r}")
        owner = encoder_fn if isinstance(encoder_fn, nn.Module) else getattr(encoder_fn, "__self__", None)
        if isinstance(owner, nn.Module):
            trainable = any(p.requires_grad for p in owner.parameters())
            module = _freeze(copy.deepcopy(owner) if copy_extractor and trainable else owner)
            # Registered as a submodule so that .to(device) moves it with the loss.
            self.extractor = module
            # For a bound method (segmenter.encode), the same method bound to the frozen module.
            self._features = None if encoder_fn is owner else encoder_fn.__func__.__get__(module)
        elif callable(encoder_fn):
            self.extractor = None
            self._features = encoder_fn
        else:
            raise TypeError(f"encoder_fn must be callable, got {type(encoder_fn).__name__}")
        self.layer_weights = None if layer_weights is None else tuple(float(w) for w in layer_weights)
        self.normalise = normalise if normalise is not None else _identity
        self.distance = F.l1_loss if distance == "l1" else F.mse_loss

    def train(self, mode: bool = True) -> "FeaturePerceptualLoss":
        super().train(mode)
        if self.extractor is not None:
            self.extractor.eval()
        return self

    def _extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        extract = self._features if self._features is not None else self.extractor
        features = extract(self.normalise(x))
        return [features] if isinstance(features, torch.Tensor) else list(features)

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Perceptual distance between ``image`` and ``target`` (same shape), a scalar."""
        return self.against(target, image)[0]

    def against(self, target: torch.Tensor, *images: torch.Tensor) -> list[torch.Tensor]:
        """Perceptual distance from each of ``images`` to the one ``target``, a list of scalars.

        Equal to ``[self(image, target) for image in images]``, but the target's features are
        extracted once and the images go through the extractor as one batch: in a SAGE-GAN step
        the cycle and paired terms both compare with the real patch, so this halves the
        extractor's work. Batching is exact because the extractor treats samples independently
        (it is frozen in eval mode; a custom callable must do the same).
        """
        for image in images:
            if image.shape != target.shape:
                raise ValueError(f"image and target shapes differ: {tuple(image.shape)} vs {tuple(target.shape)}")
        image_features = self._extract(torch.cat(images))
        # A target without gradient (a real micrograph) needs no autograd graph.
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            target_features = self._extract(target)
        weights = self.layer_weights or (1.0 / len(image_features),) * len(image_features)
        if len(weights) != len(image_features):
            raise ValueError(f"{len(weights)} layer_weights for {len(image_features)} feature maps")
        losses = [target.new_zeros(()) for _ in images]
        for weight, features, target_feature in zip(weights, image_features, target_features):
            if weight:
                for i, feature in enumerate(features.split(target.shape[0])):
                    losses[i] = losses[i] + weight * self.distance(feature, target_feature)
        return losses


# --------------------------------------------------------------------------------------------
# Differentiable masks for the generator's input
# --------------------------------------------------------------------------------------------

def foreground_boundary_channels(classes: torch.Tensor) -> torch.Tensor:
    """The generator's 2-channel mask input: (foreground, boundary), from class maps.

    Parameters
    ----------
    classes : either per-class probabilities or one-hot maps (B, C >= 3, H, W), channels
        0 background, 1 interior, 2 boundary (further channels count as foreground); or an
        integer class map (B, H, W) or (B, 1, H, W) with those values.

    Returns
    -------
    (B, 2, H, W): channel 0 is ``1 - p(background)``, channel 1 is ``p(boundary)``. Real masks,
    soft predictions and straight-through predictions all go through here, so the generator sees
    the same encoding in every path.
    """
    if not classes.is_floating_point():
        if classes.dim() == 4 and classes.shape[1] == 1:
            classes = classes[:, 0]
        if classes.dim() != 3:
            raise ValueError(f"integer class maps must be (B, H, W) or (B, 1, H, W), got {tuple(classes.shape)}")
        return torch.stack([(classes != BACKGROUND).float(), (classes == BOUNDARY).float()], dim=1)
    if classes.dim() != 4 or classes.shape[1] < 3:
        raise ValueError("expected (B, C, H, W) class maps with C >= 3 (background, interior, boundary), "
                         f"got shape {tuple(classes.shape)}")
    return torch.stack([1.0 - classes[:, BACKGROUND], classes[:, BOUNDARY]], dim=1)


def soft_mask_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Soft (foreground, boundary) generator input from segmenter logits (B, C >= 3, H, W).

    Softmax over classes, then :func:`foreground_boundary_channels`. Fully differentiable: the
    generator's losses reach the segmenter through every pixel's probabilities. The generator
    never sees such grey-valued masks among real ones, so the discriminator on masks can tell
    them apart; :func:`straight_through_mask` avoids that.
    """
    return foreground_boundary_channels(logits.softmax(dim=1))


def straight_through_mask(logits: torch.Tensor) -> torch.Tensor:
    """One-hot class maps in the forward pass, softmax gradients in the backward pass.

    Returns (B, C, H, W) exactly equal to ``one_hot(argmax(logits))``, with the gradient of
    ``softmax(logits)`` (the straight-through estimator, Bengio et al. 2013). Feed it to
    :func:`foreground_boundary_channels` to get a hard generator input that still trains the
    segmenter.
    """
    probs = logits.softmax(dim=1)
    hard = F.one_hot(probs.argmax(dim=1), num_classes=logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    # probs - probs.detach() is exactly zero in value, so the forward output is exactly one-hot.
    return hard + (probs - probs.detach())
