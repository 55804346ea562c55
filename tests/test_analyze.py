import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile

from sagegan.analyze import SUMMARY_KEYS, analyze_image, analyze_labels, json_ready, summarize_batch
from sagegan.io import InputError, write_image, write_labels
from sagegan.report import (Section, figure_to_data_uri, format_value, image_to_data_uri, new_figure,
                            render_html)

SPACING = 20.0
RADIUS = 7.0


def hex_disc_labels(shape=(300, 300), spacing=SPACING, radius=RADIUS):
    """Discs on a hexagonal lattice, clipped by the image; one label per disc."""
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


def one_particle_labels():
    labels = np.zeros((64, 64), np.int32)
    labels[20:30, 24:34] = 1
    return labels


def strict_json(path):
    """Parse JSON refusing NaN / Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------- analyze_image
def test_hex_lattice_of_discs_is_ordered_with_the_drawn_spacing():
    result = analyze_image(hex_disc_labels())
    s = result.summary
    assert list(s) == list(SUMMARY_KEYS)
    assert s["psi6_global"] > 0.9 and s["psi6_local_mean"] > 0.9
    assert s["psi4_global"] < 0.5
    assert s["lattice_type"] == "hex"
    assert s["nn_distance_px_mean"] == pytest.approx(SPACING, abs=0.3)
    assert s["lattice_constant_px"] == pytest.approx(SPACING, abs=0.3)
    assert s["lattice_constant_fft_px"] == pytest.approx(SPACING, abs=0.5)
    assert s["coordination_mean"] == pytest.approx(6.0, abs=0.05)
    assert s["ecd_px_mean"] == pytest.approx(2 * RADIUS, rel=0.05)
    assert s["n_particles_sized"] == int((~result.particles["touches_border"]).sum()) < s["n_particles"]
    assert s["size_stats_exclude_border"] is True
    assert s["ecd_px_d10"] <= s["ecd_px_d50"] <= s["ecd_px_d90"]
    assert s["ecd_px_lognormal_median"] == pytest.approx(s["ecd_px_d50"], rel=0.05)
    assert s["ecd_nm_mean"] is None and s["lattice_constant_nm"] is None and s["nm_per_px"] is None
    assert any("Pixel size unknown" in note for note in s["notes"])
    # per-particle order columns: interior particles are 6-fold with |psi6| = 1
    p = result.particles
    interior = ~p["order_edge"]
    assert interior.sum() == s["n_particles_order"] > 50
    assert np.allclose(p.loc[interior, "psi6_abs"], 1.0, atol=0.05)
    assert p.loc[~interior, "psi6_abs"].isna().all()
    r, g = result.pair_correlation
    assert r.shape == g.shape and r.size > 10


def test_calibrated_lengths_are_px_lengths_times_pixel_size():
    labels = hex_disc_labels((160, 200))
    px = analyze_image(labels).summary
    nm = analyze_image(labels, nm_per_px=0.37).summary
    pairs = [k for k in SUMMARY_KEYS if "_px" in k and k.replace("_px", "_nm") in SUMMARY_KEYS
             and k != "ecd_px_lognormal_mu" and k != "ecd_px_lognormal_sigma"]
    assert len(pairs) >= 10
    for key in pairs:
        assert nm[key] == px[key], key  # px values do not depend on the calibration
        assert nm[key.replace("_px", "_nm")] == pytest.approx(px[key] * 0.37, rel=1e-12), key
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


def test_json_ready_writes_nan_as_null():
    data = json_ready({"x": np.float64("nan"), "y": [np.int32(3), np.inf], "z": np.array([1.5])})
    assert json.loads(json.dumps(data, allow_nan=False)) == {"x": None, "y": [3, None], "z": [1.5]}


# ---------------------------------------------------------------------------- report helpers
def test_render_html_is_self_contained_and_escapes_text():
    fig = new_figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    page = render_html("T <1>", [
        Section("Numbers", text="a < b\n\nsecond paragraph", notes=["careful"],
                table={"mean": 1.23456, "missing": float("nan"), "none": None}),
        Section("Rows", table=pd.DataFrame({"image": ["a"], "n": [3]}), preformatted="lr: 1e-3 <x>",
                subsections=[Section("Records", table=[{"k": 1}, {"k": 2, "j": "x"}])]),
        Section("Figures", figures=[("plot", figure_to_data_uri(fig)),
                                    ("image", image_to_data_uri(np.zeros((8, 8, 3), np.uint8)))]),
    ])
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2
    assert "T &lt;1&gt;" in page and "a &lt; b" in page and "<p>second paragraph</p>" in page
    assert "<pre>lr: 1e-3 &lt;x&gt;</pre>" in page
    assert "1.235" in page and "careful" in page and '<a href="#s3">' in page
    assert "http" not in page and "<script" not in page and "<link" not in page
    with pytest.raises(ValueError, match="data:image"):
        render_html("x", [Section("bad", figures=[("remote", "http://example.com/a.png")])])
    assert format_value(float("nan")) == "–" and format_value(2) == "2" and format_value(False) == "no"


# ---------------------------------------------------------------------------- analyze_labels
@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """One full run: a simulated hex micrograph (with its image), one particle, no particle."""
    from sagegan.simulate import simulate_micrograph

    root = tmp_path_factory.mktemp("analyze")
    sim = simulate_micrograph(256, layout="hex", seed=1)
    labels_dir, images_dir = root / "seg", root / "images"
    write_labels(labels_dir / "hex_labels.tif", sim.labels)
    write_image(labels_dir / "hex_overlay.png", sim.image)  # segment writes these: not labels
    write_labels(labels_dir / "single_labels.tif", one_particle_labels())
    write_labels(labels_dir / "empty_labels.tif", np.zeros((64, 64), np.int32))
    images_dir.mkdir()
    tifffile.imwrite(images_dir / "hex.tif", (sim.image * 65535).astype(np.uint16), imagej=True,
                     resolution=(1 / 0.8, 1 / 0.8), metadata={"unit": "nm"})
    out = root / "out"
    summary = analyze_labels([labels_dir], out, images=images_dir)
    return sim, out, summary


def test_report_run_writes_csv_json_and_self_contained_html(report_run):
    sim, out, summary = report_run
    assert set(summary["images"]) == {"hex", "single", "empty"}
    assert strict_json(out / "summary.json") == summary
    assert set(summary) == {"batch", "images", "config"}
    assert set(SUMMARY_KEYS) <= set(summary["batch"])
    assert summary["config"]["version"] and len(summary["config"]["inputs"]) == 3

    particles = pd.read_csv(out / "particles.csv")
    assert particles.columns[0] == "image"
    assert particles["image"].value_counts().to_dict() == {"hex": sim.labels.max(), "single": 1}
    assert particles.loc[particles["image"] == "hex", "mean_intensity"].notna().all()

    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 + 5 + 1 + 1  # batch, hex, single, empty
    assert 'src="http' not in page and "<script" not in page
    assert "Only one particle" in page and "No particles" in page
    assert not (out / "report.html.part").exists()


def test_report_run_uses_the_micrograph_pixel_size_and_keeps_uncalibrated_nm_null(report_run):
    sim, out, summary = report_run
    hex_summary = summary["images"]["hex"]
    assert hex_summary["nm_per_px"] == pytest.approx(0.8)
    assert hex_summary["nm_per_px_source"] == "ImageJ resolution"
    assert hex_summary["micrograph_file"].endswith("hex.tif")
    assert hex_summary["ecd_nm_mean"] == pytest.approx(hex_summary["ecd_px_mean"] * 0.8)
    assert hex_summary["psi6_local_mean"] > 0.7
    nominal = sim.truth["lattice_constant_px"].iloc[0]
    assert hex_summary["lattice_constant_px"] == pytest.approx(nominal, rel=0.05)
    single = summary["images"]["single"]
    assert single["micrograph_file"] is None and single["nm_per_px"] is None
    assert single["ecd_nm_mean"] is None and single["psi6_global"] is None  # NaN -> null
    assert summary["images"]["empty"]["n_particles"] == 0
    assert summary["batch"]["n_images_calibrated"] == 1


def test_uncalibrated_run_writes_null_nm_fields(tmp_path):
    write_labels(tmp_path / "lab" / "a_labels.tif", hex_disc_labels((120, 120)))
    summary = analyze_labels(tmp_path / "lab" / "a_labels.tif", tmp_path / "out", max_image_sections=0)
    written = strict_json(tmp_path / "out" / "summary.json")
    for part in (written["batch"], written["images"]["a"]):
        nm_keys = [k for k in SUMMARY_KEYS if "_nm" in k]
        assert nm_keys and all(part[k] is None for k in nm_keys)
        assert part["ecd_px_mean"] > 0 and part["nm_per_px"] is None
    assert written == summary
    assert "nm" not in pd.read_csv(tmp_path / "out" / "particles.csv").columns.str.cat()


def test_pixel_size_argument_overrides_files_and_segment_config(tmp_path):
    labels = hex_disc_labels((120, 120))
    write_labels(tmp_path / "seg" / "a_labels.tif", labels)
    micrograph = tmp_path / "raw" / "a.png"
    write_image(micrograph, (labels > 0).astype(np.float32) * 0.8)
    (tmp_path / "seg" / "segment_config.json").write_text(json.dumps(
        {"crop_bottom": 0, "images": [{"image": str(micrograph), "nm_per_px": 1.25}]}))
    found = analyze_labels([tmp_path / "seg"], tmp_path / "o1", max_image_sections=0)["images"]["a"]
    assert found["nm_per_px"] == 1.25 and found["nm_per_px_source"] == "segment_config.json"
    assert found["micrograph_file"] == str(micrograph)
    given = analyze_labels([tmp_path / "seg"], tmp_path / "o2", nm_per_px=2.0, max_image_sections=0)
    assert given["images"]["a"]["nm_per_px"] == 2.0 and given["config"]["nm_per_px"] == 2.0
    assert given["images"]["a"]["ecd_nm_mean"] == pytest.approx(2.0 * found["ecd_px_mean"])


def test_micrograph_of_another_size_is_a_clear_input_error(tmp_path):
    write_labels(tmp_path / "lab" / "a_labels.tif", one_particle_labels())
    write_image(tmp_path / "img" / "a.png", np.zeros((32, 64), np.float32))
    with pytest.raises(InputError, match="a_labels.tif.*64x64.*64x32"):
        analyze_labels([tmp_path / "lab"], tmp_path / "out", images=tmp_path / "img")
    with pytest.raises(InputError, match="folder"):
        analyze_labels([tmp_path / "lab"], tmp_path / "out", images=tmp_path / "nowhere")
