"""StyleEncoder: image -> distribution of the generator's latent ``z`` (BicycleGAN's encoder).

Why SAGE-GAN needs one: the paired term asks ``G(mask, z)`` to reproduce the real image of that
mask. With ``z`` drawn at random the best G can do is the *average* look of the training images,
so it learns to ignore ``z`` and renders every mask in one style (what the EMPS generator did,
BENCHMARKS.md). Encoding ``z`` from the real image instead gives G a reason to read it: the style
of each real image can be reproduced only through ``z``. A KL term keeps the encoded codes close
to N(0, I), so random draws at synthesis time land among the learned styles.

No normalisation layers: the style *is* the first and second order intensity statistics that a
normalisation would remove.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class StyleEncoder(nn.Module):
    """Strided convolutions, global average pooling, then a linear layer to ``(mu, logvar)``.

    Parameters
    ----------
    in_channels : image channels (1: grey).
    latent_dim : size of ``z``.
    widths : channels of the stride-2 convolutions (each halves the side).

    Examples
    --------
    >>> enc = StyleEncoder(latent_dim=16, widths=(8, 16))
    >>> mu, logvar = enc(torch.rand(2, 1, 64, 64))
    >>> mu.shape, logvar.shape
    (torch.Size([2, 16]), torch.Size([2, 16]))
    """

    def __init__(self, in_channels: int = 1, latent_dim: int = 128, widths: Sequence[int] = (16, 32, 64, 128, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *widths[:-1]), widths):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.to_latent = nn.Linear(widths[-1], 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(image).mean(dim=(2, 3))
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        # bounded log-variance: exp() of an untrained layer's outlier must not overflow
        return mu, logvar.clamp(-10.0, 10.0)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``z = mu + sigma * eps`` (the reparameterisation: gradients reach mu and logvar)."""
        eps = torch.randn(mu.shape, generator=generator, device=generator.device if generator else mu.device)
        return mu + torch.exp(0.5 * logvar) * eps.to(mu.device, mu.dtype)

    @staticmethod
    def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)), summed over the latent dimensions, mean over the batch."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
