"""The recipe: phase 1 -> phase 2 -> synthesis -> final segmenter, with budgets in steps."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_GAN, TINY_SEG


def _config(final="finetune", **extra):
    from sagegan.pipeline import Budget, RecipeConfig
    from sagegan.train_gan import GanTrainConfig
    from sagegan.train_seg import SegTrainConfig

    seg = SegTrainConfig(**{**TINY_SEG, "val_every": 4}, canonical_diameter_px=14.0, seed=0)
    return RecipeConfig(seg=seg, phase1=Budget(steps=8), gan=GanTrainConfig(**{**TINY_GAN, "val_every": 3}),
                        phase2=Budget(steps=6), n_synthetic=2, synthetic_layouts="new", synthetic_size=64,
                        final=final, final_budget=Budget(steps=4), **extra)


def _steps(run) -> int:
    return json.loads((run / "config.json").read_text())["steps"]


def test_recipe_runs_every_stage_for_exactly_its_steps(make_samples, tmp_path):
    from sagegan.pipeline import run_recipe
    from sagegan.runs import load_segmenter

    samples = make_samples(3, size=64)
    result = run_recipe(samples, samples[:1], tmp_path, _config(), progress=False)
    assert (result.phase1, result.gan, result.synthetic, result.final) == (
        tmp_path / "phase1", tmp_path / "gan", tmp_path / "synthetic", tmp_path / "finetuned")
    assert (_steps(result.phase1), _steps(result.gan), _steps(result.final)) == (8, 6, 4)
    assert len(list((result.synthetic / "images").glob("*.png"))) == 2
    assert set(result.seconds) == {"phase1", "gan", "synthesis", "final"}
    load_segmenter(result.final)  # the final run is a usable --model


def test_recipe_reuses_finished_runs_and_retrains_from_scratch(gan_run, tmp_path):
    from sagegan.pipeline import run_recipe

    gan_dir, samples = gan_run
    phase1_dir = json.loads((gan_dir / "config.json").read_text())["phase1_run"]
    result = run_recipe(samples, samples[:1], tmp_path, _config(final="retrain"), progress=False,
                        phase1_run=phase1_dir, gan_run=gan_dir)
    assert set(result.seconds) == {"synthesis", "final"}  # nothing retrained
    assert not (tmp_path / "phase1").exists() and not (tmp_path / "gan").exists()
    assert result.final == tmp_path / "retrained" and _steps(result.final) == 4


def test_deadline_caps_the_final_stage():
    from sagegan.pipeline import Budget, _final_budget

    cfg = _config(deadline_minutes=2.0)
    assert _final_budget(cfg, elapsed_s=90.0) == Budget(steps=4, minutes=0.5)
    # a deadline already spent still leaves the final stage one second, to validate and save once
    assert _final_budget(cfg, elapsed_s=500.0).minutes == pytest.approx(1 / 60)


def test_budgets_and_final_stage_are_checked():
    from sagegan.pipeline import Budget

    with pytest.raises(ValueError, match="at least one step"):
        Budget(steps=0)
    with pytest.raises(ValueError, match="positive number of minutes"):
        Budget(minutes=0)
    with pytest.raises(ValueError, match="final stage"):
        _config(final="polish")
