
import numpy as np
import pytest

from sagegan import metrics


def squares(shape=(40, 60)):
    """Ground truth with five 10x10 objects A..E (ids 1..5)."""
    t = np.zeros(shape, dtype=np.int32)
    t[2:12, 2:12] = 1  # A
    t[2:12, 20:30] = 2  # B
    t[2:12, 31:41] = 3  # C (1 px gap to B)
    t[20:30, 2:12] = 4  # D
    t[20:30, 20:30] = 5  # E
    return t


def split_merge_missing():
    """A split 4/6 columns, B+C merged, D missing, E exact."""
    p = np.zeros((40, 60), dtype=np.int32)
    p[2:12, 2:6] = 1  # left 40 px of A: IoU 0.4
    p[2:12, 6:12] = 2  # right 60 px of A: IoU 0.6
    p[2:12, 20:41] = 3  # B + gap + C: IoU 100/210 with each
    p[20:30, 20:30] = 4  # E
    return p


def test_identical_labels_are_perfect():
    t = squares()
    r = metrics.evaluate_pair(t, t)
    for thr in (50, 75, 95):
        assert r[f"f1_{thr}"] == 1.0 and r[f"precision_{thr}"] == 1.0 and r[f"recall_{thr}"] == 1.0
    assert r["f1_50_95"] == 1.0
    assert r["pq"] == 1.0 and r["mean_matched_iou"] == 1.0
    assert r["dice"] == 1.0 and r["iou"] == 1.0
    assert r["n_pred"] == r["n_true"] == 5 and r["count_error"] == 0 and r["count_rel_error"] == 0
    assert r["mean_diameter_rel_error"] == 0 and r["ecd_wasserstein_px"] == 0


def test_split_merge_missing_counts():
    t, p = squares(), split_merge_missing()
    m = metrics.match_instances(p, t)
    assert (m.tp, m.fp, m.fn, m.n_pred, m.n_true) == (2, 2, 3, 4, 5)
    assert sorted(zip(m.pred_ids.tolist(), m.true_ids.tolist())) == [(2, 1), (4, 5)]
    np.testing.assert_allclose(sorted(m.ious), [0.6, 1.0])

    s = metrics.object_scores(p, t)
    assert (s["tp_50"], s["fp_50"], s["fn_50"]) == (2, 2, 3)
    assert s["precision_50"] == pytest.approx(0.5)
    assert s["recall_50"] == pytest.approx(0.4)
    assert s["f1_50"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 3))
    assert (s["tp_75"], s["fp_75"], s["fn_75"]) == (1, 3, 4)  # the 0.6 half no longer counts
    assert s["f1_75"] == pytest.approx(2 / (2 + 3 + 4))
    assert s["mean_matched_iou"] == pytest.approx(0.8)
    assert s["pq"] == pytest.approx(1.6 / (2 + 1 + 1.5))
    assert s["count_error"] == -1 and s["count_rel_error"] == pytest.approx(-0.2)
    f1s = [s[f"f1_{int(round(100 * t))}"] for t in metrics.DEFAULT_THRESHOLDS]
    assert s["f1_50_95"] == pytest.approx(np.mean(f1s))

    px = metrics.pixel_scores(p, t)
    inter, pa, ta = 100 + 200 + 100, 100 + 210 + 100, 500
    assert (px["inter"], px["pred_area"], px["true_area"]) == (inter, pa, ta)
    assert px["dice"] == pytest.approx(2 * inter / (pa + ta))
    assert px["iou"] == pytest.approx(inter / (pa + ta - inter))


def test_permuted_ids_do_not_matter():
    t, p = squares(), split_merge_missing()
    base = metrics.evaluate_pair(p, t)
    rng = np.random.default_rng(0)
    lut_p = np.r_[0, rng.permutation(4) * 1000 + 17]  # large, shuffled, non-consecutive ids
    lut_t = np.r_[0, rng.permutation(5) + 3]
    again = metrics.evaluate_pair(lut_p[p], lut_t[t].astype(np.uint16))
    for k, v in base.items():
        assert again[k] == pytest.approx(v, nan_ok=True), k


def test_iou_at_and_just_below_threshold():
    t = np.zeros((10, 10), dtype=np.int32)
    t[0:10, 0:10] = 1
    p = np.zeros_like(t)
    p[0:10, 0:5] = 1  # IoU exactly 50/100
    assert metrics.match_instances(p, t, 0.5).tp == 1
    p[0, 4] = 0  # IoU 49/100
    m = metrics.match_instances(p, t, 0.5)
    assert (m.tp, m.fp, m.fn) == (0, 1, 1)
    assert metrics.match_instances(p, t, 0.49).tp == 1


def test_hungarian_maximises_matches():
    # strips along x: t1 = [0, 10), t2 = [10, 20); p2 = [0, 3), p1 = [3, 16)
    # IoU(p1, t1) = 7/16 is the largest, but greedy p1-t1 would leave p2 and t2 unmatched;
    # the one-to-one optimum is p1-t2 (6/17) and p2-t1 (3/10)
    t = np.zeros((3, 25), dtype=np.int32)
    t[:, 0:10], t[:, 10:20] = 1, 2
    p = np.zeros_like(t)
    p[:, 0:3], p[:, 3:16] = 2, 1
    m = metrics.match_instances(p, t, iou_threshold=0.25)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert sorted(zip(m.pred_ids.tolist(), m.true_ids.tolist())) == [(1, 2), (2, 1)]
    np.testing.assert_allclose(sorted(m.ious), [0.3, 6 / 17])
    # at 0.5 nothing qualifies
    assert metrics.match_instances(p, t).tp == 0


def test_one_prediction_two_equal_candidates_matches_once():
    # a 2-px prediction covering two 1-px objects: IoU 0.5 with each, only one may match
    t = np.array([[1, 2, 0]], dtype=np.int32)
    p = np.array([[5, 5, 0]], dtype=np.int32)
    m = metrics.match_instances(p, t)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)


def test_empty_cases():
    z = np.zeros((8, 8), dtype=np.int32)
    t = z.copy()
    t[2:5, 2:5] = 1
    both = metrics.evaluate_pair(z, z)
    assert both["f1_50"] == 1.0 and both["precision_50"] == 1.0 and both["recall_50"] == 1.0
    assert both["pq"] == 1.0 and both["dice"] == 1.0 and both["iou"] == 1.0
    assert both["count_error"] == 0 and both["count_rel_error"] == 0
    assert np.isnan(both["mean_matched_iou"]) and np.isnan(both["ecd_wasserstein_px"])

    miss = metrics.evaluate_pair(z, t)
    assert miss["f1_50"] == 0 and miss["precision_50"] == 0 and miss["recall_50"] == 0
    assert miss["pq"] == 0 and miss["dice"] == 0 and miss["fn_50"] == 1
    assert miss["count_rel_error"] == -1
    assert np.isnan(miss["mean_diameter_rel_error"])

    extra = metrics.evaluate_pair(t, z)
    assert extra["f1_50"] == 0 and extra["fp_50"] == 1 and np.isnan(extra["count_rel_error"])


def test_bool_masks_are_labelled():
    t = squares()
    assert metrics.object_scores(t > 0, t)["f1_50"] == 1.0
    # B and C are 1 px apart, so a mask keeps them separate; diagonal contact does not merge
    m = np.zeros((5, 5), dtype=bool)
    m[0, 0] = m[1, 1] = True
    assert metrics.match_instances(m, m).n_true == 2


def test_validation():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        metrics.evaluate_pair(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="integer"):
        metrics.object_scores(np.zeros((4, 4)), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.pixel_scores(-np.ones((4, 4), int), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="iou_threshold"):
        metrics.match_instances(np.zeros((4, 4), int), np.zeros((4, 4), int), 1.5)


def test_size_scores():
    t = np.zeros((20, 20), dtype=np.int32)
    t[0:4, 0:4] = 1
    t[10:14, 10:14] = 2
    p = np.zeros_like(t)
    p[0:2, 0:2] = 1
    p[10:12, 10:12] = 2
    s = metrics.size_scores(p, t)
    d_t, d_p = np.sqrt(4 * 16 / np.pi), np.sqrt(4 * 4 / np.pi)
    assert s["mean_diameter_rel_error"] == pytest.approx((d_p - d_t) / d_t)
    assert s["ecd_wasserstein_px"] == pytest.approx(d_t - d_p)


def test_summarize_mean_and_pooled():
    t, p = squares(), split_merge_missing()
    rows = [metrics.evaluate_pair(t, t), metrics.evaluate_pair(p, t)]
    rows[0]["name"] = "a.tif"
    rows[1]["name"] = "b.tif"
    s = metrics.summarize(rows)
    assert s["n_images"] == 2
    assert s["mean"]["f1_50"] == pytest.approx((1 + 4 / 9) / 2)
    assert "name" not in s["mean"]
    pooled = s["pooled"]
    tp, fp, fn = 5 + 2, 0 + 2, 0 + 3
    assert (pooled["tp_50"], pooled["fp_50"], pooled["fn_50"]) == (tp, fp, fn)
    assert pooled["precision_50"] == pytest.approx(tp / (tp + fp))
    assert pooled["recall_50"] == pytest.approx(tp / (tp + fn))
    assert pooled["f1_50"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert pooled["pq"] == pytest.approx((5 + 1.6) / (tp + fp / 2 + fn / 2))
    inter, pa, ta = 500 + 400, 500 + 410, 1000
    assert pooled["dice"] == pytest.approx(2 * inter / (pa + ta))
    assert pooled["n_pred"] == 9 and pooled["n_true"] == 10
    assert pooled["count_rel_error"] == pytest.approx(-0.1)
    assert metrics.summarize([]) == {"n_images": 0, "mean": {}, "pooled": {}}


def _disk_grid(h=2048, cell=29, radius=11, shift=(0, 0)):
    """About 4900 disks on a grid, ids in row-major order."""
    n = h // cell
    r = np.arange(h)
    cy, cx = r // cell, r // cell
    dy = (r % cell - cell // 2 - shift[0]) ** 2
    dx = (r % cell - cell // 2 - shift[1]) ** 2
    inside = (dy[:, None] + dx[None, :]) <= radius**2
    ids = (cy[:, None] * n + cx[None, :] + 1).astype(np.int32)
    ok = (cy < n)[:, None] & (cx < n)[None, :] & inside
    return np.where(ok, ids, 0)


def test_large_image_with_thousands_of_shuffled_ids():
    t = _disk_grid()
    p = _disk_grid(shift=(1, 2))
    n = int(t.max())
    assert n > 4500
    rng = np.random.default_rng(0)
    lut = np.r_[0, rng.permutation(n) + 1].astype(np.int32)
    p = lut[p]
    r = metrics.evaluate_pair(p, t)
    assert r["n_pred"] == r["n_true"] == n
    assert r["f1_50"] == 1.0 and r["tp_50"] == n
    assert 0.5 < r["mean_matched_iou"] < 1


def test_docstring_examples():
    import doctest

    from sagegan import metrics as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_known_gaussians():
    x = np.random.default_rng(0).normal(size=(300, 3))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # a shift moves only the means: the squared length of the shift
    assert metrics.frechet_distance(x, x + [2.0, 0.0, -1.0]) == pytest.approx(5.0, rel=1e-6)
    # doubling a 1-D feature set: the mean moves by mu, and var + 4 var - 2 * 2 var = var
    a = x[:, :1]
    expected = float(np.mean(a) ** 2 + np.var(a, ddof=1))
    assert metrics.frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-6)
    y = np.random.default_rng(1).normal(size=(300, 3)) * [1.0, 2.0, 0.5] + 1.0
    assert metrics.frechet_distance(x, y) == pytest.approx(metrics.frechet_distance(y, x), rel=1e-6)
    assert metrics.frechet_distance(x, y) > metrics.frechet_distance(x, x + [1.0, 0.0, 0.0])


def test_frechet_distance_with_fewer_samples_than_features():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(6, 8)) + 3.0
    fd = metrics.frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 8 * 3.0 ** 2 * 0.5  # dominated by the shift of the means
    with pytest.raises(ValueError, match="same d"):
        metrics.frechet_distance(a, rng.normal(size=(5, 7)))
