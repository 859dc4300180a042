"""The engine on real audio with both shipped models: incremental vs batch frontends, batching, worker processes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stream.engine import Engine
from stream.model import GenreModel
from stream.publishers import CollectingPublisher
from stream.sources import AVSource
from tests.conftest import FREE_AUDIO, needs_shared, window_ends_s

pytestmark = needs_shared

CLIP = FREE_AUDIO / "drumandbass_admiral_bob_choice.ogg"  # 25 s


@pytest.fixture(scope="module", params=["musicnn-msd", "gtzan-mlp"])
def model(request):
    return GenreModel(request.param)



def _run(model, files, **kwargs):
    collector = CollectingPublisher()
    engine = Engine(model, [collector], **kwargs)
    for i, f in enumerate(files):
        engine.add(AVSource(str(f)), f"s{i}")
    summaries = asyncio.run(engine.run())
    return engine, collector.events, summaries


def _predictions(events, stream="s0"):
    return [e for e in events if e["type"] == "prediction" and e["stream"] == stream]


def test_incremental_and_batch_features_agree_through_the_engine(model):
    """Same windows, same stream times; the model's probabilities barely move."""
    _, inc_events, _ = _run(model, [CLIP], features="incremental")
    _, batch_events, _ = _run(model, [CLIP], features="batch")
    inc, batch = _predictions(inc_events), _predictions(batch_events)
    assert [p["stream_time_s"] for p in inc] == [p["stream_time_s"] for p in batch] == window_ends_s(model, CLIP)
    labels = model.labels
    p_inc = np.array([[p["probabilities"][k] for k in labels] for p in inc])
    p_batch = np.array([[p["probabilities"][k] for k in labels] for p in batch])
    assert np.abs(p_inc - p_batch).max() < 0.1
    agreement = np.mean(p_inc.argmax(axis=1) == p_batch.argmax(axis=1))
    assert agreement >= 0.9, agreement


def test_many_streams_run_through_one_batcher(model):
    files = [FREE_AUDIO / f for f in ("drumandbass_admiral_bob_choice.ogg", "metal_el_senator_chaos_god.ogg",
                                      "jazz_kevin_macleod_vibe_ace.ogg", "electronic_singularity_nebula.ogg")]
    engine, events, summaries = _run(model, files)
    assert all(s.state == "ended" for s in summaries.values())
    batches = engine.metrics.batch_size.collect()[0].samples
    count = next(s.value for s in batches if s.name.endswith("_count"))
    total = next(s.value for s in batches if s.name.endswith("_sum"))
    windows = sum(s.windows for s in summaries.values())
    assert total == windows == sum(len(window_ends_s(model, f)) for f in files)
    assert 0 < count <= windows
    if model.stages is not None:  # split, on the CPU: one window per call (calls == windows), however many are ready
        assert count == windows, (count, windows)


def test_windows_ready_in_the_same_tick_go_in_one_batch(model):
    """The batcher's promise, without timing luck: whatever is submitted in one tick is one call."""
    from stream.engine import InferenceBatcher
    from stream.metrics import EngineMetrics

    rows = np.random.default_rng(0).uniform(0, 2, size=(10, *model.frontend.input_shape)).astype(np.float32)

    async def main():
        batcher = InferenceBatcher(model, max_batch=16, metrics=EngineMetrics(lambda: ()))
        try:
            together = await asyncio.gather(*(batcher.predict(r) for r in rows))
            alone = await batcher.predict(rows[0])
        finally:
            await batcher.close()
        return batcher, together, alone

    batcher, together, alone = asyncio.run(main())
    assert (batcher.batches, batcher.rows) == (2, 11)
    # the batcher runs the split stages, model.predict(rows) the whole model: float rounding apart
    np.testing.assert_allclose(np.stack([t["genre"] for t in together]), model.predict(rows)["genre"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(alone["genre"], together[0]["genre"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [({"hop_s": 0}, "hop_s"), ({"features": "magic"}, "features")])
def test_bad_engine_settings_are_named(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Engine(model, **kwargs)


def test_duplicate_stream_ids_are_refused(model):
    engine = Engine(model)
    engine.add(AVSource(str(CLIP)), "a")
    with pytest.raises(ValueError, match="already in use"):
        engine.add(AVSource(str(CLIP)), "a")


def test_feature_processes_give_the_same_events_as_threads(model):
    """Extractors in worker processes (one engine on every core) compute exactly what threads do."""
    files = [CLIP, FREE_AUDIO / "jazz_solo_trumpet_loop.ogg"]
    _, threaded, _ = _run(model, files)
    engine, pooled, summaries = _run(model, files, feature_processes=2)
    assert all(s.state == "ended" for s in summaries.values())
    for stream in ("s0", "s1"):
        a, b = _predictions(threaded, stream), _predictions(pooled, stream)
        assert len(a) == len(b) > 0
        assert [(p["stream_time_s"], p["probabilities"]) for p in a] == [(p["stream_time_s"], p["probabilities"]) for p in b]
    assert engine._process_pool is None, "worker processes are stopped when the engine ends"


def test_bad_feature_processes_is_named(model):
    with pytest.raises(ValueError, match="feature_processes"):
        Engine(model, feature_processes=-1)


def test_batch_caps_follow_the_model(model):
    """On the CPU a split model gets one window per call (batches buy it nothing and grow ONNX Runtime's arena);
    a whole model at most MAX_BATCH."""
    from stream.engine import MAX_BATCH, max_batch_for

    assert model.provider == "CPUExecutionProvider"
    assert max_batch_for(model) == (1 if model.stages is not None else MAX_BATCH)
