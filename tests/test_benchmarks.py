"""The benchmark harness: the --quick smoke run of every code path, run keys, the row schema,
the migration of old results, the markdown summary."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import cache
from benchmarks.harness.cases import Settings, plan
from benchmarks.harness.cli import parse_args
from benchmarks.harness.results import KEY, SCHEMA_VERSION, ResultStore, check_row, read_rows

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAGEGAN_DATA_ROOT", REPO / ".." / "shared" / "data"))


def _run(out: Path, *args: str, module: bool = False, timeout: int = 420) -> subprocess.CompletedProcess:
    entry = ["-m", "benchmarks.run"] if module else [str(REPO / "benchmarks" / "run.py")]
    proc = subprocess.run([sys.executable, *entry, "--quick", "--out", str(out), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_rows(rows: list[dict]) -> dict[str, list[dict]]:
    assert rows and isinstance(rows, list)
    keys = [tuple(str(r[k]) for k in KEY) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate row keys"
    for r in rows:
        assert check_row(r) == [], (r["benchmark"], r["method"], check_row(r))
        assert _finite(r["cpu_seconds"]) and r["cpu_seconds"] > 0
        assert r["code_version"] is None or len(r["code_version"].split("+")[0]) == 40
        if r["kind"] == "segmentation":
            for k in ("f1_50", "dice", "pq", "precision_50", "recall_50", "pooled_f1_50"):
                assert _finite(r[k]) and 0.0 <= r[k] <= 1.0, (k, r[k], r["method"])
            assert r["n_test_images"] >= 1 and _finite(r["train_seconds"]) and r["train_seconds"] > 0
            assert Path(r["run_dir"]).is_dir()
            if r["method"] != "classical":
                assert r["budget_minutes"] > 0 and r["budget_note"]
    by_bench: dict[str, list[dict]] = {}
    for r in rows:
        by_bench.setdefault(r["benchmark"], []).append(r)
    return by_bench


def _check_quick_rows(out: Path, rows: list[dict]) -> None:
    by_bench = _check_rows(rows)
    assert set(by_bench) == {"emps", "few_labels", "bam_tio2", "generator", "speed"}
    methods = {"classical", "unet", "attention_unet", "copy_paste", "sage_gan", "sage_gan_retrain"}
    for bench in ("emps", "few_labels", "bam_tio2"):
        assert {r["method"] for r in by_bench[bench]} == methods, bench
    assert {r["subset"] for r in by_bench["emps"]} == {"all", "ordered", "ordered_or_partial"}
    assert {r["k"] for r in by_bench["few_labels"]} == {4}
    sage = next(r for r in by_bench["emps"] if r["method"] == "sage_gan_retrain" and r["subset"] == "all")
    assert set(sage["phase_seconds"]) == {"phase1", "phase2", "synthesis", "retrain"}
    assert all(_finite(v) and v > 0 for v in sage["phase_seconds"].values())
    assert sage["config"]["synthetic_layouts"] == "mixed"
    # sage_gan and sage_gan_retrain start from the one phase 1 snapshot (and the retrain from the GAN snapshot)
    emps = {r["method"]: r for r in by_bench["emps"] if r["subset"] == "all"}
    assert emps["sage_gan"]["phase_seconds"]["phase1"] == sage["phase_seconds"]["phase1"]
    assert sage["phase_seconds"]["phase2"] <= emps["sage_gan"]["phase_seconds"]["phase2"]
    for r in by_bench["bam_tio2"]:
        assert "mean_diameter_error_nm" in r and "mean_diameter_error_rel" in r
    assert any(_finite(r["mean_diameter_error_nm"]) for r in by_bench["bam_tio2"])

    gen = {r["method"]: r for r in by_bench["generator"] if r["subset"] == "all"}
    for m in ("generator_real_layouts", "generator_new_layouts", "generator_mixed_layouts", "real_train_patches"):
        # synthetic (or other real) patches are never the test patches themselves
        assert _finite(gen[m]["frechet_distance"]) and gen[m]["frechet_distance"] > 0, m
    assert {"tstr", "trtr"} <= set(gen)
    assert any(r["method"] == "tstr" and r["subset"] == "ordered" and "tstr_over_real_f1_50" in r
               for r in by_bench["generator"])

    (speed,) = by_bench["speed"]
    for k in ("inference_mpix_per_s", "monai_inference_mpix_per_s", "speed_ratio_vs_monai", "peak_rss_mb",
              "seg_train_s_per_iter", "gan_train_s_per_iter"):
        assert _finite(speed[k]) and speed[k] > 0, k
    assert speed["image_size"] == 256 and isinstance(speed["malloc_env_set"], bool)

    for fig in ("emps.png", "few_labels.png", "bam_tio2.png", "generator.png", "speed.png"):
        assert (out / fig).stat().st_size > 0, fig
    gan_dir = Path(gen["generator_new_layouts"]["gan_run"])  # the emps group's GAN run: runs/simulated/kall_s0/...
    assert gan_dir.parent == out / "runs" / "simulated" / "kall_s0" and gan_dir.name.startswith("sage_gan-")
    assert (gan_dir / "generator.safetensors").exists()


def _check_long_gan(out: Path, tmp_path: Path, generator_rows: list[dict]) -> None:
    """benchmarks/studies/long_gan.py trains a copy of the k = all GAN run further, same rows."""
    source = Path(generator_rows[0]["gan_run"])
    source_steps = json.loads((source / "last_state.json").read_text())["step"]
    longer = tmp_path / "long"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "studies" / "long_gan.py"), "--quick",
                           "--simulated", "--from-out", str(out), "--out", str(longer), "--budget-minutes", "0.1",
                           "--max-test", "2", "--extra-minutes", "0.05", "--no-progress"],
                          capture_output=True, text=True, timeout=420, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    long_rows = read_rows(longer / "results.json")
    assert {r["method"] for r in long_rows} == {r["method"] for r in generator_rows}
    (long_run,) = (longer / "runs" / "simulated" / "kall_s0").glob("sage_gan_long-*")
    assert json.loads((long_run / "last_state.json").read_text())["step"] > source_steps
    assert list(source.glob("eval_*.json")) and not list(long_run.glob("eval_*.json"))  # no stale test cache
    assert json.loads((source / "last_state.json").read_text())["step"] == source_steps  # the source is untouched


@pytest.mark.slow
def test_quick_benchmarks_on_simulated_data(tmp_path):
    """All five benchmarks on simulated data (no real data needed), then a rerun that skips them."""
    out = tmp_path / "bench"
    args = ["--simulated", "--budget-minutes", "0.1", "--max-test", "2", "--speed-size", "256"]
    _run(out, *args)
    rows = read_rows(out / "results.json")
    _check_quick_rows(out, rows)

    # A rerun (as a module this time) finds every row in results.json and trains nothing.
    proc2 = _run(out, *args, module=True)
    assert "rows added in this run: 0" in proc2.stdout
    assert read_rows(out / "results.json") == rows

    # The markdown summary for BENCHMARKS.md reads the same file.
    summary = subprocess.run([sys.executable, "-m", "benchmarks.summarize", str(out / "results.json"),
                              "--benchmark", "few_labels"], capture_output=True, text=True, check=True,
                             cwd=REPO).stdout
    assert "| few_labels | simulated | 4 | all | sage_gan_retrain | 1 |" in summary
    assert "| few_labels | 4 | all | sage_gan |" in summary  # paired with attention_unet

    _check_long_gan(out, tmp_path, [r for r in rows if r["benchmark"] == "generator"])

    # the generator benchmark with the style encoder and encoded styles: rows with their own names
    styled = tmp_path / "styled"
    _run(styled, *args, "--only", "generator", "--gan-style-encoder", "--synthesis-styles", "real")
    styled_rows = read_rows(styled / "results.json")
    assert {r["method"] for r in styled_rows} == {"generator_real_layouts_real_styles",
                                                  "generator_new_layouts_real_styles",
                                                  "generator_mixed_layouts_real_styles", "real_train_patches",
                                                  "tstr_real_styles", "trtr"}
    gan_dir = Path(styled_rows[0]["gan_run"])
    assert json.loads((gan_dir / "config.json").read_text())["gan"]["style_encoder"] is True
    assert (gan_dir / "style_encoder.safetensors").exists()


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "emps" / "images").is_dir() or not (DATA / "bam_tio2_sem" / "images").is_dir(),
                    reason="needs ../shared/data (EMPS and BAM TiO2)")
def test_quick_benchmarks_on_real_data(tmp_path):
    """EMPS and BAM TiO2 read in place: the classical baseline and the Attention U-Net, tiny budgets."""
    out = tmp_path / "bench"
    _run(out, "--only", "emps", "bam_tio2", "--methods", "classical", "attention_unet", "--budget-minutes", "0.1",
         "--max-train", "4", "--max-test", "2", "--data-root", str(DATA))
    rows = read_rows(out / "results.json")
    by_bench = _check_rows(rows)
    assert {r["dataset"] for r in rows} == {"emps", "bam_tio2"}
    emps = [r for r in by_bench["emps"] if r["subset"] == "all"]
    assert {r["method"] for r in emps} == {"classical", "attention_unet"}
    assert all(r["n_test_images"] == 2 for r in emps)
    assert {r["subset"] for r in by_bench["emps"]} >= {"all", "ordered"}
    (bam_classical,) = [r for r in by_bench["bam_tio2"] if r["method"] == "classical"]
    assert _finite(bam_classical["mean_diameter_error_nm"]) and _finite(bam_classical["true_mean_ecd_nm"])
    assert bam_classical["true_mean_ecd_nm"] > 10  # TiO2 particles are tens of nm across


# ------------------------------------------------------------------------------------ harness units


def test_plan_lists_the_cases_declaratively():
    settings = Settings.from_args(parse_args(["--out", "x", "--ks", "4", "all", "--seeds", "0", "1"]))
    cases = plan(settings, ("few_labels", "generator", "speed"), ("unet", "sage_gan"))
    few = [(c.k, c.seed, c.method, c.budget_minutes) for c in cases if c.benchmark == "few_labels"]
    assert few == [(4, 0, "unet", 15.0), (4, 0, "sage_gan", 15.0), (4, 1, "unet", 15.0), (4, 1, "sage_gan", 15.0),
                   ("all", 0, "unet", 45.0), ("all", 0, "sage_gan", 45.0)]  # k = all: one seed, the full budget
    assert [(c.benchmark, c.dataset) for c in cases[len(few):]] == [
        ("generator", "emps"), ("generator", "bam_tio2"), ("speed", "simulated")]


def test_run_keys_ignore_the_code_version_and_where_out_is(tmp_path, monkeypatch):
    """A finished step is found again after a commit and under another --out name; a changed
    config is a new folder, and the old one stays."""
    calls = []

    def make(run_dir: Path) -> dict:
        run_dir.mkdir(parents=True)
        calls.append(run_dir)
        return {"wall_s": 1.0, "cpu_s": 2.0}

    spec = {"cfg": {"lr": 1e-4, "seed": 0}, "group": {"stems": ["a", "b"]}}
    first = cache.build(tmp_path / "runs", "unet", spec, make, code_version="a" * 40)
    again = cache.build(tmp_path / "runs", "unet", json.loads(json.dumps(spec)), make, code_version="b" * 40 + "+dirty")
    assert len(calls) == 1 and again.run_dir == first.run_dir and again.info == {"wall_s": 1.0, "cpu_s": 2.0}
    marker = json.loads((first.run_dir / cache.DONE).read_text())
    assert marker["code_version"] == "a" * 40 and marker["spec"] == spec
    monkeypatch.chdir(tmp_path)
    relative = cache.build(Path("runs"), "unet", spec, make, code_version=None)
    assert len(calls) == 1 and relative.key == first.key
    other = cache.build(tmp_path / "runs", "unet", {**spec, "cfg": {"lr": 2e-4, "seed": 0}}, make, None)
    assert len(calls) == 2 and other.run_dir != first.run_dir and first.run_dir.is_dir()


def test_an_interrupted_step_is_built_again(tmp_path):
    spec = {"n": 1}
    partial = tmp_path / f"tstr-{cache.key_of(spec)}"
    partial.mkdir()
    (partial / "half_written.bin").write_bytes(b"x")
    built = cache.build(tmp_path, "tstr", spec, lambda d: (d.mkdir(), {"wall_s": 0.5, "cpu_s": 0.5})[1], None)
    assert built.run_dir == partial and not (partial / "half_written.bin").exists()


def _seg_row(method: str, k, f1: float, seed: int = 0, benchmark: str = "few_labels") -> dict:
    """A complete segmentation row of the current schema."""
    return {"schema": SCHEMA_VERSION, "kind": "segmentation", "benchmark": benchmark, "dataset": "emps",
            "method": method, "k": k, "seed": seed, "subset": "all", "code_version": None, "date": "2026-01-01",
            "machine": "test", "environment": None, "quick": False, "cpu_seconds": 2.0, "train_seconds": 1.0,
            "n_test_images": 3, "f1_50": f1, "dice": f1, "pq": f1, "precision_50": f1, "recall_50": f1,
            "pooled_f1_50": f1, "n_train_images": 4, "n_val_images": 1, "n_labelled_images": 5,
            "train_cpu_seconds": 1.0, "test_seconds": 0.5, "budget_minutes": 15.0, "budget_note": "b",
            "run_dir": "runs/x", "config": {}}


def test_rows_are_checked_against_the_schema(tmp_path):
    row = _seg_row("unet", 8, 0.5)
    assert check_row(row) == []
    assert check_row({k: v for k, v in row.items() if k != "dice"}) == ["dice missing"]
    assert check_row({**row, "f1_50": True}) == ["f1_50 is a bool, expected number/null"]
    assert check_row({**row, "seed": "0"}) == ["seed is str, expected int"]
    assert check_row({**row, "kind": "other"})[0].startswith("kind 'other'")
    store = ResultStore(tmp_path / "results.json")
    with pytest.raises(ValueError, match="n_test_images missing"):
        store.add({k: v for k, v in row.items() if k != "n_test_images"})
    assert not (tmp_path / "results.json").exists()
    store.add({**row, "f1_50": np.float32(0.25), "dice": float("nan"), "extra_note": "kept"})
    (saved,) = read_rows(tmp_path / "results.json")  # numpy values and NaN written as JSON; extra fields kept
    assert saved["f1_50"] == 0.25 and saved["dice"] is None and saved["extra_note"] == "kept"
    store.add({**row, "f1_50": 0.75})  # the same key replaces the row
    assert [r["f1_50"] for r in read_rows(tmp_path / "results.json")] == [0.75]
    (tmp_path / "old.json").write_text(json.dumps([{k: v for k, v in row.items() if k != "schema"}]))
    with pytest.raises(SystemExit, match="migrate_results.py"):
        ResultStore(tmp_path / "old.json")


def test_no_module_named_run_is_importable():
    """Tests import the benchmarks package from the checkout root, never a top-level ``run``."""
    import benchmarks.run  # noqa: F401
    import benchmarks.studies.long_gan  # noqa: F401
    import benchmarks.summarize  # noqa: F401

    assert "run" not in sys.modules and importlib.util.find_spec("run") is None
    assert str(REPO / "benchmarks") not in sys.path


# ------------------------------------------------------------------------------------ migration


OLD_ROWS = [
    {"benchmark": "few_labels", "dataset": "emps", "method": "attention_unet", "k": 8, "seed": 0, "subset": "all",
     "dice": 0.81, "f1_50": 0.62, "pq": 0.5, "precision_50": 0.7, "recall_50": 0.6, "pooled_f1_50": 0.64,
     "cpu_seconds": 1800.5, "train_seconds": 900.0, "n_test_images": 99, "commit": "c" * 40, "date": "2025-05-01",
     "machine": "2 cpus", "environment": {"cpu_count": 2}, "quick": False, "n_train_images": 7, "n_val_images": 1,
     "n_labelled_images": 8, "train_cpu_seconds": 1700.0, "test_seconds": 50.0, "budget_minutes": 15.0,
     "budget_note": "the whole budget", "run_dir": "bench_v2/runs/emps/k8_s0/attention_unet", "config": {"seg": {}}},
    # an older row: no environment, quick, pooled metrics or test seconds yet
    {"benchmark": "few_labels", "dataset": "emps", "method": "sage_gan", "k": "8", "seed": 0, "subset": "all",
     "dice": 0.8, "f1_50": 0.6, "pq": 0.49, "cpu_seconds": 1900.0, "train_seconds": 905.0, "n_test_images": 99,
     "commit": "d" * 40 + "+dirty", "date": "2025-04-01", "machine": "2 cpus", "run_dir": "r", "config": {}},
    # a generator row from before --synthesis-styles
    {"benchmark": "generator", "dataset": "emps", "method": "generator_new_layouts", "k": "all", "seed": 0,
     "subset": "all", "dice": None, "f1_50": None, "pq": None, "cpu_seconds": 30.0, "train_seconds": 600.0,
     "n_test_images": 99, "commit": "e" * 40, "date": "2025-04-02", "machine": "2 cpus", "frechet_distance": 12.5,
     "n_real_patches": 512, "n_compared": 512, "feature_dim": 496},
    {"benchmark": "speed", "dataset": "simulated", "method": "attention_unet", "k": None, "seed": 0, "subset": "all",
     "dice": None, "f1_50": None, "pq": None, "cpu_seconds": 80.0, "train_seconds": None, "n_test_images": 1,
     "commit": None, "date": "2025-04-03", "machine": "2 cpus", "image_size": 2048, "inference_mpix_per_s": 1.1,
     "monai_inference_mpix_per_s": 0.85, "speed_ratio_vs_monai": 1.3, "peak_rss_mb": 900.0,
     "seg_train_s_per_iter": 2.5, "gan_train_s_per_iter": 3.1},
]


def test_migrate_results_converts_old_rows_once(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(OLD_ROWS + [{**OLD_ROWS[0], "f1_50": 0.63}]))  # a repeated key: the last one wins

    def migrate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "benchmarks" / "migrate_results.py"), *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    proc = migrate(str(old), str(new))
    assert proc.returncode == 0, proc.stderr
    assert "4 rows (5 converted, 0 already current, 1 repeated keys dropped)" in proc.stdout
    rows = read_rows(new)
    assert [check_row(r) for r in rows] == [[]] * 4
    by_method = {r["method"]: r for r in rows}
    unet = by_method["attention_unet"]
    assert unet["f1_50"] == 0.63 and unet["code_version"] == "c" * 40 and "commit" not in unet
    assert unet["kind"] == "segmentation" and unet["environment"] == {"cpu_count": 2}
    for name, value in OLD_ROWS[0].items():  # every number and note is kept as it was
        if name not in ("commit", "f1_50"):
            assert unet[name] == value, name
    sage = by_method["sage_gan"]
    assert sage["k"] == 8 and sage["code_version"] == "d" * 40 + "+dirty" and sage["pooled_f1_50"] is None
    fd = by_method["generator_new_layouts"]
    assert fd["kind"] == "frechet" and fd["synthesis_styles"] == "random" and fd["layouts"] == "new"
    assert fd["frechet_distance"] == 12.5
    speed = [r for r in rows if r["benchmark"] == "speed"][0]
    assert speed["kind"] == "speed" and speed["inference_mpix_per_s"] == 1.1

    # again, in place: nothing changes; an existing other file is not overwritten without --force
    assert migrate(str(new), str(new)).returncode == 0 and read_rows(new) == rows
    refused = migrate(str(old), str(new))
    assert refused.returncode != 0 and "--force" in refused.stderr

    # the summary reads the migrated file
    summary = _summarize(str(new), "--benchmark", "few_labels")
    assert summary.returncode == 0, summary.stderr
    assert "| few_labels | 8 | all | sage_gan | 1 | -0.030" in summary.stdout


# ------------------------------------------------------------------------------------ summary


def _summarize(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "summarize.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_summarize_reads_several_sittings_in_k_order(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([_seg_row("attention_unet", 16, 0.6), _seg_row("sage_gan", 16, 0.5)]))
    second.write_text(json.dumps([_seg_row("attention_unet", 4, 0.4), _seg_row("sage_gan", 4, 0.45),
                                  _seg_row("attention_unet", "all", 0.8)]))
    proc = _summarize(str(first), str(second))
    assert proc.returncode == 0, proc.stderr
    summary_lines = [line for line in proc.stdout.splitlines() if line.startswith("| few_labels | emps |")]
    assert [line.split(" | ")[2] for line in summary_lines] == ["4", "4", "16", "16", "all"]
    assert "| few_labels | 4 | all | sage_gan | 1 | +0.050" in proc.stdout
    assert "| few_labels | 16 | all | sage_gan | 1 | -0.100" in proc.stdout

    # The same row in two files is refused: the table could not say which it shows.
    proc = _summarize(str(first), str(first))
    assert proc.returncode != 0
    assert "few_labels/emps/attention_unet/16/0/all is also in" in proc.stderr


def test_summarize_gives_the_spread_over_seeds(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_seg_row("unet", 8, f1, seed) for seed, f1 in enumerate((0.5, 0.6, 0.7))]))
    proc = _summarize(str(path))
    assert proc.returncode == 0, proc.stderr
    assert "| few_labels | emps | 8 | all | unet | 3 | 0.600 ± 0.100 |" in proc.stdout
