"""Segmentation losses for the 3-class + distance head.

The segmenter outputs ``N_CLASSES`` logits (background, interior, boundary) and one distance
channel (sigmoid -> normalised distance to the particle's boundary).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_CLASSES = 3
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
    weights : (B, H, W) per-pixel weights of the class term (gaps between touching particles).
    """
    logits = outputs[:, :N_CLASSES]
    onehot = F.one_hot(classes, N_CLASSES).permute(0, 3, 1, 2).to(logits.dtype)
    probs = logits.softmax(1)
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
    dist_term = F.mse_loss(dist_pred, distance)
    return pixel.mean() + overlap + distance_weight * dist_term
