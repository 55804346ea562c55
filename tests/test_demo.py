"""`sagegan demo`: the whole pipeline end to end on simulator data, and its parts."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quick_demo_runs_every_stage_for_its_steps(tmp_path):
    from sagegan.demo import QUICK

    res = subprocess.run([sys.executable, "-m", "sagegan", "demo", "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "report:" in res.stdout and "F1@0.5" in res.stdout
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8 and 'src="http' not in html
    for part in ("phase1/segmenter.safetensors", "gan/generator.safetensors", "finetuned/segmenter.safetensors",
                 "synthetic/synthesis.json", "analysis/summary.json", "analysis/report.html", "demo_config.json"):
        assert (tmp_path / part).exists(), part
    # fixed in steps, whatever the machine's load
    for run, steps in (("phase1", QUICK.seg_steps), ("gan", QUICK.gan_steps), ("finetuned", QUICK.finetune_steps)):
        assert json.loads((tmp_path / run / "config.json").read_text())["steps"] == steps, run
    for caption in ("phase 1: validation F1@0.5 and Dice", "sample grid at step", "phase 2: validation F1@0.5",
                    "missed (orange)", "5. Bundled general model"):
        assert caption in html, caption
    summary = json.loads((tmp_path / "analysis" / "summary.json").read_text())
    assert summary["batch"]["n_particles"] > 0


def test_recipe_budgets_are_steps_with_a_time_cap_only_as_a_safety_net():
    from sagegan.demo import QUICK, DemoBudget, recipe_config

    for budget in (DemoBudget(), QUICK):
        cfg = recipe_config(budget, seed=3)
        assert (cfg.phase1.steps, cfg.phase2.steps, cfg.final_budget.steps) == (
            budget.seg_steps, budget.gan_steps, budget.finetune_steps)
        assert cfg.phase1.minutes == cfg.phase2.minutes == cfg.final_budget.minutes == budget.max_minutes
        assert cfg.seg.seed == cfg.gan.seed == cfg.synthesis_seed == 3
        # the last GAN step validates and writes the sample grid the report shows
        assert budget.gan_steps % cfg.gan.sample_every == 0 and budget.gan_steps % cfg.gan.val_every == 0
    full = DemoBudget()
    assert QUICK.seg_steps < full.seg_steps and QUICK.gan_steps < full.gan_steps


def test_kept_phase1_reads_the_best_validation_step(tmp_path):
    from sagegan.demo import kept_phase1

    (tmp_path / "config.json").write_text(json.dumps({"best_validation": {"step": 0, "f1_50": 0.9}}))
    assert kept_phase1(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"best_validation": {"step": 30, "f1_50": 0.9}}))
    assert not kept_phase1(tmp_path)


def test_bundled_model_absent_is_one_line(monkeypatch):
    import sagegan.runs
    from sagegan.demo import bundled_model
    from sagegan.io import InputError

    def none(model):
        raise InputError("no bundled general model")

    monkeypatch.setattr(sagegan.runs, "resolve_model", none)
    folder, line = bundled_model()
    assert folder is None and "no bundled general model" in line and "\n" not in line


def test_bundled_model_is_scored_on_the_held_out_images(seg_run, monkeypatch, tmp_path, make_data_folder):
    import sagegan.runs
    from sagegan.demo import bundled_model, score_heldout

    seg_dir, samples = seg_run
    monkeypatch.setattr(sagegan.runs, "resolve_model", lambda model: seg_dir)
    folder, line = bundled_model()
    assert folder == seg_dir and "no training" in line
    held_dir = make_data_folder(samples[:2], tmp_path / "held") / "images"
    scores = score_heldout(folder, samples[:2], held_dir, tmp_path / "pred")
    assert [p.name for p in scores["labels"]] == ["sim0_labels.tif", "sim1_labels.tif"]
    assert all(p.exists() for p in scores["labels"])
    assert scores["mean_f1_50"] is not None and 0 <= scores["mean_f1_50"] <= 1
