"""Neural networks: plain ``nn.Module``s with no I/O and no training logic."""

from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode and stop its parameters from learning (in place)."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
