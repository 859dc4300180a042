"""Labelled audio for training heads on a pretrained model: what the files are, not what is in them.

A collection is a list of :class:`Clip` (file, label, group). The group is
what validation keeps together on one side of a split: GTZAN's blocks of ten
consecutive track numbers (GTZAN puts an artist's tracks in runs; Sturm 2013),
an FMA track, or a single file.

Layouts of a user's folder (:func:`list_audio`):

``gtzan``
    ``<genre>.<NNNNN>.<ext>`` files, flat or under ``<genre>/`` folders
    (GTZAN's own layout); groups are blocks of track numbers.
``fma``
    ``<root>/**/<track_id>.mp3`` with a ``tracks.csv`` giving each track's
    ``genre_top`` (the Free Music Archive's layout); groups are tracks.
``folders``
    one folder per label, any file names; groups are files.

The shared data's collections: :func:`gtzan_clips` (the 58 GTZAN clips of
``audio/gtzan-parity`` and ``audio/gtzan-extra``) and :func:`content_clips`
(music, speech and "other" from ``audio/musicspeech``, ``audio/speech``,
``audio/free`` and the GTZAN clips).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import (
    AUDIO_EXTENSIONS,
    GTZAN_GENRES,
    _audio_files,
    _find_tracks_csv,
    _read_fma_genres,
    shared_dir,
)

LAYOUTS = ("gtzan", "fma", "folders")

BLOCK_SIZE = 10
"""Tracks per validation block of a GTZAN-numbered collection."""

_GTZAN_NAME_RE = re.compile(r"^(?P<genre>[A-Za-z][A-Za-z0-9_\-]*)[._](?P<number>\d+)$")


@dataclass(frozen=True)
class Clip:
    """One labelled audio file.

    Attributes
    ----------
    path : Path
    label : str
    group : str
        Validation keeps a group on one side of every split.
    track : int or None
        The collection's track number, when it has them.
    """

    path: Path
    label: str
    group: str
    track: int | None = None


def gtzan_block(genre: str, track: int, block_size: int = BLOCK_SIZE) -> str:
    """The validation group of a GTZAN track: ``"<genre>/<first>-<last>"`` of its block of ``block_size``."""
    first = (int(track) // block_size) * block_size
    return f"{genre}/{first:05d}-{first + block_size - 1:05d}"


def list_audio(
    root: str | os.PathLike,
    layout: str = "gtzan",
    tracks_csv: str | os.PathLike | None = None,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
    block_size: int = BLOCK_SIZE,
) -> list[Clip]:
    """The labelled clips of a user's audio folder.

    Parameters
    ----------
    root : str or path-like
        The folder.
    layout : {"gtzan", "fma", "folders"}
        How labels are written (see the module docstring).
    tracks_csv : str or path-like or None
        FMA only: the ``tracks.csv`` (default: looked for beside ``root``).
    extensions : iterable of str
        File name extensions taken as audio.
    block_size : int
        GTZAN: tracks per validation block.

    Returns
    -------
    list of Clip
        Sorted by label, then path.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder (or, FMA, no ``tracks.csv`` is found).
    ValueError
        If ``layout`` is unknown, a GTZAN file name has no ``<genre>.<number>``,
        or no audio file is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder: {root} is not a folder")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    files = _audio_files(root, extensions)
    clips: list[Clip] = []
    if layout == "gtzan":
        for f in files:
            match = _GTZAN_NAME_RE.match(f.stem)
            if match is None:
                raise ValueError(f"gtzan layout: {f} is not named <genre>.<number>.<ext> (e.g. blues.00012.wav)")
            genre, track = match.group("genre"), int(match.group("number"))
            clips.append(Clip(f, genre, gtzan_block(genre, track, block_size), track))
    elif layout == "fma":
        genres = _read_fma_genres(Path(tracks_csv) if tracks_csv else _find_tracks_csv(root))
        for f in files:
            if f.stem.isdigit() and int(f.stem) in genres:
                clips.append(Clip(f, genres[int(f.stem)], f"track/{int(f.stem)}", int(f.stem)))
    else:
        for f in files:
            if f.parent == root:
                continue  # a file beside the label folders has no label
            label = f.relative_to(root).parts[0]
            clips.append(Clip(f, label, f"file/{f.relative_to(root).as_posix()}"))
    if not clips:
        raise ValueError(f"audio folder {root}: no labelled audio file found for the {layout} layout")
    return sorted(clips, key=lambda c: (c.label, str(c.path)))


def gtzan_clips(shared: str | os.PathLike | None = None) -> list[Clip]:
    """The 58 labelled GTZAN clips of the shared data (``audio/gtzan-parity`` and ``audio/gtzan-extra``).

    Raises
    ------
    FileNotFoundError
        If the shared data has neither folder.
    """
    base = Path(shared) if shared is not None else shared_dir()
    clips: list[Clip] = []
    for name in ("gtzan-parity", "gtzan-extra"):
        folder = base / "audio" / name
        if folder.is_dir():
            clips.extend(list_audio(folder, "gtzan"))
    if not clips:
        raise FileNotFoundError(f"no GTZAN audio under {base / 'audio'} (gtzan-parity, gtzan-extra)")
    unknown = sorted({c.label for c in clips} - set(GTZAN_GENRES))
    if unknown:
        raise ValueError(f"GTZAN audio: unknown genres {unknown}")
    return sorted(clips, key=lambda c: (c.label, c.track or 0))


def _catalogue_kinds(folder: Path) -> dict[str, str]:
    catalogue = folder / "CATALOGUE.csv"
    if not catalogue.is_file():
        return {}
    with catalogue.open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row["kind"] for row in csv.DictReader(handle)}


CONTENT_OF_KIND = {"music": "music", "speech": "speech", "non-music": "other"}
"""``audio/free/CATALOGUE.csv`` kind → content label."""


def content_clips(shared: str | os.PathLike | None = None, include: Sequence[str] = ("music", "speech", "other")
                  ) -> list[Clip]:
    """Music, speech and "other" (no music, no speech) clips of the shared data.

    - music: ``audio/musicspeech/music`` (40), the GTZAN clips (58), the free
      music clips;
    - speech: ``audio/musicspeech/speech`` (40: talk of many kinds),
      ``audio/speech/ljspeech`` (32 read utterances), the free speech clips;
    - other: the free non-music clips (``CATALOGUE.csv`` kind ``non-music``).

    Every file is its own group (validation by clip).

    Raises
    ------
    FileNotFoundError
        If none of those folders exists.
    """
    base = Path(shared) if shared is not None else shared_dir()
    audio = base / "audio"
    clips: list[Clip] = []
    for label in ("music", "speech"):
        for f in _audio_files(audio / "musicspeech" / label, AUDIO_EXTENSIONS) if (audio / "musicspeech" / label).is_dir() else []:
            clips.append(Clip(f, label, f"file/musicspeech/{label}/{f.name}"))
    ljspeech = audio / "speech" / "ljspeech"
    if ljspeech.is_dir():
        clips.extend(Clip(f, "speech", f"file/ljspeech/{f.name}") for f in _audio_files(ljspeech, AUDIO_EXTENSIONS))
    free = audio / "free"
    for name, kind in _catalogue_kinds(free).items():
        if (free / name).is_file() and kind in CONTENT_OF_KIND:
            clips.append(Clip(free / name, CONTENT_OF_KIND[kind], f"file/free/{name}"))
    try:
        clips.extend(Clip(c.path, "music", f"file/gtzan/{c.path.name}", c.track) for c in gtzan_clips(base))
    except FileNotFoundError:
        pass
    if not clips:
        raise FileNotFoundError(f"no music/speech audio under {audio}")
    return [c for c in sorted(clips, key=lambda c: (c.label, str(c.path))) if c.label in include]


SYNTHETIC_OTHER = ("white", "pink", "brown", "hum50", "hum60", "wind", "rain", "rumble", "room", "crackle", "hiss",
                   "fan")
"""The synthetic "other" sounds of :func:`synthetic_other_clips` (noises, hums and textures: no music, no speech)."""


def _synthetic_noise(kind: str, seconds: float, sample_rate: int, rng) -> np.ndarray:
    from scipy.signal import lfilter

    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    white = rng.standard_normal(n)
    if kind == "white":
        y = white
    elif kind == "pink":  # Paul Kellet's economy pink filter
        y = lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1, -2.494956002, 2.017265875, -0.522189400], white)
    elif kind == "brown":
        y = np.cumsum(white)
        y = y - lfilter([1], [1, -0.999], y) * 0.001
        y = lfilter([1, -1], [1, -0.995], y)
    elif kind in ("hum50", "hum60"):
        f0 = 50.0 if kind == "hum50" else 60.0
        y = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8)) + 0.05 * white
    elif kind == "wind":
        y = lfilter([1], [1, -0.98], white) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 6.3)))
    elif kind == "rain":
        drops = (rng.random(n) < 0.002) * rng.standard_normal(n) * 8
        y = lfilter([1, -0.5], [1], white * 0.3 + drops)
    elif kind == "rumble":
        y = lfilter([1], [1, -0.995], white) + 0.2 * np.sin(2 * np.pi * 31 * t)
    elif kind == "room":
        y = lfilter([1], [1, -0.9], white) * 0.05
    elif kind == "crackle":
        y = (rng.random(n) < 0.0005) * rng.standard_normal(n) * 20 + 0.02 * white
    elif kind == "hiss":
        y = lfilter([1, -0.95], [1], white)
    elif kind == "fan":
        y = lfilter([1], [1, -0.95], white) + 0.3 * np.sin(2 * np.pi * 118 * t) + 0.1 * np.sin(2 * np.pi * 236 * t)
    else:
        raise ValueError(f"synthetic sound: unknown kind {kind!r}; expected one of {SYNTHETIC_OTHER}")
    y = np.asarray(y, dtype=np.float64)
    y = y / (np.max(np.abs(y)) + 1e-12)
    return (y * rng.uniform(0.05, 0.7)).astype(np.float32)


def synthetic_other_clips(folder: str | os.PathLike, seconds: float = 20.0, sample_rate: int = 16000,
                          seed: int = 0) -> list[Clip]:
    """Write (once) and list synthetic "other" clips: noises, hums and textures, one FLAC per kind.

    They stand in for a class the shared data has only two real clips of (a
    whale's song, a robin's whistle): without them a content head cannot learn
    that neither music nor speech is an answer. Deterministic for a ``seed``.

    Parameters
    ----------
    folder : str or path-like
        Where the FLAC files go (e.g. the embedding cache).
    seconds : float
        Length of each clip.
    sample_rate : int
        Their sample rate in Hz.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    list of Clip
        Label ``"other"``, each its own group.
    """
    import soundfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k, kind in enumerate(SYNTHETIC_OTHER):
        path = folder / f"synthetic-{kind}-s{seed}.flac"
        if not path.is_file():
            y = _synthetic_noise(kind, seconds, sample_rate, np.random.default_rng([seed, k]))
            tmp = path.with_suffix(".tmp.flac")
            soundfile.write(tmp, y, sample_rate)
            os.replace(tmp, path)
        clips.append(Clip(path, "other", f"file/synthetic/{kind}"))
    return clips
