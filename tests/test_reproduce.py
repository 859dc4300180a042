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

from stream.model import shipped_model_path
from tests.conftest import GTZAN_TABLES, REPO, genrestream_cmd, needs_shared

pytestmark = [needs_shared, pytest.mark.slow]

ACCURACY_TOLERANCE = 0.02
"""Absolute; the shipped block and track figures have a fold-to-fold standard deviation of 0.008."""

MIN_DECISION_AGREEMENT = 0.90
"""Share of the 2694 table rows on which the retrained and the shipped model pick the same genre."""


def test_train_and_export_reproduce_the_shipped_mlp(tmp_path):
    pytest.importorskip("tensorflow", reason="training needs the train extra: pip install -e '.[train]'")
    import onnxruntime as ort

    run_dir, onnx_path = tmp_path / "run", tmp_path / "gtzan_mlp.onnx"
    train = subprocess.run(genrestream_cmd("train", "--model", "gtzan-mlp", "--out-dir", str(run_dir), "--no-progress"),
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    export = subprocess.run(genrestream_cmd("export", "--model-dir", str(run_dir), "--out", str(onnx_path)),
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]

    shipped = json.loads(shipped_model_path("gtzan-mlp").with_suffix(".report.json").read_text())
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
    retrained, reference = run(onnx_path), run(shipped_model_path("gtzan-mlp"))
    agreement = float(np.mean(retrained.argmax(axis=1) == reference.argmax(axis=1)))
    assert agreement >= MIN_DECISION_AGREEMENT, f"retrained and shipped models agree on {agreement:.1%} of rows"


GENRE_CLIP_TOLERANCE = 0.07
"""Absolute, on the block-validated clip accuracy of the musicnn genre head: 4 of its 58 clips."""


def test_train_and_export_reproduce_the_shipped_musicnn_model(tmp_path):
    """genrestream train (heads on the shipped backbone, all shared audio) and export give the shipped model back."""
    pytest.importorskip("tensorflow", reason="training needs the train extra: pip install -e '.[train]'")
    import onnxruntime as ort

    from stream.frontends import logmel
    from tests.conftest import FREE_AUDIO
    from training.embeddings import decode

    run_dir, onnx_path = tmp_path / "run", tmp_path / "musicnn_msd.onnx"
    train = subprocess.run(genrestream_cmd("train", "--out-dir", str(run_dir), "--cache", str(tmp_path / "cache"),
                                           "--no-progress"), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "genre: 58 clips" in train.stdout, train.stdout
    export = subprocess.run(genrestream_cmd("export", "--model-dir", str(run_dir), "--out", str(onnx_path)),
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]

    shipped_path = shipped_model_path("musicnn-msd")
    shipped = json.loads(shipped_path.with_name("musicnn_msd.report.json").read_text())
    ours = json.loads(onnx_path.with_name("musicnn_msd.report.json").read_text())
    for head, tolerance in (("genre", GENRE_CLIP_TOLERANCE), ("content", 0.02)):
        assert ours["validation"][head]["calibrated"]["clip_accuracy"] == pytest.approx(
            shipped["validation"][head]["calibrated"]["clip_accuracy"], abs=tolerance), head

    x = np.concatenate([logmel.patches(decode(FREE_AUDIO / f), 48128)[0] for f in (
        "metal_el_senator_chaos_god.ogg", "jazz_kevin_macleod_vibe_ace.ogg", "country_karissa_hobbs_lets_go_fishin.ogg",
        "speech_librispeech_198-209-0000.ogg", "classical_brahms_hungarian_dance_5.ogg")])

    def run(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(zip(["probabilities", "content", "tags"], session.run(["probabilities", "content", "tags"],
                                                                           {"logmel": x})))
    retrained, reference = run(onnx_path), run(shipped_path)
    assert np.abs(retrained["tags"] - reference["tags"]).max() <= 1e-4  # the same backbone
    assert np.mean(retrained["content"].argmax(1) == reference["content"].argmax(1)) >= 0.97
    agreement = float(np.mean(retrained["probabilities"].argmax(1) == reference["probabilities"].argmax(1)))
    assert agreement >= MIN_DECISION_AGREEMENT - 0.05, f"genre heads agree on {agreement:.1%} of {len(x)} windows"
