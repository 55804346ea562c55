#!/usr/bin/env python
"""Test runs by their *final* weights on the EMPS test images (no checkpoint selection).

    python benchmarks/final_weights.py bench_v2/runs/emps/k8_s0/attention_unet \\
        bench_v2/runs/emps/k8_s0/sage_gan [...] --out bench_v2/final_weights.json

With few labels a run's kept checkpoint is chosen on one validation image, which adds noise of
its own; this reads each run's ``last.safetensors`` (the state when its budget ran out: a
``train-seg`` RUN or a ``train-gan`` GANRUN) and tests it with that run's own post-processing, as
``benchmarks/studies/phase2_ablation.py`` tests its arms. Prints a markdown table; writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from benchmarks.harness.runner import reexec_with_malloc_settings  # noqa: E402
# the same weights extraction, data and test as the ablation arms
from benchmarks.studies.phase2_ablation import (  # noqa: E402
    add_test_options, final_segmenter_weights, load_emps_test, test_weights)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="RUN or GANRUN folders with last.safetensors")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    add_test_options(p)
    args = p.parse_args(argv)
    reexec_with_malloc_settings()

    from sagegan.io import read_json
    from sagegan.runs import LAST_STATE_JSON

    loaded = load_emps_test(args.data_root, args.max_test)
    if loaded is None:
        return 1
    _, test, order = loaded
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            t0 = time.monotonic()
            weights = final_segmenter_weights(run, Path(tmp) / "final.safetensors")
            state = read_json(run / LAST_STATE_JSON)
            metrics = test_weights(run, weights, test, order)
            results[str(run)] = {"step": state.get("step"), "test_seconds": time.monotonic() - t0, **metrics}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{run}: F1@0.5 {metrics['all']['f1_50']:.3f}", flush=True)
    print("\n| run | final step | F1@0.5 | Dice | PQ | ordered F1@0.5 |\n| --- | --- | --- | --- | --- | --- |")
    for run in map(str, args.runs):
        r = results[run]
        ordered = r.get("ordered", {}).get("f1_50", float("nan"))
        print(f"| {run} | {r['step']} | {r['all']['f1_50']:.3f} | {r['all']['dice']:.3f} | {r['all']['pq']:.3f} "
              f"| {ordered:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
