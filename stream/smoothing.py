"""Turn window-by-window genre probabilities into a stable current genre.

A pure state machine, one per stream, with no I/O and no clock of its own: the
caller feeds it each window's probabilities with the stream time at which the
window ends, and it answers with the smoothed genre and, when that genre
changes, a :class:`GenreChange`. The same sequence of inputs always gives the
same outputs, which is what the unit tests rely on.

Three mechanisms keep a flapping classifier from causing change storms:

moving average
    the probabilities of the last ``average_windows`` windows are averaged;
hysteresis
    a challenger genre replaces the current one only when its averaged
    probability leads the current genre's by ``switch_margin``; the current
    genre gives way to "unknown" only when its own averaged probability drops
    below ``unknown_threshold - switch_margin / 2``;
minimum dwell
    a challenger must keep winning for ``min_dwell_s`` seconds of stream time
    before it is announced.

Two states are not genres: ``"unknown"`` when no genre's averaged probability
reaches ``unknown_threshold`` (the classifier is honestly unsure: speech,
noise, a genre it was not trained on), and ``"silence"`` when the caller says a
window is silent. A stream starts, and restarts after :meth:`GenreSmoother.reset`,
in ``"unknown"``.

The design follows silero-vad's ``VADIterator`` (a pure iterator from speech
probabilities to speech start/end events) and the hysteresis-plus-hangover
smoothing of voice-activity detectors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

UNKNOWN = "unknown"
SILENCE = "silence"


@dataclass(frozen=True)
class SmootherConfig:
    """Settings of :class:`GenreSmoother`.

    Attributes
    ----------
    average_windows : int >= 1
        Number of most recent windows whose probabilities are averaged.
    switch_margin : float in [0, 1)
        Hysteresis: how far, in probability, a challenger must lead the
        current genre.
    min_dwell_s : float >= 0
        Seconds of stream time a challenger must keep winning before the
        change is announced.
    unknown_threshold : float in [0, 1]
        Averaged probability the top genre needs to be announced at all.
    window_s : float > 0
        Length in seconds of the windows the probabilities come from; used to
        estimate when a new genre began (``onset_s``).
    """

    average_windows: int = 4
    switch_margin: float = 0.10
    min_dwell_s: float = 3.0
    unknown_threshold: float = 0.40
    window_s: float = 10.0

    def __post_init__(self) -> None:
        if int(self.average_windows) < 1:
            raise ValueError(f"average_windows: expected >= 1, got {self.average_windows}")
        if not 0.0 <= self.switch_margin < 1.0:
            raise ValueError(f"switch_margin: expected in [0, 1), got {self.switch_margin}")
        if self.min_dwell_s < 0:
            raise ValueError(f"min_dwell_s: expected >= 0, got {self.min_dwell_s}")
        if not 0.0 <= self.unknown_threshold <= 1.0:
            raise ValueError(f"unknown_threshold: expected in [0, 1], got {self.unknown_threshold}")
        if self.window_s <= 0:
            raise ValueError(f"window_s: expected > 0, got {self.window_s}")


@dataclass(frozen=True)
class GenreChange:
    """A change of the smoothed genre.

    Attributes
    ----------
    genre, previous : str
        New and former state: a label, ``"unknown"`` or ``"silence"``.
    confidence : float
        Averaged probability of ``genre`` (1.0 for silence; for unknown, the
        averaged probability of the top label).
    probabilities : np.ndarray [shape=(n_labels,), dtype=float64]
        Averaged probabilities when the change was decided.
    onset_s : float
        Estimated stream time, in seconds, at which the new state began: the
        mean centre of the averaged windows when the challenger first won.
    stream_time_s : float
        Stream time, in seconds, of the window that decided the change.
    """

    genre: str
    previous: str
    confidence: float
    probabilities: np.ndarray
    onset_s: float
    stream_time_s: float


@dataclass(frozen=True)
class SmootherStep:
    """What :meth:`GenreSmoother.update` returns for one window.

    Attributes
    ----------
    genre : str
        The smoothed (current) state after this window.
    confidence : float
        Averaged probability of ``genre`` (see :class:`GenreChange`).
    probabilities : np.ndarray [shape=(n_labels,), dtype=float64]
        Averaged probabilities (zeros for a silent window).
    change : GenreChange or None
        The change this window caused, if any.
    """

    genre: str
    confidence: float
    probabilities: np.ndarray
    change: GenreChange | None = None


@dataclass
class GenreSmoother:
    """Moving average, hysteresis and minimum dwell over genre probabilities.

    Parameters
    ----------
    labels : sequence of str
        Genre labels, in the order of the model's probabilities.
    config : SmootherConfig
        Settings; see :class:`SmootherConfig`.

    Raises
    ------
    ValueError
        If ``labels`` is empty, repeats a label, or uses a reserved state name.

    Examples
    --------
    >>> s = GenreSmoother(["jazz", "rock"], SmootherConfig(min_dwell_s=2, window_s=10))
    >>> [s.update([0.9, 0.1], t).genre for t in (10.0, 11.0, 12.0)]
    ['unknown', 'unknown', 'jazz']
    """

    labels: Sequence[str]
    config: SmootherConfig = field(default_factory=SmootherConfig)

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if not self.labels:
            raise ValueError("labels: expected at least one genre label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels: expected distinct labels, got {list(self.labels)}")
        if UNKNOWN in self.labels or SILENCE in self.labels:
            raise ValueError(f"labels: {UNKNOWN!r} and {SILENCE!r} are reserved state names")
        self._index = {label: i for i, label in enumerate(self.labels)}
        self._boundary_hint_s: float | None = None  # stream time of the last title change (hint_boundary)
        self.reset(0.0)

    @property
    def genre(self) -> str:
        """The current smoothed state."""
        return self._current

    def reset(self, stream_time_s: float = 0.0) -> None:
        """Forget all history, as at the start of a stream or after a gap.

        Parameters
        ----------
        stream_time_s : float
            Stream time, in seconds, at which audio starts again; the first
            genre announced afterwards gets this as its ``onset_s``.
        """
        self._history: deque[np.ndarray] = deque(maxlen=int(self.config.average_windows))
        self._times: deque[float] = deque(maxlen=int(self.config.average_windows))
        self._current = UNKNOWN
        self._fresh = True  # no state announced since the reset
        self._segment_start_s = float(stream_time_s)
        self._challenger: str | None = None
        self._challenger_since_s = 0.0
        self._challenger_onset_s = 0.0
        self._averaged = np.zeros(len(self.labels))

    def _propose(self, averaged: np.ndarray) -> str:
        cfg = self.config
        top = int(np.argmax(averaged))
        top_label, top_p = self.labels[top], float(averaged[top])
        current = self._current
        if current in self._index:
            current_p = float(averaged[self._index[current]])
            if top_label != current and top_p >= cfg.unknown_threshold and top_p - current_p >= cfg.switch_margin:
                return top_label
            if current_p >= cfg.unknown_threshold - cfg.switch_margin / 2:
                return current
            return top_label if top_p >= cfg.unknown_threshold else UNKNOWN
        return top_label if top_p >= cfg.unknown_threshold else UNKNOWN

    def _accept(self, stream_time_s: float) -> GenreChange:
        assert self._challenger is not None
        previous, genre = self._current, self._challenger
        onset_s = (
            self._segment_start_s
            if self._fresh
            else max(self._challenger_onset_s, self._segment_start_s)
        )
        self._current = genre
        self._fresh = False
        self._challenger = None
        return GenreChange(
            genre=genre,
            previous=previous,
            confidence=self._confidence(genre, self._averaged),
            probabilities=self._averaged.copy(),
            onset_s=float(onset_s),
            stream_time_s=float(stream_time_s),
        )

    BOUNDARY_DWELL_FACTOR = 1.0 / 3.0
    """Near a hinted track boundary a challenger needs this fraction of ``min_dwell_s``."""

    def hint_boundary(self, stream_time_s: float) -> None:
        """A track boundary is likely here (the stream's title changed): shorten the dwell.

        A challenger that starts winning near the hint, from ``window_s / 2``
        before it (titles often arrive late) to ``window_s + min_dwell_s``
        after it (the windows straddling the boundary still hold the old
        track), is announced after ``min_dwell_s * BOUNDARY_DWELL_FACTOR``
        instead of ``min_dwell_s``. The moving average, the hysteresis margin
        and the current genre are left alone: the hint never causes a change
        by itself, and a new title with the same genre changes nothing.

        Why shorten and not reset: a title marks a boundary only roughly
        (the station's automation sends it when it likes; Icecast inserts it
        at whatever byte it has reached, seconds off the audio; adverts,
        jingles and station idents have titles too), and consecutive tracks
        are often of the same genre. Resetting would drop the stream to
        "unknown" and back at every title, two ``genre_change`` events per
        track for no change of genre; shortening only lets a genuine change
        near a boundary through sooner (the hysteresis margin still guards
        against flapping while the windows hold both tracks).

        Parameters
        ----------
        stream_time_s : float
            Stream time, in seconds, at which the title changed.
        """
        self._boundary_hint_s = float(stream_time_s)

    def _dwell_s(self) -> float:
        """Seconds the pending challenger must keep winning (see :meth:`hint_boundary`)."""
        cfg = self.config
        hint = self._boundary_hint_s
        near = hint is not None and (
            hint - cfg.window_s / 2 <= self._challenger_since_s <= hint + cfg.window_s + cfg.min_dwell_s
        )
        if near:
            return cfg.min_dwell_s * self.BOUNDARY_DWELL_FACTOR
        return cfg.min_dwell_s

    def flush(self, stream_time_s: float) -> GenreChange | None:
        """End of stream: accept a pending challenger without waiting out its dwell.

        Offline classification calls this so that the last genre of a file,
        or the only genre of a short one, is announced.

        Parameters
        ----------
        stream_time_s : float
            Stream time, in seconds, at which the stream ended.

        Returns
        -------
        GenreChange or None
            The change, if a challenger was pending.
        """
        if self._challenger is None:
            return None
        return self._accept(max(float(stream_time_s), self._times[-1] if self._times else 0.0))

    def _confidence(self, state: str, averaged: np.ndarray) -> float:
        if state == SILENCE:
            return 1.0
        if state == UNKNOWN:
            return float(np.max(averaged)) if averaged.size else 0.0
        return float(averaged[self._index[state]])

    def update(self, probabilities, stream_time_s: float, silent: bool = False) -> SmootherStep:
        """Feed one window's probabilities.

        Parameters
        ----------
        probabilities : array-like [shape=(n_labels,)]
            The model's probabilities for the window (ignored when ``silent``).
        stream_time_s : float
            Stream time, in seconds, at which the window ends. Must not
            decrease between calls (until :meth:`reset`).
        silent : bool
            The window is silent: the classifier's opinion of it is
            meaningless, and the moving average restarts after it.

        Returns
        -------
        SmootherStep

        Raises
        ------
        ValueError
            If ``probabilities`` has the wrong shape or is not finite, or time
            goes backwards.
        """
        t = float(stream_time_s)
        if self._times and t < self._times[-1]:
            raise ValueError(f"stream_time_s: went backwards from {self._times[-1]} to {t}")
        if silent:
            self._history.clear()
            self._times.clear()
            self._times.append(t)
            averaged = np.zeros(len(self.labels))
            proposal = SILENCE
            onset = t - self.config.window_s / 2
        else:
            p = np.asarray(probabilities, dtype=np.float64)
            if p.shape != (len(self.labels),):
                raise ValueError(
                    f"probabilities: expected shape ({len(self.labels)},), got {p.shape}"
                )
            if not np.all(np.isfinite(p)):
                raise ValueError("probabilities: expected finite values")
            if self._times and not self._history:
                self._times.clear()  # the window before was silent
            self._history.append(p)
            self._times.append(t)
            averaged = np.mean(self._history, axis=0)
            proposal = self._propose(averaged)
            onset = float(np.mean(self._times)) - self.config.window_s / 2

        self._averaged = averaged
        change = None
        if proposal == self._current:
            self._challenger = None
        else:
            if proposal != self._challenger:
                self._challenger = proposal
                self._challenger_since_s = t
                self._challenger_onset_s = onset
            if t - self._challenger_since_s >= self._dwell_s():
                change = self._accept(t)
        return SmootherStep(
            genre=self._current,
            confidence=self._confidence(self._current, averaged),
            probabilities=averaged,
            change=change,
        )
