"""`sagegan demo --quick`: the whole pipeline end to end on simulator data."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quick_demo_runs_every_stage(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sagegan", "demo", "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "report:" in res.stdout and "F1@0.5" in res.stdout
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and 'src="http' not in html
    for part in ("phase1/segmenter.safetensors", "gan/generator.safetensors", "finetuned/segmenter.safetensors",
                 "synthetic/synthesis.json", "analysis/summary.json", "analysis/report.html", "demo_config.json"):
        assert (tmp_path / part).exists(), part
    summary = json.loads((tmp_path / "analysis" / "summary.json").read_text())
    assert summary["batch"]["n_particles"] > 0
