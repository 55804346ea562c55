"""StyleUNet: the mask -> image generator of SAGE-GAN.

A U-Net encoder reads the mask (where the particles are); a decoder built from StyleGAN2
modulated convolutions decides how they look. The style comes from a latent vector ``z`` passed
through a mapping network, and fine texture from per-pixel noise, so one mask can be rendered
as many different, plausible micrographs.

Blocks, coarse to fine::

    mask -> EncoderBlock x len(widths)  (skips)
         -> StyleBlock at the bottleneck           <- w[0]
         -> StyleBlock(upsample, + skip) per level <- w[1], ..., w[len(widths) - 1]
         -> modulated 1x1 "to grey" + sigmoid      <- w[-1]
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

# StyleGAN2 scales leaky-ReLU outputs by sqrt(2) so that activations keep unit variance from
# layer to layer, which is what weight demodulation assumes of its input.
_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)


def _randn(shape: Sequence[int], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal draws on ``device``, from ``generator`` when one is given.

    A generator lives on one device; drawing there and moving the result lets a CPU generator
    give reproducible draws for a model on the GPU.
    """
    if generator is None:
        return torch.randn(*shape, device=device)
    return torch.randn(*shape, generator=generator, device=generator.device).to(device)


def _rand(shape: Sequence[int], generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) draws on the CPU (for decisions, not tensors that enter the network)."""
    if generator is None:
        return torch.rand(*shape)
    return torch.rand(*shape, generator=generator, device=generator.device).cpu()


class PixelNorm(nn.Module):
    """Scale each latent vector to unit root-mean-square (StyleGAN's normalisation of ``z``)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Sequential):
    """MLP from latent ``z`` to intermediate style ``w``: pixel-norm, then linear + leaky ReLU layers.

    Parameters
    ----------
    latent_dim : size of ``z``.
    style_dim : size of ``w``.
    num_layers : number of linear layers (SAGE-GAN uses 3).
    """

    def __init__(self, latent_dim: int = 128, style_dim: int = 128, num_layers: int = 3):
        if num_layers < 1:
            raise ValueError("the mapping network needs at least one layer")
        layers: list[nn.Module] = [PixelNorm()]
        for i in range(num_layers):
            layers += [nn.Linear(latent_dim if i == 0 else style_dim, style_dim), nn.LeakyReLU(_LRELU_SLOPE)]
        super().__init__(*layers)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 convolution whose weights are scaled per sample by a style vector.

    The style ``w`` is mapped by an affine layer to one scale per input channel; the weights are
    multiplied by these scales (modulation) and, if ``demodulate``, each output filter is then
    rescaled to unit L2 norm, so that unit-variance input gives unit-variance output whatever
    the style (this replaces AdaIN and avoids its "droplet" artefacts).

    Parameters
    ----------
    in_channels, out_channels : channel counts.
    kernel_size : odd kernel side; padding keeps the spatial size.
    style_dim : size of ``w``.
    demodulate : normalise each modulated filter (False for the final 1x1 "to grey" layer).
    fused : True runs one grouped convolution with per-sample weights (groups = batch), as in
        StyleGAN2. False scales the input instead and runs one shared convolution; the result is
        the same up to rounding; which is faster depends on the hardware and batch size.

    Examples
    --------
    >>> conv = ModulatedConv2d(8, 16, 3, style_dim=32)
    >>> conv(torch.randn(2, 8, 20, 20), torch.randn(2, 32)).shape
    torch.Size([2, 16, 20, 20])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, fused: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.fused = fused
        # Equalised learning rate: weights are N(0, 1) and scaled at run time by He's constant,
        # so Adam's step size means the same thing in every layer.
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.style_affine = nn.Linear(style_dim, in_channels)
        # Styles start at 1 so an untrained network behaves like a plain convolution.
        nn.init.ones_(self.style_affine.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        styles = self.style_affine(w)  # (B, in)
        weight = self.weight * self.weight_gain  # (out, in, k, k)
        padding = self.kernel_size // 2
        if self.demodulate:
            # Norm of each modulated filter, computed without building the per-sample weights.
            demod = torch.rsqrt(styles.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)  # (B, out)
        if self.fused:
            per_sample = weight.unsqueeze(0) * styles[:, None, :, None, None]  # (B, out, in, k, k)
            if self.demodulate:
                per_sample = per_sample * demod[:, :, None, None, None]
            out = F.conv2d(x.reshape(1, batch * in_channels, height, width),
                           per_sample.reshape(batch * self.out_channels, in_channels, self.kernel_size, self.kernel_size),
                           padding=padding, groups=batch)
            return out.reshape(batch, self.out_channels, height, width)
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)
        if self.demodulate:
            out = out * demod[:, :, None, None]
        return out


class NoiseInjection(nn.Module):
    """Add per-pixel Gaussian noise with a learned strength per channel.

    The strengths start at zero (as in StyleGAN2), so the network learns how much stochastic
    texture each channel needs.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if noise is None:
            noise = _randn((x.shape[0], 1, x.shape[2], x.shape[3]), x.device, generator).to(x.dtype)
        return x + self.strength * noise


class StyledConv(nn.Module):
    """Modulated 3x3 convolution, noise injection, bias and scaled leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, fused: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, demodulate=True, fused=fused)
        self.noise = NoiseInjection(out_channels)
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.noise(self.conv(x, w), noise, generator) + self.bias
        return F.leaky_relu(x, _LRELU_SLOPE) * _LRELU_GAIN


class StyleBlock(nn.Module):
    """Decoder block driven by one style vector: [upsample x2, concat skip], two StyledConvs.

    Parameters
    ----------
    in_channels : channels coming from the coarser block.
    skip_channels : channels of the encoder skip concatenated after upsampling (0: no skip).
    out_channels : channels produced.
    style_dim : size of ``w``.
    upsample : double the spatial size first (False for the bottleneck block).
    fused : see :class:`ModulatedConv2d`.
    """

    noise_layers = 2

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, style_dim: int,
                 upsample: bool = True, fused: bool = True):
        super().__init__()
        self.upsample = upsample
        self.conv1 = StyledConv(in_channels + skip_channels, out_channels, style_dim, fused)
        self.conv2 = StyledConv(out_channels, out_channels, style_dim, fused)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None,
                noise: Sequence[torch.Tensor | None] = (None, None),
                generator: torch.Generator | None = None) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = self.conv1(x, w, noise[0], generator)
        return self.conv2(x, w, noise[1], generator)


class EncoderBlock(nn.Sequential):
    """[2x2 average pool], then two 3x3 convolutions each with GroupNorm and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        layers: list[nn.Module] = [nn.AvgPool2d(2)] if downsample else []
        for c_in in (in_channels, out_channels):
            layers += [nn.Conv2d(c_in, out_channels, 3, padding=1, bias=False),
                       nn.GroupNorm(min(8, out_channels), out_channels),
                       nn.LeakyReLU(_LRELU_SLOPE, inplace=True)]
        super().__init__(*layers)


class StyleUNet(nn.Module):
    """Mask -> image generator: U-Net encoder on the mask, StyleGAN2 decoder driven by ``z``.

    Parameters
    ----------
    in_channels : mask channels (default 2: soft or hard foreground and particle boundary, see
        :func:`sagegan.losses.foreground_boundary_channels`).
    out_channels : image channels (1: grey).
    widths : channels per level, finest first; ``len(widths) - 1`` down-samplings, and
        ``len(widths)`` style vectors (bottleneck block + one per decoder block).
    latent_dim, style_dim : sizes of ``z`` and ``w``.
    mapping_layers : linear layers of the mapping network.
    style_mixing_prob : in training mode, the probability that a batch mixes two latents: the
        first drives the blocks before a random switch point and the second the rest (StyleGAN's
        regulariser against blocks relying on each other's style).
    fused_modconv : grouped-convolution modulation (True, measured ~15 % faster on 2 CPU cores
        at batch 2) or input scaling (False); the same function, see :class:`ModulatedConv2d`.

    Inputs must have sides divisible by ``2 ** (len(widths) - 1)``. Output is in [0, 1].

    The default widths (16, 32, 64, 128) are sized for CPU training (BENCHMARKS.md gives the
    step time).

    Examples
    --------
    >>> gen = StyleUNet(widths=(8, 16, 32), latent_dim=16, style_dim=16).eval()
    >>> mask = torch.zeros(2, 2, 64, 64)
    >>> z = torch.randn(2, 16)
    >>> image, w = gen(mask, z, return_w=True)
    >>> image.shape, w.shape
    (torch.Size([2, 1, 64, 64]), torch.Size([2, 3, 16]))
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 1,
                 widths: Sequence[int] = (16, 32, 64, 128), latent_dim: int = 128, style_dim: int = 128,
                 mapping_layers: int = 3, style_mixing_prob: float = 0.9, fused_modconv: bool = True):
        super().__init__()
        widths = tuple(int(c) for c in widths)
        if len(widths) < 2:
            raise ValueError("widths needs at least two levels")
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        self.widths = widths
        self.latent_dim = latent_dim
        self.style_dim = style_dim
        self.style_mixing_prob = style_mixing_prob

        self.mapping = MappingNetwork(latent_dim, style_dim, mapping_layers)
        self.encoders = nn.ModuleList(
            EncoderBlock(in_channels if i == 0 else widths[i - 1], c, downsample=i > 0)
            for i, c in enumerate(widths))
        blocks = [StyleBlock(widths[-1], 0, widths[-1], style_dim, upsample=False, fused=fused_modconv)]
        for coarse, fine in zip(widths[:0:-1], widths[-2::-1]):
            blocks.append(StyleBlock(coarse, fine, fine, style_dim, upsample=True, fused=fused_modconv))
        self.blocks = nn.ModuleList(blocks)
        self.to_grey = ModulatedConv2d(widths[0], out_channels, 1, style_dim, demodulate=False, fused=fused_modconv)
        self.output_bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def num_styles(self) -> int:
        """Number of style vectors one forward pass consumes (one per StyleBlock)."""
        return len(self.blocks)

    def noise_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Shapes of the per-pixel noise maps, in the order ``forward(noise=...)`` expects."""
        shapes = []
        for i in range(self.num_styles):
            scale = 2 ** (self.num_styles - 1 - i)
            shapes += [(batch, 1, height // scale, width // scale)] * StyleBlock.noise_layers
        return shapes

    def make_noise(self, batch: int, height: int, width: int, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Draw one set of noise maps, to render the same ``z`` and noise more than once."""
        return [_randn(s, torch.device(device), generator) for s in self.noise_shapes(batch, height, width)]

    def sample_z(self, batch: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent vectors ``z ~ N(0, I)`` of shape (batch, latent_dim)."""
        return _randn((batch, self.latent_dim), torch.device(device), generator)

    def styles(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-block styles ``w`` of shape (B, num_styles, style_dim) from ``z``.

        ``z`` of shape (B, latent_dim) gives one ``w`` for every block, mixed with the ``w`` of a
        second random latent in training mode (with probability ``style_mixing_prob``).
        ``z`` of shape (B, num_styles, latent_dim) gives each block its own latent, no mixing.
        """
        if z.dim() == 3:
            if z.shape[1] != self.num_styles:
                raise ValueError(f"per-block z needs {self.num_styles} latents, got {z.shape[1]}")
            return self.mapping(z.flatten(0, 1)).view(z.shape[0], self.num_styles, self.style_dim)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}) or (B, {self.num_styles}, "
                             f"{self.latent_dim}), got {tuple(z.shape)}")
        w = self.mapping(z)
        styles = w.unsqueeze(1).repeat(1, self.num_styles, 1)
        if self.training and self.num_styles > 1 and float(_rand((1,), generator)) < self.style_mixing_prob:
            w_other = self.mapping(_randn(z.shape, z.device, generator))
            switch = 1 + int(_rand((1,), generator) * (self.num_styles - 1))  # in [1, num_styles - 1]
            styles = torch.cat([styles[:, :switch], w_other.unsqueeze(1).expand(-1, self.num_styles - switch, -1)], 1)
        return styles

    def forward(self, mask: torch.Tensor, z: torch.Tensor | None = None,
                noise: Sequence[torch.Tensor] | None = None, return_w: bool = False,
                generator: torch.Generator | None = None, w: torch.Tensor | None = None):
        """Render images of ``mask``.

        Parameters
        ----------
        mask : (B, in_channels, H, W), values in [0, 1] (hard or soft).
        z : (B, latent_dim) or (B, num_styles, latent_dim); drawn from N(0, I) if None.
        noise : list of noise maps shaped as :meth:`noise_shapes`; fresh noise if None.
        return_w : also return the per-block styles (B, num_styles, style_dim).
        generator : source of every random draw (z, mixing, noise), for reproducible renders.
        w : per-block styles (B, num_styles, style_dim) or (B, style_dim) used instead of
            mapping ``z`` (e.g. for truncation towards the mean style).

        Returns
        -------
        image : (B, out_channels, H, W) in [0, 1]; ``(image, w)`` if ``return_w``.

        The same ``z`` and ``noise`` give the same image in eval mode; in training mode style
        mixing draws a second latent (from ``generator`` if given).
        """
        if mask.dim() != 4:
            raise ValueError(f"mask must be (B, C, H, W), got shape {tuple(mask.shape)}")
        batch, _, height, width = mask.shape
        if height % self.divisor or width % self.divisor:
            raise ValueError(f"mask sides {(height, width)} must be divisible by {self.divisor}")
        if w is None:
            if z is None:
                z = self.sample_z(batch, mask.device, generator)
            w = self.styles(z, generator)
        elif w.dim() == 2:
            w = w.unsqueeze(1).expand(-1, self.num_styles, -1)
        elif w.dim() != 3 or w.shape[1] != self.num_styles:
            raise ValueError(f"w must have shape (B, {self.style_dim}) or (B, {self.num_styles}, "
                             f"{self.style_dim}), got {tuple(w.shape)}")
        if noise is None:
            noise = [None] * (self.num_styles * StyleBlock.noise_layers)
        elif len(noise) != self.num_styles * StyleBlock.noise_layers:
            raise ValueError(f"noise needs {self.num_styles * StyleBlock.noise_layers} maps, got {len(noise)}")

        skips = []
        x = mask
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        skips = skips[-2::-1]  # coarse to fine, without the bottleneck
        for i, block in enumerate(self.blocks):
            skip = skips[i - 1] if i > 0 else None
            x = block(x, w[:, i], skip, noise[2 * i:2 * i + 2], generator)
        image = torch.sigmoid(self.to_grey(x, w[:, -1]) + self.output_bias)
        return (image, w) if return_w else image
