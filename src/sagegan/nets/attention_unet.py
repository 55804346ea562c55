"""U-Net with additive attention gates on the skip connections (Oktay et al., 2018).

Written out rather than taken from MONAI so that the gate coefficient maps can be returned
(they are the "attention overlay" of the SAGE-GAN paper) and the encoder can be reused as the
feature network of the perceptual loss and of the Fréchet distance.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r} (expected batch, group or instance)")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch", dropout: float = 0.0):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), _norm(norm, out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), _norm(norm, out_ch), nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class AttentionGate(nn.Module):
    """Additive attention: alpha = sigmoid(psi(relu(W_g g + W_x x))); returns (x * alpha, alpha).

    ``g`` is the gating signal from the decoder (already at the skip's resolution), ``x`` the
    skip connection from the encoder.
    """

    def __init__(self, gate_ch: int, skip_ch: int, inter_ch: int, norm: str = "batch"):
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(gate_ch, inter_ch, 1, bias=False), _norm(norm, inter_ch))
        self.w_x = nn.Sequential(nn.Conv2d(skip_ch, inter_ch, 1, bias=False), _norm(norm, inter_ch))
        self.psi = nn.Conv2d(inter_ch, 1, 1)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.sigmoid(self.psi(F.relu(self.w_g(g) + self.w_x(x))))
        return x * alpha, alpha


class BottleneckSelfAttention(nn.Module):
    """Multi-head self-attention over the bottleneck's positions, with a residual connection."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class AttentionUNet(nn.Module):
    """U-Net whose skips pass through additive attention gates.

    Parameters
    ----------
    in_channels, out_channels : input image channels and output logit channels.
    widths : channels per level, finest first; ``len(widths) - 1`` down-samplings.
    norm : ``"batch"``, ``"group"`` or ``"instance"``.
    dropout : dropout after each decoder block.
    attention_gates : False gives the plain U-Net baseline (same widths, no gates).
    bottleneck_attention : add multi-head self-attention at the bottleneck.

    Inputs must have sides divisible by ``2 ** (len(widths) - 1)`` (the tiling code pads).

    Examples
    --------
    >>> net = AttentionUNet(1, 3, widths=(8, 16, 32))
    >>> logits, gates = net(torch.zeros(1, 1, 64, 64), return_gates=True)
    >>> logits.shape, [tuple(g.shape[-2:]) for g in gates]
    (torch.Size([1, 3, 64, 64]), [(64, 64), (32, 32)])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 3,
                 widths: Sequence[int] = (16, 32, 64, 128, 256), norm: str = "batch",
                 dropout: float = 0.0, attention_gates: bool = True, bottleneck_attention: bool = False):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise ValueError("widths needs at least two levels")
        self.widths = widths
        self.attention_gates = attention_gates
        self._norm_kind, self._dropout = norm, float(dropout)
        self.encoders = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.encoders.append(ConvBlock(prev, w, norm))
            prev = w
        self.bottleneck_attention = BottleneckSelfAttention(widths[-1]) if bottleneck_attention else None
        self.upsamples = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for coarse, fine in zip(widths[:0:-1], widths[-2::-1]):
            self.upsamples.append(nn.ConvTranspose2d(coarse, fine, 2, stride=2))
            self.gates.append(AttentionGate(fine, fine, max(fine // 2, 1), norm) if attention_gates else nn.Identity())
            self.decoders.append(ConvBlock(2 * fine, fine, norm, dropout))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features, finest first (the bottleneck last)."""
        feats = []
        for i, block in enumerate(self.encoders):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        if self.bottleneck_attention is not None:
            feats[-1] = self.bottleneck_attention(feats[-1])
        return feats

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise ValueError(f"input sides {tuple(x.shape[-2:])} must be divisible by {self.divisor}")
        feats = self.encode(x)
        y = feats[-1]
        gate_maps = []
        for up, gate, dec, skip in zip(self.upsamples, self.gates, self.decoders, feats[-2::-1]):
            y = up(y)
            if self.attention_gates:
                skip, alpha = gate(y, skip)
                gate_maps.append(alpha)
            y = dec(torch.cat([skip, y], dim=1))
        logits = self.head(y)
        if return_gates:
            return logits, gate_maps[::-1]  # finest first
        return logits

    # A model folder's config.json holds these keys; ``from_config`` rebuilds the module.
    def config(self) -> dict:
        return {"in_channels": self.encoders[0][0].in_channels, "out_channels": self.head.out_channels,
                "widths": list(self.widths), "norm": self._norm_kind, "dropout": self._dropout,
                "attention_gates": self.attention_gates,
                "bottleneck_attention": self.bottleneck_attention is not None}

    @classmethod
    def from_config(cls, cfg: dict) -> "AttentionUNet":
        keys = ("in_channels", "out_channels", "widths", "norm", "dropout", "attention_gates",
                "bottleneck_attention")
        return cls(**{k: cfg[k] for k in keys if k in cfg})


def inference_copy(net: nn.Module) -> nn.Module:
    """An eval-mode copy with BatchNorm folded into the preceding convolutions, channels-last.

    Same outputs to float rounding, fewer operations per pixel (BENCHMARKS.md gives the speed-up).
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(module: nn.Module) -> None:
        for child in module.children():
            fold(child)
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()

    fast = copy.deepcopy(net).eval()
    fold(fast)
    return fast.to(memory_format=torch.channels_last)
