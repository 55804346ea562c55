"""PatchGAN discriminators with linear self-attention, and differentiable augmentation.

SAGE-GAN uses two of these discriminators: one judges images (behind :func:`diff_augment`), the
other judges masks. Each outputs a map of scores, one per overlapping ~70 x 70 patch, so it
judges local texture and shape rather than the global layout.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (expected instance, batch or none)")


class EfficientSelfAttention(nn.Module):
    """Self-attention whose cost grows linearly with the number of pixels (Shen et al., WACV 2021).

    Dot-product attention ``softmax(Q K^T) V`` needs an N x N matrix for N pixels. Efficient
    attention normalises the queries with a softmax over their channels and the keys with a
    softmax over the pixels, then computes ``Q (K^T V)``: the (key x value)-channel "global
    context" matrix is built once, so memory and time are O(N) instead of O(N^2).

    The result is projected back to ``channels`` and added to the input, scaled by a learned
    ``gamma`` that starts at zero (as in SAGAN): the untrained discriminator starts as a plain
    PatchGAN and attention is phased in as it becomes useful.

    Parameters
    ----------
    channels : input and output channels.
    key_channels, value_channels : channels of keys/queries and of values (default channels // 2).
    heads : number of attention heads; must divide key_channels and value_channels.
    """

    def __init__(self, channels: int, key_channels: int | None = None, value_channels: int | None = None,
                 heads: int = 1):
        super().__init__()
        key_channels = key_channels or max(channels // 2, 1)
        value_channels = value_channels or max(channels // 2, 1)
        if key_channels % heads or value_channels % heads:
            raise ValueError(f"heads={heads} must divide key_channels={key_channels} and value_channels={value_channels}")
        self.heads = heads
        self.queries = nn.Conv2d(channels, key_channels, 1)
        self.keys = nn.Conv2d(channels, key_channels, 1)
        self.values = nn.Conv2d(channels, value_channels, 1)
        self.reprojection = nn.Conv2d(value_channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # (B, heads, channels per head, N)
        q = self.queries(x).reshape(batch, self.heads, -1, height * width).softmax(dim=2)
        k = self.keys(x).reshape(batch, self.heads, -1, height * width).softmax(dim=3)
        v = self.values(x).reshape(batch, self.heads, -1, height * width)
        context = k @ v.transpose(2, 3)  # (B, heads, key/head, value/head)
        attended = (context.transpose(2, 3) @ q).reshape(batch, -1, height, width)
        return x + self.gamma * self.reprojection(attended)


class PatchDiscriminator(nn.Module):
    """pix2pix "70 x 70" PatchGAN with an optional efficient self-attention block.

    Layers: 4x4 conv stride 2 + leaky ReLU(0.2) [+ self-attention]; ``n_layers - 1`` times
    4x4 conv stride 2 + norm + leaky ReLU, doubling the width up to 8x; one 4x4 conv stride 1
    + norm + leaky ReLU; a 4x4 conv stride 1 to a 1-channel score map. With ``n_layers=3`` each
    score sees a 70 x 70 input patch; a 256 x 256 input gives a 30 x 30 map.

    Parameters
    ----------
    in_channels : 1 for grey images; the mask discriminator takes the mask's channels.
    base_channels : width of the first layer (64 in pix2pix and SAGE-GAN).
    n_layers : number of stride-2 convolutions.
    norm : ``"instance"``, ``"batch"`` or ``"none"``.
    self_attention : insert :class:`EfficientSelfAttention` after the first layer.

    Examples
    --------
    >>> disc = PatchDiscriminator(1, base_channels=8)
    >>> disc(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 1, 6, 6])
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 64, n_layers: int = 3,
                 norm: str = "instance", self_attention: bool = True):
        super().__init__()
        if n_layers < 1:
            raise ValueError("n_layers must be at least 1")
        # Batch and instance norm subtract the mean, which cancels a conv bias placed before them.
        use_bias = norm == "none"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        if self_attention:
            layers.append(EfficientSelfAttention(base_channels))
        channels = base_channels
        for i in range(1, n_layers + 1):
            out_channels = base_channels * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(channels, out_channels, 4, stride=stride, padding=1, bias=use_bias),
                       _norm(norm, out_channels), nn.LeakyReLU(0.2, inplace=True)]
            channels = out_channels
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch scores (B, 1, h, w), unbounded (least-squares GAN targets 1 real, 0 fake)."""
        return self.model(x)


# ---------------------------------------------------------------------------------------------
# DiffAugment (Zhao et al., NeurIPS 2020), adapted to one grey channel in [0, 1].
#
# The original works on RGB in [-1, 1]; its strengths are kept as fractions of the intensity
# range, so on [0, 1]:
#   brightness  : add b ~ U(-0.25, 0.25) per image       (original U(-0.5, 0.5) on a range of 2)
#   contrast    : scale the deviation from the image mean by c ~ U(0.5, 1.5) (range-free)
#   translation : shift by up to 1/8 of each side, uncovered pixels set to 0
#   cutout      : zero one square of half the side (clipped at the border), random centre
# "saturation" has no meaning for one channel and is left out. Zero fill is black here, where
# the original's zero was mid-grey; both simply mark pixels as missing.
# ---------------------------------------------------------------------------------------------

DIFF_AUGMENT_POLICY = ("brightness", "contrast", "translation", "cutout")
_BRIGHTNESS_RANGE = 0.25
_CONTRAST_RANGE = (0.5, 1.5)


def _uniform(shape: Sequence[int], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.rand(*shape, device=device)
    return torch.rand(*shape, generator=generator, device=generator.device).to(device)


def _randint(low: int, high: int, shape: Sequence[int], device: torch.device,
             generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randint(low, high, tuple(shape), device=device)
    return torch.randint(low, high, tuple(shape), generator=generator, device=generator.device).to(device)


def _brightness(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    shift = (_uniform((x.shape[0], 1, 1, 1), x.device, generator) * 2 - 1) * _BRIGHTNESS_RANGE
    return x + shift.to(x.dtype)


def _contrast(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    low, high = _CONTRAST_RANGE
    factor = (low + (high - low) * _uniform((x.shape[0], 1, 1, 1), x.device, generator)).to(x.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _translation(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    batch, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = _randint(-max_dy, max_dy + 1, (batch, 1, 1), x.device, generator)
    dx = _randint(-max_dx, max_dx + 1, (batch, 1, 1), x.device, generator)
    b, rows, cols = torch.meshgrid(torch.arange(batch, device=x.device), torch.arange(height, device=x.device),
                                   torch.arange(width, device=x.device), indexing="ij")
    # Index into a copy padded with one ring of zeros; shifts past the border land on the ring.
    rows = torch.clamp(rows + dy + 1, 0, height + 1)
    cols = torch.clamp(cols + dx + 1, 0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[b, rows, cols].permute(0, 3, 1, 2).contiguous()


def _cutout(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = _randint(0, height + (1 - size_y % 2), (batch, 1, 1), x.device, generator)
    cx = _randint(0, width + (1 - size_x % 2), (batch, 1, 1), x.device, generator)
    b, rows, cols = torch.meshgrid(torch.arange(batch, device=x.device), torch.arange(size_y, device=x.device),
                                   torch.arange(size_x, device=x.device), indexing="ij")
    rows = torch.clamp(rows + cy - size_y // 2, 0, height - 1)
    cols = torch.clamp(cols + cx - size_x // 2, 0, width - 1)
    keep = torch.ones(batch, height, width, dtype=x.dtype, device=x.device)
    keep[b, rows, cols] = 0
    return x * keep.unsqueeze(1)


_AUGMENTATIONS = {"brightness": _brightness, "contrast": _contrast, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: Sequence[str] | str = DIFF_AUGMENT_POLICY,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation of a batch before the image discriminator.

    Apply it to real **and** generated batches (each call draws fresh random parameters per
    image): the discriminator then never sees an un-augmented image and cannot memorise the few
    training micrographs, while gradients still reach the generator through every operation.

    Parameters
    ----------
    x : (B, C, H, W) images, grey in [0, 1] (the strengths assume this range; see the module
        notes). The output may leave [0, 1]; that is intended.
    policy : augmentations applied in this order, any of ``"brightness"``, ``"contrast"``,
        ``"translation"``, ``"cutout"``; a comma-separated string is accepted too. Empty: identity.
    generator : source of the random parameters, for reproducible augmentation.

    Returns
    -------
    Tensor of the same shape as ``x``.

    Examples
    --------
    >>> x = torch.rand(4, 1, 32, 32, requires_grad=True)
    >>> diff_augment(x).sum().backward()
    >>> x.grad.shape
    torch.Size([4, 1, 32, 32])
    """
    if isinstance(policy, str):
        policy = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in policy if p not in _AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown DiffAugment operation(s) {unknown}; choose from {sorted(_AUGMENTATIONS)}")
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    for name in policy:
        x = _AUGMENTATIONS[name](x, generator)
    return x
