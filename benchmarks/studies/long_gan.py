#!/usr/bin/env python
"""The generator benchmark after longer GAN training than a segmentation budget allows.

The generator benchmark of ``benchmarks/run.py`` judges the SAGE-GAN run of the k = all group,
whose phase 2 gets half of one method budget. This script copies that finished run, resumes it
for ``--extra-minutes`` more, and writes the same generator rows (Fréchet distance on the phase 1
encoder, TSTR with the attention_unet recipe and budget, TRTR = the attention_unet run) into
another results folder, so that the two generators can be compared row by row:

    python benchmarks/studies/long_gan.py --from-out bench_v2 --out bench_long --budget-minutes 20 --extra-minutes 35

The source folder must hold the finished k = all runs (``benchmarks/run.py --out SRC --only
generator`` makes them) with the settings given here (``--budget-minutes``, ``--quick``...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from benchmarks.harness import cli, generator, methods  # noqa: E402
from benchmarks.harness.cache import copy_run  # noqa: E402
from benchmarks.harness.context import Context  # noqa: E402
from benchmarks.harness.runner import print_summary, reexec_with_malloc_settings  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from-out", required=True, help="results folder of run.py holding the finished k = all runs")
    p.add_argument("--out", required=True, help="results folder for the rows of the longer-trained generator")
    p.add_argument("--extra-minutes", type=float, required=True, help="wall-clock minutes of further GAN training")
    p.add_argument("--budget-minutes", type=float, default=None, help="the method budget the source runs used")
    p.add_argument("--dataset", default="emps", choices=("emps", "bam_tio2"))
    p.add_argument("--quick", action="store_true", help="as run.py --quick (simulated data without ../shared)")
    p.add_argument("--simulated", action="store_true")
    p.add_argument("--data-root", default=None)
    p.add_argument("--n-fd", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run_options(a: argparse.Namespace) -> list[str]:
    """The options of run.py that this script passes on to both results folders."""
    shared = [flag for flag, on in (("--quick", a.quick), ("--simulated", a.simulated),
                                    ("--no-progress", a.no_progress)) if on]
    for flag, value in (("--budget-minutes", a.budget_minutes), ("--data-root", a.data_root),
                        ("--n-fd", a.n_fd), ("--max-test", a.max_test)):
        if value is not None:
            shared += [flag, str(value)]
    return shared


def main(argv=None) -> int:
    from sagegan.io import read_json
    from sagegan.runs import LAST_STATE_JSON
    from sagegan.train_gan import GanTrainConfig, train_gan

    a = parse_args(argv)
    reexec_with_malloc_settings()
    if a.extra_minutes <= 0:
        raise SystemExit("long_gan.py: --extra-minutes must be > 0")
    src = Context(cli.parse_args(["--out", a.from_out, *run_options(a)]))
    dst = Context(cli.parse_args(["--out", a.out, *run_options(a)]))
    ds = src.dataset(a.dataset)
    if ds is None:
        raise SystemExit(f"long_gan.py: no {a.dataset} data under {src.root}")
    dst.use_dataset(a.dataset, ds)  # the very same split and test set (simulated data are drawn per folder)
    g_src = src.group(ds, "all", 0, src.settings.budget_minutes)
    src.reuse_only = True  # the source runs must be finished: found by their keys, never trained here
    half, full = methods.attention_runs(src, g_src)
    _, gan = methods.sage_gan_runs(src, g_src, half)

    g = dst.group(ds, "all", 0, dst.settings.budget_minutes)
    gan_cfg = {**gan.config["gan"]}

    def resume(run_dir: Path) -> dict:
        copy_run(gan.run_dir, run_dir)
        dst.console.log(f"resuming {gan.run_dir} in {run_dir} for {a.extra_minutes:g} more minutes")
        cfg = GanTrainConfig.from_dict({**gan_cfg, "max_minutes": None})
        wall, cpu = methods.resume_for(run_dir, cfg, 60 * a.extra_minutes, lambda c: train_gan(
            g_src.train, half.run_dir, run_dir, c, val=g_src.val, resume=True, progress=dst.progress,
            data_source=ds.source))
        return {"wall_s": gan.wall_s + wall, "cpu_s": gan.cpu_s + cpu, "extra_wall_s": wall,
                "source": str(gan.run_dir)}

    built = dst.build(g, "sage_gan_long", {"gan": gan.key, "extra_minutes": a.extra_minutes}, resume)
    steps = read_json(built.run_dir / LAST_STATE_JSON).get("step")
    long_gan = methods.Trained.of(built, {"gan": {**gan_cfg, "max_minutes": f"the budget's phase 2 + "
                                                  f"{a.extra_minutes:g} min", "source_run": str(gan.run_dir),
                                                  "iterations": steps}},
                                  f"SAGE-GAN phase 2 resumed for {a.extra_minutes:g} more minutes")
    dst.console.log(f"{built.run_dir}: {steps} iterations, {built.info['wall_s'] / 60:.1f} min of phase 2")
    generator.generator_rows(dst, ds, g, full, long_gan, generator_seconds=half.wall_s + built.info["wall_s"])
    print_summary(dst, 0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
