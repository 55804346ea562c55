#!/usr/bin/env python
"""What phase 2 does to the segmenter: arms that all start from one phase 1 snapshot.

    python benchmarks/phase2_ablation.py --phase1 bench_full/runs/emps/k8_s0/phase1_half \\
        --gan-config bench_full/runs/emps/k8_s0/sage_gan/config.json --minutes 7.5 \\
        --arms start phase1 soft detached --out bench_ablation

Every arm trains for the same wall-clock ``--minutes`` from the same phase 1 RUN and is tested
on the EMPS test images with the *final* weights (no checkpoint selection: with few labels the
validation set is one image, and selection would add its own noise) and the phase 1 run's
watershed settings, so the arms differ only in how they trained:

* ``start``: the phase 1 snapshot itself, not trained further;
* ``phase1``: phase 1 resumed (its optimiser, batch 8, its learning rate);
* ``soft`` / ``straight-through`` / ``detached``: SAGE-GAN with that mask path (``detached`` is
  the reference code: the cycle and mask-adversarial terms do not reach the segmenter);
* ``soft-frozen-bn`` / ``detached-frozen-bn``: with the segmenter's BatchNorm statistics kept
  from phase 1 (``train-gan``'s default); the other GAN arms re-estimate them from batches of 2;
* ``detached-frozen-bn-bf16``: the defaults with the networks under bfloat16 autocast
  (``--precision bf16``), more steps in the same minutes; every other GAN arm runs in fp32.

The GAN arms take their settings (widths, warm-up, ramp, loss weights) from ``--gan-config``
(a GANRUN's config.json, e.g. the few-label benchmark's), so the comparison matches that
benchmark. Writes ``OUT/results.json`` (one entry per arm; a rerun skips finished arms) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from benchmarks.harness.datasets import data_root, emps_order_labels  # noqa: E402
from benchmarks.harness.runner import reexec_with_malloc_settings  # noqa: E402

# arm -> the GanTrainConfig settings it changes
GAN_ARMS = {"soft": {"mask_path": "soft", "segmenter_norm": "train"},
            "straight-through": {"mask_path": "straight-through", "segmenter_norm": "train"},
            "detached": {"mask_path": "detached", "segmenter_norm": "train"},
            "soft-frozen-bn": {"mask_path": "soft", "segmenter_norm": "frozen"},
            "detached-frozen-bn": {"mask_path": "detached", "segmenter_norm": "frozen"},
            "detached-frozen-bn-bf16": {"mask_path": "detached", "segmenter_norm": "frozen", "precision": "bf16"}}
ARMS = ("start", "phase1", *GAN_ARMS)


def final_segmenter_weights(run_dir: Path, out_file: Path) -> Path:
    """Write the segmenter's weights from ``run_dir/last.safetensors`` (the state when training
    stopped, whatever checkpoint the run kept) to ``out_file``."""
    from sagegan.runs import last_segmenter_weights, save_tensors

    save_tensors(out_file, last_segmenter_weights(run_dir))
    return out_file


def add_test_options(p: argparse.ArgumentParser) -> None:
    """--data-root and --max-test: which EMPS test images the weights are tested on."""
    p.add_argument("--data-root", type=Path, default=data_root(None),
                   help="folder holding emps/ (default: $SAGEGAN_DATA_ROOT or ../shared/data)")
    p.add_argument("--max-test", type=int, default=None, help="test on the first N EMPS test images only")


def load_emps_test(data_root: Path, max_test: int | None) -> tuple[Path, list, dict] | None:
    """(EMPS folder, its test pairs, stem -> order label), or None with a message if absent."""
    from sagegan.io import load_pairs, read_split

    emps = data_root / "emps"
    if not (emps / "images").is_dir():
        print(f"no EMPS data under {data_root}: nothing to do", file=sys.stderr)
        return None
    test = load_pairs(emps / "images", emps / "segmaps", read_split(emps / "test.csv")[:max_test])
    return emps, test, emps_order_labels(emps)


def train_arm(arm: str, phase1: Path, gan_config: dict, train: list, minutes: float, work: Path) -> tuple[Path, dict]:
    """Train one arm; returns (weights file of the final segmenter, facts about the run)."""
    from sagegan.io import read_json
    from sagegan.runs import LAST_STATE_JSON, SEGMENTER_FILE
    from sagegan.train_gan import GanTrainConfig, train_gan
    from sagegan.train_seg import SegTrainConfig, train_segmenter

    run_dir = work / arm
    if arm == "start":
        return phase1 / SEGMENTER_FILE, {"steps": 0, "train_seconds": 0.0}
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.monotonic()
    if arm == "phase1":
        shutil.copytree(phase1, run_dir)
        start_state = read_json(phase1 / LAST_STATE_JSON)
        cfg = SegTrainConfig.from_dict({**read_json(phase1 / "config.json")["train"], "epochs": 100_000,
                                        "max_minutes": start_state["elapsed_s"] / 60 + minutes, "patience": 10_000})
        train_segmenter(train, run_dir, cfg, val=[], resume=True, progress=False)
        # the final weights, as for the GAN arms (without validation images train-seg would keep
        # the checkpoint with the lowest training loss)
        final = final_segmenter_weights(run_dir, run_dir / "final.safetensors")
        steps = read_json(run_dir / LAST_STATE_JSON)["step"] - start_state["step"]
        return final, {"steps": steps, "train_seconds": time.monotonic() - t0}
    cfg = replace(GanTrainConfig.from_dict(gan_config), **{"precision": "fp32", **GAN_ARMS[arm]},
                  max_minutes=minutes, steps=1_000_000, sample_every=1_000_000)
    train_gan(train, phase1, run_dir, cfg, val=[], progress=False)  # no validation: S is the final one
    steps = read_json(run_dir / "config.json")["steps"]
    return run_dir / SEGMENTER_FILE, {"steps": steps, "train_seconds": time.monotonic() - t0}


def test_weights(phase1: Path, weights: Path, test: list, order: dict) -> dict:
    """Metrics of ``weights`` (in the phase 1 net, with phase 1's post-processing) on ``test``."""
    from sagegan.infer import segment_image
    from sagegan.metrics import evaluate_pair, summarize
    from sagegan.runs import load_module_weights, load_segmenter

    seg = load_segmenter(phase1)
    load_module_weights(seg.net, weights)
    seg.net.eval()
    per_image = {s.stem: evaluate_pair(segment_image(seg, s.image, scale="auto").labels, s.labels) for s in test}
    out = {}
    for subset, keep in (("all", lambda st: True), ("ordered", lambda st: order.get(st) == "ordered")):
        rows = [m for st, m in per_image.items() if keep(st)]
        if rows:
            summary = summarize(rows)
            out[subset] = {"n": len(rows), "f1_50": summary["mean"]["f1_50"], "dice": summary["mean"]["dice"],
                           "pq": summary["mean"]["pq"], "pooled_f1_50": summary["pooled"]["f1_50"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase1", type=Path, required=True, help="phase 1 RUN folder (with last.safetensors)")
    p.add_argument("--gan-config", type=Path, required=True, help="a GANRUN config.json to take the GAN settings from")
    p.add_argument("--minutes", type=float, default=7.5, help="wall-clock training minutes per arm")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=["start", "phase1", "soft", "detached"])
    p.add_argument("--out", type=Path, required=True)
    add_test_options(p)
    args = p.parse_args(argv)
    reexec_with_malloc_settings()

    from sagegan.io import load_pairs, read_json

    loaded = load_emps_test(args.data_root, args.max_test)
    if loaded is None:
        return 1
    emps, test, order = loaded
    phase1_config = read_json(args.phase1 / "config.json")
    gan_config = read_json(args.gan_config)["gan"]
    train = load_pairs(emps / "images", emps / "segmaps", phase1_config["data"]["train_stems"])

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    setup = {"phase1": str(args.phase1), "gan_config": str(args.gan_config), "minutes": args.minutes,
             "n_train": len(train), "n_test": len(test)}
    for arm in args.arms:
        if arm in results and results[arm]["setup"] == setup:
            print(f"{arm}: in {results_path}, skipped", flush=True)
            continue
        print(f"{arm}: training {args.minutes if arm != 'start' else 0:g} min", flush=True)
        weights, facts = train_arm(arm, args.phase1, gan_config, train, args.minutes, args.out)
        t0 = time.monotonic()
        metrics = test_weights(args.phase1, weights, test, order)
        results[arm] = {"setup": setup, **facts, "test_seconds": time.monotonic() - t0, **metrics}
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{arm}: F1@0.5 {metrics['all']['f1_50']:.3f}", flush=True)

    print("\n| arm | steps | F1@0.5 | Dice | PQ | pooled F1@0.5 | ordered F1@0.5 |\n| --- | --- | --- | --- | --- | --- | --- |")
    for arm in (a for a in ARMS if a in results):
        r = results[arm]
        ordered = r.get("ordered", {}).get("f1_50", float("nan"))
        print(f"| {arm} | {r['steps']} | {r['all']['f1_50']:.3f} | {r['all']['dice']:.3f} | {r['all']['pq']:.3f} "
              f"| {r['all']['pooled_f1_50']:.3f} | {ordered:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
