"""The losses of both phases: segmentation, least-squares adversarial, perceptual, and the mask
paths from the segmenter's logits to the generator's input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sagegan.data import BACKGROUND, BOUNDARY, INTERIOR, N_CLASSES
from sagegan.losses import (
    OUT_CHANNELS, FeaturePerceptualLoss, foreground_boundary_channels, lsgan_d_loss, lsgan_g_loss,
    segmentation_loss, soft_dice_loss, soft_mask_from_logits, straight_through_mask, tversky_loss,
)
from sagegan.nets.attention_unet import AttentionUNet
from sagegan.nets.patchgan import PatchDiscriminator, diff_augment
from sagegan.nets.style_unet import StyleUNet

TINY_G = dict(widths=(8, 16, 32), latent_dim=16, style_dim=16)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------ segmentation

# One 2x2 image: background, interior / boundary, interior.
CLASSES = torch.tensor([[[BACKGROUND, INTERIOR], [BOUNDARY, INTERIOR]]])
DISTANCE = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]])


def _confident(classes: torch.Tensor, distance: torch.Tensor, margin: float = 20.0) -> torch.Tensor:
    """Network output that puts ``margin`` logits on the given classes and hits the distance."""
    logits = margin * F.one_hot(classes, N_CLASSES).permute(0, 3, 1, 2).float()
    dist_logit = torch.logit(distance.clamp(1e-4, 1 - 1e-4))[:, None]
    return torch.cat([logits, dist_logit], dim=1)


def test_segmentation_loss_exact_value_for_an_uninformed_network():
    """All-zero output: uniform class probabilities (CE = ln 3) and distance 0.5 everywhere."""
    outputs = torch.zeros(1, OUT_CHANNELS, 2, 2)
    # soft Dice per foreground class c with n_c pixels: (2 n_c / 3 + 1) / (4 / 3 + n_c + 1)
    dice_interior, dice_boundary = (4 / 3 + 1) / (4 / 3 + 2 + 1), (2 / 3 + 1) / (4 / 3 + 1 + 1)
    overlap = 1 - (dice_interior + dice_boundary) / 2
    mse = (0.5 ** 2 + 0.5 ** 2 + 0 + 0.5 ** 2) / 4
    expected = math.log(3) + overlap + 2.0 * mse
    assert float(segmentation_loss(outputs, CLASSES, DISTANCE)) == pytest.approx(expected, rel=1e-6)
    # the pixel weights scale the cross-entropy term only
    weights = torch.tensor([[[1.0, 2.0], [3.0, 2.0]]])
    assert float(segmentation_loss(outputs, CLASSES, DISTANCE, weights)) == pytest.approx(
        expected + math.log(3), rel=1e-6)
    assert float(segmentation_loss(outputs, CLASSES, DISTANCE, distance_weight=0.0)) == pytest.approx(
        math.log(3) + overlap, rel=1e-6)


@pytest.mark.parametrize("kind", ["ce_dice", "focal_tversky"])
def test_segmentation_loss_prefers_the_right_answer(kind):
    wrong_classes = torch.tensor([[[INTERIOR, BACKGROUND], [INTERIOR, BOUNDARY]]])
    right = segmentation_loss(_confident(CLASSES, DISTANCE), CLASSES, DISTANCE, kind=kind)
    wrong_class = segmentation_loss(_confident(wrong_classes, DISTANCE), CLASSES, DISTANCE, kind=kind)
    wrong_distance = segmentation_loss(_confident(CLASSES, 1 - DISTANCE), CLASSES, DISTANCE, kind=kind)
    uninformed = segmentation_loss(torch.zeros(1, OUT_CHANNELS, 2, 2), CLASSES, DISTANCE, kind=kind)
    assert float(right) < 0.01
    assert float(right) < float(uninformed) < float(wrong_class)
    assert float(wrong_distance) > float(right) + 1.0  # distance off by 1 on 3 of 4 pixels: 2 x 0.75


def test_segmentation_loss_gradient_and_bad_kind():
    outputs = torch.zeros(1, OUT_CHANNELS, 2, 2, requires_grad=True)
    segmentation_loss(outputs, CLASSES, DISTANCE).backward()
    # descending the gradient raises the true class's logit at every pixel
    grad = outputs.grad[0, :N_CLASSES]
    true_grad = grad.gather(0, CLASSES)
    assert (true_grad < 0).all()
    with pytest.raises(ValueError, match="unknown loss"):
        segmentation_loss(outputs, CLASSES, DISTANCE, kind="bce")


def test_overlap_losses_vanish_on_a_perfect_prediction():
    onehot = F.one_hot(CLASSES, N_CLASSES).permute(0, 3, 1, 2).float()
    assert float(soft_dice_loss(onehot, onehot)) == 0.0
    assert float(tversky_loss(onehot, onehot)) == 0.0
    swapped = onehot[:, [0, 2, 1]]
    assert float(soft_dice_loss(swapped, onehot)) > 0.5 and float(tversky_loss(swapped, onehot)) > 0.5


# ------------------------------------------------------------------------------ adversarial

def test_lsgan_losses_have_their_minima_at_the_targets():
    real, fake = torch.ones(2, 1, 6, 6), torch.zeros(2, 1, 6, 6)
    assert float(lsgan_d_loss(real, fake)) == 0.0
    assert float(lsgan_g_loss(real)) == 0.0
    assert float(lsgan_d_loss(fake, real)) == pytest.approx(1.0)
    assert float(lsgan_g_loss(fake)) == pytest.approx(1.0)
    half = torch.full((2, 1, 6, 6), 0.5)
    assert float(lsgan_d_loss(half, half)) == pytest.approx(0.25)  # 0.5 * (0.25 + 0.25)
    d_fake = torch.full((2, 1, 6, 6), 0.3, requires_grad=True)
    loss = lsgan_g_loss(d_fake)
    assert loss.item() == pytest.approx(0.49)
    loss.backward()
    assert float(d_fake.grad.max()) < 0  # pushes fake scores up towards 1


# ------------------------------------------------------------------------------ perceptual

def test_feature_perceptual_loss_uses_a_frozen_copy_of_the_encoder():
    segmenter = AttentionUNet(1, 3, widths=(4, 8), norm="batch")
    loss_fn = FeaturePerceptualLoss(segmenter.encode, normalise=lambda x: (x - 0.5) / 0.25).train()
    target = torch.rand(2, 1, 32, 32)
    image = target.clone().requires_grad_(True)
    assert loss_fn(image, target).item() == 0.0
    other = torch.rand(2, 1, 32, 32, requires_grad=True)
    loss = loss_fn(other, target)
    assert loss.item() > 0
    loss.backward()
    assert other.grad is not None and other.grad.abs().sum() > 0
    assert not loss_fn.extractor.training
    assert all(not p.requires_grad and p.grad is None for p in loss_fn.extractor.parameters())
    # The segmenter itself stays trainable and untouched.
    assert all(p.requires_grad and p.grad is None for p in segmenter.parameters())
    assert FeaturePerceptualLoss(segmenter.encode, layer_weights=(0.0, 1.0), distance="mse")(other, target) > 0
    with pytest.raises(ValueError, match="layer_weights"):
        FeaturePerceptualLoss(segmenter.encode, layer_weights=(1.0,))(other, target)


def test_perceptual_against_one_target_equals_separate_calls():
    segmenter = AttentionUNet(1, 3, widths=(4, 8), norm="batch")
    loss_fn = FeaturePerceptualLoss(segmenter.encode).train()
    target = torch.rand(2, 1, 32, 32)
    a, b = torch.rand(2, 1, 32, 32, requires_grad=True), torch.rand(2, 1, 32, 32, requires_grad=True)
    batched = loss_fn.against(target, a, b)
    separate = [loss_fn(a, target), loss_fn(b, target)]
    assert torch.allclose(torch.stack(batched), torch.stack(separate), atol=1e-6)
    sum(batched).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shapes differ"):
        loss_fn.against(target, a, torch.rand(1, 1, 32, 32))


# ------------------------------------------------------------------------------ mask paths

def test_mask_paths_from_logits():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    hard = straight_through_mask(logits)
    assert torch.equal(hard.detach(), F.one_hot(logits.argmax(1), 3).permute(0, 3, 1, 2).float())
    # the straight-through gradient is the softmax's
    upstream = torch.randn(2, 3, 8, 8)
    (grad_st,) = torch.autograd.grad((hard * upstream).sum(), logits, retain_graph=True)
    (grad_softmax,) = torch.autograd.grad((logits.softmax(1) * upstream).sum(), logits)
    assert torch.allclose(grad_st, grad_softmax, atol=1e-6) and grad_st.abs().sum() > 0
    channels = foreground_boundary_channels(hard)
    (channels * torch.randn_like(channels)).sum().backward()
    assert logits.grad.abs().sum() > 0

    probs = logits.softmax(1).detach()
    soft = soft_mask_from_logits(logits).detach()
    assert soft.shape == (2, 2, 8, 8)
    assert torch.allclose(soft[:, 0], 1 - probs[:, BACKGROUND]) and torch.allclose(soft[:, 1], probs[:, BOUNDARY])
    labels = torch.tensor([[[0, 1], [2, 0]]])
    assert foreground_boundary_channels(labels).tolist() == [[[[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]]
    assert torch.equal(foreground_boundary_channels(labels[:, None]), foreground_boundary_channels(labels))
    with pytest.raises(ValueError, match="C >= 3"):
        soft_mask_from_logits(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="integer class maps"):
        foreground_boundary_channels(torch.zeros(2, 3, 4, 4, dtype=torch.long))


# ------------------------------------------------------------------ one tiny GAN iteration

def test_one_tiny_gan_iteration_trains_every_network():
    segmenter = AttentionUNet(1, 3, widths=(8, 16, 32), norm="group")
    generator = StyleUNet(**TINY_G)
    d_image = PatchDiscriminator(1, base_channels=8)
    d_mask = PatchDiscriminator(2, base_channels=8)
    perceptual = FeaturePerceptualLoss(segmenter.encode)
    image = torch.rand(2, 1, 64, 64)
    mask = foreground_boundary_channels(torch.randint(0, 3, (2, 64, 64)))
    nets = (segmenter, generator, d_image, d_mask)

    # Generator + segmenter step: real mask -> image, and image -> predicted mask -> image.
    fake_image = generator(mask)
    predicted = foreground_boundary_channels(straight_through_mask(segmenter(image)))
    rebuilt = generator(predicted)
    g_loss = (lsgan_g_loss(d_image(diff_augment(fake_image))) + lsgan_g_loss(d_mask(predicted))
              + 50 * (rebuilt - image).abs().mean() + 100 * perceptual(rebuilt, image))
    g_loss.backward()
    # Discriminator step on detached fakes.
    d_loss = (lsgan_d_loss(d_image(diff_augment(image)), d_image(diff_augment(fake_image.detach())))
              + lsgan_d_loss(d_mask(mask), d_mask(predicted.detach())))
    d_loss.backward()

    for net in nets:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), type(net).__name__
    assert torch.isfinite(g_loss) and torch.isfinite(d_loss)
