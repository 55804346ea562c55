"""Tiled prediction on images of any size -> probability and distance maps -> particle instances.

The pipeline for one micrograph:

1. percentile normalisation (as in training);
2. zoom so the particles match the model's canonical diameter (``scale="auto"`` lets the model
   itself find the zoom at which the particles look as they did in training);
3. sliding-window prediction with overlapping tiles and Gaussian blending (MONAI), optional
   flip test-time augmentation;
4. maps zoomed back to the input's size, then a seeded watershed on the predicted normalised
   distance splits touching particles; a minimum area removes specks (predictions only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_module_weights, read_json
from .data import normalise_percentile
from .io import InputError
from .losses import N_CLASSES
from .nets.attention_unet import AttentionUNet

MODEL_FILE = "segmenter.safetensors"
# Predicted instances smaller than this share of a canonical particle's area are specks (models
# whose config.json has no tuned ``postprocess.min_area_fraction``).
MIN_AREA_FRACTION = 0.05


@dataclass
class Segmenter:
    """A trained segmenter and the settings it was trained with."""

    net: AttentionUNet
    config: dict[str, Any]
    path: Path | None = None

    @property
    def fast_net(self) -> AttentionUNet:
        """The network prepared for inference (rebuilt when the weights have changed)."""
        version = sum(int(p._version) for p in self.net.parameters())
        if getattr(self, "_fast", None) is None or self._fast_version != (id(self.net), version, self.net.training):
            self._fast = inference_copy(self.net)
            self._fast_version = (id(self.net), version, self.net.training)
        return self._fast

    @property
    def canonical_diameter_px(self) -> float | None:
        return self.config.get("canonical_diameter_px")

    @property
    def postprocess(self) -> dict[str, float]:
        return {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area_fraction": MIN_AREA_FRACTION,
                **self.config.get("postprocess", {})}


def load_segmenter(run_dir: str | Path, device: str | torch.device = "cpu") -> Segmenter:
    """Load ``segmenter.safetensors`` + ``config.json`` from a RUN (or GANRUN) folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: model folder not found")
    config = read_json(run_dir / "config.json")
    model_cfg = config.get("model")
    if not isinstance(model_cfg, dict) or "widths" not in model_cfg:
        raise InputError(f"{run_dir / 'config.json'}: no 'model' section with the architecture; "
                         "is this a sagegan model folder?")
    try:
        net = AttentionUNet.from_config(model_cfg)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{run_dir / 'config.json'}: invalid architecture ({exc})") from None
    load_module_weights(net, run_dir / MODEL_FILE)
    net.to(device).eval()
    return Segmenter(net, config, run_dir)


# ------------------------------------------------------------------------------- particle size


def estimate_diameter_autocorr(image: np.ndarray) -> float:
    """Typical particle diameter (px) from the radial autocorrelation of the image.

    For a disc of diameter D the normalised autocorrelation falls to one half at r = 0.404 D,
    so D ~ r_half / 0.404. The background trend is removed first; it is a first guess that the
    segmenter's own prediction refines.
    """
    from scipy import ndimage as ndi

    img = image.astype(np.float32)
    h, w = img.shape
    smooth = ndi.gaussian_filter(img, 1.0)
    trend = ndi.gaussian_filter(img, max(h, w) / 8)
    x = smooth - trend
    x -= x.mean()
    spectrum = np.abs(np.fft.rfft2(x, s=(2 * h, 2 * w))) ** 2
    acf = np.fft.irfft2(spectrum, s=(2 * h, 2 * w))
    acf = np.fft.fftshift(acf)
    cy, cx = h, w
    r_max = min(h, w) // 2
    yy, xx = np.indices((2 * r_max + 1, 2 * r_max + 1)) - r_max
    rr = np.rint(np.hypot(yy, xx)).astype(int)
    window = acf[cy - r_max: cy + r_max + 1, cx - r_max: cx + r_max + 1]
    profile = np.bincount(rr.ravel(), window.ravel()) / np.maximum(np.bincount(rr.ravel()), 1)
    profile = profile[: r_max + 1]
    if profile[0] <= 0:
        return float("nan")
    profile = profile / profile[0]
    below = np.nonzero(profile < 0.5)[0]
    if below.size == 0:
        return float("nan")
    r = int(below[0])
    # linear interpolation between r-1 and r
    r_half = r - 1 + (profile[r - 1] - 0.5) / max(profile[r - 1] - profile[r], 1e-9) if r > 0 else 0.5
    return float(r_half / 0.404)


def calibrate_autocorr(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Factor turning :func:`estimate_diameter_autocorr` into the true median particle diameter.

    The disc model behind the estimate ignores noise, edges and background texture, so on real
    micrographs it is biased; the factor is the median ratio true / estimated over labelled
    (training) images, and is stored in the model's config.json.
    """
    from .data import median_diameter

    ratios = []
    for image, lab in zip(images, labels):
        est, true = estimate_diameter_autocorr(image), median_diameter(lab)
        if np.isfinite(est) and est > 0 and np.isfinite(true):
            ratios.append(true / est)
    return float(np.exp(np.median(np.log(ratios)))) if ratios else 1.0


# ------------------------------------------------------------------------------- prediction


def _tile_side(length: int, max_tile: int, min_overlap: int, divisor: int) -> int:
    """Smallest tile side (a multiple of ``divisor``) that covers ``length`` in as few tiles as
    ``max_tile`` allows while neighbouring tiles overlap by at least ``min_overlap``."""
    up = lambda n: int(math.ceil(n / divisor) * divisor)  # noqa: E731
    if length <= max_tile:
        return up(length)
    n = math.ceil((length - min_overlap) / (max_tile - min_overlap))
    return up(math.ceil((length + (n - 1) * min_overlap) / n))


def inference_copy(net: AttentionUNet) -> AttentionUNet:
    """An eval-mode copy with BatchNorm folded into the convolutions, in channels-last layout.

    Same outputs to float rounding; measured 1.6x faster on 2 CPU cores (BENCHMARKS.md).
    """
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(module: nn.Module) -> None:
        for child in module.children():
            fold(child)
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()

    fast = copy.deepcopy(net).eval()
    fold(fast)
    return fast.to(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_maps(seg: Segmenter, image: np.ndarray, scale: float = 1.0, tta: bool = False,
                 tile: int = 1088, min_overlap: int = 64, with_gates: bool = False,
                 device: str | torch.device | None = None, keep_zoomed: bool = False) -> dict[str, np.ndarray]:
    """Class probabilities, normalised distance (and the finest gate map) at the input's size.

    ``image`` is a float array (H, W); ``scale`` zooms it before prediction. Tiles of at most
    ``tile`` px overlap by at least ``min_overlap`` px and are blended with Gaussian weights.
    ``keep_zoomed`` returns the maps at the zoomed size instead of the input's.
    """
    from monai.inferers import sliding_window_inference

    net = seg.fast_net
    device = device or next(net.parameters()).device
    h, w = image.shape
    x = torch.from_numpy(normalise_percentile(image))[None, None].to(device)
    if abs(scale - 1.0) > 1e-3:
        size = (max(int(round(h * scale)), 8), max(int(round(w * scale)), 8))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    roi = tuple(_tile_side(n, tile, min_overlap, net.divisor) for n in x.shape[-2:])
    overlap = tuple(0.0 if n <= r else min_overlap / r for n, r in zip(x.shape[-2:], roi))

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.contiguous(memory_format=torch.channels_last)
        if with_gates and net.attention_gates:
            out, gates = net(batch, return_gates=True)
            extra = [gates[0]]
        else:
            out, extra = net(batch), []
        return torch.cat([out[:, :N_CLASSES].softmax(1), torch.sigmoid(out[:, N_CLASSES:N_CLASSES + 1])]
                         + extra, 1)

    flips: Sequence[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    total = None
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        pred = sliding_window_inference(xi, roi, sw_batch_size=1, predictor=predictor, overlap=overlap,
                                        mode="gaussian", padding_mode="reflect")
        pred = torch.flip(pred, dims) if dims else pred
        total = pred if total is None else total + pred
    maps = total / len(flips)
    if maps.shape[-2:] != (h, w) and not keep_zoomed:
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False,
                             antialias=maps.shape[-1] > w)
    maps = maps[0].float().cpu().numpy()
    result = {"probs": maps[:N_CLASSES], "distance": maps[N_CLASSES]}
    if maps.shape[0] > N_CLASSES + 1:
        result["gate"] = maps[N_CLASSES + 1]
    return result


def instances_from_maps(probs: np.ndarray, distance: np.ndarray, fg_threshold: float = 0.5,
                        seed_threshold: float = 0.5, min_area_px: int = 0) -> np.ndarray:
    """Instance labels (int32) by a watershed on the predicted distance, seeded by its cores.

    Foreground is where background probability < 1 - ``fg_threshold``; each connected core where
    the normalised distance exceeds ``seed_threshold`` seeds one particle; foreground pieces that
    hold no core become particles of their own. Instances under ``min_area_px`` are dropped.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    foreground = probs[0] < 1.0 - fg_threshold
    seeds, n = ndi.label((distance > seed_threshold) & foreground)
    labels = watershed(-distance, seeds, mask=foreground) if n else np.zeros(foreground.shape, np.int32)
    orphans, n_orphans = ndi.label(foreground & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    if min_area_px > 0 and labels.any():
        areas = np.bincount(labels.ravel())
        small = areas < min_area_px
        small[0] = False
        labels[small[labels]] = 0
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32))[0]


@dataclass
class Segmentation:
    """Result for one image: instance labels plus the maps they came from."""

    labels: np.ndarray
    probs: np.ndarray
    distance: np.ndarray
    scale: float
    diameter_estimate_px: float
    gate: np.ndarray | None = None
    passes: list[float] = field(default_factory=list)


def default_min_area(canonical_diameter_px: float | None, scale: float, fraction: float = MIN_AREA_FRACTION) -> int:
    """Minimum particle area in input px: ``fraction`` of a canonical particle's area at zoom ``scale``."""
    d = canonical_diameter_px
    if not d:
        return 4
    return max(2, int(fraction * math.pi * (d / 2) ** 2 / scale ** 2))


# Zooms tried by ``scale="auto"``: 1/16 .. 4, a factor 2 apart, i.e. particles from ~6 px to ~380 px
# across for a canonical diameter of 24 px (the winner is then refined by up to sqrt(2) either way).
SEARCH_ZOOMS = tuple(2.0 ** k for k in range(-4, 3))


def search_zoom(seg: Segmenter, image: np.ndarray, zooms: Sequence[float] = SEARCH_ZOOMS,
                crop_px: int = 384, size_weight: float = 0.1,
                prior_weight: float = 0.1) -> tuple[float, float, list[dict[str, float]]]:
    """Zoom that brings the image's particles to the model's canonical diameter, found by the model.

    Image statistics alone (the autocorrelation) place the size within 1.5x on about half of the
    EMPS images; the segmenter itself knows better. At each candidate zoom it segments a central
    crop (``crop_px`` px once zoomed, so every try costs about the same) and the zoom scores

        mean class confidence on the predicted foreground   (high where particles look as in training)
        - size_weight  * |log(median predicted diameter / canonical)|
        - prior_weight * max(0, |log(zoom / autocorrelation zoom)| - log 2)

    the last term only breaking ties far from the image-statistics guess. The winner's measured
    diameter then moves the zoom by at most sqrt(2). The weights were chosen on held-out EMPS
    training images (benchmarks/scale_search.py). Returns (zoom, estimated median diameter in
    input px, one record per try).
    """
    canonical = float(seg.canonical_diameter_px)
    post = seg.postprocess
    h, w = image.shape
    prior = estimate_diameter_autocorr(image) * seg.config.get("autocorr_factor", 1.0)
    prior_zoom = _zoom_for(prior, canonical) if math.isfinite(prior) and prior > 0 else None
    tries: list[dict[str, float]] = []
    for zoom in zooms:
        side = max(int(round(crop_px / zoom)), 16)
        ch, cw = min(h, side), min(w, side)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        # Everything below happens at the zoomed size (at most crop_px^2), so small zooms stay cheap.
        maps = predict_maps(seg, image[y0:y0 + ch, x0:x0 + cw], zoom, keep_zoomed=True)
        labels = instances_from_maps(maps["probs"], maps["distance"], post["fg_threshold"],
                                     post["seed_threshold"], default_min_area(canonical, 1.0))
        foreground = labels > 0
        diameter = _median_ecd(labels, min_count=1)  # zoomed px; an image may hold one big particle
        confidence = float(maps["probs"].max(0)[foreground].mean()) if foreground.any() else 0.0
        size_error = abs(math.log(diameter / canonical)) if math.isfinite(diameter) else 9.0
        off_prior = max(0.0, abs(math.log(zoom / prior_zoom)) - math.log(2)) if prior_zoom else 0.0
        tries.append({"zoom": zoom, "diameter_px": diameter / zoom, "confidence": confidence,
                      "score": confidence - size_weight * size_error - prior_weight * off_prior})
    best = max(tries, key=lambda t: t["score"])
    if not math.isfinite(best["diameter_px"]):  # no particles at any zoom: fall back on image statistics
        return (prior_zoom or 1.0), prior, tries
    step = math.sqrt(2)
    zoom = float(np.clip(_zoom_for(best["diameter_px"], canonical), best["zoom"] / step, best["zoom"] * step))
    return zoom, best["diameter_px"], tries


def segment_image(seg: Segmenter, image: np.ndarray, scale: str | float = "auto", tta: bool = False,
                  min_area_px: int | None = None, with_gates: bool = False, tile: int = 1088) -> Segmentation:
    """Segment one micrograph (float array) into particle instances at its own size.

    ``scale="auto"`` finds the zoom with :func:`search_zoom` (models trained at a canonical
    particle size); a number fixes the zoom.
    """
    canonical = seg.canonical_diameter_px
    post = seg.postprocess
    passes: list[float] = []
    estimate = float("nan")
    if scale == "auto" and canonical:
        zoom, estimate, tries = search_zoom(seg, image)
        passes = [t["zoom"] for t in tries]
    else:
        zoom = 1.0 if scale == "auto" else float(scale)
    if not (zoom > 0 and math.isfinite(zoom)):
        raise ValueError(f"scale must be 'auto' or a positive number, got {scale}")
    passes.append(zoom)
    maps = predict_maps(seg, image, zoom, tta=tta, tile=tile, with_gates=with_gates)
    area = default_min_area(canonical, zoom, post["min_area_fraction"]) if min_area_px is None else min_area_px
    labels = instances_from_maps(maps["probs"], maps["distance"], post["fg_threshold"],
                                 post["seed_threshold"], area)
    return Segmentation(labels, maps["probs"], maps["distance"], zoom, estimate, maps.get("gate"), passes)


def _zoom_for(diameter_px: float, canonical: float) -> float:
    from .data import scale_factor_for

    return scale_factor_for(diameter_px, canonical, limits=(SEARCH_ZOOMS[0] / 1.5, SEARCH_ZOOMS[-1] * 1.5))


def _median_ecd(labels: np.ndarray, min_count: int = 3) -> float:
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if areas.size < min_count:
        return float("nan")
    return float(np.median(2 * np.sqrt(areas / np.pi)))


# ------------------------------------------------------------------------------- files


def overlay_outlines(image: np.ndarray, labels: np.ndarray, colour=(255, 60, 40)) -> np.ndarray:
    """RGB uint8 image with the particles' outlines drawn over the grey micrograph."""
    from skimage.segmentation import find_boundaries

    grey = np.clip(normalise_percentile(image), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb[find_boundaries(labels, mode="inner")] = colour
    return rgb


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image: a [0, 1] map (e.g. an attention gate) in a colour map over the micrograph."""
    from matplotlib import colormaps

    grey = np.clip(normalise_percentile(image), 0, 1)[..., None]
    colour = colormaps["inferno"](np.clip(heat, 0, 1))[..., :3]
    return (255 * ((1 - alpha) * grey + alpha * colour)).astype(np.uint8)


def segment_files(inputs: Sequence[str | Path], model: str | Path | Segmenter, out: str | Path,
                  nm_per_px: float | None = None, scale: str | float = "auto", tta: bool = False,
                  min_area_px: int | None = None, save_attention: bool = False, crop_bottom: int = 0,
                  split: str | Path | Sequence[str] | None = None, progress: bool = True):
    """Segment micrographs and write labels, masks, overlays and ``particles.csv`` to ``out``.

    ``split`` (a file or a list of stems) keeps only the inputs it names. Returns the particles
    table (a pandas DataFrame, one row per particle of every image).
    """
    import pandas as pd

    from .checkpoint import write_json
    from .io import _stem, expand_inputs, read_micrograph, read_split, write_image, write_labels
    from .particles import measure

    files = expand_inputs(inputs)
    if split is not None:
        wanted = set(read_split(split) if isinstance(split, (str, Path)) else split)
        files = [f for f in files if _stem(f.name) in wanted]
        if not files:
            raise InputError(f"{split}: none of the inputs is named in the split")
    seg = model if isinstance(model, Segmenter) else load_segmenter(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables, runs = [], []
    iterator: Any = files
    if progress:
        from rich.progress import track

        iterator = track(files, description="segmenting")
    for path in iterator:
        mg = read_micrograph(path, nm_per_px=nm_per_px, crop_bottom=crop_bottom)
        result = segment_image(seg, mg.image, scale=scale, tta=tta, min_area_px=min_area_px,
                               with_gates=save_attention)
        stem = path.stem
        write_labels(out / f"{stem}_labels.tif", result.labels)
        write_image(out / f"{stem}_mask.png", ((result.labels > 0) * 255).astype(np.uint8))
        write_image(out / f"{stem}_overlay.png", overlay_outlines(mg.image, result.labels))
        if save_attention and result.gate is not None:
            write_image(out / f"{stem}_attention.png", overlay_heatmap(mg.image, result.gate))
        table = measure(result.labels, mg.image, mg.nm_per_px)
        table.insert(0, "image", stem)
        tables.append(table)
        runs.append({"image": str(path), "n_particles": int(result.labels.max()), "scale": result.scale,
                     "passes": result.passes, "nm_per_px": mg.nm_per_px})
    particles = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    particles.to_csv(out / "particles.csv", index=False)
    write_json(out / "segment_config.json", {
        "model": str(seg.path) if seg.path else None, "scale": scale, "tta": tta, "min_area_px": min_area_px,
        "nm_per_px": nm_per_px, "crop_bottom": crop_bottom, "postprocess": seg.postprocess, "images": runs})
    return particles
