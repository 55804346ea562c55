"""The networks of sagegan.nets, on tiny configurations: Attention U-Net (and its inference copy
with BatchNorm folded), StyleUNet generator, PatchGAN discriminators and DiffAugment, style
encoder, VGG19 features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sagegan.losses import FeaturePerceptualLoss
from sagegan.nets.attention_unet import AttentionUNet, inference_copy
from sagegan.nets.patchgan import EfficientSelfAttention, PatchDiscriminator, diff_augment
from sagegan.nets.style_encoder import StyleEncoder
from sagegan.nets.style_unet import ModulatedConv2d, StyleUNet
from sagegan.nets.vgg19 import VGG19Features

TINY_G = dict(widths=(8, 16, 32), latent_dim=16, style_dim=16)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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


# ------------------------------------------------------------------------- Attention U-Net

def test_attention_unet_shapes_and_gates():
    net = AttentionUNet(1, 4, widths=(8, 16, 32)).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits, gates = net(x, return_gates=True)
        _, gates_other = net(torch.rand(2, 1, 64, 64), return_gates=True)
    assert logits.shape == (2, 4, 64, 64)
    assert [tuple(g.shape) for g in gates] == [(2, 1, 64, 64), (2, 1, 32, 32)]  # finest first
    assert not torch.allclose(gates[0], gates_other[0])  # the gates read the input
    plain = AttentionUNet(1, 4, widths=(8, 16, 32), attention_gates=False, norm="group", dropout=0.1)
    out, no_gates = plain(torch.zeros(1, 1, 64, 64), return_gates=True)
    assert out.shape == (1, 4, 64, 64) and no_gates == []
    with_mhsa = AttentionUNet(1, 4, widths=(8, 16, 32), bottleneck_attention=True)
    assert with_mhsa(torch.zeros(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    assert AttentionUNet.from_config(net.config()).config() == net.config()
    assert [f.shape[1] for f in net.encode(x)] == [8, 16, 32]
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="unknown norm"):
        AttentionUNet(1, 4, widths=(8, 16), norm="layer")


def _with_nontrivial_batchnorm(net: nn.Module) -> nn.Module:
    """Random BatchNorm scales, shifts and running statistics (a fresh net has 1, 0, 0 and 1)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.2, 3.0)
    return net


@pytest.mark.parametrize("attention_gates", [True, False])
def test_inference_copy_folds_batchnorm_with_the_same_outputs(attention_gates):
    net = _with_nontrivial_batchnorm(AttentionUNet(1, 4, widths=(8, 16, 32), attention_gates=attention_gates))
    net.train()
    fast = inference_copy(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert not fast.training
    # the original is neither changed nor switched to eval mode
    assert net.training and sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0
    x = torch.rand(2, 1, 64, 48)
    net.eval()
    with torch.no_grad():
        expected, expected_gates = net(x, return_gates=True)
        folded, folded_gates = fast(x.contiguous(memory_format=torch.channels_last), return_gates=True)
    assert expected.abs().max() > 0.1  # the comparison below is not between near-zero outputs
    assert torch.allclose(folded, expected, atol=1e-4)
    for a, b in zip(folded_gates, expected_gates, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    # a copy: changing it leaves the original alone
    with torch.no_grad():
        next(fast.parameters()).add_(1.0)
        assert torch.equal(net(x), expected)


# ------------------------------------------------------------------------------ StyleUNet

def test_style_unet_shapes_and_mask_dependence():
    gen = StyleUNet(**TINY_G).eval()
    mask = _mask()
    z = gen.sample_z(2)
    noise = gen.make_noise(2, 64, 64)
    with torch.no_grad():
        image, w = gen(mask, z, noise, return_w=True)
        other = gen(1 - mask, z, noise)
    assert image.shape == (2, 1, 64, 64)
    assert w.shape == (2, gen.num_styles, 16) and gen.num_styles == 3
    assert float(image.std()) > 1e-3  # an image, not a constant
    assert float((image - other).abs().max()) > 1e-3  # the mask decides where things are
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


# ---------------------------------------------------------------------------- style encoder

def test_style_encoder_kl_and_sampling():
    enc = StyleEncoder(latent_dim=8, widths=(4, 8))
    mu, logvar = enc(torch.rand(3, 1, 32, 32))
    assert mu.shape == logvar.shape == (3, 8)
    zero = torch.zeros(3, 8)
    assert float(StyleEncoder.kl_divergence(zero, zero)) == 0.0
    assert float(StyleEncoder.kl_divergence(zero + 1, zero)) == pytest.approx(4.0)  # 0.5 * 8 * 1^2
    # sigma = e: 0.5 * 8 * (e^2 - 1 - 2)
    assert float(StyleEncoder.kl_divergence(zero, zero + 2)) == pytest.approx(4 * (torch.e ** 2 - 3), rel=1e-5)
    g1, g2 = (torch.Generator().manual_seed(3) for _ in range(2))
    assert torch.equal(StyleEncoder.sample(mu, logvar, g1), StyleEncoder.sample(mu, logvar, g2))
    # the reparameterisation: z = mu + exp(logvar / 2) * eps
    eps = torch.randn(3, 8, generator=torch.Generator().manual_seed(4))
    z = StyleEncoder.sample(mu, logvar, torch.Generator().manual_seed(4))
    assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps)


# ------------------------------------------------------------------------------- VGG19

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
