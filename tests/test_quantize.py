"""The int8 musicnn model: built with ONNX Runtime's static quantization, checked against float32 on real audio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stream.engine import Engine
from stream.model import GenreModel
from stream.publishers import CollectingPublisher
from stream.sources import AVSource
from tests.conftest import FREE_AUDIO, SHARED, needs_shared

pytestmark = needs_shared

CLIPS = [FREE_AUDIO / f for f in ("metal_el_senator_armygeddon.ogg", "jazz_kevin_macleod_vibe_ace.ogg",
                                  "country_karissa_hobbs_lets_go_fishin.ogg", "classical_brahms_hungarian_dance_5.ogg")]


def _predictions(model):
    collector = CollectingPublisher()
    engine = Engine(model, [collector])
    for i, f in enumerate(CLIPS):
        engine.add(AVSource(str(f)), f"s{i}")
    asyncio.run(engine.run())
    return {(e["stream"], e["stream_time_s"]): e for e in collector.events if e["type"] == "prediction"}


def test_shipped_int8_model_decides_as_the_float_model():
    """Tolerance: int8 moves probabilities by up to ~0.03 (ONNX Runtime's kernels and calibration vary by
    version), so near-ties may flip a window's top genre; the smoothed state must hardly ever differ."""
    int8, fp32 = GenreModel("musicnn-msd-int8"), GenreModel("musicnn-msd")
    assert int8.info.tag.endswith("-int8") and int8.stages is not None
    a, b = _predictions(int8), _predictions(fp32)
    assert sorted(a) == sorted(b) and len(a) > 100
    top1 = np.mean([a[k]["genre"] == b[k]["genre"] for k in a])
    smoothed = np.mean([a[k]["smoothed"] == b[k]["smoothed"] for k in a])
    worst = max(abs(a[k]["probabilities"][g] - b[k]["probabilities"][g]) for k in a for g in fp32.labels)
    assert top1 >= 0.95, top1
    assert smoothed >= 0.97, smoothed
    assert worst < 0.15, worst


def test_quantize_musicnn_uses_int8_kernels_and_keeps_the_answers(tmp_path):
    pytest.importorskip("onnx")
    from export.quantize import quantize_musicnn, windows_of

    parity = sorted((SHARED / "audio" / "gtzan-parity").glob("*.*"))
    extra = sorted((SHARED / "audio" / "gtzan-extra").glob("*.*"))
    calibration, check = windows_of(parity[:3]), windows_of(extra[:4])
    out = tmp_path / "int8.onnx"
    with pytest.raises(ValueError, match="calibration_windows"):
        quantize_musicnn(GenreModel("musicnn-msd").path, out, calibration[:, :, :90])
    report = quantize_musicnn(GenreModel("musicnn-msd").path, out, calibration, check_windows=check)
    assert report["qlinearconv_nodes"] == 2, report  # ONNX Runtime runs the two timbral convs as int8
    assert report["top1_agreement"] >= 0.9 and report["content_agreement"] >= 0.95, report
    assert GenreModel(out).info.labels == GenreModel("musicnn-msd").info.labels
