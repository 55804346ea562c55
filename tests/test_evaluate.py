"""`sagegan evaluate`: pairing prediction and truth folders, and the written tables."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from sagegan.evaluate import evaluate_folders
from sagegan.io import InputError, write_labels


def _write(tmp_path, n=2):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    for i in range(n):
        labels = np.zeros((32, 32), np.uint16)
        labels[2:10, 2:10] = 1
        labels[12:20, 12:20] = 2
        truth.mkdir(exist_ok=True)
        iio.imwrite(truth / f"im{i}.png", labels)
        p = labels.copy()
        if i == 1:
            p[p == 2] = 0  # one particle missed
        write_labels(pred / f"im{i}_labels.tif", p)
        iio.imwrite(pred / f"im{i}_overlay.png", np.zeros((32, 32, 3), np.uint8))  # ignored
    return pred, truth


def test_evaluate_folders(tmp_path):
    pred, truth = _write(tmp_path)
    table, summary = evaluate_folders(pred, truth)
    assert list(table["image"]) == ["im0", "im1"]
    assert table["f1_50"].tolist() == pytest.approx([1.0, 2 / 3])
    assert summary["pooled"]["f1_50"] == pytest.approx(2 * 3 / (2 * 3 + 1))


def test_missing_prediction_is_named(tmp_path):
    pred, truth = _write(tmp_path)
    (pred / "im1_labels.tif").unlink()
    (tmp_path / "split.txt").write_text("im0\nim1\n")
    with pytest.raises(InputError, match="no prediction for 1 image.*im1"):
        evaluate_folders(pred, truth, tmp_path / "split.txt")


def test_cli_evaluate_writes_json_and_csv(tmp_path):
    pred, truth = _write(tmp_path)
    res = subprocess.run([sys.executable, "-m", "sagegan", "evaluate", "--pred", str(pred), "--truth", str(truth),
                          "--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "m.csv")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["headline"]["n_images"] == 2 and len(data["images"]) == 2
    assert "mean_f1_50" in res.stdout and (tmp_path / "m.csv").exists()
