"""The generator benchmark after longer GAN training than a segmentation budget allows.

``run.py``'s generator benchmark judges the SAGE-GAN run of the k = all group, whose phase 2 gets
half of one method budget (10 minutes at a 20-minute budget). This script copies that finished run,
resumes it for ``--extra-minutes`` more, and writes the same generator rows (Fréchet distance on the
phase 1 encoder, TSTR with the attention_unet recipe and budget, TRTR = the attention_unet run)
into another results folder, so the two generators can be compared row by row:

    python benchmarks/long_gan.py --from-out bench_v2 --out bench_long --budget-minutes 20 --extra-minutes 35

The source folder must hold the finished k = all runs (``run.py --out SRC --only generator`` makes
them); their settings (``--budget-minutes``, ``--quick``) must be the ones given here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the benchmark module beside this file)


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


def main(argv=None) -> int:
    a = parse_args(argv)
    bench._reexec_with_malloc_settings(__file__)
    if a.extra_minutes <= 0:
        raise SystemExit("long_gan.py: --extra-minutes must be > 0")
    shared = [flag for flag, on in (("--quick", a.quick), ("--simulated", a.simulated),
                                    ("--no-progress", a.no_progress)) if on]
    for flag, value in (("--budget-minutes", a.budget_minutes), ("--data-root", a.data_root),
                        ("--n-fd", a.n_fd), ("--max-test", a.max_test)):
        if value is not None:
            shared += [flag, str(value)]
    src = bench.Bench(bench.parse_args(["--out", a.from_out, *shared]))
    dst = bench.Bench(bench.parse_args(["--out", a.out, *shared]))
    ds = src.dataset(a.dataset)
    if ds is None:
        raise SystemExit(f"long_gan.py: no {a.dataset} data under {src.root}")
    dst._data[a.dataset] = ds  # the very same split and test set (simulated data are drawn per folder)
    g_src = bench.make_group(src, ds, "all", 0, src.settings.budget_minutes)
    if not (g_src.dir / "sage_gan" / bench.MARK).exists():
        raise SystemExit(f"long_gan.py: {g_src.dir / 'sage_gan'} is not a finished run; run "
                         f"`python benchmarks/run.py --out {a.from_out} --only generator` first")
    half, full = bench.train_attention(src, g_src)  # finished: found by their fingerprints, not retrained
    _, gan = bench.train_sage(src, g_src, half)

    g = bench.make_group(dst, ds, "all", 0, dst.settings.budget_minutes)
    long_dir = g.dir / "sage_gan_long"
    fp = bench._fingerprint({"gan": gan.stamp, "extra_minutes": a.extra_minutes})
    info = bench._done(long_dir, fp)
    gan_cfg = {**gan.config["gan"]}
    if info is None:
        from sagegan.train_gan import GanTrainConfig, train_gan

        bench._fresh(long_dir)
        g.dir.mkdir(parents=True, exist_ok=True)
        # the run itself, not the source's test-result cache (eval_*.json) or its benchmark marker
        shutil.copytree(gan.run_dir, long_dir, ignore=shutil.ignore_patterns("eval_*.json", bench.MARK))
        dst.console.log(f"resuming {gan.run_dir} in {long_dir} for {a.extra_minutes:g} more minutes")
        wall, cpu = bench.resume_for(long_dir, GanTrainConfig(**{**gan_cfg, "max_minutes": None}), 60 * a.extra_minutes,
                                     lambda c: train_gan(g_src.train, half.run_dir, long_dir, c, val=g_src.val,
                                                         resume=True, progress=dst.progress, data_source=ds.source()))
        info = bench._mark(long_dir, fp, wall_s=gan.wall_s + wall, cpu_s=gan.cpu_s + cpu, extra_wall_s=wall,
                           source=str(gan.run_dir))
    steps = json.loads((long_dir / "last_state.json").read_text()).get("step")
    long_gan = bench.Trained(long_dir, info["wall_s"], info["cpu_s"],
                             {"gan": {**gan_cfg, "max_minutes": f"the budget's phase 2 + {a.extra_minutes:g} min",
                                      "source_run": str(gan.run_dir), "iterations": steps}},
                             f"SAGE-GAN phase 2 resumed for {a.extra_minutes:g} more minutes")
    dst.console.log(f"{long_dir}: {steps} iterations, {info['wall_s'] / 60:.1f} min of phase 2")
    bench.generator_rows(dst, ds, g, full, long_gan, generator_seconds=half.wall_s + info["wall_s"])
    bench.print_summary(dst, 0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
