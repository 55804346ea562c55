"""benchmarks/run.py --quick: every benchmark runs, rows have the schema, a rerun skips them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "run.py"
DATA = Path(os.environ.get("SAGEGAN_DATA_ROOT", REPO / ".." / "shared" / "data"))

REQUIRED = ("benchmark", "dataset", "method", "k", "seed", "subset", "dice", "f1_50", "pq", "cpu_seconds",
            "train_seconds", "n_test_images", "commit", "date", "machine")
KEY = ("benchmark", "dataset", "method", "k", "seed", "subset")


def _run(out: Path, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_rows(rows: list[dict]) -> None:
    assert rows and isinstance(rows, list)
    keys = [tuple(str(r[k]) for k in KEY) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate row keys"
    for r in rows:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, (missing, r["benchmark"], r["method"])
        assert _finite(r["cpu_seconds"]) and r["cpu_seconds"] > 0
        assert r["date"] and r["machine"]
        if r.get("f1_50") is not None:  # a segmentation row
            for k in ("f1_50", "dice", "pq", "precision_50", "recall_50", "pooled_f1_50"):
                assert _finite(r[k]) and 0.0 <= r[k] <= 1.0, (k, r[k], r["method"])
            assert r["n_test_images"] >= 1 and _finite(r["train_seconds"])
            assert "config" in r and "run_dir" in r
            if r["method"] not in ("classical", "trtr", "tstr"):
                assert r["budget_minutes"] > 0 and r["budget_note"]
    by_bench = {}
    for r in rows:
        by_bench.setdefault(r["benchmark"], []).append(r)
    return by_bench


@pytest.mark.slow
def test_quick_benchmarks_on_simulated_data(tmp_path):
    """All five benchmarks on simulated data (no real data needed), then a rerun that skips them."""
    out = tmp_path / "bench"
    args = ["--simulated", "--budget-minutes", "0.1", "--max-test", "2", "--speed-size", "256"]
    _run(out, *args)
    rows = json.loads((out / "results.json").read_text())
    by_bench = _check_rows(rows)
    assert set(by_bench) == {"emps", "few_labels", "bam_tio2", "generator", "speed"}

    methods = {"classical", "unet", "attention_unet", "sage_gan", "sage_gan_retrain"}
    for bench in ("emps", "few_labels", "bam_tio2"):
        assert {r["method"] for r in by_bench[bench]} == methods, bench
    assert {r["subset"] for r in by_bench["emps"]} == {"all", "ordered", "ordered_or_partial"}
    assert {r["k"] for r in by_bench["few_labels"]} == {4}
    sage = next(r for r in by_bench["emps"] if r["method"] == "sage_gan_retrain" and r["subset"] == "all")
    assert set(sage["phase_seconds"]) == {"phase1", "phase2", "synthesis", "retrain"}
    assert sage["config"]["synthetic_layouts"] == "mixed"
    for r in by_bench["bam_tio2"]:
        assert "mean_diameter_error_nm" in r and "mean_diameter_error_rel" in r
    assert any(_finite(r["mean_diameter_error_nm"]) for r in by_bench["bam_tio2"])

    gen = {r["method"]: r for r in by_bench["generator"] if r["subset"] == "all"}
    for m in ("generator_real_layouts", "generator_new_layouts", "generator_mixed_layouts", "real_train_patches"):
        assert _finite(gen[m]["frechet_distance"]) and gen[m]["frechet_distance"] >= 0
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
    assert (out / "runs" / "simulated" / "kall_s0" / "sage_gan" / "generator.safetensors").exists()

    # A rerun finds every row in results.json and trains nothing.
    proc2 = _run(out, *args)
    assert "rows added in this run: 0" in proc2.stdout
    assert json.loads((out / "results.json").read_text()) == rows

    # The markdown summary for BENCHMARKS.md reads the same file.
    summary = subprocess.run([sys.executable, str(REPO / "benchmarks" / "summarize.py"), str(out / "results.json"),
                              "--benchmark", "few_labels"], capture_output=True, text=True, check=True).stdout
    assert "| few_labels | simulated | 4 | all | sage_gan_retrain | 1 |" in summary
    assert "| few_labels | 4 | all | sage_gan |" in summary  # paired with attention_unet

    # benchmarks/long_gan.py trains a copy of the k = all GAN run further and writes the same generator rows.
    source = out / "runs" / "simulated" / "kall_s0" / "sage_gan"
    source_steps = json.loads((source / "last_state.json").read_text())["step"]
    longer = tmp_path / "long"
    proc3 = subprocess.run([sys.executable, str(REPO / "benchmarks" / "long_gan.py"), "--quick", "--simulated",
                            "--from-out", str(out), "--out", str(longer), "--budget-minutes", "0.1", "--max-test", "2",
                            "--extra-minutes", "0.05", "--no-progress"],
                           capture_output=True, text=True, timeout=420, cwd=REPO)
    assert proc3.returncode == 0, proc3.stdout[-4000:] + proc3.stderr[-4000:]
    long_rows = json.loads((longer / "results.json").read_text())
    assert {r["method"] for r in long_rows} == {r["method"] for r in by_bench["generator"]}
    long_run = longer / "runs" / "simulated" / "kall_s0" / "sage_gan_long"
    assert json.loads((long_run / "last_state.json").read_text())["step"] > source_steps
    assert list(source.glob("eval_*.json")) and not list(long_run.glob("eval_*.json"))  # no stale test cache
    assert json.loads((source / "last_state.json").read_text())["step"] == source_steps  # the source is untouched

    # the generator benchmark with the style encoder and encoded styles: rows with their own names
    styled = tmp_path / "styled"
    _run(styled, *args, "--only", "generator", "--gan-style-encoder", "--synthesis-styles", "real")
    styled_rows = json.loads((styled / "results.json").read_text())
    assert {r["method"] for r in styled_rows} == {"generator_real_layouts_real_styles",
                                                  "generator_new_layouts_real_styles",
                                                  "generator_mixed_layouts_real_styles", "real_train_patches",
                                                  "tstr_real_styles", "trtr"}
    gan_dir = styled / "runs" / "simulated" / "kall_s0" / "sage_gan"
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
    rows = json.loads((out / "results.json").read_text())
    by_bench = _check_rows(rows)
    assert {r["dataset"] for r in rows} == {"emps", "bam_tio2"}
    emps = [r for r in by_bench["emps"] if r["subset"] == "all"]
    assert {r["method"] for r in emps} == {"classical", "attention_unet"}
    assert all(r["n_test_images"] == 2 for r in emps)
    assert {r["subset"] for r in by_bench["emps"]} >= {"all", "ordered"}
    (bam_classical,) = [r for r in by_bench["bam_tio2"] if r["method"] == "classical"]
    assert _finite(bam_classical["mean_diameter_error_nm"]) and _finite(bam_classical["true_mean_ecd_nm"])
    assert bam_classical["true_mean_ecd_nm"] > 10  # TiO2 particles are tens of nm across


def test_finished_runs_survive_a_config_field_added_later(tmp_path):
    """A run marked before ``precision`` existed stays done while precision is fp32, and only then."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import run as bench

    old = {"cfg": {"lr": 1e-4, "seed": 0}, "group": {"k": 8}}
    bench._mark(tmp_path, bench._fingerprint(old), wall_s=1.0)
    same = bench._fingerprint({"cfg": {"lr": 1e-4, "seed": 0, "precision": "fp32"}, "group": {"k": 8}})
    assert same != bench._fingerprint(old)  # the full fingerprint did change ...
    assert bench._done(tmp_path, same)["wall_s"] == 1.0  # ... but the finished run is still found
    bf16 = bench._fingerprint({"cfg": {"lr": 1e-4, "seed": 0, "precision": "bf16"}, "group": {"k": 8}})
    assert bench._done(tmp_path, bf16) is None
    other = bench._fingerprint({"cfg": {"lr": 2e-4, "seed": 0, "precision": "fp32"}, "group": {"k": 8}})
    assert bench._done(tmp_path, other) is None
    # a run marked with the field present is found by the same full fingerprint
    bench._mark(tmp_path, same, wall_s=2.0)
    assert bench._done(tmp_path, same)["wall_s"] == 2.0
    assert json.loads((tmp_path / bench.MARK).read_text())["fingerprint"] == str(same)
    # a later addition (style_encoder) keeps both older generations of marks valid
    same_cfg = {"lr": 1e-4, "seed": 0, "precision": "fp32"}
    weights = {"paired_l1": 25.0}
    with_weights = {"cfg": {**same_cfg, "weights": weights}, "group": {"k": 8}}
    bench._mark(tmp_path, bench._fingerprint(with_weights), wall_s=2.0)
    later_cfg = {**same_cfg, "style_encoder": False,
                 "weights": {**weights, "style_kl": 0.025, "latent_regression": 1.25}}
    later = {"cfg": later_cfg, "group": {"k": 8}}
    assert bench._done(tmp_path, bench._fingerprint(later))["wall_s"] == 2.0
    bench._mark(tmp_path, bench._fingerprint({"cfg": {**old["cfg"], "weights": weights}, "group": {"k": 8}}), wall_s=1.0)
    assert bench._done(tmp_path, bench._fingerprint(later))["wall_s"] == 1.0
    styled = {"cfg": {**later_cfg, "style_encoder": True}, "group": {"k": 8}}
    assert bench._done(tmp_path, bench._fingerprint(styled)) is None


def test_run_stamps_do_not_depend_on_how_out_is_named(tmp_path, monkeypatch):
    """A run built on another is found again whether --out was relative or absolute, and marks made
    with the older, path-as-given stamps stay valid when --out is named as it was then."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import run as bench

    run_dir = tmp_path / "out" / "runs" / "emps" / "kall_s0" / "phase1_half"
    run_dir.mkdir(parents=True)
    bench._mark(run_dir, "abc123", wall_s=5.0)
    monkeypatch.chdir(tmp_path)
    relative = bench.Trained(Path("out/runs/emps/kall_s0/phase1_half"), 5.0, 5.0, {}, "")
    absolute = bench.Trained(run_dir, 5.0, 5.0, {}, "")
    fp_relative, fp_absolute = (bench._fingerprint({"phase1": t.stamp, "n": 1}) for t in (relative, absolute))
    assert fp_relative == fp_absolute
    dependent = tmp_path / "dependent"
    dependent.mkdir()
    old_style = bench._fingerprint({"phase1": [str(relative.run_dir), "abc123", 5.0], "n": 1})
    bench._mark(dependent, old_style, wall_s=1.0)
    assert bench._done(dependent, fp_relative)["wall_s"] == 1.0
    assert bench._done(dependent, bench._fingerprint({"phase1": relative.stamp, "n": 2})) is None


def _summarize(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "summarize.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_summarize_reads_several_sittings_in_k_order(tmp_path):
    def row(method, k, f1):
        return {"benchmark": "few_labels", "dataset": "emps", "method": method, "k": k, "seed": 0,
                "subset": "all", "f1_50": f1, "dice": f1, "pq": f1, "train_seconds": 1.0, "train_cpu_seconds": 1.0}

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([row("attention_unet", 16, 0.6), row("sage_gan", 16, 0.5)]))
    second.write_text(json.dumps([row("attention_unet", 4, 0.4), row("sage_gan", 4, 0.45),
                                  row("attention_unet", "all", 0.8)]))
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
