"""Window embeddings of audio files through the musicnn backbone, as serving would compute them.

Each file is decoded by serving's own source (:class:`stream.sources.AVSource`:
PyAV, channel mean, soxr HQ to 16 kHz), cut into the engine's windows by the
log-mel frontend (:func:`stream.frontends.logmel.patches`: windows end at
``window_length + k * hop_length``; a file shorter than a window gives one
zero-padded window, as the engine pads), and run through an ONNX model with an
``embedding`` output (the backbone alone, or a whole genrestream musicnn model)
by ONNX Runtime. Results are cached on disk by the file's and the model's
SHA-256, so retraining a head costs seconds.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from stream.frontends import logmel
from training.audio import Clip

DEFAULT_HOP_LENGTH = 188 * logmel.HOP_LENGTH
"""Window hop of the training windows: 188 frames, 3.008 s, one window after the other (musicnn's and Essentia's
default patch hop). Half of it (windows overlapping by half) gave the same block-validated accuracy within one clip
of 58 (0.69 against 0.67) for twice the embedding time."""

BATCH_SIZE = 32
"""Windows per ONNX Runtime call."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The embedding cache: ``path``, else ``$GENRESTREAM_CACHE/embeddings``, else ``~/.cache/genrestream/embeddings``."""
    if path is not None:
        return Path(path)
    base = os.environ.get("GENRESTREAM_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "genrestream") / "embeddings"


def _sha256(path: Path) -> str:
    from export.musicnn import sha256_file

    return sha256_file(path)


def decode(path: str | os.PathLike, sample_rate: int = logmel.SAMPLE_RATE) -> np.ndarray:
    """A whole file as serving decodes it: mono float32 at ``sample_rate`` (:class:`stream.sources.AVSource`).

    Raises
    ------
    stream.sources.SourceError
        If the file cannot be decoded.
    """
    from stream.sources import AVSource

    blocks = [b for b in AVSource(str(path)).blocks(sample_rate) if isinstance(b, np.ndarray)]
    return np.concatenate(blocks).astype(np.float32) if blocks else np.zeros(0, dtype=np.float32)


def _pooled_first(path: Path) -> bytes:
    """The model's bytes with musicnn's max-over-frequency taken before ReLU and batch normalisation
    (:func:`export.split.pool_before_affine`: the same values, about 1.3× less CPU for the whole model);
    the file as it is when nothing matches."""
    import onnx

    from export.split import pool_before_affine

    model = onnx.load(str(path))
    return model.SerializeToString() if pool_before_affine(model) else path.read_bytes()


class Embedder:
    """ONNX Runtime on a model whose input is ``logmel`` and which has an ``embedding`` output.

    Parameters
    ----------
    model_path : str or path-like
        The backbone (``export.musicnn.backbone_to_onnx``) or a genrestream
        musicnn model (which keeps the backbone's outputs).
    threads : int or None
        Intra-op threads (None: ONNX Runtime's default, every core).

    Raises
    ------
    ValueError
        If the model has no ``logmel`` input or no ``embedding`` output.
    """

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(model_path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(_pooled_first(self.path), options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [logmel.LogMelFrontend.input_name] or "embedding" not in outputs:
            raise ValueError(f"{self.path}: expected input 'logmel' and an 'embedding' output, has {inputs} → {outputs}")
        self.outputs = [name for name in ("embedding", "tags") if name in outputs]
        self.sha256 = _sha256(self.path)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``embedding`` [n, 200] (and ``tags`` [n, 50]) of log-mel windows ``x`` [n, 187, 96]."""
        parts = [self.session.run(self.outputs, {"logmel": x[s : s + BATCH_SIZE]}) for s in range(0, len(x), BATCH_SIZE)]
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.outputs)}


@dataclass
class ClipEmbeddings:
    """The windows of one clip.

    Attributes
    ----------
    clip : Clip
    embedding : np.ndarray [shape=(n, 200), dtype=float32]
    tags : np.ndarray [shape=(n, 50), dtype=float32] or None
    ends : np.ndarray [shape=(n,), dtype=int64]
        End sample of each window (16 kHz).
    duration_s : float
        Seconds of decoded audio.
    """

    clip: Clip
    embedding: np.ndarray
    tags: np.ndarray | None
    ends: np.ndarray
    duration_s: float


def embed_audio(y: np.ndarray, embedder: Embedder, hop_length: int = DEFAULT_HOP_LENGTH) -> dict[str, np.ndarray]:
    """Embeddings of every engine window of a signal (16 kHz mono), with their ``ends``."""
    x, ends = logmel.patches(y, hop_length)
    out = embedder(x)
    out["ends"] = ends
    return out


def embed_clips(
    clips: Sequence[Clip],
    embedder: Embedder,
    hop_length: int = DEFAULT_HOP_LENGTH,
    cache: str | os.PathLike | None | bool = None,
    progress: bool = True,
    desc: str = "embeddings",
) -> list[ClipEmbeddings]:
    """Embed every clip (cached), in order.

    Parameters
    ----------
    clips : sequence of Clip
    embedder : Embedder
    hop_length : int
        Samples between window ends (snapped to the frame grid).
    cache : path-like, None or False
        Cache folder (None: :func:`cache_dir`; False: no cache).
    progress : bool
        A tqdm bar over the clips.
    desc : str
        The bar's label.

    Returns
    -------
    list of ClipEmbeddings

    Raises
    ------
    ValueError
        If a clip has no decodable audio; the message names it.
    """
    hop_length = logmel.snap_hop(hop_length)
    folder = None if cache is False else cache_dir(cache if cache not in (None, True) else None)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    iterator = clips
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(clips, desc=desc, unit="clip", file=sys.stderr)
    results = []
    for clip in iterator:
        cached = None
        if folder is not None:
            key = hashlib.sha256(
                f"{_sha256(Path(clip.path))}:{embedder.sha256}:{hop_length}:{logmel.FRONTEND_VERSION}".encode()
            ).hexdigest()[:32]
            cached = folder / f"{key}.npz"
        if cached is not None and cached.is_file():
            data = dict(np.load(cached))
        else:
            y = decode(clip.path)
            if y.size == 0:
                raise ValueError(f"{clip.path}: no decodable audio")
            data = embed_audio(y, embedder, hop_length)
            data["duration_s"] = np.array(y.shape[0] / logmel.SAMPLE_RATE)
            if cached is not None:
                tmp = cached.with_suffix(".tmp.npz")
                np.savez(tmp, **data)
                os.replace(tmp, cached)
        results.append(ClipEmbeddings(clip, data["embedding"], data.get("tags"), data["ends"], float(data["duration_s"])))
    return results


def stack(items: Sequence[ClipEmbeddings], labels: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Windows of many clips as training arrays.

    Returns
    -------
    X : np.ndarray [shape=(n, 200), dtype=float32]
    y : np.ndarray [shape=(n,), dtype=int64]
        Index of each window's clip label in ``labels``.
    groups : np.ndarray [shape=(n,), dtype=object]
        Each window's clip group.
    clip_index : np.ndarray [shape=(n,), dtype=int64]
        Index of each window's clip in ``items``.

    Raises
    ------
    ValueError
        If a clip's label is not in ``labels``.
    """
    index = {label: k for k, label in enumerate(labels)}
    unknown = sorted({it.clip.label for it in items} - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among {list(labels)}")
    X = np.concatenate([it.embedding for it in items]).astype(np.float32)
    y = np.concatenate([np.full(len(it.embedding), index[it.clip.label]) for it in items]).astype(np.int64)
    groups = np.concatenate([np.full(len(it.embedding), it.clip.group, dtype=object) for it in items])
    clip_index = np.concatenate([np.full(len(it.embedding), k) for k, it in enumerate(items)]).astype(np.int64)
    return X, y, groups, clip_index
