"""`genrestream train` and `genrestream export`, through the console script, reproduce the shipped model.

Training is not bit-reproducible across package versions (a fresh ``.venv``
resolves TensorFlow, Keras and NumPy as they are that day: 0.7728 against the
shipped 0.7713 was seen), so what must hold is stated with tolerances: the
validation accuracies within ACCURACY_TOLERANCE of the shipped report, and the
retrained model deciding as the shipped one on almost every table row.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from stream.model import default_model_path
from tests.conftest import GTZAN_TABLES, REPO, genrestream_cmd, needs_shared

pytestmark = [needs_shared, pytest.mark.slow]

ACCURACY_TOLERANCE = 0.02
"""Absolute; the shipped block and track figures have a fold-to-fold standard deviation of 0.008."""

MIN_DECISION_AGREEMENT = 0.90
"""Share of the 2694 table rows on which the retrained and the shipped model pick the same genre."""


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
        assert ours["validation"][scheme]["accuracy"] == pytest.approx(
            shipped["validation"][scheme]["accuracy"], abs=ACCURACY_TOLERANCE), scheme

    import csv

    from stream.frontends.gtzan import FEATURE_NAMES

    with open(GTZAN_TABLES / "features_10_sec.csv", newline="") as f:
        x = np.array([[float(r[c]) for c in FEATURE_NAMES] for r in csv.DictReader(f)], dtype=np.float32)
    def run(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"features": x})[0]
    retrained, reference = run(onnx_path), run(default_model_path())
    agreement = float(np.mean(retrained.argmax(axis=1) == reference.argmax(axis=1)))
    assert agreement >= MIN_DECISION_AGREEMENT, f"retrained and shipped models agree on {agreement:.1%} of rows"
