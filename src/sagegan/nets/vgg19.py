"""VGG19 feature maps (ImageNet weights from a local file only), for an optional perceptual loss.

The default perceptual loss of SAGE-GAN uses the phase 1 segmenter's own encoder; this network is
for those who have torchvision's VGG19 weights on disk. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from . import freeze as _freeze


# torchvision's vgg19 "features": "M" is a 2x2 max-pool; every conv is 3x3 + ReLU.
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# Index in ``features`` of each named ReLU (conv at i - 1).
VGG19_RELU_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg19_feature_layers(upto: int | None = None) -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return layers if upto is None else layers[:upto + 1]


def _vgg19_conv_indices() -> list[int]:
    """Positions of the convolutions in ``features`` (each conv is followed by its ReLU)."""
    indices, position = [], 0
    for item in _VGG19_LAYOUT:
        if item != "M":
            indices.append(position)
        position += 1 if item == "M" else 2
    return indices


def _load_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise various types for a corrupt file
        raise ValueError(f"could not read weights from {path}: {error}") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (a torchvision-format vgg19 .pth is expected)")
    return state


class VGG19Features(nn.Module):
    """ImageNet VGG19 feature maps for a perceptual loss, loaded from a local file only.

    The module has torchvision's ``vgg19().features`` layout, so its state-dict keys are
    ``features.<i>.weight`` / ``.bias``: torchvision's ``vgg19-dcbb9e9d.pth`` (the ``classifier``
    entries are ignored), a ``.safetensors`` file with the same keys, or a state dict of
    ``vgg19().features`` itself (keys without the ``features.`` prefix) all load. Nothing is
    ever downloaded.

    Grey input is repeated to three channels, then normalised with ImageNet's mean and standard
    deviation; input is expected in [0, 1]. The parameters are frozen.

    Parameters
    ----------
    weights_path : the weights file. None leaves random weights (only for tests: random VGG
        features are not a meaningful perceptual distance).
    layers : which ReLU outputs to return, from ``VGG19_RELU_INDEX``; the network is cut after
        the deepest one.

    Raises
    ------
    ValueError : the file is missing, unreadable, or its keys or shapes do not match VGG19.

    Examples
    --------
    >>> vgg = VGG19Features(None, layers=("relu1_2", "relu2_2"))
    >>> [tuple(f.shape) for f in vgg(torch.rand(1, 1, 32, 32))]
    [(1, 64, 32, 32), (1, 128, 16, 16)]
    """

    def __init__(self, weights_path: str | Path | None,
                 layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")):
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_RELU_INDEX]
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {list(VGG19_RELU_INDEX)}")
        self.layers = tuple(layers)
        self._indices = [VGG19_RELU_INDEX[name] for name in self.layers]
        self.features = nn.Sequential(*_vgg19_feature_layers(upto=max(self._indices)))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights_path is not None:
            self._load(Path(weights_path))
        _freeze(self)

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise ValueError(f"VGG19 weights file not found: {path} (sagegan never downloads weights; "
                             "place torchvision's vgg19-dcbb9e9d.pth or a .safetensors copy there)")
        state = dict(_load_state_dict(path))
        if not any(key.startswith("features.") for key in state):
            state = {f"features.{key}": value for key, value in state.items()}
        all_vgg19_keys = {f"features.{i}.{name}" for i in _vgg19_conv_indices() for name in ("weight", "bias")}
        unexpected = sorted(k for k in state if k.startswith("features.") and k not in all_vgg19_keys)
        needed = self.state_dict().keys()
        missing = sorted(k for k in needed if k not in state)
        if missing or unexpected:
            raise ValueError(f"{path} does not hold VGG19 features: missing keys {missing[:4]}"
                             f"{'...' if len(missing) > 4 else ''}, unexpected keys {unexpected[:4]}"
                             f"{'...' if len(unexpected) > 4 else ''}")
        wrong_shape = [k for k in needed if state[k].shape != self.state_dict()[k].shape]
        if wrong_shape:
            raise ValueError(f"{path}: tensors with the wrong shape for VGG19: {wrong_shape[:4]}")
        self.load_state_dict({k: state[k] for k in needed})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        kept = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._indices:
                kept[index] = x
        return [kept[index] for index in self._indices]
