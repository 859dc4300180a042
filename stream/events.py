"""The event model: JSON-ready dicts with ``"schema": 1`` and a ``"type"``.

Every publisher (WebSocket, Redis, JSON lines) sends these same objects; this
module only builds them and holds the latest state of each stream, so it does
no I/O.

Types
-----
``prediction``
    Every hop: stream, stream_time_s (end of the window, seconds since the
    stream started), probabilities ({label: p}), genre (top of this window),
    smoothed (the smoother's current state: a genre, ``speech``,
    ``unknown`` or ``silence``), confidence (of ``smoothed``); with a model
    that has them, content ({music, speech, other: p}) and tags (the top
    five ``[[tag, p], ...]``); every 10 s of stream time also stats (the
    source's statistics).
``genre_change``
    stream, genre (a genre, ``speech``, ``unknown`` or ``silence``),
    previous, confidence, probabilities, onset_s (estimated stream time at
    which the new state began), stream_time_s, wall_time, model
    (``name@version``); content (averaged) with a model that has it.
``status``
    stream, state (one of :data:`STATES`), detail; for a gap also gap_s and
    gap_start_s.
``metadata``
    stream, title (the ICY StreamTitle), stream_time_s.

Every event also carries ``wall_time`` (ISO 8601, UTC, millisecond precision).
The engine adds ``seq`` (the stream's event counter, starting from the wall
clock in microseconds, so that it keeps rising across restarts) and ``id``
(``"{stream}:{seq}"``: a consumer drops an event seen twice by its id), and
under ``genrestream cluster`` ``worker`` (the shard that classified it).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

SCHEMA = 1

STATES = ("connecting", "playing", "reconnecting", "ended", "failed")
"""The states a ``status`` event can report."""

Event = dict[str, Any]


def wall_time_now() -> str:
    """Return the current UTC time as ISO 8601 with milliseconds, e.g. ``2026-11-20T23:59:01.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checked(labels: Sequence[str], probabilities) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != (len(labels),):
        raise ValueError(f"probabilities: expected shape ({len(labels)},), got {p.shape}")
    return p


def label_probabilities(labels: Sequence[str], probabilities) -> dict[str, float]:
    """``{label: p}`` (rounded to 6 decimals) for probabilities in label order.

    Raises
    ------
    ValueError
        If ``probabilities`` is not of shape (len(labels),).
    """
    p = _checked(labels, probabilities)
    return {label: round(float(v), 6) for label, v in zip(labels, p)}



def top_labels(labels: Sequence[str], probabilities, k: int) -> list[list]:
    """The ``k`` most probable labels, most probable first, as ``[[label, p], ...]`` (p rounded to 4 decimals).

    A list rather than an object: the order is the point (JSON objects have none).

    Raises
    ------
    ValueError
        If ``probabilities`` is not of shape (len(labels),).
    """
    p = _checked(labels, probabilities)
    order = np.argsort(-p, kind="stable")[: int(k)]
    return [[labels[i], round(float(p[i]), 4)] for i in order]


def prediction(
    stream: str,
    stream_time_s: float,
    labels: Sequence[str],
    probabilities,
    smoothed: str,
    confidence: float,
    **extra: Any,
) -> Event:
    """Build a ``prediction`` event for one window.

    Parameters
    ----------
    stream : str
        Stream id.
    stream_time_s : float
        End of the window, in seconds since the stream started.
    labels : sequence of str
        Genre labels in model order.
    probabilities : array-like [shape=(n_labels,)]
        The window's probabilities; ``genre`` is their arg-max.
    smoothed : str
        The smoother's current state.
    confidence : float
        Confidence of ``smoothed``.
    **extra
        Further fields (``title``, ``partial``, ``silent``...).
    """
    probs = label_probabilities(labels, probabilities)
    return {
        "schema": SCHEMA,
        "type": "prediction",
        "stream": stream,
        "stream_time_s": round(float(stream_time_s), 3),
        "probabilities": probs,
        "genre": labels[int(np.argmax(probabilities))],
        "smoothed": smoothed,
        "confidence": round(float(confidence), 6),
        "wall_time": wall_time_now(),
        **extra,
    }


def genre_change(
    stream: str,
    genre: str,
    previous: str,
    confidence: float,
    labels: Sequence[str],
    probabilities,
    onset_s: float,
    stream_time_s: float,
    model: str,
    **extra: Any,
) -> Event:
    """Build a ``genre_change`` event (see the module docstring for the fields)."""
    return {
        "schema": SCHEMA,
        "type": "genre_change",
        "stream": stream,
        "genre": genre,
        "previous": previous,
        "confidence": round(float(confidence), 6),
        "probabilities": label_probabilities(labels, probabilities),
        "onset_s": round(float(onset_s), 3),
        "stream_time_s": round(float(stream_time_s), 3),
        "wall_time": wall_time_now(),
        "model": model,
        **extra,
    }


def status(stream: str, state: str, detail: str = "", **extra: Any) -> Event:
    """Build a ``status`` event.

    Raises
    ------
    ValueError
        If ``state`` is not one of :data:`STATES`.
    """
    if state not in STATES:
        raise ValueError(f"state: expected one of {STATES}, got {state!r}")
    return {
        "schema": SCHEMA,
        "type": "status",
        "stream": stream,
        "state": state,
        "detail": detail,
        "wall_time": wall_time_now(),
        **extra,
    }


def metadata(stream: str, title: str, stream_time_s: float, **extra: Any) -> Event:
    """Build a ``metadata`` event: the stream's title (ICY ``StreamTitle``) changed."""
    return {
        "schema": SCHEMA,
        "type": "metadata",
        "stream": stream,
        "title": title,
        "stream_time_s": round(float(stream_time_s), 3),
        "wall_time": wall_time_now(),
        **extra,
    }


def dumps(event: Mapping[str, Any]) -> str:
    """Serialise an event as compact JSON (one line, UTF-8 safe)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


class StreamStates:
    """The latest ``status``, ``genre_change`` and ``prediction`` of every stream.

    A client that connects late is sent :meth:`snapshot` first, so it knows the
    current state of every stream without waiting for the next change.
    """

    KEPT = ("status", "metadata", "genre_change", "prediction")

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Event]] = {}

    def update(self, event: Mapping[str, Any]) -> None:
        """Remember ``event`` if it is of a kept type (fresher ``stats`` also refresh the kept status)."""
        if event.get("type") not in self.KEPT:
            return
        latest = self._latest.setdefault(event["stream"], {})
        latest[event["type"]] = dict(event)
        if event["type"] != "status" and "stats" in event and "status" in latest:
            latest["status"] = {**latest["status"], "stats": event["stats"]}

    def snapshot(self) -> list[Event]:
        """Return the kept events of every stream, streams sorted by id, status first."""
        return [
            latest[kind]
            for stream in sorted(self._latest)
            for latest in (self._latest[stream],)
            for kind in self.KEPT
            if kind in latest
        ]

    def current(self, stream: str) -> dict[str, Event]:
        """Return the kept events of ``stream`` ({type: event}; empty if unknown)."""
        return dict(self._latest.get(stream, {}))
