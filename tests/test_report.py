"""sagegan.report: the HTML page, the particle report of `sagegan analyze` and the demo report."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile

from sagegan.analyze import SUMMARY_KEYS
from sagegan.io import InputError, Sample, write_image, write_labels
from sagegan.plot import figure_to_data_uri, image_to_data_uri, new_figure
from sagegan.report import Section, analyze_labels, demo_truth_numbers, format_value, render_html, write_demo_report

OUTPUTS = {"particles.csv", "summary.json", "report.html"}
SQUARE_SIDE = 8
SQUARE_ECD = 2 * math.sqrt(SQUARE_SIDE**2 / math.pi)


def grid_labels(shape=(120, 120), spacing=20):
    """8 x 8 px squares on a square grid, none touching the border (36 in a 120 x 120 image)."""
    labels = np.zeros(shape, np.int32)
    n = 0
    for y in range(6, shape[0] - SQUARE_SIDE, spacing):
        for x in range(6, shape[1] - SQUARE_SIDE, spacing):
            n += 1
            labels[y: y + SQUARE_SIDE, x: x + SQUARE_SIDE] = n
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


# ---------------------------------------------------------------------------- HTML
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
    ], footer="small print")
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2
    assert "T &lt;1&gt;" in page and "a &lt; b" in page and "<p>second paragraph</p>" in page
    assert "<pre>lr: 1e-3 &lt;x&gt;</pre>" in page and "<footer>small print</footer>" in page
    assert "<td>mean</td><td>1.235</td>" in page and "<td>missing</td><td>–</td>" in page
    assert "<th>k</th><th>j</th>" in page and "<td>1</td><td>–</td>" in page  # missing key
    assert '<section id="s2-1">' in page and "<h3>Records</h3>" in page
    assert "careful" in page and '<a href="#s3">' in page
    assert "http" not in page and "<script" not in page and "<link" not in page
    with pytest.raises(ValueError, match="data:image"):
        render_html("x", [Section("bad", figures=[("remote", "http://example.com/a.png")])])
    with pytest.raises(ValueError, match="a table must be"):
        render_html("x", [Section("bad", table=[1, 2])])


def test_short_pages_have_no_table_of_contents():
    assert "<nav>" not in render_html("x", [Section("a"), Section("b")])


@pytest.mark.parametrize("value, text", [
    (None, "–"), (float("nan"), "–"), (float("inf"), "–"), (True, "yes"), (np.bool_(False), "no"),
    (2, "2"), (np.int64(7), "7"), (0.0, "0"), (3.14159, "3.142"), (12345.6, "12346"),
    (0.000123, "1.230e-04"), ([1.0, 2.5], "1, 2.5"), ("hex", "hex"),
])
def test_format_value(value, text):
    assert format_value(value) == text


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
    assert {p.name for p in out.iterdir()} == OUTPUTS  # no temporary files left behind
    assert set(summary["images"]) == {"hex", "single", "empty"}
    assert strict_json(out / "summary.json") == summary
    assert set(summary) == {"batch", "images", "config"}
    assert set(SUMMARY_KEYS) <= set(summary["batch"])
    assert summary["config"]["version"] and len(summary["config"]["inputs"]) == 3

    particles = pd.read_csv(out / "particles.csv")
    assert particles.columns[0] == "image"
    assert particles["image"].value_counts().to_dict() == {"hex": sim.labels.max(), "single": 1}
    assert particles.loc[particles["image"] == "hex", "mean_intensity"].notna().all()

    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 + 5 + 1 + 1  # batch, hex, single, empty
    assert 'src="http' not in page and "<script" not in page
    assert "Only one particle" in page and "No particles" in page
    assert "ψ6" in page  # written as UTF-8


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


def test_report_run_gives_intervals_and_the_order_verdict(report_run):
    _, out, summary = report_run
    hexa, batch = summary["images"]["hex"], summary["batch"]
    assert hexa["order_verdict"] == batch["order_verdict"] == "ordered hexagonal"
    assert summary["images"]["single"]["order_verdict"] is None
    for part in (hexa, batch):
        for key in ("n_particles", "ecd_px_mean", "ecd_px_d50", "ecd_nm_mean", "ecd_nm_d50"):
            lo, hi = part[f"{key}_ci95"]
            assert lo <= part[key] <= hi, key
    page = (out / "report.html").read_text(encoding="utf-8")
    lo, hi = hexa["ecd_nm_mean_ci95"]
    assert f"{format_value(hexa['ecd_nm_mean'])} [{format_value(lo)}, {format_value(hi)}]" in page
    assert "<td>Order verdict</td><td>ordered hexagonal</td>" in page


def test_uncalibrated_run_writes_null_nm_fields(tmp_path):
    write_labels(tmp_path / "lab" / "a_labels.tif", grid_labels())
    summary = analyze_labels(tmp_path / "lab" / "a_labels.tif", tmp_path / "out", max_image_sections=0)
    written = strict_json(tmp_path / "out" / "summary.json")
    nm_keys = [k for k in SUMMARY_KEYS if "_nm" in k]
    for part in (written["batch"], written["images"]["a"]):
        assert len(nm_keys) == 14 and all(part[k] is None for k in nm_keys)
        assert part["n_particles"] == 36 and part["nm_per_px"] is None
        assert part["ecd_px_mean"] == pytest.approx(SQUARE_ECD)
    assert written == summary
    assert "nm" not in pd.read_csv(tmp_path / "out" / "particles.csv").columns.str.cat()
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Image a" not in page and page.count("data:image/png;base64,") == 2  # batch figures only


def test_pixel_size_argument_overrides_files_and_segment_config(tmp_path):
    labels = grid_labels()
    write_labels(tmp_path / "seg" / "a_labels.tif", labels)
    micrograph = tmp_path / "raw" / "a.png"
    write_image(micrograph, (labels > 0).astype(np.float32) * 0.8)
    (tmp_path / "seg" / "segment_config.json").write_text(json.dumps(
        {"crop_bottom": 0, "images": [{"image": str(micrograph), "nm_per_px": 1.25}]}))
    found = analyze_labels([tmp_path / "seg"], tmp_path / "o1", max_image_sections=0)["images"]["a"]
    assert found["nm_per_px"] == 1.25 and found["nm_per_px_source"] == "segment_config.json"
    assert found["micrograph_file"] == str(micrograph)
    assert found["ecd_nm_mean"] == pytest.approx(1.25 * SQUARE_ECD)
    given = analyze_labels([tmp_path / "seg"], tmp_path / "o2", nm_per_px=2.0, max_image_sections=0)
    assert given["images"]["a"]["nm_per_px"] == 2.0 and given["config"]["nm_per_px"] == 2.0
    assert given["images"]["a"]["nm_per_px_source"] == "given by the user"
    assert given["images"]["a"]["ecd_nm_mean"] == pytest.approx(2.0 * SQUARE_ECD)
    with pytest.raises(InputError, match="positive number"):
        analyze_labels([tmp_path / "seg"], tmp_path / "o3", nm_per_px=-1.0)


def test_micrograph_of_another_size_is_a_clear_input_error(tmp_path):
    write_labels(tmp_path / "lab" / "a_labels.tif", one_particle_labels())
    write_image(tmp_path / "img" / "a.png", np.zeros((32, 64), np.float32))
    with pytest.raises(InputError, match="a_labels.tif.*64x64.*64x32"):
        analyze_labels([tmp_path / "lab"], tmp_path / "out", images=tmp_path / "img")
    with pytest.raises(InputError, match="folder"):
        analyze_labels([tmp_path / "lab"], tmp_path / "out", images=tmp_path / "nowhere")


# ---------------------------------------------------------------------------- demo report
def test_demo_truth_numbers_leave_out_border_particles_and_other_images():
    truth = pd.DataFrame({"image": ["a", "a", "a", "b"], "diameter_px": [10.0, 12.0, 4.0, 99.0],
                          "touches_border": [False, False, True, False],
                          "lattice_constant_px": [20.0, 20.0, 20.0, 50.0]})
    held = [Sample("a", np.zeros((2, 2)), np.zeros((2, 2), np.int32))]
    assert demo_truth_numbers(truth, held) == {"ecd_px_mean": 11.0, "lattice_constant_px": 20.0, "n_particles": 3}
    assert demo_truth_numbers(None, held) == {}


def _demo_run_folder(tmp_path, run, steps, best_step):
    log = pd.DataFrame({"step": [5, 10], "loss": [1.0, 0.5], "paired_l1": [0.3, 0.2], "val_f1_50": [0.2, 0.6],
                        "val_dice": [0.3, 0.7]})
    (tmp_path / run).mkdir()
    log.to_csv(tmp_path / run / "train_log.csv", index=False)
    (tmp_path / run / "config.json").write_text(json.dumps(
        {"steps": steps, "best_validation": {"step": best_step, "f1_50": 0.6, "dice": 0.7}}))


def test_demo_report_shows_every_stage_that_left_files(tmp_path):
    from sagegan.demo import JOINT, KEPT_PHASE1, QUICK

    _demo_run_folder(tmp_path, "phase1", QUICK.seg_steps, 10)
    _demo_run_folder(tmp_path, "gan", QUICK.gan_steps - 2, 0)  # stopped by the time cap
    write_image(tmp_path / "gan" / "samples" / "step_000010.png", np.zeros((8, 24), np.float32))
    write_image(tmp_path / "synthetic" / "images" / "s0.png", np.ones((16, 16), np.float32))
    write_labels(tmp_path / "synthetic" / "masks" / "s0.tif", one_particle_labels()[16:32, 20:36])
    truth = grid_labels()
    held = [Sample("h", truth * 1.0, truth)]
    seg_dir, general_dir = tmp_path / "segmented" / "phase1", tmp_path / "segmented" / "general"
    pred = truth.copy()
    pred[pred == 1] = 0                 # one missed
    pred[100:110, 2:5] = 99             # one false detection
    write_labels(seg_dir / "h_labels.tif", pred)
    write_labels(general_dir / "h_labels.tif", truth)
    write_image(seg_dir / "h_attention.png", np.zeros((8, 8), np.float32))
    metrics = {"mean_f1_50": 0.61, "mean_precision_50": 0.7, "mean_recall_50": 0.5, "mean_dice": 0.8, "mean_pq": 0.5}
    scores = {"phase 1 only": {**metrics, "dir": seg_dir, "labels": [seg_dir / "h_labels.tif"]},
              JOINT: {"note": KEPT_PHASE1},
              "general": {**metrics, "mean_f1_50": 1.0, "dir": general_dir, "labels": [general_dir / "h_labels.tif"],
                          "reference": True}}
    analysis = {"batch": {"n_particles": 40, "ecd_px_mean": 17.5, "psi6_global": 0.9}}

    path = write_demo_report(tmp_path, scores, analysis, None, held, {"phase1": 12.34}, QUICK, "phase 1 only",
                             bundled="the bundled model, version 9")
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    # 2 phase 1 curves; 1 sample grid + 2 GAN curves; 1 synthetic grid; 1 matched overlay + 1 attention
    # map; 1 matched overlay of the bundled model
    assert page.count("data:image/png;base64,") == 9
    for title in ("1. Phase 1", "2. Phase 2", "3. Synthetic pairs", "4. Held-out images", "5. Bundled general model",
                  "6. Particle sizes", "7. Run"):
        assert f">{title}" in page, title
    assert "<td>phase 1 only</td><td>0.61</td>" in page and "<td>phase1 (s)</td><td>12.3</td>" in page
    # the joint row says why it has no numbers of its own
    assert f"<td>{JOINT}</td><td>–</td><td>–</td><td>–</td><td>–</td><td>–</td><td>{KEPT_PHASE1}</td>" in page.replace(
        "&#x27;", "'")
    assert "phase 1 only, h: 35 found (blue-green), 1 missed (orange), 1 false detections (magenta)" in page
    assert "general, h: 36 found" in page and "the bundled model, version 9" in page
    assert "Trained 40 steps; kept the checkpoint of step 10" in page and "sample grid at step 10" in page
    assert "kept the checkpoint of step 0 (validation F1@0.5 0.6, Dice 0.7), the segmenter it started from" in page
    assert f"after {QUICK.gan_steps - 2} of {QUICK.gan_steps} steps" in page  # the cap's note
    assert "<td>ecd_px_mean</td><td>17.5</td><td>–</td>" in page  # no truth for a user's data


def test_demo_report_without_a_bundled_model_says_so_in_one_line(tmp_path):
    from sagegan.demo import QUICK

    analysis = {"batch": {"n_particles": 0}}
    seg_dir = tmp_path / "segmented" / "phase1"
    seg_dir.mkdir(parents=True)
    page = write_demo_report(tmp_path, {"phase 1 only": {"mean_f1_50": 0.5, "dir": seg_dir}}, analysis, None, [], {},
                             QUICK, "phase 1 only", bundled="This install ships no bundled general model yet.").read_text()
    assert "<p>This install ships no bundled general model yet.</p>" in page
    assert "No sample grid" not in page  # no phase 2 folder at all: nothing to remark on


def test_match_overlay_colours_found_missed_and_false_particles():
    from sagegan.metrics import match_instances
    from sagegan.plot import MATCH_COLOURS, match_overlay

    truth = grid_labels()
    pred = truth.copy()
    pred[truth == 1] = 0
    pred[100:110, 2:5] = 99
    m = match_instances(pred, truth, 0.5)
    rgb = match_overlay(truth * 1.0, pred, truth, m.pred_ids, m.true_ids)
    zoom = 512 // 120 + 1  # the smallest integer factor that reaches 512 px
    assert rgb.shape == (120 * zoom, 120 * zoom, 3) and rgb.dtype == np.uint8

    def colour_at(y, x):
        return tuple(int(v) for v in rgb[y * zoom, x * zoom])

    assert colour_at(6, 10) == MATCH_COLOURS["missed"]     # top edge of true particle 1
    assert colour_at(26, 10) == MATCH_COLOURS["matched"]   # top edge of particle 4 (next row)
    assert colour_at(100, 3) == MATCH_COLOURS["false"]
    assert len({MATCH_COLOURS[k] for k in ("matched", "missed", "false")}) == 3
    with pytest.raises(ValueError, match="shape"):
        match_overlay(None, pred, truth[:60], [], [])
