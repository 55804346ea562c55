"""sagegan.analyze: sizes and spatial order of label images, on hand-made lattices of discs."""

import math

import numpy as np
import pytest

from sagegan.analyze import SUMMARY_KEYS, analyze_image, nm_key, particles_table, summarize_batch
from sagegan.io import json_ready
from sagegan.particles import MEASURE_COLUMNS

SPACING = 20.0
RADIUS = 7.0
# Discs of radius 7 px drawn at these centres cover 154 or 155 pixels.
ECD_154, ECD_155 = 2 * math.sqrt(154 / math.pi), 2 * math.sqrt(155 / math.pi)


def hex_disc_labels(shape=(300, 300), spacing=SPACING, radius=RADIUS):
    """Discs on a hexagonal lattice with bonds along x, clipped by the image; one label per disc."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros(shape, np.int32)
    row_height = spacing * np.sqrt(3) / 2
    n = 0
    for j in range(-1, int(h / row_height) + 2):
        for i in range(-1, int(w / spacing) + 2):
            x, y = 3.3 + i * spacing + 0.5 * spacing * (j % 2), 4.1 + j * row_height
            disc = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
            if disc.any():
                n += 1
                labels[disc] = n
    return labels


def square_disc_labels(shape=(200, 200), spacing=16, radius=5):
    """Discs of radius 5 px on a square lattice, none touching the border."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    centres = [(cy, cx) for cy in np.arange(8.5, shape[0], spacing) for cx in np.arange(8.5, shape[1], spacing)]
    for i, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


def one_particle_labels():
    labels = np.zeros((64, 64), np.int32)
    labels[20:30, 24:34] = 1
    return labels


# ---------------------------------------------------------------------------- analyze_image
def test_hex_lattice_of_discs_is_ordered_with_the_drawn_spacing():
    result = analyze_image(hex_disc_labels())
    s = result.summary
    assert list(s) == list(SUMMARY_KEYS)
    assert s["psi6_global"] > 0.99 and s["psi6_local_mean"] > 0.99
    assert s["psi4_global"] < 0.05
    assert s["lattice_type"] == "hex"
    assert s["nn_distance_px_mean"] == pytest.approx(SPACING, abs=0.1)
    assert s["lattice_constant_px"] == pytest.approx(SPACING, abs=0.3)
    assert s["lattice_constant_fft_px"] == pytest.approx(SPACING, abs=0.5)
    assert s["coordination_mean"] == 6.0
    assert (s["n_fivefold"], s["n_sevenfold"], s["n_domains"]) == (0, 0, 1)
    # every whole disc covers 154 or 155 px: the size statistics are those two diameters
    inner = ~result.particles["touches_border"]
    assert s["n_particles_sized"] == int(inner.sum()) == 224 and s["n_particles"] == 288
    assert s["size_stats_exclude_border"] is True
    assert s["ecd_px_d10"] == pytest.approx(ECD_154) and s["ecd_px_d50"] == pytest.approx(ECD_154)
    assert s["ecd_px_d90"] == pytest.approx(ECD_155)
    n155 = int(np.isclose(result.particles.loc[inner, "ecd_px"], ECD_155).sum())
    assert s["ecd_px_mean"] == pytest.approx(((224 - n155) * ECD_154 + n155 * ECD_155) / 224)
    assert s["ecd_px_lognormal_median"] == pytest.approx(s["ecd_px_mean"], rel=1e-3)
    assert s["ecd_px_lognormal_sigma"] < 0.005
    assert s["ecd_nm_mean"] is None and s["lattice_constant_nm"] is None and s["nm_per_px"] is None
    assert any("Pixel size unknown" in note for note in s["notes"])
    # per-particle order columns: interior particles are 6-fold, |psi6| = 1, bonds along x (0 deg)
    p = result.particles
    interior = ~p["order_edge"]
    assert interior.sum() == s["n_particles_order"] == 182
    assert (p.loc[interior, "coordination"] == 6).all()
    assert np.allclose(p.loc[interior, "psi6_abs"], 1.0, atol=0.01)
    assert np.allclose(p.loc[interior, "psi6_orientation_deg"], 0.0, atol=0.1)
    assert p.loc[~interior, ["psi6_abs", "psi4_abs", "psi6_orientation_deg"]].isna().all().all()
    r, g = result.pair_correlation
    assert r[np.argmax(g)] == pytest.approx(SPACING, abs=1.0)  # first and highest peak


def test_square_lattice_is_called_square():
    s = analyze_image(square_disc_labels()).summary
    assert s["lattice_type"] == "square"
    assert s["psi4_global"] == pytest.approx(1.0) and s["psi6_global"] < 0.05
    assert s["n_particles"] == s["n_particles_sized"] == 12 * 12
    assert s["nn_distance_px_mean"] == pytest.approx(16.0) and s["nn_distance_px_sd"] == pytest.approx(0.0)
    assert s["lattice_constant_px"] == pytest.approx(16.0, abs=0.2)
    assert s["ecd_px_sd"] == 0.0  # identical discs


def test_calibrated_lengths_are_px_lengths_times_pixel_size():
    labels = hex_disc_labels((160, 200))
    px = analyze_image(labels).summary
    nm = analyze_image(labels, nm_per_px=0.37).summary
    pairs = [k for k in SUMMARY_KEYS if "_px" in k and nm_key(k) in SUMMARY_KEYS
             and k != "ecd_px_lognormal_mu" and k != "ecd_px_lognormal_sigma"]
    assert len(pairs) == 12
    for key in pairs:
        assert nm[key] == px[key], key  # px values do not depend on the calibration
        assert nm[nm_key(key)] == pytest.approx(np.multiply(px[key], 0.37), rel=1e-12), key
    assert nm["ecd_nm_lognormal_mu"] == pytest.approx(px["ecd_px_lognormal_mu"] + math.log(0.37))
    assert nm["ecd_nm_lognormal_sigma"] == pytest.approx(px["ecd_px_lognormal_sigma"])
    assert nm["nm_per_px"] == 0.37
    assert not any("Pixel size" in note for note in nm["notes"])


@pytest.mark.parametrize("labels, n", [(np.zeros((64, 64), np.int32), 0), (one_particle_labels(), 1)])
def test_zero_and_one_particle_give_empty_results_not_errors(labels, n):
    result = analyze_image(labels, nm_per_px=1.5)
    s = result.summary
    assert s["n_particles"] == n == len(result.particles)
    assert {"id", "ecd_px", "ecd_nm", "nn_distance_px", "psi6_abs"} <= set(result.particles.columns)
    for key in ("nn_distance_px_mean", "nn_distance_nm_mean", "psi6_global", "psi4_global",
                "lattice_constant_px", "lattice_constant_nm", "coordination_mean"):
        assert math.isnan(s[key]), key
    assert s["n_particles_order"] == 0 and s["lattice_type"] is None and s["n_domains"] == 0
    expected_note = "No particles" if n == 0 else "Only one particle"
    assert any(note.startswith(expected_note) for note in s["notes"])
    if n == 0:
        assert s["n_particles_sized"] == 0 and math.isnan(s["ecd_px_mean"])
    else:
        assert s["n_particles_sized"] == 1 and s["ecd_px_mean"] == pytest.approx(np.sqrt(400 / np.pi))
        assert math.isnan(s["ecd_px_sd"])
    assert json_ready(s)["psi6_global"] is None


def test_binary_mask_is_split_into_particles():
    labels = square_disc_labels((64, 64))
    assert analyze_image(labels > 0).summary["n_particles"] == analyze_image(labels).summary["n_particles"] == 16


# ---------------------------------------------------------------------------- many images
def test_batch_of_one_image_reproduces_the_image_and_pools_counts():
    a = analyze_image(hex_disc_labels((160, 200)), nm_per_px=2.0)
    one = summarize_batch({"a": a})
    for key in ("n_particles", "n_particles_sized", "ecd_px_mean", "ecd_px_d50", "nn_distance_px_mean",
                "psi6_global", "lattice_constant_px", "lattice_constant_nm", "ecd_nm_mean"):
        assert one[key] == pytest.approx(a.summary[key], rel=1e-9), key
    b = analyze_image(one_particle_labels())
    both = summarize_batch({"a": a, "b": b})
    assert both["n_particles"] == a.summary["n_particles"] + 1 and both["n_images"] == 2
    assert both["psi6_global"] == pytest.approx(a.summary["psi6_global"])  # b has no order weight
    assert both["ecd_nm_mean"] == pytest.approx(a.summary["ecd_nm_mean"])  # b is uncalibrated
    assert both["nm_per_px"] is None and both["n_images_calibrated"] == 1
    assert any("1 of 2 images" in note for note in both["notes"])


def test_batch_weights_order_by_particles_with_a_full_shell_and_mixes_lattice_types():
    hexa, square = analyze_image(hex_disc_labels()), analyze_image(square_disc_labels())
    both = summarize_batch({"h": hexa, "s": square})
    w_h, w_s = hexa.summary["n_particles_order"], square.summary["n_particles_order"]
    for key in ("psi6_global", "psi4_global", "lattice_constant_px"):
        expected = (w_h * hexa.summary[key] + w_s * square.summary[key]) / (w_h + w_s)
        assert both[key] == pytest.approx(expected), key
    assert both["lattice_type"] == "mixed"
    assert both["n_particles_order"] == w_h + w_s
    assert both["nm_per_px"] is None and both["ecd_nm_mean"] is None
    assert both["notes"] == ["No pixel size for any image: lengths in px only."]


def test_batch_of_different_pixel_sizes_says_so():
    labels = square_disc_labels((64, 64))
    both = summarize_batch({"a": analyze_image(labels, nm_per_px=1.0), "b": analyze_image(labels, nm_per_px=2.0)})
    assert both["nm_per_px"] is None and both["n_images_calibrated"] == 2
    assert both["ecd_nm_mean"] == pytest.approx(1.5 * both["ecd_px_mean"])
    assert any("different pixel sizes" in note for note in both["notes"])
    assert summarize_batch({})["notes"] == ["No images."]


def test_particles_table_puts_image_and_measurements_first():
    a, b = analyze_image(square_disc_labels((64, 64)), nm_per_px=1.0), analyze_image(one_particle_labels())
    table = particles_table({"a": a, "b": b})
    assert list(table.columns[: 1 + len(MEASURE_COLUMNS)]) == ["image", *MEASURE_COLUMNS]
    assert table["image"].tolist() == ["a"] * 16 + ["b"]
    assert table["ecd_nm"].iloc[:16].notna().all() and np.isnan(table["ecd_nm"].iloc[16])
    assert list(particles_table({}).columns) == ["image", *MEASURE_COLUMNS]


# ---------------------------------------------------------------------------- verdict, intervals, notes
def test_summaries_carry_the_order_verdict_and_95_percent_intervals():
    hexa = analyze_image(hex_disc_labels(), nm_per_px=2.0).summary
    square = analyze_image(square_disc_labels()).summary
    assert hexa["order_verdict"] == "ordered hexagonal" and square["order_verdict"] == "ordered square"
    for s in (hexa, square):
        for key in ("n_particles", "ecd_px_mean", "ecd_px_d50"):
            lo, hi = s[f"{key}_ci95"]
            assert lo <= s[key] <= hi, key
    assert hexa["ecd_nm_mean_ci95"] == pytest.approx([2.0 * v for v in hexa["ecd_px_mean_ci95"]])
    assert square["ecd_nm_d50_ci95"] is None
    assert analyze_image(one_particle_labels()).summary["order_verdict"] is None

    batch = summarize_batch({"h": analyze_image(hex_disc_labels()), "s": analyze_image(square_disc_labels())})
    assert batch["order_verdict"] == "ordered hexagonal"  # more particles with a full shell
    assert batch["n_particles_per_image_mean"] == pytest.approx(batch["n_particles"] / 2)
    lo, hi = batch["n_particles_ci95"]
    assert lo <= batch["n_particles"] <= hi
    lo, hi = batch["ecd_px_mean_ci95"]
    assert lo <= batch["ecd_px_mean"] <= hi
    assert batch["ecd_nm_mean_ci95"] is None
    assert json_ready(batch)["ecd_px_d50_ci95"] == list(batch["ecd_px_d50_ci95"])


def test_small_particles_are_flagged_as_unreliable():
    big = analyze_image(square_disc_labels()).summary  # discs of radius 5 px: ECD about 11 px
    small = analyze_image(square_disc_labels(spacing=8, radius=2)).summary  # ECD about 4.5 px
    assert small["ecd_px_d50"] < 8 < big["ecd_px_d50"]
    assert any("sizes are unreliable" in note for note in small["notes"])
    assert not any("unreliable" in note for note in big["notes"])
    batch = summarize_batch({"a": analyze_image(square_disc_labels(spacing=8, radius=2))})
    assert any("sizes are unreliable" in note for note in batch["notes"])
