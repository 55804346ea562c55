"""Training targets (classes, normalised distance, gap weights), the canonical zoom and patches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sagegan.data import (BACKGROUND, BOUNDARY, INTERIOR, N_CLASSES, Augment, PreparedImage, class_map, gap_weights,
                          make_batch, median_ecd, normalise_percentile, normalised_distance, prepare, sample_patch,
                          scale_factor_for)
from sagegan.io import Sample


def _two_touching_squares(side: int, shape: tuple[int, int], top: int = 2, left: int = 2) -> np.ndarray:
    """Squares 1 and 2 of ``side`` px, side by side with no gap."""
    labels = np.zeros(shape, np.int32)
    labels[top:top + side, left:left + side] = 1
    labels[top:top + side, left + side:left + 2 * side] = 2
    return labels


def _disc_image(size: int = 128, radius: float = 6.0, centre: float = 64.0) -> np.ndarray:
    yy, xx = np.indices((size, size))
    return ((yy - centre) ** 2 + (xx - centre) ** 2 <= radius ** 2).astype(np.int32)


# ------------------------------------------------------------------------------ targets


def test_class_encoding_constants():
    assert (BACKGROUND, INTERIOR, BOUNDARY, N_CLASSES) == (0, 1, 2, 3)


def test_class_map_marks_the_inner_boundary_and_the_contact_line():
    labels = _two_touching_squares(4, (8, 14))
    b, i, o = BOUNDARY, INTERIOR, BACKGROUND
    expected = np.array([
        [o, o, o, o, o, o, o, o, o, o, o, o, o, o],
        [o, o, o, o, o, o, o, o, o, o, o, o, o, o],
        [o, o, b, b, b, b, b, b, b, b, o, o, o, o],
        [o, o, b, i, i, b, b, i, i, b, o, o, o, o],
        [o, o, b, i, i, b, b, i, i, b, o, o, o, o],
        [o, o, b, b, b, b, b, b, b, b, o, o, o, o],
        [o, o, o, o, o, o, o, o, o, o, o, o, o, o],
        [o, o, o, o, o, o, o, o, o, o, o, o, o, o],
    ], np.uint8)
    np.testing.assert_array_equal(class_map(labels), expected)
    # an isolated 3x3 particle is all boundary but its centre
    single = np.zeros((7, 7), np.int32)
    single[2:5, 2:5] = 5
    assert (class_map(single) == INTERIOR).sum() == 1 and class_map(single)[3, 3] == INTERIOR
    assert not class_map(np.zeros((6, 6), np.int32)).any()


def test_normalised_distance_is_one_at_centres_and_half_the_edge_value_on_contact_lines():
    labels = _two_touching_squares(9, (11, 20), top=1, left=1)  # squares at columns 1..9 and 10..18
    dist = normalised_distance(labels)
    assert dist.dtype == np.float32
    assert (dist[labels == 0] == 0).all()
    # each particle peaks at exactly 1
    for k in (1, 2):
        assert dist[labels == k].max() == 1.0
    assert dist[5, 5] == 1.0 and dist[5, 14] == 1.0
    # The free edge is 1 px from the background; the contact line counts as 0.5 px, so touching
    # particles are split by a valley half as deep as their outer edge. Square 1 without its
    # contact column is 8 px wide: its peak distance is 4 px.
    assert dist[1, 3] == pytest.approx(1 / 4) and dist[5, 1] == pytest.approx(1 / 4)
    np.testing.assert_allclose(dist[1:10, 9], 0.5 / 4)
    np.testing.assert_allclose(dist[1:10, 10], 0.5 / 4)
    # the mirror image of the layout gives the mirror image of the distance
    np.testing.assert_array_equal(normalised_distance(labels[:, ::-1]), dist[:, ::-1])
    assert not normalised_distance(np.zeros((5, 5), np.int32)).any()


def test_gap_weights_stress_pixels_near_two_particles():
    labels = np.zeros((10, 14), np.int32)
    labels[2:6, 2:6] = 1
    labels[2:6, 7:11] = 2  # a one-pixel gap at column 6
    weights = gap_weights(labels, weight=5.0, reach_px=2)
    expected = np.ones((10, 14), np.float32)
    # both particles lie within 2 px (a 5x5 window) of these pixels
    expected[0:8, 5:8] = 5.0
    np.testing.assert_array_equal(weights, expected)
    alone = np.zeros((10, 14), np.int32)
    alone[2:6, 2:6] = 1
    assert (gap_weights(alone) == 1).all()


def test_median_ecd():
    labels = np.zeros((40, 40), np.int32)
    labels[0:4, 0:4] = 1      # area 16
    labels[10:16, 10:16] = 2  # area 36
    labels[20:28, 20:28] = 3  # area 64
    assert median_ecd(labels) == pytest.approx(2 * math.sqrt(36 / math.pi))
    assert math.isnan(median_ecd(labels, min_count=4))
    assert math.isnan(median_ecd(np.zeros((5, 5), np.int32)))
    labels[labels == 2] = 7  # ids need not be consecutive
    assert median_ecd(labels) == pytest.approx(2 * math.sqrt(36 / math.pi))


# ------------------------------------------------------------------------------ canonical zoom


def test_scale_factor_for_brings_particles_to_the_canonical_diameter():
    assert scale_factor_for(12.0, 24.0) == 2.0
    assert scale_factor_for(48.0, 24.0) == 0.5
    assert scale_factor_for(1.0, 24.0) == 4.0        # clipped at the upper limit
    assert scale_factor_for(1000.0, 24.0) == 0.1     # and at the lower one
    assert scale_factor_for(1.0, 24.0, limits=(0.5, 10.0)) == 10.0
    for unknown in (float("nan"), 0.0, -3.0, float("inf")):
        assert scale_factor_for(unknown, 24.0) == 1.0


def test_prepare_normalises_and_zooms_to_canonical_scale():
    labels = np.zeros((64, 64), np.int32)
    labels[4:12, 4:12] = 1     # 8x8: ECD 2 sqrt(64 / pi)
    labels[30:38, 30:38] = 2
    labels[50:58, 4:12] = 3
    ecd = 2 * math.sqrt(64 / math.pi)
    image = np.random.default_rng(0).random((64, 64)) * 200 + 50
    item = prepare(Sample("s", image, labels.astype(np.uint16)), canonical_diameter_px=24.0)
    assert item.stem == "s" and item.labels.dtype == np.int32
    assert item.median_diameter_px == pytest.approx(ecd)
    assert item.scale == pytest.approx(24.0 / ecd)
    np.testing.assert_array_equal(item.distance, normalised_distance(labels))
    lo, hi = np.percentile(item.image, (0.5, 99.5))
    assert item.image.dtype == np.float32 and lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5)
    assert prepare(Sample("s", image, labels), None).scale == 1.0  # native scale
    assert prepare(Sample("s", image, labels), 1000.0).scale == 4.0  # clipped
    assert (normalise_percentile(np.full((8, 8), 3.0)) == 0).all()


# ------------------------------------------------------------------------------ patches


def _ramp_item(scale: float) -> PreparedImage:
    """A 128x128 image whose value is 128 * row + column, one particle in the middle."""
    image = np.arange(128 * 128, dtype=np.float32).reshape(128, 128)
    labels = np.zeros((128, 128), np.int32)
    labels[62:66, 62:66] = 1
    return PreparedImage("ramp", image, labels, normalised_distance(labels), scale, 4.0)


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_patches_are_cut_at_the_canonical_zoom(scale):
    """A patch of ``size`` px covers ``size / scale`` native px: neighbours differ by 1 / scale px."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, classes, distance, weights = sample_patch(_ramp_item(scale), 32, rng, foreground_bias=1.0)
        assert image.shape == classes.shape == distance.shape == weights.shape == (32, 32)
        np.testing.assert_allclose(np.diff(image, axis=0), 128 / scale, atol=1e-2)
        np.testing.assert_allclose(np.diff(image, axis=1), 1 / scale, atol=1e-2)


def test_patch_classes_match_the_image_and_zoom_the_particles():
    labels = _disc_image(radius=6.0)
    item = PreparedImage("disc", labels.astype(np.float32), labels, normalised_distance(labels), 2.0, 12.0)
    rng = np.random.default_rng(1)
    flips_only = Augment(scale_jitter=0.0, brightness=0, contrast=0, gamma=0, blur_prob=0, noise_prob=0)
    for augment in (None, flips_only):
        for _ in range(6):
            image, classes, distance, _ = sample_patch(item, 64, rng, augment, foreground_bias=1.0)
            foreground = classes != BACKGROUND
            # image and targets stay aligned through the zoom, flips and rotations
            assert foreground[image > 0.75].all() and not foreground[image < 0.25].any()
            # image and distance are interpolated alike: no distance where the image saw only background
            assert (distance[image == 0] == 0).all() and distance.max() > 0.8
    # At twice the native scale every native pixel becomes 2x2 patch pixels: a small disc near
    # the patch centre (foreground-centred patches) has exactly 4x its area.
    small = _disc_image(radius=3.0)
    item = PreparedImage("small", small.astype(np.float32), small, normalised_distance(small), 2.0, 6.0)
    for seed in range(3):
        _, classes, _, _ = sample_patch(item, 64, np.random.default_rng(seed), foreground_bias=1.0)
        assert (classes != BACKGROUND).sum() == 4 * small.sum()


def test_make_batch_stacks_patches_of_random_images():
    items = [_ramp_item(1.0), _ramp_item(2.0)]
    image, classes, distance, weights = make_batch(items, 3, 32, np.random.default_rng(0))
    assert image.shape == classes.shape == distance.shape == weights.shape == (3, 32, 32)
    assert image.dtype == distance.dtype == weights.dtype == np.float32
    assert set(np.unique(classes)) <= {BACKGROUND, INTERIOR, BOUNDARY}
    again = make_batch(items, 3, 32, np.random.default_rng(0))
    for a, b in zip((image, classes, distance, weights), again):
        np.testing.assert_array_equal(a, b)  # the rng alone decides the batch
