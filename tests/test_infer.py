"""Inference: tiled prediction, flip TTA, instances from maps, the zoom search, files in and out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sagegan.data import class_map, normalised_distance
from sagegan.infer import (default_min_area, encoder_features, instances_from_maps, predict_maps, search_zoom,
                           segment_files, segment_image)
from sagegan.io import InputError, read_mask, write_image
from sagegan.runs import load_segmenter
from sagegan.simulate import simulate_micrograph


def _two_touching_discs(size=64, r=10):
    yy, xx = np.indices((size, size))
    labels = np.zeros((size, size), np.int32)
    labels[(yy - 32) ** 2 + (xx - 22) ** 2 <= r * r] = 1
    labels[((yy - 32) ** 2 + (xx - 42) ** 2 <= r * r) & (labels == 0)] = 2
    return labels


def _perfect_maps(labels):
    classes = class_map(labels)
    return np.stack([classes == 0, classes == 1, classes == 2]).astype(np.float32), normalised_distance(labels)


# ------------------------------------------------------------------------------ maps -> instances


def test_touching_discs_split_by_distance_watershed():
    labels = _two_touching_discs()
    pred = instances_from_maps(*_perfect_maps(labels))
    assert pred.max() == 2
    for k in (1, 2):  # each true disc is one predicted instance
        ids = np.unique(pred[labels == k])
        assert len(ids[ids > 0]) == 1


def test_instances_keep_seedless_pieces_and_drop_specks():
    labels = _two_touching_discs()
    labels[2:5, 2:5] = 3     # a 9 px speck
    labels[50:60, 2:12] = 4  # a particle whose distance map holds no seed
    probs, distance = _perfect_maps(labels)
    distance[labels == 4] = 0.1
    pred = instances_from_maps(probs, distance)
    assert pred.max() == 4 and pred.dtype == np.int32
    assert len(np.unique(pred[labels == 4])) == 1 and pred[55, 7] > 0  # an orphan is a particle of its own
    pred = instances_from_maps(probs, distance, min_area_px=10)
    assert pred.max() == 3 and (pred[labels == 3] == 0).all()
    assert sorted(np.unique(pred)) == [0, 1, 2, 3]  # ids stay consecutive


def test_default_min_area():
    assert default_min_area(None, 1.0) == 4
    # 5 % of a 24 px particle's area at zoom 1, in input px; a zoom of 2 means a quarter of that
    assert default_min_area(24.0, 1.0) == int(0.05 * math.pi * 144)
    assert default_min_area(24.0, 2.0) == int(0.05 * math.pi * 144 / 4)
    assert default_min_area(24.0, 1.0, fraction=0.5) == int(0.5 * math.pi * 144)
    assert default_min_area(2.0, 4.0) == 2


# ------------------------------------------------------------------------------ prediction


def test_flip_tta_is_the_mean_of_the_four_flipped_passes(seg_run):
    seg = load_segmenter(seg_run[0])
    image = seg_run[1][0].image[:72, :60]  # no symmetry to hide a missing flip
    tta = predict_maps(seg, image, 1.0, tta=True)
    by_hand = []
    for axes in [(), (0,), (1,), (0, 1)]:
        maps = predict_maps(seg, np.ascontiguousarray(np.flip(image, axes)), 1.0)
        by_hand.append((np.flip(maps["probs"], tuple(a + 1 for a in axes)), np.flip(maps["distance"], axes)))
    np.testing.assert_allclose(tta["probs"], np.mean([p for p, _ in by_hand], axis=0), atol=1e-5)
    np.testing.assert_allclose(tta["distance"], np.mean([d for _, d in by_hand], axis=0), atol=1e-5)
    single = predict_maps(seg, image, 1.0)
    assert np.abs(tta["probs"] - single["probs"]).max() > 1e-4  # the flips do change the answer


def test_tiles_blend_into_the_whole_image_prediction(seg_run):
    seg = load_segmenter(seg_run[0])
    image = seg_run[1][0].image
    whole = predict_maps(seg, image, 1.0)
    tiled = predict_maps(seg, image, 1.0, tile=48, min_overlap=16)
    assert tiled["probs"].shape == whole["probs"].shape == (3, 96, 96)
    np.testing.assert_allclose(tiled["probs"].sum(0), 1.0, atol=1e-5)  # blending keeps probabilities
    # away from the tile borders the tiles see what the whole image sees
    agree = (tiled["probs"].argmax(0) == whole["probs"].argmax(0)).mean()
    assert agree > 0.95


def test_tiny_model_segments_its_training_images(seg_run):
    seg = load_segmenter(seg_run[0])
    dices = []
    for s in seg_run[1]:
        pred = segment_image(seg, s.image, scale=1.0).labels > 0
        true = s.labels > 0
        dices.append(2 * (pred & true).sum() / (pred.sum() + true.sum()))
    assert np.mean(dices) > 0.9, dices


@pytest.mark.parametrize("diameter", [28.0, 42.0])
def test_scale_auto_finds_the_particle_size(seg_run, diameter):
    """A model trained on 14 px particles finds the zoom for 2x and 3x larger ones by itself."""
    seg = load_segmenter(seg_run[0])
    sim = simulate_micrograph(256, layout="hex", modality="sem", seed=11, mean_diameter_px=diameter)
    zoom, estimate, tries = search_zoom(seg, sim.image)
    assert abs(np.log(zoom * diameter / 14.0)) < np.log(1.25), (zoom, tries)
    assert abs(np.log(estimate / diameter)) < np.log(1.25)
    result = segment_image(seg, sim.image, scale="auto")
    assert result.scale == pytest.approx(zoom) and result.passes[-1] == pytest.approx(zoom)


@pytest.mark.parametrize("shape", [(389, 517), (40, 50), (16, 16)])
def test_outputs_keep_input_shape(seg_run, shape):
    seg = load_segmenter(seg_run[0])
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    result = segment_image(seg, image, scale="auto", with_gates=True)
    assert result.labels.shape == shape and result.probs.shape[1:] == shape
    assert result.gate is not None and result.gate.shape == shape


def test_bad_scale_is_refused(seg_run):
    seg = load_segmenter(seg_run[0])
    with pytest.raises(ValueError, match="positive number"):
        segment_image(seg, seg_run[1][0].image, scale=-1.0)


def test_encoder_features_keep_the_input_order_across_sizes(seg_run):
    """The Fréchet distance's features: one row per image, whatever the mix of sizes and batches."""
    seg = load_segmenter(seg_run[0])
    rng = np.random.default_rng(0)
    images = [rng.random(shape).astype(np.float32) for shape in ((32, 32), (48, 40), (32, 32), (48, 40), (32, 32))]
    feats = encoder_features(seg, images, batch=2)
    assert feats.shape == (5, sum(seg.net.widths)) and feats.dtype == np.float64
    for i, image in enumerate(images):
        np.testing.assert_allclose(feats[i], encoder_features(seg, [image])[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats[0], feats[2])  # different images, different rows


# ------------------------------------------------------------------------------ files


def test_segment_files_writes_outputs(seg_run, tmp_path):
    out, samples = seg_run
    write_image(tmp_path / "in" / "a.png", samples[0].image[:90, :77])
    write_image(tmp_path / "in" / "b.png", samples[1].image)
    (tmp_path / "split.txt").write_text("a\n")
    table = segment_files([tmp_path / "in"], out, tmp_path / "pred", nm_per_px=2.0, scale=1.0,
                          save_attention=True, split=tmp_path / "split.txt", progress=False)
    for suffix in ("_labels.tif", "_mask.png", "_overlay.png", "_attention.png"):
        assert (tmp_path / "pred" / f"a{suffix}").exists()
    assert not (tmp_path / "pred" / "b_labels.tif").exists()  # not in the split
    labels = read_mask(tmp_path / "pred" / "a_labels.tif")
    assert labels.shape == (90, 77)
    cols = {"image", "id", "area_px", "centroid_x", "centroid_y", "ecd_px", "ecd_nm"}
    assert cols <= set(table.columns) and len(table) == labels.max()
    assert table["ecd_nm"].tolist() == pytest.approx((table["ecd_px"] * 2.0).tolist())
    with pytest.raises(InputError, match="none of the inputs"):
        segment_files([tmp_path / "in"], out, tmp_path / "x", split=["zzz"], progress=False)


@pytest.mark.parametrize("shape", [(64, 64), (40, 130), (130, 21)])
def test_gaussian_trend_is_ndimage_gaussian_filter(shape):
    from scipy import ndimage as ndi

    from sagegan.infer import gaussian_trend

    image = np.random.default_rng(0).random(shape).astype(np.float32)
    sigma = max(shape) / 8
    np.testing.assert_allclose(gaussian_trend(image, sigma), ndi.gaussian_filter(image, sigma), atol=1e-6)


def test_save_rois_fill_exactly_each_particle_by_imagej_rule(seg_run, tmp_path):
    """ImageJ fills a polygon ROI with the pixels whose centres lie inside it (even-odd rule,
    ij.process.PolygonFiller); each ROI must cover its particle's pixels, no more, no fewer."""
    from matplotlib.path import Path as Polygon
    from roifile import ROI_TYPE, roiread
    from scipy import ndimage as ndi

    out, samples = seg_run
    write_image(tmp_path / "in" / "a.png", samples[0].image)
    table = segment_files([tmp_path / "in"], out, tmp_path / "pred", progress=False, save_rois=True)
    labels = read_mask(tmp_path / "pred" / "a_labels.tif")
    rois = roiread(tmp_path / "pred" / "a_rois.zip")
    assert len(rois) == len(table) == labels.max() > 0
    assert [r.name for r in rois] == [str(i) for i in table["id"]]
    yy, xx = np.mgrid[0:labels.shape[0], 0:labels.shape[1]]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    for roi in rois:
        assert roi.roitype == ROI_TYPE.POLYGON
        filled = Polygon(roi.coordinates()).contains_points(centres).reshape(labels.shape)
        # holes are filled: background pixels that no 8-connected path joins to the outside
        particle = ndi.binary_fill_holes(labels == int(roi.name), structure=np.ones((3, 3)))
        np.testing.assert_array_equal(filled, particle, err_msg=f"ROI {roi.name}")


def test_pixel_outlines_of_awkward_shapes():
    from matplotlib.path import Path as Polygon

    from sagegan.particles import pixel_outlines

    labels = np.zeros((12, 12), int)
    labels[0:3, 0:2] = 1                        # on the border
    labels[5:9, 5] = 2
    labels[8, 5:9] = 2                          # an L
    labels[2, 8] = 3                            # one pixel
    outlines = pixel_outlines(labels)
    np.testing.assert_array_equal(outlines[3], [[8, 3], [8, 2], [9, 2], [9, 3]])
    yy, xx = np.mgrid[0:12, 0:12]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    for i, points in outlines.items():
        assert Polygon(points).contains_points(centres).reshape(labels.shape).tolist() == (labels == i).tolist()


def test_save_geojson_holds_the_outlines_and_measurements(seg_run, tmp_path):
    import json

    from roifile import roiread

    out, samples = seg_run
    write_image(tmp_path / "in" / "a.png", samples[1].image)
    table = segment_files([tmp_path / "in"], out, tmp_path / "pred", progress=False, save_rois=True,
                          save_geojson=True, nm_per_px=2.0)
    data = json.loads((tmp_path / "pred" / "a_particles.geojson").read_text())
    features = data["features"]
    assert data["type"] == "FeatureCollection" and len(features) == len(table) > 0
    rois = {r.name: r.coordinates().tolist() for r in roiread(tmp_path / "pred" / "a_rois.zip")}
    for feature, (_, row) in zip(features, table.iterrows()):
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and ring[:-1] == rois[feature["properties"]["name"]]
        assert feature["properties"]["name"] == str(row["id"])
        measured = feature["properties"]["measurements"]
        assert measured["area_px"] == row["area_px"] and measured["ecd_nm"] == pytest.approx(row["ecd_nm"])
        assert measured["score"] == pytest.approx(row["score"])
    manifest = json.loads((tmp_path / "pred" / "segment_manifest.json").read_text())
    assert "a_particles.geojson" in manifest["images"]["a"]["outputs"]


def test_ome_labels_carry_the_pixel_size(seg_run, tmp_path):
    import tifffile

    from sagegan.io import read_pixel_size

    out, samples = seg_run
    write_image(tmp_path / "in" / "a.png", samples[0].image)
    segment_files([tmp_path / "in"], out, tmp_path / "plain", progress=False, nm_per_px=2.5)
    segment_files([tmp_path / "in"], out, tmp_path / "ome", progress=False, nm_per_px=2.5, ome=True)
    path = tmp_path / "ome" / "a_labels.tif"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        xml = tif.ome_metadata
    assert 'PhysicalSizeX="2.5"' in xml and 'PhysicalSizeXUnit="nm"' in xml and 'PhysicalSizeY="2.5"' in xml
    assert read_pixel_size(path) == pytest.approx(2.5)
    np.testing.assert_array_equal(read_mask(path), read_mask(tmp_path / "plain" / "a_labels.tif"))
