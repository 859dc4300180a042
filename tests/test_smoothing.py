"""The smoothing state machine, driven by probability sequences (no audio, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.smoothing import SILENCE, UNKNOWN, GenreSmoother, SmootherConfig

LABELS = ("blues", "jazz", "rock")


def onehot(label: str, p: float = 0.9) -> np.ndarray:
    rest = (1 - p) / (len(LABELS) - 1)
    return np.array([p if lab == label else rest for lab in LABELS])


def feed(smoother, sequence, start_s=10.0, hop_s=1.0, silent=()):
    """Feed probabilities one per hop; return (steps, changes)."""
    steps, changes = [], []
    for i, p in enumerate(sequence):
        step = smoother.update(p, start_s + i * hop_s, silent=i in silent)
        steps.append(step)
        if step.change:
            changes.append(step.change)
    return steps, changes


def make(**kw):
    return GenreSmoother(LABELS, SmootherConfig(**kw))


def test_starts_unknown_and_announces_first_genre_after_dwell():
    s = make(min_dwell_s=3.0, average_windows=4, window_s=10.0)
    steps, changes = feed(s, [onehot("jazz")] * 6)
    assert [st.genre for st in steps] == [UNKNOWN] * 3 + ["jazz"] * 3
    assert len(changes) == 1
    c = changes[0]
    assert (c.genre, c.previous) == ("jazz", UNKNOWN)
    assert c.stream_time_s == 13.0
    assert c.onset_s == 0.0  # the first genre of a stream began when the stream did
    assert c.confidence == pytest.approx(0.9)


def test_clean_change_is_announced_once_with_onset_before_decision():
    s = make(min_dwell_s=2.0, average_windows=3, window_s=10.0)
    seq = [onehot("jazz")] * 10 + [onehot("rock")] * 10
    steps, changes = feed(s, seq)
    assert [c.genre for c in changes] == ["jazz", "rock"]
    rock = changes[1]
    assert rock.previous == "jazz"
    # rock's first window ends at 20 s; the decision waits for averaging and dwell
    assert rock.stream_time_s > 20.0
    assert rock.onset_s < rock.stream_time_s
    assert 10.0 <= rock.onset_s <= 20.0


def test_flapping_input_causes_no_change_storm():
    """Alternating top genre every window: the average sits between, no flapping."""
    s = make(min_dwell_s=3.0, average_windows=4, switch_margin=0.1)
    seq = [onehot("jazz")] * 8 + [onehot("rock") if i % 2 else onehot("jazz") for i in range(60)]
    _, changes = feed(s, seq)
    assert [c.genre for c in changes] == ["jazz"]


def test_near_tie_does_not_switch_without_margin():
    """A challenger that leads by less than switch_margin never takes over."""
    s = make(min_dwell_s=0.0, average_windows=1, switch_margin=0.15, unknown_threshold=0.3)
    seq = [np.array([0.05, 0.6, 0.35])] * 3 + [np.array([0.05, 0.42, 0.53])] * 20
    _, changes = feed(s, seq)
    assert [c.genre for c in changes] == ["jazz"]
    _, changes = feed(s, [np.array([0.05, 0.3, 0.65])], start_s=100)
    assert [c.genre for c in changes] == ["rock"]


def test_noisy_random_input_changes_rarely():
    """Random probabilities: with dwell 3 s the rate of changes is bounded."""
    rng = np.random.default_rng(0)
    s = make(min_dwell_s=3.0, average_windows=4)
    seq = rng.dirichlet(np.ones(len(LABELS)) * 0.5, size=600)
    _, changes = feed(s, seq)
    assert len(changes) < 600 / 4  # never more than one per dwell+1 windows
    times = [c.stream_time_s for c in changes]
    assert all(b - a >= 3.0 for a, b in zip(times, times[1:]))


def test_low_confidence_is_unknown_not_a_guess():
    s = make(min_dwell_s=1.0, unknown_threshold=0.5)
    flat = np.array([0.34, 0.33, 0.33])
    steps, changes = feed(s, [flat] * 10)
    assert all(st.genre == UNKNOWN for st in steps)
    assert changes == []


def test_genre_fades_to_unknown_with_hysteresis_band():
    s = make(min_dwell_s=0.0, average_windows=1, unknown_threshold=0.5, switch_margin=0.2)
    feed(s, [onehot("jazz", 0.9)])
    # 0.45 is below the threshold but inside the band (0.5 - 0.2/2 = 0.4): stays jazz
    steps, _ = feed(s, [np.array([0.3, 0.45, 0.25])], start_s=20)
    assert steps[0].genre == "jazz"
    steps, changes = feed(s, [np.array([0.3, 0.35, 0.35])], start_s=21)
    assert steps[0].genre == UNKNOWN and changes[0].previous == "jazz"


def test_silence_is_announced_and_restarts_the_average():
    s = make(min_dwell_s=2.0, average_windows=4)
    seq = [onehot("rock")] * 6 + [None] * 4 + [onehot("jazz")] * 6
    silent = set(range(6, 10))
    steps, changes = feed(s, [p if p is not None else onehot("rock") for p in seq], silent=silent)
    assert [c.genre for c in changes] == ["rock", SILENCE, "jazz"]
    assert changes[1].confidence == 1.0
    # after silence, rock's old windows are not averaged with jazz's: jazz at full confidence
    assert changes[2].confidence == pytest.approx(0.9)


def test_reset_after_gap_forgets_history():
    s = make(min_dwell_s=2.0)
    feed(s, [onehot("rock")] * 6)
    assert s.genre == "rock"
    s.reset(100.0)
    assert s.genre == UNKNOWN
    _, changes = feed(s, [onehot("jazz")] * 3, start_s=110.0)
    assert changes[0].previous == UNKNOWN
    assert changes[0].onset_s == 100.0


def test_flush_settles_a_pending_challenger():
    s = make(min_dwell_s=5.0)
    feed(s, [onehot("jazz")] * 2)
    assert s.genre == UNKNOWN
    change = s.flush(12.0)
    assert change is not None and change.genre == "jazz"
    assert s.flush(12.0) is None


def test_deterministic():
    rng = np.random.default_rng(1)
    seq = rng.dirichlet(np.ones(3), size=200)
    a = [c.genre for c in feed(make(), seq)[1]]
    b = [c.genre for c in feed(make(), seq)[1]]
    assert a == b


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"average_windows": 0}, "average_windows"),
        ({"switch_margin": 1.0}, "switch_margin"),
        ({"min_dwell_s": -1}, "min_dwell_s"),
        ({"unknown_threshold": 1.5}, "unknown_threshold"),
        ({"window_s": 0}, "window_s"),
    ],
)
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SmootherConfig(**kwargs)


def test_bad_probabilities_and_time_are_named():
    s = make()
    with pytest.raises(ValueError, match="shape"):
        s.update([0.5, 0.5], 10.0)
    with pytest.raises(ValueError, match="finite"):
        s.update([np.nan, 0.5, 0.5], 10.0)
    s.update(onehot("jazz"), 10.0)
    with pytest.raises(ValueError, match="backwards"):
        s.update(onehot("jazz"), 9.0)
    with pytest.raises(ValueError, match="reserved"):
        GenreSmoother(["jazz", "unknown"])

