"""Offline classification of files, through the same engine as live streams.

Every file becomes a stream of one :class:`stream.engine.Engine` (so windows
of all files are batched together), its events are collected, and each file's
events are summarised: the overall genre, from the mean of its window
probabilities, and the segments of the smoothed genre timeline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .engine import Engine
from .model import GenreModel
from .publishers import CollectingPublisher
from .smoothing import DEFAULT_PROFILE, SPEECH, UNKNOWN, SmootherConfig
from .sources import AVSource


def summarise(
    file: str,
    labels: Sequence[str],
    stream_events: Sequence[dict[str, Any]],
    audio_s: float,
    window_s: float,
) -> dict[str, Any]:
    """Summarise one file's events.

    Parameters
    ----------
    file : str
        The file, as given.
    labels : sequence of str
        Model labels.
    stream_events : sequence of dict
        The file's events, in order.
    audio_s : float
        Duration of the decoded audio, in seconds.
    window_s : float
        Analysis window length, in seconds (a window ending at t is centred
        at t - window_s / 2).

    Returns
    -------
    dict
        ``{"file", "genre", "confidence", "probabilities": {label: p},
        "segments": [{"start_s", "end_s", "genre", "confidence"}]}``, and with
        a model that has them ``"content"`` (mean content probabilities of
        the non-silent windows) and ``"tags"`` (the top five of the mean tag
        probabilities of its music windows, ``[[tag, p], ...]``). The overall
        genre is ``"speech"`` when most non-silent windows are speech (their
        top content label), ``"unknown"`` when most are neither music nor
        speech ("other"), the confidence then the share of such windows;
        otherwise the arg-max of the mean genre probabilities of the
        non-silent music windows. Segments follow the smoothed
        state (the ``genre_change`` events: genres, ``speech``, ``unknown``,
        ``silence``), each with the mean probability of its state over the
        windows centred inside it; they cover the whole file, with
        ``"unknown"`` where the smoother announced nothing. With no window at
        all, ``genre`` is ``"unknown"``.
    """
    predictions = [e for e in stream_events if e["type"] == "prediction"]
    changes = [e for e in stream_events if e["type"] == "genre_change"]
    heard = [e for e in predictions if not e.get("silent")] or predictions
    def top_content(e: dict) -> str:
        return max(e["content"], key=e["content"].get) if "content" in e else "music"

    speech = [e for e in heard if top_content(e) == SPEECH]
    other = [e for e in heard if top_content(e) == "other"]
    music_only = [e for e in heard if top_content(e) == "music"]
    music = music_only or heard
    result: dict[str, Any] = {}
    if heard and max(len(speech), len(other)) > len(heard) / 2:
        # Mostly talk, or mostly neither music nor speech (noise, nature): not a genre.
        genre = SPEECH if len(speech) >= len(other) else UNKNOWN
        confidence = max(len(speech), len(other)) / len(heard)
        mean = np.mean([[e["probabilities"][label] for label in labels] for e in heard], axis=0)
        probabilities = {label: round(float(p), 6) for label, p in zip(labels, mean)}
    elif heard:
        mean = np.mean([[e["probabilities"][label] for label in labels] for e in music], axis=0)
        top = int(np.argmax(mean))
        genre, confidence = labels[top], float(mean[top])
        probabilities = {label: round(float(p), 6) for label, p in zip(labels, mean)}
    else:
        genre, confidence, probabilities = "unknown", 0.0, {}
    if heard and "content" in heard[0]:
        names = list(heard[0]["content"])
        result["content"] = {k: round(float(np.mean([e["content"][k] for e in heard])), 6) for k in names}
    if music_only and "tags" in music_only[0]:  # music tags of talk or noise mean nothing
        totals: dict[str, list[float]] = {}
        for e in music_only:  # each window carries its top five only: average what was reported, over all windows
            for tag, p in e["tags"]:
                totals.setdefault(tag, []).append(p)
        mean_tags = {tag: sum(ps) / len(music_only) for tag, ps in totals.items()}
        result["tags"] = [[tag, round(p, 4)] for tag, p in sorted(mean_tags.items(), key=lambda kv: -kv[1])[:5]]

    # The smoothed timeline: "unknown" from the start until the first change
    # (whose onset is the start itself when the first genre came at once).
    timeline: list[tuple[float, str, float]] = [(0.0, UNKNOWN, 0.0)]
    for change in changes:
        start = max(float(change["onset_s"]), timeline[-1][0])
        if start <= timeline[-1][0]:
            timeline.pop()  # the earlier state did not really last
        timeline.append((start, change["genre"], float(change["confidence"])))
    end_of_audio = max(audio_s, timeline[-1][0])
    result_segments = []
    for i, (start, label, fallback) in enumerate(timeline):
        last = i + 1 == len(timeline)
        end = end_of_audio if last else timeline[i + 1][0]
        if end <= start:
            continue
        inside = [
            e
            for e in predictions
            for centre in (e["stream_time_s"] - min(e["stream_time_s"], window_s) / 2,)
            if start <= centre and (centre < end or last)
        ]
        if inside and label in labels:
            seg_conf = float(np.mean([e["probabilities"][label] for e in inside]))
        elif inside and label == SPEECH and "content" in inside[0]:
            seg_conf = float(np.mean([e["content"][SPEECH] for e in inside]))
        elif inside:  # unknown or silence: how sure the model was of its best guess
            seg_conf = float(np.mean([max(e["probabilities"].values()) for e in inside]))
        else:
            seg_conf = fallback
        result_segments.append(
            {"start_s": round(start, 3), "end_s": round(end, 3), "genre": label, "confidence": round(seg_conf, 6)}
        )
    return {
        "file": file,
        "genre": genre,
        "confidence": round(confidence, 6),
        "probabilities": probabilities,
        **result,
        "segments": result_segments,
    }


def classify_files(
    files: Sequence[str],
    model: GenreModel | None = None,
    hop_s: float | None = None,
    smoother_config: SmootherConfig | None = None,
    profile: str = DEFAULT_PROFILE,
) -> list[dict[str, Any]]:
    """Classify audio files offline.

    Parameters
    ----------
    files : sequence of str
        Paths (or URLs of finite files) PyAV can decode.
    model : GenreModel or None
        None for the shipped model.
    hop_s : float or None
        Seconds between windows; None for the model's default.
    smoother_config : SmootherConfig or None
        Smoothing settings; None for the ``profile``'s.
    profile : str
        Smoothing profile (``"radio"`` or ``"dj"``).

    Returns
    -------
    list of dict
        One per file, in order: see :func:`summarise`; a file that failed has
        ``"error"`` (the reason), ``"genre": None`` and no segments. A file
        with damaged packets (skipped) has ``"decode_errors"``, their count.
    """
    model = model or GenreModel()
    collector = CollectingPublisher()
    engine = Engine(model, [collector], hop_s=hop_s, smoother_config=smoother_config, profile=profile)
    ids, sources = [], []
    for i, f in enumerate(files):
        sources.append(AVSource(str(f)))
        ids.append(engine.add(sources[-1], f"file{i}"))
    summaries = asyncio.run(engine.run())
    by_stream: dict[str, list] = {sid: [] for sid in ids}
    for event in collector.events:
        by_stream[event["stream"]].append(event)
    results = []
    for f, sid, source in zip(files, ids, sources):
        summary = summaries[sid]
        if summary.state == "failed":
            results.append(
                {"file": str(f), "genre": None, "confidence": None, "probabilities": {}, "segments": [],
                 "error": summary.detail}
            )
        elif summary.windows == 0:
            results.append(
                {"file": str(f), "genre": None, "confidence": None, "probabilities": {}, "segments": [],
                 "error": f"{f}: too short to classify ({summary.audio_s:.2f} s of audio)"}
            )
        else:
            results.append(
                summarise(str(f), model.labels, by_stream[sid], summary.audio_s, model.info.window_s)
            )
        if source.stats.decode_errors:  # damage skipped: the result stands on the rest
            results[-1]["decode_errors"] = source.stats.decode_errors
    return results


def format_result(result: dict[str, Any]) -> str:
    """Human-readable lines for one file's result."""
    name = Path(result["file"]).name
    if result.get("error"):
        return f"{name}: FAILED: {result['error']}"
    lines = [f"{name}: {result['genre']} ({result['confidence']:.0%})"]
    if result.get("tags"):
        lines[0] += "  tags: " + ", ".join(f"{tag} {p:.0%}" for tag, p in result["tags"])
    for s in result["segments"]:
        lines.append(f"  {s['start_s']:8.1f} - {s['end_s']:8.1f} s  {s['genre']:<10} {s['confidence']:.0%}")
    return "\n".join(lines)
