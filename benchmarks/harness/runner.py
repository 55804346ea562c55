"""Running a list of cases: each benchmark's cases in turn, its figures after it, a summary table."""

from __future__ import annotations

import sys
from itertools import groupby
from typing import Any, Sequence

from .cases import Case
from .context import Context
from .evaluation import run_segmentation
from .figures import write_figures
from .generator import run_generator
from .speed import run_speed


def run_segmentation_cases(ctx: Context, benchmark: str, cases: Sequence[Case]) -> None:
    """The cases of one segmentation benchmark, group by group (dataset, k, seed, budget)."""
    for (dataset, k, seed, budget), group_cases in groupby(cases, key=lambda c: c.group):
        ds = ctx.dataset(dataset)
        if ds is None:
            return
        if k != "all" and k > len(ds.train_stems):
            ctx.console.log(f"[yellow]{benchmark}: k={k} is more than the {len(ds.train_stems)} training images; "
                            "skipped")
            continue
        run_segmentation(ctx, benchmark, ctx.group(ds, k, seed, budget), [c.method for c in group_cases])


def run_generator_cases(ctx: Context, benchmark: str, cases: Sequence[Case]) -> None:
    for case in cases:
        ds = ctx.dataset(case.dataset)
        if ds is None:
            continue
        try:
            run_generator(ctx, ds, case.budget_minutes)
        except Exception as exc:
            ctx.fail(f"generator/{ds.name}", exc)


def run_speed_cases(ctx: Context, benchmark: str, cases: Sequence[Case]) -> None:
    run_speed(ctx)


RUNNERS = {"emps": run_segmentation_cases, "few_labels": run_segmentation_cases,
           "bam_tio2": run_segmentation_cases, "generator": run_generator_cases, "speed": run_speed_cases}


def run_cases(ctx: Context, cases: Sequence[Case]) -> None:
    """Run ``cases`` benchmark by benchmark (in their order), drawing each benchmark's figures after it."""
    for benchmark, of_benchmark in groupby(cases, key=lambda c: c.benchmark):
        ctx.console.rule(benchmark)
        try:
            RUNNERS[benchmark](ctx, benchmark, list(of_benchmark))
        except Exception as exc:
            ctx.fail(benchmark, exc)
        if ctx.store.path.exists():
            write_figures(ctx.store.path, [benchmark], ctx.out)


def print_summary(ctx: Context, seconds: float) -> None:
    """The rows this invocation added, as a table."""
    from rich.table import Table

    table = Table(title=f"rows added in this run: {ctx.store.added} ({seconds / 60:.1f} min); "
                        f"results.json holds {len(ctx.store.rows)}")
    for col in ("benchmark", "dataset", "method", "k", "seed", "subset", "n test", "F1@0.5", "Dice", "PQ", "other",
                "train s"):
        table.add_column(col)

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    for r in ctx.touched:
        other = ""
        if r.get("frechet_distance") is not None:
            other = f"FD {r['frechet_distance']:.2f}"
        elif r.get("inference_mpix_per_s") is not None:
            other = f"{r['inference_mpix_per_s']:.3f} MPix/s (x{r['speed_ratio_vs_monai']:.2f} MONAI)"
        elif r.get("mean_diameter_error_nm") is not None:
            other = f"ΔD {r['mean_diameter_error_nm']:+.2f} nm"
        elif r.get("tstr_over_real_f1_50") is not None:
            other = f"TSTR/real {r['tstr_over_real_f1_50']:.2f}"
        table.add_row(r["benchmark"], r["dataset"], r["method"], str(r["k"]), str(r["seed"]), r["subset"],
                      fmt(r.get("n_test_images")), fmt(r.get("f1_50")), fmt(r.get("dice")), fmt(r.get("pq")), other,
                      fmt(r.get("train_seconds")))
    ctx.console.print(table)


def reexec_with_malloc_settings() -> None:
    """As the sagegan command does: start this script again, once, with the glibc malloc settings
    that speed up CPU training (as a file or with ``-m``, as it was started)."""
    import sagegan

    sagegan.reexec_with_malloc_settings(sys.orig_argv[1:])
