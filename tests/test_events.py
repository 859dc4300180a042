"""The event model: builders and the latest state per stream (pure)."""

from __future__ import annotations

import pytest

from stream import events

LABELS = ("blues", "jazz", "rock")


def test_stream_states_snapshot_carries_the_freshest_stats():
    states = events.StreamStates()
    states.update(events.status("a", "playing", "ok", stats={"bytes_read": 1}))
    states.update(events.prediction("a", 10.0, LABELS, [0.2, 0.3, 0.5], "rock", 0.5, stats={"bytes_read": 99}))
    states.update({"type": "ignored", "stream": "a"})
    status, prediction = states.snapshot()
    assert (status["type"], status["state"], status["stats"]) == ("status", "playing", {"bytes_read": 99})
    assert prediction["genre"] == "rock"


def test_status_refuses_unknown_states():
    with pytest.raises(ValueError, match="state"):
        events.status("a", "sleeping")
