"""Generator, discriminators, DiffAugment and GAN losses, on tiny configurations."""

from __future__ import annotations

import pytest
import torch

from sagegan.gan_losses import (
    FeaturePerceptualLoss, VGG19Features, foreground_boundary_channels, lsgan_d_loss, lsgan_g_loss,
    soft_mask_from_logits, straight_through_mask,
)
from sagegan.nets.attention_unet import AttentionUNet
from sagegan.nets.patchgan import EfficientSelfAttention, PatchDiscriminator, diff_augment
from sagegan.nets.style_unet import ModulatedConv2d, StyleUNet

TINY_G = dict(widths=(8, 16, 32), latent_dim=16, style_dim=16)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Tiny tensors gain nothing from a second thread, and when another process holds the other
    # core, OpenMP threads waiting on each other make each call ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _mask(batch=2, side=64):
    return (torch.rand(batch, 2, side, side) > 0.7).float()


def _noisy_generator(**kwargs) -> StyleUNet:
    """A tiny generator whose noise strengths are non-zero (they start at zero)."""
    gen = StyleUNet(**{**TINY_G, **kwargs})
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("noise.strength"):
                p.fill_(0.5)
    return gen


# ------------------------------------------------------------------------------ StyleUNet

def test_style_unet_shapes_and_range():
    gen = StyleUNet(**TINY_G).eval()
    with torch.no_grad():
        image, w = gen(_mask(), return_w=True)
    assert image.shape == (2, 1, 64, 64)
    assert w.shape == (2, gen.num_styles, 16) and gen.num_styles == 3
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0  # sigmoid output
    assert gen(_mask(side=32)).shape == (2, 1, 32, 32)
    assert StyleUNet(in_channels=1, out_channels=1, **TINY_G)(_mask()[:, :1]).shape == (2, 1, 64, 64)


def test_style_unet_rejects_indivisible_side():
    with pytest.raises(ValueError, match="divisible by 4"):
        StyleUNet(**TINY_G)(_mask(side=30))


def test_same_z_and_noise_give_same_image_and_different_z_differ():
    gen = _noisy_generator().eval()
    mask = _mask()
    z = gen.sample_z(2)
    noise = gen.make_noise(2, 64, 64)
    first = gen(mask, z, noise)
    assert torch.equal(first, gen(mask, z, noise))
    assert (first - gen(mask, gen.sample_z(2), noise)).abs().max() > 1e-3
    assert (first - gen(mask, z, gen.make_noise(2, 64, 64))).abs().max() > 1e-4
    # Everything drawn from one seeded generator reproduces too.
    a = gen(mask, generator=torch.Generator().manual_seed(3))
    b = gen(mask, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_style_unet_treats_samples_independently():
    # train_gan renders G(mask) and G(S(x)) in one batched call; that is only right if no
    # layer mixes samples (GroupNorm and per-sample modulation, no BatchNorm).
    gen = _noisy_generator().eval()
    mask_a, mask_b = _mask(), _mask()
    z = gen.sample_z(2)
    noise_a, noise_b = gen.make_noise(2, 64, 64), gen.make_noise(2, 64, 64)
    together = gen(torch.cat([mask_a, mask_b]), torch.cat([z, z]),
                   [torch.cat([a, b]) for a, b in zip(noise_a, noise_b)])
    apart = torch.cat([gen(mask_a, z, noise_a), gen(mask_b, z, noise_b)])
    assert torch.allclose(together, apart, atol=1e-5)


def test_style_mixing_in_training_mode():
    gen = StyleUNet(**TINY_G, style_mixing_prob=1.0).train()
    mask = _mask()
    image, w = gen(mask, return_w=True, generator=torch.Generator().manual_seed(1))
    image.mean().backward()
    assert all(p.grad is not None for p in gen.mapping.parameters())
    # Two different styles, switching once between the first and the last block.
    assert not torch.allclose(w[:, 0], w[:, -1])
    changes = [(not torch.allclose(w[:, i], w[:, i + 1])) for i in range(gen.num_styles - 1)]
    assert sum(changes) == 1
    no_mixing = StyleUNet(**TINY_G, style_mixing_prob=0.0).train()
    _, w = no_mixing(mask, return_w=True)
    assert torch.allclose(w[:, 0], w[:, -1])
    # Per-block latents are taken as given.
    z = torch.randn(2, gen.num_styles, 16)
    assert gen(mask, z, return_w=True)[1].shape == (2, gen.num_styles, 16)


def test_modulated_conv_demodulation_keeps_unit_std_and_fused_matches_unfused():
    x = torch.randn(4, 64, 32, 32)
    w = torch.randn(4, 32) * 2
    fused = ModulatedConv2d(64, 48, 3, style_dim=32, fused=True)
    unfused = ModulatedConv2d(64, 48, 3, style_dim=32, fused=False)
    unfused.load_state_dict(fused.state_dict())
    with torch.no_grad():
        out, out_unfused = fused(x, w), unfused(x, w)
    # Border pixels see zero padding; judge the interior.
    assert 0.85 < float(out[..., 1:-1, 1:-1].std()) < 1.15
    assert torch.allclose(out, out_unfused, atol=1e-4)


# ------------------------------------------------------------------------- discriminators

def test_patch_discriminator_shapes():
    disc = PatchDiscriminator(1, base_channels=8)
    assert disc(torch.rand(2, 1, 64, 64)).shape == (2, 1, 6, 6)
    assert any(isinstance(m, EfficientSelfAttention) for m in disc.modules())
    plain = PatchDiscriminator(2, base_channels=8, self_attention=False, norm="batch")
    assert plain(torch.rand(2, 2, 64, 64)).shape == (2, 1, 6, 6)
    assert not any(isinstance(m, EfficientSelfAttention) for m in plain.modules())


def test_efficient_attention_starts_as_identity_and_learns():
    attention = EfficientSelfAttention(16, heads=2)
    x = torch.randn(2, 16, 12, 10)
    assert torch.equal(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    y = attention(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward()
    assert attention.queries.weight.grad.abs().sum() > 0


def test_diff_augment_is_differentiable_and_keeps_shape():
    x = torch.rand(4, 1, 32, 32, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    gen = torch.Generator()
    assert torch.equal(diff_augment(x, generator=gen.manual_seed(5)), diff_augment(x, generator=gen.manual_seed(5)))
    assert torch.equal(diff_augment(x, policy=()), x)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, policy=("saturation",))


def test_diff_augment_translation_and_cutout_behave():
    ones = torch.ones(64, 1, 32, 32)
    shifted = diff_augment(ones, policy="translation")
    assert set(shifted.unique().tolist()) <= {0.0, 1.0}
    # A shift of at most 1/8 of the side leaves at least 7/8 of each side.
    assert float(shifted.mean(dim=(1, 2, 3)).min()) >= (28 / 32) ** 2 - 1e-6
    cut = diff_augment(ones, policy="cutout")
    erased = 1 - cut.mean(dim=(1, 2, 3))
    assert float(erased.max()) <= 0.25 + 1e-6 and float(erased.min()) > 0
    bright = diff_augment(ones * 0.5, policy="brightness")
    assert float((bright - 0.5).abs().max()) <= 0.25 + 1e-6


# ------------------------------------------------------------------------------- losses

def test_lsgan_losses_have_their_minima_at_the_targets():
    real, fake = torch.ones(2, 1, 6, 6), torch.zeros(2, 1, 6, 6)
    assert float(lsgan_d_loss(real, fake)) == 0.0
    assert float(lsgan_g_loss(real)) == 0.0
    assert float(lsgan_d_loss(fake, real)) == pytest.approx(1.0)
    assert float(lsgan_g_loss(fake)) == pytest.approx(1.0)
    d_fake = torch.full((2, 1, 6, 6), 0.3, requires_grad=True)
    lsgan_g_loss(d_fake).backward()
    assert float(d_fake.grad.max()) < 0  # pushes fake scores up towards 1


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


def test_vgg19_features_load_saved_weights_and_fail_clearly(tmp_path):
    layers = ("relu1_2", "relu2_2")
    source = VGG19Features(None, layers=layers)
    pth = tmp_path / "vgg.pth"
    # torchvision-format file: features.* plus classifier.* entries that must be ignored.
    torch.save({**source.state_dict(), "classifier.0.bias": torch.zeros(3)}, pth)
    loaded = VGG19Features(pth, layers=layers)
    x = torch.rand(1, 1, 16, 16)
    for a, b in zip(source(x), loaded(x)):
        assert torch.equal(a, b)
    assert [f.shape[1] for f in loaded(x)] == [64, 128]
    assert all(not p.requires_grad for p in loaded.parameters())
    perceptual = FeaturePerceptualLoss(loaded)
    assert perceptual.extractor is loaded  # already frozen: used without a copy
    assert perceptual(torch.rand(1, 1, 16, 16), x).item() > 0

    from safetensors.torch import save_file
    st = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    assert torch.equal(VGG19Features(st, layers=layers)(x)[1], source(x)[1])

    with pytest.raises(ValueError, match="not found"):
        VGG19Features(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="missing keys"):
        VGG19Features(pth)  # the file stops at relu2_2, the default needs relu5_4
    torch.save({"features.1.running_mean": torch.zeros(64)}, tmp_path / "bn.pth")
    with pytest.raises(ValueError, match="unexpected keys"):
        VGG19Features(tmp_path / "bn.pth", layers=("relu1_2",))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        VGG19Features(tmp_path / "junk.pth")


def test_vgg19_layout_matches_torchvision_keys():
    vgg = VGG19Features(None)
    conv_indices = sorted({int(k.split(".")[1]) for k in vgg.state_dict()})
    assert conv_indices == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert vgg.state_dict()["features.34.weight"].shape == (512, 512, 3, 3)
    with torch.no_grad():
        shapes = [tuple(f.shape) for f in vgg(torch.rand(1, 1, 32, 32))]
    assert shapes == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8), (1, 512, 4, 4), (1, 512, 2, 2)]


def test_mask_paths_from_logits():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    hard = straight_through_mask(logits)
    assert torch.equal(hard.sum(dim=1), torch.ones(2, 8, 8))
    assert set(hard.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard.argmax(dim=1), logits.argmax(dim=1))
    channels = foreground_boundary_channels(hard)
    (channels * torch.randn_like(channels)).sum().backward()
    assert logits.grad.abs().sum() > 0

    soft = soft_mask_from_logits(logits).detach()
    assert soft.shape == (2, 2, 8, 8) and 0 <= float(soft.min()) and float(soft.max()) <= 1
    labels = torch.tensor([[[0, 1], [2, 0]]])
    assert foreground_boundary_channels(labels).tolist() == [[[[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]]
    with pytest.raises(ValueError, match="C >= 3"):
        soft_mask_from_logits(torch.randn(1, 2, 4, 4))


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
