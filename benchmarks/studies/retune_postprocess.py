"""Re-tune a trained segmenter's post-processing on its own validation images and store it in config.json.

    python benchmarks/studies/retune_postprocess.py --model RUN --images DIR --masks DIR

For a run whose config.json has no tuned post-processing (``train-seg`` tunes it at the end of
training with ``sagegan.validation.tune_postprocess``). The validation images are the
``val_stems`` that the run's config.json lists, so no test image is looked at.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sagegan.data import prepare
from sagegan.io import load_pairs, write_json
from sagegan.runs import load_segmenter
from sagegan.validation import tune_postprocess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--images", required=True, type=Path)
    parser.add_argument("--masks", required=True, type=Path)
    args = parser.parse_args(argv)
    seg = load_segmenter(args.model)
    config = seg.config
    val = load_pairs(args.images, args.masks, config["data"]["val_stems"])
    items = [prepare(s, seg.canonical_diameter_px) for s in val]
    post, (f1, dice) = tune_postprocess(seg, items)
    print(f"was {config.get('postprocess')}, now {post}: validation F1@0.5 {f1:.4f}, Dice {dice:.4f}")
    config["postprocess"] = post
    config["best_validation"] = {**config.get("best_validation", {}), "tuned_f1_50": f1, "tuned_dice": dice}
    write_json(args.model / "config.json", config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
