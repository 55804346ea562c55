import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, ellipse, polygon
from skimage.measure import regionprops

from sagegan.particles import (MEASURE_COLUMNS, NM_COLUMNS, bootstrap_ci, feret_diameters, measure, poisson_ci,
                               size_distribution)


def _rect(shape=(40, 60), rows=(10, 20), cols=(10, 40), value=1):
    lab = np.zeros(shape, dtype=np.int32)
    lab[rows[0]:rows[1], cols[0]:cols[1]] = value
    return lab


def test_rectangle_measurements():
    lab = _rect()  # 10 rows x 30 cols
    df = measure(lab)
    assert list(df.columns) == list(MEASURE_COLUMNS)
    assert len(df) == 1
    r = df.iloc[0]
    assert r["id"] == 1
    assert r["area_px"] == 300
    assert r["ecd_px"] == pytest.approx(np.sqrt(4 * 300 / np.pi))
    assert r["feret_min_px"] == pytest.approx(10.0)
    assert r["feret_max_px"] == pytest.approx(regionprops(lab)[0].feret_diameter_max)
    assert 30 < r["feret_max_px"] < np.hypot(30, 10) + 1e-9
    assert r["aspect_ratio"] == pytest.approx(r["feret_max_px"] / r["feret_min_px"])
    assert r["solidity"] == pytest.approx(1.0)
    # skimage's perimeter of a 10 x 30 rectangle runs through the boundary pixel centres: 2 (29 + 9)
    assert r["circularity"] == pytest.approx(4 * np.pi * 300 / 76**2)
    assert r["orientation_deg"] == pytest.approx(0.0, abs=1e-6)  # long axis along x
    assert r["centroid_x"] == pytest.approx(24.5)
    assert r["centroid_y"] == pytest.approx(14.5)
    assert np.isnan(r["mean_intensity"])
    assert not r["touches_border"]
    assert df["touches_border"].dtype == bool
    assert df["id"].dtype == np.int64


def test_vertical_rectangle_orientation():
    df = measure(_rect(rows=(5, 35), cols=(20, 26)))
    assert abs(df.orientation_deg[0]) == pytest.approx(90.0)


def test_rotated_ellipse_orientation_and_ferets():
    lab = np.zeros((200, 200), dtype=np.int32)
    # semi-axes 10 (rows) x 40 (cols), rotated so that it rises to the right on screen
    rr, cc = ellipse(100, 100, 10, 40, rotation=np.deg2rad(30))
    lab[rr, cc] = 3
    r = measure(lab).iloc[0]
    assert r["id"] == 3
    assert r["orientation_deg"] == pytest.approx(30.0, abs=1.0)
    assert r["feret_max_px"] == pytest.approx(81, abs=2)
    assert r["feret_min_px"] == pytest.approx(21, abs=2)
    assert r["aspect_ratio"] == pytest.approx(4.0, rel=0.1)


def test_disk_is_round():
    lab = np.zeros((100, 100), dtype=np.int32)
    lab[disk((50, 50), 20)] = 1
    r = measure(lab).iloc[0]
    assert r["circularity"] > 0.9
    assert r["aspect_ratio"] == pytest.approx(1.0, abs=0.08)  # digital disks are slightly octagonal
    assert r["ecd_px"] == pytest.approx(40, rel=0.03)


def test_rotated_rectangle_min_feret():
    lab = np.zeros((120, 120), dtype=np.int32)
    t = np.deg2rad(35)
    u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    c = np.array([60.0, 60.0])
    corners = np.array([c + 30 * u + 8 * v, c - 30 * u + 8 * v, c - 30 * u - 8 * v, c + 30 * u - 8 * v])
    lab[polygon(corners[:, 0], corners[:, 1], lab.shape)] = 1
    r = measure(lab).iloc[0]
    # the outline runs along pixel edges, so a tilted edge adds about a pixel
    assert r["feret_min_px"] == pytest.approx(16, abs=2)
    assert r["feret_max_px"] == pytest.approx(np.hypot(60, 16), abs=2)


def test_feret_diameters_points():
    fmax, fmin = feret_diameters([[0, 0], [4, 0], [4, 2], [0, 2], [2, 1]])
    assert fmax == pytest.approx(np.hypot(4, 2))
    assert fmin == pytest.approx(2.0)
    assert feret_diameters([[1, 1]]) == (0.0, 0.0)
    assert feret_diameters([[0, 0], [1, 1], [2, 2]])[1] == 0.0
    with pytest.raises(ValueError, match="shape"):
        feret_diameters([1, 2, 3])


def test_nm_columns_and_intensity():
    lab = _rect()
    img = np.zeros(lab.shape)
    img[lab > 0] = 7.0
    df = measure(lab, image=img, nm_per_px=0.5)
    assert list(df.columns) == list(MEASURE_COLUMNS) + list(NM_COLUMNS)
    r = df.iloc[0]
    assert r["area_nm2"] == pytest.approx(300 * 0.25)
    assert r["ecd_nm"] == pytest.approx(r["ecd_px"] * 0.5)
    assert r["feret_max_nm"] == pytest.approx(r["feret_max_px"] * 0.5)
    assert r["feret_min_nm"] == pytest.approx(5.0)
    assert r["mean_intensity"] == pytest.approx(7.0)


def test_border_and_noncontiguous_ids():
    lab = np.zeros((30, 30), dtype=np.uint16)
    lab[0:5, 10:15] = 4  # touches top
    lab[10:15, 10:15] = 9
    lab[25:30, 25:30] = 2  # touches bottom-right
    df = measure(lab)
    assert df["id"].tolist() == [2, 4, 9]
    assert df["touches_border"].tolist() == [True, True, False]


def test_single_pixel_particle():
    lab = np.zeros((5, 5), dtype=np.int32)
    lab[2, 2] = 1
    r = measure(lab).iloc[0]
    assert r["area_px"] == 1
    assert r["feret_max_px"] == pytest.approx(1.0)
    assert np.isnan(r["circularity"])  # zero perimeter


def test_empty_labels_give_empty_frame():
    df = measure(np.zeros((10, 10), dtype=np.int32))
    assert df.empty and list(df.columns) == list(MEASURE_COLUMNS)
    df = measure(np.zeros((10, 10), dtype=np.int32), nm_per_px=1.0)
    assert df.empty and list(df.columns) == list(MEASURE_COLUMNS) + list(NM_COLUMNS)


def test_bool_mask_is_labelled():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:6, 2:6] = True
    mask[10:15, 10:15] = True
    mask[6, 6] = True  # diagonal contact only: separate under 4-connectivity
    df = measure(mask)
    assert len(df) == 3
    assert sorted(df.area_px.tolist()) == [1, 16, 25]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": np.zeros((5, 5), dtype=float)}, "integer"),
        ({"labels": np.zeros((5, 5, 5), dtype=int)}, "2-D"),
        ({"labels": -np.ones((5, 5), dtype=int)}, "non-negative"),
        ({"labels": np.zeros((5, 5), dtype=int), "image": np.zeros((4, 5))}, "shape"),
        ({"labels": np.zeros((5, 5), dtype=int), "nm_per_px": 0}, "nm_per_px"),
        ({"labels": np.zeros((5, 5), dtype=int), "nm_per_px": -1.0}, "nm_per_px"),
        ({"labels": np.zeros((5, 5), dtype=int), "nm_per_px": "1"}, "nm_per_px"),
    ],
)
def test_measure_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure(**kwargs)


def _frame(values, border=None):
    values = np.asarray(values, dtype=float)
    border = np.zeros(len(values), bool) if border is None else np.asarray(border)
    return pd.DataFrame({"ecd_px": values, "touches_border": border})


def test_size_distribution_basic():
    df = _frame([10, 12, 14, 100], border=[False, False, False, True])
    s = size_distribution(df)
    assert s["n"] == 3 and s["unit"] == "px" and s["column"] == "ecd_px"
    assert s["mean"] == pytest.approx(12.0)
    assert s["sd"] == pytest.approx(2.0)
    assert s["d50"] == pytest.approx(12.0)
    assert s["d10"] == pytest.approx(10.4) and s["d90"] == pytest.approx(13.6)  # linear percentiles
    assert s["histogram_counts"].sum() == 3
    assert len(s["histogram_edges"]) == len(s["histogram_counts"]) + 1
    assert size_distribution(df, exclude_border=False)["n"] == 4


def test_size_distribution_lognormal_fit_and_nm_default():
    rng = np.random.default_rng(0)
    x = rng.lognormal(mean=np.log(8.0), sigma=0.15, size=3000)
    df = _frame(x)
    df["ecd_nm"] = df["ecd_px"] * 0.5
    s = size_distribution(df, bins=20)
    assert s["column"] == "ecd_nm" and s["unit"] == "nm"
    assert s["lognormal_mu"] == pytest.approx(np.log(4.0), abs=0.01)
    assert s["lognormal_sigma"] == pytest.approx(0.15, abs=0.01)
    assert len(s["histogram_counts"]) == 20


def test_size_distribution_small_and_empty():
    s0 = size_distribution(_frame([]))
    assert s0["n"] == 0 and np.isnan(s0["mean"]) and np.isnan(s0["lognormal_mu"])
    assert s0["histogram_counts"].size == 0
    s1 = size_distribution(_frame([5.0]))
    assert s1["n"] == 1 and s1["mean"] == 5.0 and np.isnan(s1["sd"]) and np.isnan(s1["lognormal_sigma"])
    # measure() of an empty image flows through
    assert size_distribution(measure(np.zeros((8, 8), dtype=int)))["n"] == 0


def test_size_distribution_validation():
    with pytest.raises(ValueError, match="column"):
        size_distribution(_frame([1.0]), column="nope")
    with pytest.raises(ValueError, match="touches_border"):
        size_distribution(pd.DataFrame({"ecd_px": [1.0]}))
    with pytest.raises(ValueError, match="DataFrame"):
        size_distribution({"ecd_px": [1.0]})


def test_measure_many_particles():
    lab = np.zeros((512, 512), dtype=np.int32)
    k = 0
    for i in range(20):
        for j in range(20):
            k += 1
            lab[disk((i * 25 + 12, j * 25 + 12), 8)] = k
    df = measure(lab, nm_per_px=1.0)
    assert len(df) == 400
    assert size_distribution(df)["n"] == 400


def test_docstring_examples():
    import doctest

    from sagegan import particles as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- uncertainty
def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_particles():
    rng = np.random.default_rng(7)
    few, many = rng.lognormal(3, 0.2, 40), rng.lognormal(3, 0.2, 4000)
    for stat, fn in (("mean", np.mean), ("median", np.median)):
        lo_few, hi_few = bootstrap_ci(few, stat)
        lo_many, hi_many = bootstrap_ci(many, stat)
        assert lo_few <= fn(few) <= hi_few and lo_many <= fn(many) <= hi_many
        assert hi_many - lo_many < 0.3 * (hi_few - lo_few)
    assert bootstrap_ci(few) == bootstrap_ci(few)  # seeded: reproducible
    assert all(np.isnan(bootstrap_ci([3.0])))


def test_two_stage_bootstrap_widens_with_differences_between_groups():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 1, 200), rng.normal(20, 1, 200)])
    groups = np.repeat([0, 1], 200)
    lo, hi = bootstrap_ci(values, groups=groups)
    lo_p, hi_p = bootstrap_ci(values)
    assert lo <= values.mean() <= hi and hi - lo > 5 * (hi_p - lo_p)


def test_poisson_interval():
    lo, hi = poisson_ci(100)
    assert lo < 100 < hi and hi - lo == pytest.approx(2 * 1.96 * 10, rel=0.05)
    assert poisson_ci(0)[0] == 0.0 and poisson_ci(0)[1] == pytest.approx(3.689, abs=1e-3)


def test_measure_matches_skimage_regionprops():
    # measure computes regionprops' quantities its own, faster way: they must agree particle by
    # particle, on ragged blobs, single pixels, particles in pieces and particles on the border
    rng = np.random.default_rng(3)
    from skimage.measure import label

    lab = label(rng.random((120, 140)) > 0.55, connectivity=1)
    lab[lab == 7] = 5  # particle 5 in two pieces
    img = rng.random(lab.shape)
    df = measure(lab, image=img).set_index("id")
    regions = regionprops(lab, intensity_image=img)
    assert df.index.tolist() == [r.label for r in regions]
    for r in regions:
        row = df.loc[r.label]
        assert row["area_px"] == r.area
        assert row["solidity"] == pytest.approx(r.solidity, rel=1e-12)
        assert row["feret_max_px"] == pytest.approx(r.feret_diameter_max, rel=1e-12)
        perimeter = r.perimeter
        if perimeter > 0:
            assert row["circularity"] == pytest.approx(min(4 * np.pi * r.area / perimeter**2, 1.0), rel=1e-12)
        assert (row["centroid_y"], row["centroid_x"]) == pytest.approx(r.centroid, rel=1e-12)
        assert row["mean_intensity"] == pytest.approx(r.intensity_mean, rel=1e-12)
        a, b, _, c = r.inertia_tensor.flat
        if abs(a - c) > 1e-9 or abs(b) > 1e-9:  # otherwise the angle is a tie that rounding may break
            expected = (np.rad2deg(r.orientation) + 180.0) % 180.0 - 90.0
            assert row["orientation_deg"] == pytest.approx(expected, abs=1e-7)
