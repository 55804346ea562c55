"""sagegan segment on Dask workers: the outputs of a serial run, the same failure policy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import simulated_samples

from sagegan.io import BatchError, read_mask, write_image

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster_in")
    for s in simulated_samples(4, seed=20):
        write_image(folder / f"{s.stem}.png", s.image)
    return folder


def _outputs(folder):
    config = json.loads((folder / "segment_config.json").read_text())
    manifest = json.loads((folder / "segment_manifest.json").read_text())
    labels = {p.name: read_mask(p) for p in sorted(folder.glob("*_labels.tif"))}
    return config, manifest, labels, (folder / "particles.csv").read_text()


def test_two_local_workers_give_the_serial_outputs(seg_run, inputs, tmp_path):
    from sagegan.infer import segment_files

    model, _ = seg_run
    segment_files([inputs], model, tmp_path / "serial", progress=False)
    segment_files([inputs], model, tmp_path / "dask", progress=False, workers=2)
    serial, dask = _outputs(tmp_path / "serial"), _outputs(tmp_path / "dask")
    assert len(serial[2]) == 4 and serial[2].keys() == dask[2].keys()
    for name in serial[2]:
        np.testing.assert_array_equal(serial[2][name], dask[2][name])
    assert serial[3] == dask[3]  # particles.csv, rows in input order
    assert serial[1]["images"].keys() == dask[1]["images"].keys()
    assert [im["image"] for im in serial[0]["images"]] == [im["image"] for im in dask[0]["images"]]
    assert dask[0]["dask"] == {"workers": 2, "scheduler": None}


def test_a_bad_image_on_a_worker_is_one_line_and_the_others_finish(seg_run, inputs, tmp_path):
    from sagegan.infer import segment_files

    model, _ = seg_run
    folder = tmp_path / "in"
    folder.mkdir()
    for p in inputs.glob("*.png"):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    lines = []
    with pytest.raises(BatchError) as failed:
        segment_files([folder], model, tmp_path / "out", progress=False, workers=2, report=lines.append)
    assert [f.name for f in failed.value.failures] == [str(folder / "broken.png")]
    assert any("broken.png" in line for line in lines)
    manifest = json.loads((tmp_path / "out" / "segment_manifest.json").read_text())
    assert sorted(manifest["images"]) == ["sim0", "sim1", "sim2", "sim3"]  # the failed image is not recorded


def test_workers_and_scheduler_together_are_refused(seg_run, inputs, tmp_path):
    from sagegan.infer import segment_files

    with pytest.raises(ValueError, match="not both"):
        segment_files([inputs], seg_run[0], tmp_path / "x", progress=False, workers=2, scheduler="tcp://h:1")
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_analyze_on_two_workers_gives_the_serial_report(seg_run, inputs, tmp_path):
    from sagegan.infer import segment_files
    from sagegan.report import analyze_labels

    segment_files([inputs], seg_run[0], tmp_path / "seg", progress=False)
    serial = analyze_labels(tmp_path / "seg", tmp_path / "serial")
    dask = analyze_labels(tmp_path / "seg", tmp_path / "dask", workers=2)
    assert json.dumps(serial, sort_keys=True) == json.dumps(dask, sort_keys=True)
    assert (tmp_path / "serial" / "particles.csv").read_text() == (tmp_path / "dask" / "particles.csv").read_text()
