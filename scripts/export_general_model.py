"""Package a trained run as the bundled general model (``src/sagegan/models/general``).

    .venv/bin/python scripts/export_general_model.py work/general/run --version 0.1 \
        --val-data work/general/data --val-split work/general/data/val.txt

Writes the weights as fp16 safetensors (half the size; the export checks that validation F1
does not drop), ``config.json`` (the run's config with the model's name, version, the
calibration of its particle scores fitted on the validation images, and its provenance) and
``MODEL_CARD.md`` (filled in from the config; the scores are added by hand from BENCHMARKS.md).
Validation images only, never a test split: they are the run's own validation split.
Commit the weights only when their scores are final: every committed version stays in git.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sagegan.data import prepare
from sagegan.io import load_pairs, read_json, resolve_data_dirs, write_json
from sagegan.runs import (CONFIG_FILE, GENERAL_MODEL, SEGMENTER_FILE, BUNDLED_MODELS_DIR, Segmenter, load_segmenter,
                          save_tensors, weights_sha256)
from sagegan.validation import calibrate_scores, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="RUN folder written by sagegan train-seg")
    parser.add_argument("--version", required=True, help="model version, e.g. 0.1")
    parser.add_argument("--val-data", type=Path, required=True, help="data folder of the validation images")
    parser.add_argument("--val-split", type=Path, required=True, help="their stems (the run's validation split)")
    parser.add_argument("--out", type=Path, default=BUNDLED_MODELS_DIR / GENERAL_MODEL)
    args = parser.parse_args()

    seg = load_segmenter(args.run)
    images, masks = resolve_data_dirs(args.val_data, None, None)
    val = [prepare(s, seg.canonical_diameter_px) for s in load_pairs(images, masks, args.val_split)]
    scoring, fit = calibrate_scores(seg, val)
    print(f"score calibration on {len(val)} validation images: {fit}")

    half = {k: v.half() if v.is_floating_point() else v for k, v in seg.net.state_dict().items()}
    net16 = Segmenter(_reloaded(seg, half), {**seg.config, "postprocess": {**seg.postprocess, **scoring}}, seg.path)
    setting = (seg.postprocess["fg_threshold"], seg.postprocess["seed_threshold"])
    f1_32, dice_32 = validate(seg, val, [setting])[setting]
    f1_16, dice_16 = validate(net16, val, [setting])[setting]
    print(f"validation F1@0.5 / Dice: fp32 {f1_32:.4f} / {dice_32:.4f}, fp16 weights {f1_16:.4f} / {dice_16:.4f}")
    searched = _with_zoom_search(net16, val)
    print(f"validation with the zoom search, as segment runs (fp16): F1@0.5 {searched['f1_50']:.4f}, "
          f"Dice {searched['dice']:.4f}")
    if f1_16 < f1_32 - 0.005:
        raise SystemExit("fp16 weights lose validation F1; not exporting")

    args.out.mkdir(parents=True, exist_ok=True)
    weights = save_tensors(args.out / SEGMENTER_FILE, half)
    config = read_json(args.run / CONFIG_FILE)
    config.update(name=GENERAL_MODEL, version=args.version,
                  postprocess={**seg.postprocess, **scoring}, score_calibration_fit=fit,
                  exported_from={"run": str(args.run), "weights_sha256_fp32": weights_sha256(args.run / SEGMENTER_FILE),
                                 "validation_f1_50_fp32": round(f1_32, 4), "validation_f1_50_fp16": round(f1_16, 4),
                                 "validation_zoom_search": searched})
    write_json(args.out / CONFIG_FILE, config)
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB, sha256 {weights_sha256(weights)[:12]}...) "
          f"and {args.out / CONFIG_FILE}")


def _with_zoom_search(seg: Segmenter, val) -> dict:
    """Mean F1@0.5 and Dice on the validation images as ``segment`` sees them: zoom found by the
    search, calibrated scores and the tuned --min-score applied."""
    import numpy as np
    from sagegan.infer import segment_image
    from sagegan.metrics import evaluate_pair

    rows = [evaluate_pair(segment_image(seg, item.image, scale="auto").labels, item.labels) for item in val]
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("f1_50", "dice")}


def _reloaded(seg: Segmenter, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A copy of the segmenter's network holding ``state`` (fp16 values read back into fp32)."""
    import copy

    net = copy.deepcopy(seg.net)
    net.load_state_dict(state)
    return net.eval()


if __name__ == "__main__":
    main()
