"""Losses and mask helpers for the GAN phase of SAGE-GAN.

* Least-squares adversarial losses (Mao et al., 2017), as used by cGAN-Seg and SAGE-GAN.
* A perceptual loss on the features of a frozen network. The default feature network is the
  encoder of our own trained segmenter (ImageNet VGG19 weights cannot be downloaded here);
  :class:`VGG19Features` loads VGG19 from a local file for those who have one.
* Differentiable mask paths from the segmenter's logits to the generator's input, so that the
  image-cycle and adversarial terms can train the segmenter (the reference code cuts this
  gradient with an argmax).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
import torch.nn.functional as F


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


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


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


# --------------------------------------------------------------------------------------------
# Differentiable masks for the generator's input
# --------------------------------------------------------------------------------------------

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


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
