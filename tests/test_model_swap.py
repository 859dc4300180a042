"""Model hot-swap: in the engine (set_model while streams run) and through `genrestream run` (control, SIGHUP)."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from stream.engine import Engine
from stream.model import GenreModel
from stream.publishers import CollectingPublisher
from stream.sources import AVSource
from tests.conftest import FREE_AUDIO, needs_shared
from tests.test_control import _env, running

pytestmark = needs_shared

FILES = [FREE_AUDIO / "drumandbass_admiral_bob_choice.ogg", FREE_AUDIO / "metal_el_senator_armygeddon.ogg"]


@pytest.fixture(scope="module")
def models():
    return GenreModel("musicnn-msd"), GenreModel("gtzan-mlp")


class SwapAfter(CollectingPublisher):
    """Swaps the engine's model once stream s0 has had ``n`` predictions (from inside the event loop)."""

    def __init__(self, n: int, model) -> None:
        super().__init__()
        self.n, self.model, self.engine = n, model, None

    def publish(self, event) -> None:
        super().publish(event)
        if self.model is not None and event["type"] == "prediction" and event["stream"] == "s0":
            self.n -= 1
            if self.n == 0:
                self.engine.set_model(self.model)
                self.model = None


def _run(first, second, after: int):
    publisher = SwapAfter(after, second)
    engine = Engine(first, [publisher])
    publisher.engine = engine
    for i, f in enumerate(FILES):
        engine.add(AVSource(str(f)), f"s{i}")
    summaries = asyncio.run(engine.run())
    return publisher.events, summaries


@pytest.mark.parametrize("direction", ["musicnn-to-mlp", "musicnn-to-musicnn"])
def test_a_swapped_model_takes_over_without_dropping_a_stream(models, direction):
    musicnn, mlp = models
    second = mlp if direction == "musicnn-to-mlp" else GenreModel("musicnn-msd", frame_stage=False)
    events, summaries = _run(musicnn, second, after=5)
    assert all(s.state == "ended" and s.detail == "end of stream" for s in summaries.values()), summaries
    for stream in ("s0", "s1"):
        mine = [e for e in events if e.get("stream") == stream]
        swaps = [i for i, e in enumerate(mine) if e["type"] == "status" and e.get("model")]
        assert len(swaps) == 1, [e for e in mine if e["type"] == "status"]
        assert mine[swaps[0]]["model"] == second.info.tag
        before = [e for e in mine[: swaps[0]] if e["type"] == "prediction"]
        after = [e for e in mine[swaps[0]:] if e["type"] == "prediction"]
        assert before and after, (len(before), len(after))
        times = [e["stream_time_s"] for e in before + after]
        assert times == sorted(times) and len(set(times)) == len(times)
        if second is mlp:  # the 57-feature model: 10 s windows of 22050 Hz audio, no tags
            assert all("tags" in e for e in before) and not any("tags" in e for e in after)
            # its first window ends a full 10 s window after the change-over: windows start afresh
            assert after[0]["stream_time_s"] - before[-1]["stream_time_s"] >= mlp.info.window_s - 1.5
        else:  # the same frontend: the windows go on, one hop apart, across the swap
            assert round(after[0]["stream_time_s"] - before[-1]["stream_time_s"], 3) == round(63 * 256 / 16000, 3)
    # the audio is all there: the last window ends within one hop + a window of the end of each file
    last = max(e["stream_time_s"] for e in events if e["type"] == "prediction" and e["stream"] == "s1")
    assert last >= summaries["s1"].audio_s - (second.info.window_s + 1.1)


def test_control_swaps_the_model_refuses_a_bad_one_and_sighup_reloads(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    with running(tmp_path, "--loop", "--realtime", "--control-allow-files", str(FILES[0]), "--name", "radio",
                 env=_env()) as (client, output):
        first = client.until(lambda e: e["type"] == "prediction" and e["stream"] == "radio")
        assert "tags" in first  # musicnn-msd, the default
        reply = client.control(action="model", path=str(bad))
        assert reply["ok"] is False and "still classifying with musicnn-msd" in reply["detail"], reply
        client.until(lambda e: e["type"] == "prediction" and e["stream"] == "radio")  # the old model goes on
        reply = client.control(action="model", path="gtzan-mlp")
        assert reply["ok"] is True, reply
        swapped = client.until(lambda e: e["type"] == "status" and e.get("model"))
        assert swapped["model"].startswith("gtzan-mlp@") and swapped["stream"] == "radio"
        after = client.until(lambda e: e["type"] == "prediction" and e["stream"] == "radio", timeout_s=30)
        assert "tags" not in after
        output["proc"].send_signal(signal.SIGHUP)  # reload --model: the default, musicnn-msd
        back = client.until(lambda e: e["type"] == "status" and e.get("model"), timeout_s=60)
        assert back["model"].startswith("musicnn-msd@")
        again = client.until(lambda e: e["type"] == "prediction" and e["stream"] == "radio", timeout_s=30)
        assert "tags" in again
        assert not any(json.loads(t).get("state") in ("ended", "failed") for t in client.raw
                       if json.loads(t).get("type") == "status")
    assert "refused, keeping musicnn-msd" in output["stderr"]


def test_control_model_path_needs_allow_files(tmp_path):
    with running(tmp_path, env=_env()) as (client, _):
        reply = client.control(action="model", path="/tmp/x.onnx")
        assert reply["ok"] is False and "--control-allow-files" in reply["detail"]
