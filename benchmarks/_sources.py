"""Benchmark audio: the music clips of ``../shared/audio/free``, decoded once, played from memory.

The clips are decoded with :class:`stream.sources.AVSource` (PyAV + soxr HQ,
the same decode and resampling as serving) to the model's rate, once; later
runs read them from a cache in the temporary directory. :class:`ArraySource`
then plays a clip from memory as an engine source, looping, so that a
benchmark measures the engine and not FFmpeg; :func:`decode_cost` measures
what decoding would add per stream.

Pacing (``pace``):

``"engine"``
    ``is_file = True``: the engine paces the source when ``realtime=True``
    (it hands each ~0.25 s chunk over when the chunk's *first* sample is due)
    and reads it as fast as it can otherwise.
``"source"``
    ``is_file = False``: the source paces itself like a live stream, yielding
    each block when its *last* sample is due (optionally after a pre-roll
    burst), so a window is complete exactly at ``t_zero + stream_time_s``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from stream.sources import AudioSource, AVSource, SourceError

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$GENRESTREAM_SHARED``, else ``../shared`` next to the repository."""
    return Path(os.environ.get("GENRESTREAM_SHARED") or (REPO.parent / "shared"))


def music_files(shared: Path | None = None) -> list[Path]:
    """The ``kind == music`` files of ``audio/free/CATALOGUE.csv`` that exist.

    Raises
    ------
    FileNotFoundError
        If the catalogue is missing or lists no music file present on disk.
    """
    folder = (shared or shared_dir()) / "audio" / "free"
    catalogue = folder / "CATALOGUE.csv"
    if not catalogue.is_file():
        raise FileNotFoundError(f"no {catalogue}: set GENRESTREAM_SHARED to the shared data folder")
    with catalogue.open(newline="") as f:
        names = [row["file"] for row in csv.DictReader(f) if row.get("kind", "").strip() == "music"]
    paths = [folder / name for name in names if (folder / name).is_file()]
    if not paths:
        raise FileNotFoundError(f"{catalogue} lists no music file present in {folder}")
    return paths


@dataclass(frozen=True)
class Clip:
    """One decoded clip: mono float32 samples at ``sample_rate``."""

    name: str
    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def decode(path: Path, sample_rate: int) -> np.ndarray:
    """Decode a whole file as serving does (AVSource: PyAV, channel mean, soxr HQ)."""
    parts = [b for b in AVSource(str(path)).blocks(sample_rate) if isinstance(b, np.ndarray)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _cache_key(paths: list[Path], sample_rate: int) -> str:
    h = hashlib.sha1(str(sample_rate).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_path(paths: list[Path], sample_rate: int) -> Path:
    return Path(tempfile.gettempdir()) / "genrestream-bench" / f"clips-{sample_rate}-{_cache_key(paths, sample_rate)}.npz"


def load_clips(sample_rate: int = 22050, shared: Path | None = None, use_cache: bool = True) -> tuple[list[Clip], Path]:
    """Decode every music clip once (or read the cache); return the clips and the cache file.

    The cache file (``.npz``, one array per clip) is also how a benchmark hands
    the clips to a child process.
    """
    paths = music_files(shared)
    cache = cache_path(paths, sample_rate)
    if use_cache and cache.is_file():
        try:
            return read_clips(cache, sample_rate), cache
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt
            pass
    clips = [Clip(p.name, decode(p, sample_rate), sample_rate) for p in paths]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **{c.name: c.samples for c in clips})
    os.replace(tmp, cache)
    return clips, cache


def read_clips(path: Path, sample_rate: int) -> list[Clip]:
    """Read clips written by :func:`load_clips`."""
    with np.load(path) as data:
        return [Clip(name, np.ascontiguousarray(data[name], dtype=np.float32), sample_rate) for name in data.files]


def decode_cost(path: Path, sample_rate: int) -> dict:
    """CPU seconds per second of audio to decode and resample ``path`` as serving does."""
    cpu0, t0 = time.process_time(), time.monotonic()
    samples = decode(path, sample_rate)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    audio_s = samples.shape[0] / sample_rate
    return {"file": path.name, "audio_s": round(audio_s, 2), "cpu_s": round(cpu, 4), "wall_s": round(wall, 4),
            "cpu_s_per_audio_s": cpu / audio_s}


class ArraySource(AudioSource):
    """Plays a clip from memory, looping, as an engine source.

    Parameters
    ----------
    spec : str
        Name shown in events.
    clip : Clip
    offset_s : float
        Where in the clip to start (streams sharing a clip start at different places).
    duration_s : float or None
        Seconds of audio to yield; None for until :meth:`close`.
    block_length : float
        Samples per block (fractional: block ends are rounded, so a block ends
        exactly on every multiple of ``hop_length`` when ``block_length`` divides it).
    pace : {"engine", "source"}
        Who paces it in real time (see the module docstring).
    preroll_s : float
        With ``pace="source"``: seconds yielded at once on start (like a live
        server's burst on connect), the rest in real time.

    Attributes
    ----------
    t_zero : float or None
        ``time.monotonic()`` at which stream time 0 was due; audio at stream
        time ``t`` is due at ``t_zero + t``. Set when the engine starts reading.
    samples_out : int
        Samples yielded so far.
    """

    def __init__(
        self,
        spec: str,
        clip: Clip,
        offset_s: float = 0.0,
        duration_s: float | None = None,
        block_length: float = 5512.5,
        pace: str = "engine",
        preroll_s: float = 0.0,
    ) -> None:
        super().__init__(spec)
        if pace not in ("engine", "source"):
            raise ValueError(f"pace: expected 'engine' or 'source', got {pace!r}")
        self.clip = clip
        self.offset = int(round(offset_s * clip.sample_rate)) % clip.samples.shape[0]
        self.total = None if duration_s is None else int(round(duration_s * clip.sample_rate))
        self.block_length = float(block_length)
        self.pace = pace
        self.is_file = pace == "engine"
        self.preroll = int(round(preroll_s * clip.sample_rate)) if pace == "source" else 0
        self._closed = threading.Event()
        self.t_zero: float | None = None
        self.samples_out = 0

    def close(self) -> None:
        self._closed.set()

    def _take(self, pos: int, n: int) -> np.ndarray:
        samples = self.clip.samples
        length = samples.shape[0]
        if pos + n <= length:
            return samples[pos : pos + n].copy()  # a new array per block, as a decoder makes
        return samples[np.arange(pos, pos + n) % length]

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray]:
        sr = self.clip.sample_rate
        if sample_rate != sr:
            raise SourceError(self.spec, f"clip decoded at {sr} Hz, engine wants {sample_rate} Hz")
        self.t_zero = time.monotonic() - self.preroll / sr
        pos, start, j = self.offset, 0, 0
        length = self.clip.samples.shape[0]
        while not self._closed.is_set():
            end = int(round((j + 1) * self.block_length))
            if self.total is not None:
                end = min(end, self.total)
            n = end - start
            if n <= 0:
                break
            block = self._take(pos, n)
            if self.pace == "source" and end > self.preroll:
                delay = self.t_zero + end / sr - time.monotonic()
                if delay > 0 and self._closed.wait(delay):
                    break
            self.stats.seconds_decoded += n / sr
            self.stats.bytes_read += 4 * n
            self.samples_out += n
            yield block
            start, j, pos = end, j + 1, (pos + n) % length


def make_sources(
    clips: list[Clip],
    n: int,
    *,
    duration_s: float | None,
    block_length: float,
    pace: str,
    preroll_s: float = 0.0,
    seed: int = 0,
    prefix: str = "s",
) -> dict[str, ArraySource]:
    """``n`` sources over the clips (round robin), each from a random place in its clip; ids ``s000``..."""
    rng = np.random.default_rng(seed)
    width = max(3, len(str(n - 1)))
    out = {}
    for i in range(n):
        clip = clips[i % len(clips)]
        sid = f"{prefix}{i:0{width}d}"
        out[sid] = ArraySource(
            f"mem:{clip.name}#{i}", clip, offset_s=float(rng.uniform(0, clip.seconds)),
            duration_s=duration_s, block_length=block_length, pace=pace, preroll_s=preroll_s,
        )
    return out


def looped_signals(seconds: float, n: int, sample_rate: int, files: list[Path]) -> list[np.ndarray]:
    """``n`` mono float32 signals of ``seconds`` at ``sample_rate``: the files' audio looped (each signal starting at
    another file), or, without files, noise plus a tone (a different pitch each)."""
    length = int(seconds * sample_rate)
    out = []
    if files:
        import soundfile
        import soxr

        pool = []
        for path in files:
            y, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
            y = y.mean(axis=1)
            if sr != sample_rate:
                y = soxr.resample(y, sr, sample_rate, quality="HQ")
            pool.append(y.astype(np.float32))
        for i in range(n):
            y = np.concatenate([pool[(i + j) % len(pool)] for j in range(len(pool))])
            out.append(np.ascontiguousarray(np.resize(y, length)))
    else:
        rng = np.random.default_rng(0)
        t = np.arange(length) / sample_rate
        for i in range(n):
            y = 0.1 * rng.standard_normal(length) + 0.3 * np.sin(2 * np.pi * (220 + 20 * i) * t)
            out.append(y.astype(np.float32))
    return out

