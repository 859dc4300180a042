"""The split musicnn model (each frame's front end once) against the whole model, on real audio through the engine."""

from __future__ import annotations

import asyncio
import logging
import shutil

import numpy as np
import pytest

from stream.engine import Engine
from stream.framestage import stage_paths
from stream.model import GenreModel, shipped_model_path
from stream.publishers import CollectingPublisher
from stream.sources import AVSource, SourceGap
from tests.conftest import FREE_AUDIO, needs_shared

pytestmark = needs_shared

FILES = [FREE_AUDIO / f for f in ("metal_el_senator_armygeddon.ogg", "jazz_kevin_macleod_vibe_ace.ogg",
                                  "drumandbass_admiral_bob_choice.ogg")]


class GapSource(AVSource):
    """A file with a gap (a lost stretch, as a reconnect reports it) after ``gap_after_s`` of audio."""

    def __init__(self, path: str, gap_after_s: float) -> None:
        super().__init__(path)
        self.gap_after_s = gap_after_s

    def blocks(self, sample_rate: int):
        sent, gapped = 0, False
        for block in super().blocks(sample_rate):
            yield block
            if isinstance(block, np.ndarray):
                sent += block.shape[0]
                if not gapped and sent >= self.gap_after_s * sample_rate:
                    gapped = True
                    yield SourceGap(2.0, "test gap")


@pytest.fixture(scope="module")
def models():
    split, whole = GenreModel("musicnn-msd", frame_stage=True), GenreModel("musicnn-msd", frame_stage=False)
    assert split.stages is not None, "the shipped musicnn model should come with its frame and window stages"
    assert whole.stages is None
    return split, whole


def _events(model, hop_s=None):
    collector = CollectingPublisher()
    engine = Engine(model, [collector], hop_s=hop_s)
    for i, f in enumerate(FILES):
        engine.add(AVSource(str(f)), f"s{i}")
    engine.add(GapSource(str(FILES[0]), gap_after_s=9.0), "gap")
    summaries = asyncio.run(engine.run())
    assert all(s.state == "ended" for s in summaries.values()), summaries
    return collector.events


def _by_stream(events, kind):
    out: dict[str, list] = {}
    for e in events:
        if e["type"] == kind:
            out.setdefault(e["stream"], []).append(e)
    return out


@pytest.mark.parametrize("hop_s", [None, 0.5])
def test_split_model_gives_the_whole_models_events(models, hop_s):
    split, whole = models
    reused_before = split.stages.frames_reused
    got, expected = _events(split, hop_s), _events(whole, hop_s)
    # the test means something only if frames were reused, across every stream
    assert split.stages.frames_reused - reused_before > 0
    got_p, expected_p = _by_stream(got, "prediction"), _by_stream(expected, "prediction")
    assert sorted(got_p) == sorted(expected_p) == ["gap", "s0", "s1", "s2"]
    worst = 0.0
    for stream in expected_p:
        a, b = got_p[stream], expected_p[stream]
        assert [e["stream_time_s"] for e in a] == [e["stream_time_s"] for e in b]
        for x, y in zip(a, b):
            for field in ("probabilities", "content"):
                worst = max(worst, max(abs(x[field][k] - y[field][k]) for k in y[field]))
            assert [t for t, _ in x["tags"]] == [t for t, _ in y["tags"]] or \
                max(abs(p - q) for (_, p), (_, q) in zip(x["tags"], y["tags"])) < 1e-4
            assert (x["genre"], x["smoothed"]) == (y["genre"], y["smoothed"])
    # float rounding only: the same values up to the 6 decimals events carry
    assert worst <= 2e-6, worst
    changes = lambda evs: {s: [(e["genre"], e["onset_s"]) for e in v] for s, v in _by_stream(evs, "genre_change").items()}
    assert changes(got) == changes(expected)


def test_stages_of_another_file_are_ignored(tmp_path, caplog):
    """A model file edited after the split (here: different bytes) must not use stages that are not its own."""
    whole = shipped_model_path("musicnn-msd")
    copy = tmp_path / "edited.onnx"
    copy.write_bytes(whole.read_bytes() + b"")  # same bytes first: the stages belong to it
    for src, dst in zip(stage_paths(whole), stage_paths(copy)):
        shutil.copy(src, dst)
    assert GenreModel(copy, frame_stage=True).stages is not None
    import onnx

    proto = onnx.load(str(copy))
    proto.doc_string = "edited"
    onnx.save(proto, str(copy))
    with caplog.at_level(logging.WARNING, logger="stream.model"):
        model = GenreModel(copy, frame_stage=True)
    assert model.stages is None
    assert "split from another file" in caplog.text


def test_export_split_reproduces_the_shipped_stages(tmp_path):
    pytest.importorskip("onnx")
    from export.split import split_model

    whole = shipped_model_path("musicnn-msd")
    copy = tmp_path / whole.name
    shutil.copy(whole, copy)
    model = GenreModel("musicnn-msd", frame_stage=False)
    import librosa

    y, _ = librosa.load(str(FILES[1]), sr=model.info.sample_rate, duration=8.0)
    windows = np.stack([model.frontend.window_input(y[i: i + model.info.window_length]) for i in (0, 16128, 32256)])
    report = split_model(copy, windows)
    assert report["context_frames"] == 3 and report["max_abs_diff"] <= 1e-4
    assert report["pooled_before_affine"] == {"frames": 2, "windows": 3}  # the 2 timbral and 3 temporal branches
    for shipped, made in zip(stage_paths(whole), stage_paths(copy)):
        assert made.read_bytes() == shipped.read_bytes(), f"{made.name} differs from the shipped {shipped.name}"


@pytest.mark.parametrize("plain_weights", [True, False])
def test_pool_before_affine_gives_the_same_values(plain_weights):
    """Conv → Relu → BatchNormalization (scales of both signs) → MaxPool over all of frequency, rewritten to pool
    first: the same outputs, and no MaxPool left. ``plain_weights=False`` gives the convolution its weights through
    an Identity (as a quantized model's DequantizeLinear does), which takes the ReduceMax/ReduceMin path."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.split import pool_before_affine

    rng = np.random.default_rng(3)
    channels, width = 6, 9
    scale = np.array([1.5, -0.7, 0.2, -2.0, 1.0, -0.1], dtype=np.float32)  # negative scales need the minimum
    tensors = {"w": rng.standard_normal((channels, 1, 3, 4)).astype(np.float32),
               "b": rng.standard_normal(channels).astype(np.float32), "scale": scale,
               "bias": rng.standard_normal(channels).astype(np.float32),
               "mean": rng.standard_normal(channels).astype(np.float32),
               "var": rng.random(channels).astype(np.float32) + 0.5}
    nodes = [helper.make_node("Identity", ["w"], ["w_dq"])] if not plain_weights else []
    nodes += [helper.make_node("Conv", ["x", "w" if plain_weights else "w_dq", "b"], ["c"], pads=[1, 0, 1, 0]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("BatchNormalization", ["r", "scale", "bias", "mean", "var"], ["n"]),
              helper.make_node("MaxPool", ["n"], ["y"], kernel_shape=[1, width - 3], strides=[1, width - 3])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, "t", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", channels, "t", 1])],
                              [numpy_helper.from_array(v, k) for k, v in tensors.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((2, 1, 11, width)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = run(model)
    assert pool_before_affine(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "MaxPool" not in ops and "ReduceMax" in ops and ("ReduceMin" in ops) != plain_weights, ops
    got = run(model)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5
