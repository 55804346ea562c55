"""Segmentation evaluation: object, pixel and size-distribution metrics.

Pure functions on label images; the ground truth is used exactly as given
(no erosion, no small-object removal, no resizing).

Input convention for every function taking ``pred`` and ``true``:

* integer arrays are label images (0 = background, each positive id one
  object; ids need not be consecutive);
* bool arrays are binary masks, split into objects with
  ``skimage.measure.label(mask, connectivity=1)`` (4-connectivity in 2-D);
* float arrays are rejected (threshold and label them first);
* both must have the same shape (any number of dimensions).

Edge cases (documented once here, applied throughout):

* both images empty: ``precision = recall = f1 = pq = dice = iou = 1`` (a
  perfect answer), ``mean_matched_iou`` and the size scores are NaN,
  ``count_error = 0`` and ``count_rel_error = 0``;
* prediction empty, ground truth not (or the reverse): precision, recall,
  F1 and PQ are 0, Dice and IoU are 0;
* a ratio whose denominator is 0 while the image is not empty (e.g.
  precision with no prediction) is 0;
* ``count_rel_error`` is NaN when the ground truth is empty but the
  prediction is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.optimize import linear_sum_assignment
from scipy.stats import wasserstein_distance

from .data import as_label_image

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Matching",
    "match_instances",
    "object_scores",
    "pixel_scores",
    "size_scores",
    "evaluate_pair",
    "summarize",
]

#: IoU thresholds 0.50, 0.55, ..., 0.95 (COCO-style).
DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


# --------------------------------------------------------------------------- preparation
def _check_pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(true)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} differs from true shape {t.shape}")
    return as_label_image(p, "pred", ndim=None), as_label_image(t, "true", ndim=None)


def _compact(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel to 0..n (flat int64); also return original ids and areas."""
    flat = lab.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= 4 * flat.size + 1024:
        counts = np.bincount(flat, minlength=top + 1)
        ids = np.flatnonzero(counts)
        ids = ids[ids > 0]
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, len(ids) + 1)
        return lut[flat], ids.astype(np.int64), counts[ids].astype(np.int64)
    uniq, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if uniq[0] != 0:  # no background pixel: shift so that 0 stays reserved
        return inv.astype(np.int64) + 1, uniq.astype(np.int64), counts.astype(np.int64)
    return inv.astype(np.int64), uniq[1:].astype(np.int64), counts[1:].astype(np.int64)


@dataclass
class _Prepared:
    """Compact labels and their contingency table, computed once per image pair."""

    pred_ids: np.ndarray  # original ids of pred objects 1..n_pred
    true_ids: np.ndarray
    pred_area: np.ndarray  # pixels per object
    true_area: np.ndarray
    pair_p: np.ndarray  # overlapping pairs (0-based object indices)
    pair_t: np.ndarray
    pair_iou: np.ndarray
    fg_inter: int  # foreground pixel counts
    fg_pred: int
    fg_true: int

    @property
    def n_pred(self) -> int:
        return len(self.pred_ids)

    @property
    def n_true(self) -> int:
        return len(self.true_ids)


def _prepare(pred, true) -> _Prepared:
    p, t = _check_pair(pred, true)
    pc, pred_ids, pred_area = _compact(p)
    tc, true_ids, true_area = _compact(t)
    both = (pc > 0) & (tc > 0)
    key = pc[both] * (len(true_ids) + 1) + tc[both]
    keys, inter = np.unique(key, return_counts=True)
    pp, tt = keys // (len(true_ids) + 1) - 1, keys % (len(true_ids) + 1) - 1
    union = pred_area[pp] + true_area[tt] - inter
    return _Prepared(
        pred_ids=pred_ids, true_ids=true_ids, pred_area=pred_area, true_area=true_area,
        pair_p=pp, pair_t=tt, pair_iou=inter / union,
        fg_inter=int(both.sum()), fg_pred=int(pred_area.sum()), fg_true=int(true_area.sum()),
    )


# --------------------------------------------------------------------------- matching
@dataclass
class Matching:
    """One-to-one matching of predicted to true objects at one IoU threshold.

    ``pred_ids``, ``true_ids`` and ``ious`` describe the matched pairs (true
    positives), in the original label ids.
    """

    tp: int
    fp: int
    fn: int
    n_pred: int
    n_true: int
    iou_threshold: float
    pred_ids: np.ndarray = field(repr=False)
    true_ids: np.ndarray = field(repr=False)
    ious: np.ndarray = field(repr=False)

    @property
    def sum_iou(self) -> float:
        return float(self.ious.sum())

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in
                ("tp", "fp", "fn", "n_pred", "n_true", "iou_threshold", "pred_ids", "true_ids", "ious")}


def _match(prep: _Prepared, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matched (pred index, true index, iou) with IoU >= thr, one-to-one.

    Candidate pairs (IoU >= thr) are split into connected components of the
    bipartite candidate graph; a component that is a single pair is matched
    directly, larger ones (possible only for thr <= 0.5) are solved with the
    Hungarian algorithm, maximising the number of matches first and the IoU
    sum second (the cost used by StarDist and Cellpose).
    """
    cand = prep.pair_iou >= thr
    cp, ct, ci = prep.pair_p[cand], prep.pair_t[cand], prep.pair_iou[cand]
    if cp.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    # conflicts: a pred or true object appearing in more than one candidate pair
    multi_p = np.bincount(cp, minlength=prep.n_pred)[cp] > 1
    multi_t = np.bincount(ct, minlength=prep.n_true)[ct] > 1
    simple = ~(multi_p | multi_t)
    out_p, out_t, out_i = [cp[simple]], [ct[simple]], [ci[simple]]
    if (~simple).any():
        hp, ht, hi = cp[~simple], ct[~simple], ci[~simple]
        # components of the bipartite graph; true nodes are offset by n_pred
        n = prep.n_pred + prep.n_true
        g = sparse.coo_matrix((np.ones(hp.size), (hp, ht + prep.n_pred)), shape=(n, n))
        _, comp = csgraph.connected_components(g, directed=False)
        pair_comp = comp[hp]
        order = np.argsort(pair_comp, kind="stable")
        bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
        for grp in np.split(order, bounds):
            up, ip = np.unique(hp[grp], return_inverse=True)
            ut, it = np.unique(ht[grp], return_inverse=True)
            iou = np.zeros((len(up), len(ut)))
            iou[ip, it] = hi[grp]
            cost = -(iou >= thr).astype(float) - iou / (2.0 * max(len(up), len(ut)))
            r, c = linear_sum_assignment(cost)
            ok = iou[r, c] >= thr
            out_p.append(up[r[ok]])
            out_t.append(ut[c[ok]])
            out_i.append(iou[r[ok], c[ok]])
    return np.concatenate(out_p), np.concatenate(out_t), np.concatenate(out_i)


def _matching(prep: _Prepared, thr: float) -> Matching:
    mp, mt, mi = _match(prep, thr)
    tp = len(mp)
    order = np.argsort(mp, kind="stable")
    return Matching(
        tp=tp, fp=prep.n_pred - tp, fn=prep.n_true - tp, n_pred=prep.n_pred, n_true=prep.n_true,
        iou_threshold=float(thr), pred_ids=prep.pred_ids[mp[order]], true_ids=prep.true_ids[mt[order]],
        ious=mi[order],
    )


def _check_threshold(thr) -> float:
    thr = float(thr)
    if not 0 < thr <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {thr}")
    return thr


def match_instances(pred_labels, true_labels, iou_threshold=0.5) -> Matching:
    """Match predicted to true objects one-to-one by IoU.

    The IoU of every overlapping pair is computed sparsely from a
    contingency table of co-occurring label pairs (never over all pairs);
    pairs with ``IoU >= iou_threshold`` are candidates and a one-to-one
    assignment maximising the number of matches (then the IoU sum) is found
    with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``).

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int or bool
        Label images of equal shape (bool masks are labelled, see module
        docstring).
    iou_threshold : float
        Smallest IoU of a true positive, in (0, 1].

    Returns
    -------
    Matching
        ``tp``, ``fp``, ``fn``, ``n_pred``, ``n_true``, ``iou_threshold`` and
        the matched ``pred_ids``, ``true_ids`` and their ``ious``.

    Example
    -------
    >>> t = np.zeros((6, 6), int); t[1:3, 1:3] = 1; t[4:6, 4:6] = 2
    >>> p = np.zeros_like(t); p[1:3, 1:4] = 7
    >>> m = match_instances(p, t)
    >>> m.tp, m.fp, m.fn, m.true_ids.tolist(), round(float(m.ious[0]), 3)
    (1, 0, 1, [1], 0.667)
    """
    thr = _check_threshold(iou_threshold)
    return _matching(_prepare(pred_labels, true_labels), thr)


# --------------------------------------------------------------------------- scores
def _tag(thr: float) -> str:
    return f"{int(round(thr * 100)):02d}"


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn)
    return precision, recall, f1


def _pq(sum_iou: float, tp: int, fp: int, fn: int) -> float:
    if tp + fp + fn == 0:
        return 1.0
    return sum_iou / (tp + 0.5 * fp + 0.5 * fn)


def _count_scores(n_pred: int, n_true: int) -> dict:
    if n_true:
        rel = (n_pred - n_true) / n_true
    else:
        rel = 0.0 if n_pred == 0 else float("nan")
    return {"n_pred": n_pred, "n_true": n_true, "count_error": n_pred - n_true, "count_rel_error": rel}


def _object_scores(prep: _Prepared, thresholds) -> dict:
    thresholds = [_check_threshold(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds must not be empty")
    out: dict = {}
    f1s = []
    for thr in thresholds:
        m = _matching(prep, thr)
        p, r, f = _prf(m.tp, m.fp, m.fn)
        tag = _tag(thr)
        out.update({f"precision_{tag}": p, f"recall_{tag}": r, f"f1_{tag}": f,
                    f"tp_{tag}": m.tp, f"fp_{tag}": m.fp, f"fn_{tag}": m.fn})
        f1s.append(f)
    out["f1_50_95"] = float(np.mean(f1s))
    m50 = _matching(prep, 0.5)
    out["sum_iou_50"] = m50.sum_iou
    out["mean_matched_iou"] = float(m50.ious.mean()) if m50.tp else float("nan")
    out["pq"] = _pq(m50.sum_iou, m50.tp, m50.fp, m50.fn)
    out.update(_count_scores(prep.n_pred, prep.n_true))
    return out


def object_scores(pred, true, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """Object-level detection scores over a range of IoU thresholds.

    Parameters
    ----------
    pred, true : ndarray of int or bool
        Label images of equal shape.
    thresholds : sequence of float
        IoU thresholds; default 0.50, 0.55, ..., 0.95.

    Returns
    -------
    dict
        For each threshold ``t`` (tag ``XX = round(100 t)``, e.g. ``50``):
        ``precision_XX``, ``recall_XX``, ``f1_XX`` and the raw counts
        ``tp_XX``, ``fp_XX``, ``fn_XX``. Also ``f1_50_95`` (mean F1 over the
        given thresholds), ``mean_matched_iou`` (mean IoU of the matches at
        0.5), ``sum_iou_50``, ``pq`` (panoptic quality at 0.5:
        ``sum IoU / (TP + FP/2 + FN/2)``), ``n_pred``, ``n_true``,
        ``count_error`` (``n_pred - n_true``) and ``count_rel_error``
        (``count_error / n_true``). Edge cases: see the module docstring.

    Example
    -------
    >>> t = np.zeros((6, 6), int); t[1:3, 1:3] = 1; t[4:6, 4:6] = 2
    >>> s = object_scores(t, t)
    >>> s["f1_50"], s["f1_50_95"], s["pq"]
    (1.0, 1.0, 1.0)
    """
    return _object_scores(_prepare(pred, true), thresholds)


def _dice_iou(i: int, p: int, t: int) -> dict:
    dice = 2 * i / (p + t) if p + t else 1.0
    iou = i / (p + t - i) if p + t - i else 1.0
    return {"dice": dice, "iou": iou, "inter": i, "pred_area": p, "true_area": t}


def _pixel_scores(prep: _Prepared) -> dict:
    return _dice_iou(prep.fg_inter, prep.fg_pred, prep.fg_true)


def pixel_scores(pred, true) -> dict:
    """Foreground Dice and IoU (objects merged into one foreground).

    Parameters
    ----------
    pred, true : ndarray of int or bool
        Label images or masks of equal shape; foreground is ``> 0``.

    Returns
    -------
    dict
        ``dice``, ``iou`` (1.0 when both are empty) and the raw pixel counts
        ``inter``, ``pred_area``, ``true_area`` for pooling.

    Example
    -------
    >>> pixel_scores(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))["dice"]
    0.5
    """
    p, t = np.asarray(pred), np.asarray(true)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} differs from true shape {t.shape}")
    pf, tf = as_label_image(p, "pred", ndim=None) > 0, as_label_image(t, "true", ndim=None) > 0
    return _dice_iou(int((pf & tf).sum()), int(pf.sum()), int(tf.sum()))


def _size_scores(prep: _Prepared) -> dict:
    if prep.n_pred == 0 or prep.n_true == 0:
        return {"mean_diameter_rel_error": float("nan"), "ecd_wasserstein_px": float("nan")}
    ecd_p = np.sqrt(4.0 * prep.pred_area / np.pi)
    ecd_t = np.sqrt(4.0 * prep.true_area / np.pi)
    return {
        "mean_diameter_rel_error": float((ecd_p.mean() - ecd_t.mean()) / ecd_t.mean()),
        "ecd_wasserstein_px": float(wasserstein_distance(ecd_p, ecd_t)),
    }


def size_scores(pred, true) -> dict:
    """Compare the size distributions of predicted and true objects.

    Sizes are equivalent circular diameters ``sqrt(4 * area / pi)`` in px
    (area = pixel count, also for N-D images), of all objects including
    those touching the border.

    Parameters
    ----------
    pred, true : ndarray of int or bool
        Label images of equal shape.

    Returns
    -------
    dict
        ``mean_diameter_rel_error``: signed ``(mean_pred - mean_true) /
        mean_true`` of the ECDs; ``ecd_wasserstein_px``: 1-Wasserstein
        distance between the two ECD distributions (px). NaN if either
        image has no object.

    Example
    -------
    >>> t = np.zeros((8, 8), int); t[0:4, 0:4] = 1
    >>> p = np.zeros((8, 8), int); p[0:2, 0:2] = 1
    >>> size_scores(p, t)["mean_diameter_rel_error"]
    -0.5
    """
    return _size_scores(_prepare(pred, true))


def evaluate_pair(pred, true, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """All metrics of one predicted / true image pair, as one flat dict.

    Parameters
    ----------
    pred, true : ndarray of int or bool
        Label images of equal shape.
    thresholds : sequence of float
        IoU thresholds for the object scores.

    Returns
    -------
    dict
        The union of :func:`object_scores`, :func:`pixel_scores` and
        :func:`size_scores`, including the raw counts (``tp_XX``, ``fp_XX``,
        ``fn_XX``, ``sum_iou_50``, ``inter``, ``pred_area``, ``true_area``,
        ``n_pred``, ``n_true``) that :func:`summarize` pools.

    Example
    -------
    >>> t = np.zeros((6, 6), int); t[1:3, 1:3] = 1
    >>> r = evaluate_pair(t, t)
    >>> r["f1_50"], r["dice"], r["tp_50"]
    (1.0, 1.0, 1)
    """
    prep = _prepare(pred, true)
    row = _object_scores(prep, thresholds)
    row.update(_pixel_scores(prep))
    row.update(_size_scores(prep))
    return row


# --------------------------------------------------------------------------- aggregation
_COUNT_PREFIXES = ("tp_", "fp_", "fn_")


def summarize(rows) -> dict:
    """Aggregate per-image results of :func:`evaluate_pair`.

    Parameters
    ----------
    rows : sequence of dict
        One :func:`evaluate_pair` result per image (extra keys, e.g. an image
        name, are ignored unless numeric).

    Returns
    -------
    dict
        ``n_images``; ``mean``: the NaN-ignoring mean over images of every
        numeric key; ``pooled``: scores from counts summed over images -
        ``precision_XX``, ``recall_XX``, ``f1_XX`` (from summed TP/FP/FN) at
        every threshold present, ``f1_50_95`` (mean of the pooled F1s),
        ``pq`` and ``mean_matched_iou`` (summed ``sum_iou_50``), ``dice`` and
        ``iou`` (summed intersections and areas), ``n_pred``, ``n_true``,
        ``count_error``, ``count_rel_error``.

    Example
    -------
    >>> t = np.zeros((6, 6), int); t[1:3, 1:3] = 1
    >>> s = summarize([evaluate_pair(t, t), evaluate_pair(np.zeros_like(t), t)])
    >>> s["mean"]["f1_50"], s["pooled"]["recall_50"]
    (0.5, 0.5)
    """
    rows = list(rows)
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError("rows must be a list of dicts from evaluate_pair")
    out: dict = {"n_images": len(rows), "mean": {}, "pooled": {}}
    if not rows:
        return out
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    for k in keys:
        vals = [r[k] for r in rows]
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in vals):
            arr = np.asarray(vals, dtype=float)
            out["mean"][k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")

    def total(k):
        return sum(r[k] for r in rows)

    pooled = out["pooled"]
    tags = [k[3:] for k in keys if k.startswith("tp_") and f"fp_{k[3:]}" in keys and f"fn_{k[3:]}" in keys]
    f1s = []
    for tag in tags:
        tp, fp, fn = total(f"tp_{tag}"), total(f"fp_{tag}"), total(f"fn_{tag}")
        p, r, f = _prf(tp, fp, fn)
        pooled.update({f"precision_{tag}": p, f"recall_{tag}": r, f"f1_{tag}": f,
                       f"tp_{tag}": tp, f"fp_{tag}": fp, f"fn_{tag}": fn})
        f1s.append(f)
    if f1s:
        pooled["f1_50_95"] = float(np.mean(f1s))
    if {"sum_iou_50", "tp_50", "fp_50", "fn_50"} <= set(keys):
        s, tp, fp, fn = total("sum_iou_50"), total("tp_50"), total("fp_50"), total("fn_50")
        pooled["pq"] = _pq(s, tp, fp, fn)
        pooled["mean_matched_iou"] = s / tp if tp else float("nan")
    if {"inter", "pred_area", "true_area"} <= set(keys):
        d = _dice_iou(int(total("inter")), int(total("pred_area")), int(total("true_area")))
        pooled["dice"], pooled["iou"] = d["dice"], d["iou"]
    if {"n_pred", "n_true"} <= set(keys):
        pooled.update(_count_scores(int(total("n_pred")), int(total("n_true"))))
    return out


# ------------------------------------------------------------------------------ image sets


def frechet_distance(a, b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets, ``(n, d)`` arrays.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (the FID formula on any features);
    ``eps`` is added to the diagonals when the product is singular (fewer samples than feature
    dimensions). Tiny negative values from round-off are returned as 0.

    Example
    -------
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> round(frechet_distance(x, x + [2.0, 0.0, 0.0]), 6)
    4.0
    """
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (n, d) feature arrays with the same d, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(s_a.shape[0]) * eps
        covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    covmean = np.real(covmean)
    fd = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
    return max(fd, 0.0)
