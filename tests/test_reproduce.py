"""`genrestream train` and `genrestream export`, through the console script, reproduce the shipped model."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from stream.model import default_model_path
from tests.conftest import GTZAN_TABLES, REPO, genrestream_cmd, needs_shared

pytestmark = [needs_shared, pytest.mark.slow]


def test_train_and_export_reproduce_the_shipped_model(tmp_path):
    pytest.importorskip("tensorflow", reason="training needs the train extra: pip install -e '.[train]'")
    import onnxruntime as ort

    run_dir, onnx_path = tmp_path / "run", tmp_path / "gtzan_mlp.onnx"
    train = subprocess.run(genrestream_cmd("train", "--out-dir", str(run_dir), "--no-progress"),
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    export = subprocess.run(genrestream_cmd("export", "--model-dir", str(run_dir), "--out", str(onnx_path)),
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]

    shipped = json.loads(default_model_path().with_suffix(".report.json").read_text())
    ours = json.loads((run_dir / "report.json").read_text())
    for scheme in ("track", "block"):
        assert ours["validation"][scheme]["accuracy"] == shipped["validation"][scheme]["accuracy"], scheme

    import csv

    from stream.frontends.gtzan import FEATURE_NAMES

    with open(GTZAN_TABLES / "features_10_sec.csv", newline="") as f:
        x = np.array([[float(r[c]) for c in FEATURE_NAMES] for r in csv.DictReader(f)], dtype=np.float32)
    def run(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"features": x})[0]
    assert np.abs(run(onnx_path) - run(default_model_path())).max() <= 1e-5
