"""sagegan's benchmarks: the classical pipeline, a plain U-Net, the Attention U-Net, SAGE-GAN.

    python benchmarks/run.py --out bench_out                        # everything (hours on a CPU)
    python benchmarks/run.py --out bench_out --only emps speed      # some benchmarks
    python benchmarks/run.py --quick --out /tmp/bench               # smoke run of every code path

(``python -m benchmarks.run`` is the same.) Writes ``OUT/results.json`` (a JSON list of rows with
the schema of ``benchmarks/harness/results.py``, rewritten atomically after each row) and PNG
figures drawn from it. A rerun skips the rows already in the file (key: benchmark, dataset,
method, k, seed, subset), so a full run can be done in several sittings. Trained models are kept
under ``OUT/runs/<dataset>/k<k>_s<seed>/<name>-<hash of config and data>`` and reused by later
benchmarks and sittings; the code version is recorded, not part of the hash.

Benchmarks (``--only``): ``emps`` (the upstream EMPS split; test subsets all, ordered,
ordered_or_partial), ``few_labels`` (k EMPS training images drawn with each seed, ``--ks``,
``--seeds``; ``few_labels.png`` plots F1@0.5 against k), ``bam_tio2`` (BAM TiO2 SEM; adds the
signed error of the mean particle diameter in nm), ``generator`` (Fréchet distance between real
and synthetic images on the phase 1 encoder's features; TSTR next to TRTR), ``speed`` (inference
MPix/s next to MONAI, peak RSS, training seconds per iteration).

Methods (``--methods``): ``classical``, ``unet``, ``attention_unet``, ``copy_paste``
(attention_unet with ``--augment copy-paste``), ``sage_gan``, ``sage_gan_retrain``; each learned method gets the same wall-clock budget per (dataset, k, seed),
all of its phases together (``benchmarks/harness/methods.py`` says how it is split). Results and
their commands: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Sequence

from .cases import BENCHMARKS, METHODS, Settings, parse_k, plan
from .context import Context
from .runner import print_summary, reexec_with_malloc_settings, run_cases


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (results.json, figures, runs/)")
    p.add_argument("--quick", action="store_true", help="tiny budgets and test sets: checks every code path")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                   help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    p.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                   help=f"methods to run (default: all): {', '.join(METHODS)}")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock budget per learned method per (dataset, k, seed) (default 45; quick 0.3)")
    p.add_argument("--few-budget-minutes", type=float, default=None,
                   help="the budget for few_labels with k < all (default 15; quick: --budget-minutes)")
    p.add_argument("--data-root", default=None,
                   help="folder holding emps/ and bam_tio2_sem/ (default: $SAGEGAN_DATA_ROOT or ../shared/data)")
    p.add_argument("--simulated", action="store_true", help="use simulated data even when the real data exist")
    p.add_argument("--ks", nargs="+", default=None, help="few_labels k values, e.g. 4 8 16 32 all (default 8 all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="few_labels seeds for k < all (default 0 1 2)")
    p.add_argument("--max-train", type=int, default=None, help="use at most N training images (quick: 8)")
    p.add_argument("--max-test", type=int, default=None, help="use at most N test images (quick: 4)")
    p.add_argument("--n-fd", type=int, default=None, help="generator: patches / synthetic images per set (512)")
    p.add_argument("--generator-datasets", nargs="+", choices=("emps", "bam_tio2"), default=None, metavar="NAME",
                   help="generator: the datasets to measure (default: emps bam_tio2; quick: emps)")
    p.add_argument("--speed-size", type=int, default=None, help="speed: image side in px (2048; quick 512)")
    p.add_argument("--speed-patch", type=int, default=None, help="speed: training patch side (256; quick 64)")
    p.add_argument("--gan-seconds-per-step", type=float, default=3.0,
                   help="expected SAGE-GAN seconds per step, to place warm-up and ramp within the budget")
    p.add_argument("--gan-style-encoder", action="store_true",
                   help="train SAGE-GAN with the style encoder (GanTrainConfig.style_encoder); use another --out")
    p.add_argument("--synthesis-styles", default="random", choices=("random", "real"),
                   help="generator benchmark: latent z of the synthetic images (synthesize --styles); rows of "
                        "'real' carry the suffix _real_styles")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off without a terminal)")
    p.add_argument("--plan", action="store_true", help="print the cases as JSON lines and stop")
    args = p.parse_args(argv)
    try:
        args.ks = [str(parse_k(k)) for k in args.ks] if args.ks else None
    except (ValueError, argparse.ArgumentTypeError) as exc:
        p.error(f"--ks: {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = plan(Settings.from_args(args), tuple(args.only or BENCHMARKS), tuple(args.methods or METHODS),
                 tuple(args.generator_datasets) if args.generator_datasets else None)
    if args.plan:
        for case in cases:
            print(json.dumps(asdict(case)))
        return 0
    reexec_with_malloc_settings()
    ctx = Context(args)
    s = ctx.settings
    ctx.console.rule("sagegan benchmarks" + (" (quick)" if s.quick else ""))
    ctx.console.print(f"out: {ctx.out.resolve()}   data: {ctx.root.resolve()}"
                      f"{' (ignored: --simulated)' if args.simulated else ''}")
    ctx.console.print(f"budget per learned method: {s.budget_minutes:g} min wall-clock per (dataset, k, seed)"
                      f" (few_labels k < all: {s.few_budget_minutes:g} min); machine: {ctx.machine}")
    ctx.console.print(f"cases: {len(cases)}; rows already in results.json: {len(ctx.store.rows)}")
    start = time.monotonic()
    run_cases(ctx, cases)
    print_summary(ctx, time.monotonic() - start)
    if ctx.failures:
        ctx.console.print("[red]failed:[/red]\n  " + "\n  ".join(ctx.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
