"""The model at serving time: an ONNX file run by ONNX Runtime.

Every setting the engine needs (labels, heads, the frontend with every
parameter, sample_rate, window_s, hop_s, licences) comes from the model's
``metadata_props``, written by ``export/``; a model whose metadata lacks a
field, or names a frontend this genrestream does not compute, is refused with
its path and what is wrong. The execution provider is chosen once per
process: CUDA when onnxruntime-gpu is installed *and* its CUDA libraries
load, otherwise CPU, with one log line saying which and why.

A model has one input (the frontend's, ``[batch, *input_shape]`` float32) and
one output per head: ``genre`` (probabilities over ``labels``, required),
``content`` (music, speech, other: optional) and ``tags`` (independent
probabilities of a tag vocabulary: optional).

A model split by ``genrestream export`` (:mod:`export.split`) also has a frame
stage and a window stage beside it (``<stem>.frames.onnx``,
``<stem>.windows.onnx``, each recording the whole file's sha256): on the CPU
the engine then runs each log-mel frame's front end once
(:class:`stream.framestage.FrameStageRunner`), with the same results.
``GENRESTREAM_FRAME_STAGE=0`` turns that off (the whole model on every window).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .frontends import frontend_from_params

log = logging.getLogger(__name__)

SHIPPED_MODELS: dict[str, str] = {
    "gtzan-mlp": "gtzan_mlp.onnx",
    "musicnn-msd": "musicnn_msd.onnx",
    "musicnn-msd-int8": "musicnn_msd_int8.onnx",
}
"""Names ``--model`` takes for the models shipped inside the package → their files in ``stream/models/``."""

DEFAULT_MODEL_NAME = "musicnn-msd"
"""The shipped model used when none is named."""

REQUIRED_METADATA = (
    "model_name", "model_version", "labels", "heads", "input_name", "frontend", "sample_rate", "window_s", "hop_s",
    "licences", "training_summary",
)
"""Keys every genrestream model carries in ``metadata_props`` (``silence_rms`` is optional)."""

GENRE_HEAD, CONTENT_HEAD, TAGS_HEAD = "genre", "content", "tags"
CONTENT_LABELS = ("music", "speech", "other")
"""The labels a ``content`` head may have ("music" and "speech" at least)."""


def shipped_model_path(name: str) -> Path:
    """The file of the shipped model called ``name`` (see :data:`SHIPPED_MODELS`).

    Raises
    ------
    KeyError
        If no shipped model has that name.
    """
    return Path(str(resources.files("stream") / "models" / SHIPPED_MODELS[name]))


def resolve_model(spec: str | os.PathLike | None = None) -> Path:
    """The model file for a ``--model`` value: a shipped name or a path.

    Parameters
    ----------
    spec : str or path-like or None
        A name of :data:`SHIPPED_MODELS` or a path to an ONNX file; None for
        ``$GENRESTREAM_MODEL`` (a name or a path) if set, else
        :data:`DEFAULT_MODEL_NAME`.

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        If ``spec`` is neither a shipped name nor an existing file.
    """
    if spec is None:
        spec = os.environ.get("GENRESTREAM_MODEL") or DEFAULT_MODEL_NAME
    text = os.fspath(spec)
    if text in SHIPPED_MODELS:
        return shipped_model_path(text)
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"model: {text!r} is neither a file nor a shipped model ({', '.join(sorted(SHIPPED_MODELS))})"
        )
    return path


@dataclass(frozen=True)
class Head:
    """One output of a model: its ONNX output name and its labels, in output order."""

    output: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What a genrestream ONNX model says about itself (its ``metadata_props``).

    Attributes
    ----------
    name, version : str
        Model identity; :attr:`tag` is ``name@version``.
    labels : tuple of str
        Genre labels, in the order of the genre head's probabilities.
    heads : dict of str to Head
        ``genre`` always; ``content`` and ``tags`` when the model has them.
    input_name : str
        The ONNX input the frontend feeds.
    frontend : dict
        The frontend's name, version and every parameter.
    sample_rate : int
        Sample rate in Hz the frontend works at.
    window_s : float
        Length of the analysis window in seconds.
    hop_s : float
        Default hop between windows in seconds.
    licences : list of dict
        What the model is made of and under which licence (``what``,
        ``licence``, ``source``).
    silence_rms : float
        Window RMS (linear, full scale 1.0) below which a window counts as
        silent.
    training_summary : dict
        Free-form summary of the training run.
    """

    name: str
    version: str
    labels: tuple[str, ...]
    heads: dict[str, Head]
    input_name: str
    frontend: dict[str, Any]
    sample_rate: int
    window_s: float
    hop_s: float
    licences: list = field(default_factory=list)
    silence_rms: float = 1e-3
    training_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def window_length(self) -> int:
        """Window length in samples."""
        return int(round(self.window_s * self.sample_rate))

    @property
    def content_labels(self) -> tuple[str, ...] | None:
        head = self.heads.get(CONTENT_HEAD)
        return head.labels if head is not None else None

    @property
    def tag_labels(self) -> tuple[str, ...] | None:
        head = self.heads.get(TAGS_HEAD)
        return head.labels if head is not None else None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str = "model") -> "ModelInfo":
        """Parse ``metadata_props``.

        Raises
        ------
        ValueError
            If a required key (:data:`REQUIRED_METADATA`) is missing or a value
            is malformed; the message names ``source`` and the key.
        """
        missing = [k for k in REQUIRED_METADATA if k not in meta]
        if missing:
            raise ValueError(
                f"{source}: ONNX metadata_props lacks {missing}; export it with this genrestream's `genrestream export`"
            )
        key = ""
        try:
            key = "labels"
            labels = tuple(json.loads(meta["labels"]))
            key = "heads"
            heads = {
                name: Head(str(spec["output"]), tuple(str(label) for label in spec["labels"]))
                for name, spec in json.loads(meta["heads"]).items()
            }
            key = "frontend"
            frontend = json.loads(meta["frontend"])
            if not isinstance(frontend, dict):
                raise TypeError("expected a JSON object")
            key = "licences"
            licences = json.loads(meta["licences"])
            key = "training_summary"
            summary = json.loads(meta["training_summary"])
            key = "sample_rate, window_s, hop_s or silence_rms"
            info = cls(
                name=str(meta["model_name"]),
                version=str(meta["model_version"]),
                labels=labels,
                heads=heads,
                input_name=str(meta["input_name"]),
                frontend=frontend,
                sample_rate=int(meta["sample_rate"]),
                window_s=float(meta["window_s"]),
                hop_s=float(meta["hop_s"]),
                licences=licences,
                silence_rms=float(meta.get("silence_rms", 1e-3)),
                training_summary=summary,
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{source}: malformed ONNX metadata_props {key!r}: {exc}") from exc
        if GENRE_HEAD not in heads:
            raise ValueError(f"{source}: metadata 'heads' has no {GENRE_HEAD!r} head (has {sorted(heads)})")
        if heads[GENRE_HEAD].labels != labels:
            raise ValueError(f"{source}: metadata 'labels' and the genre head's labels differ")
        content = heads.get(CONTENT_HEAD)
        if content is not None and not ({"music", "speech"} <= set(content.labels) <= set(CONTENT_LABELS)):
            raise ValueError(
                f"{source}: the content head's labels {list(content.labels)} must include 'music' and 'speech' "
                f"and be among {list(CONTENT_LABELS)}"
            )
        if info.sample_rate <= 0 or info.window_s <= 0 or info.hop_s <= 0:
            raise ValueError(f"{source}: sample_rate, window_s and hop_s must be positive")
        return info


_PROVIDER_CACHE: list[str] | None = None


def _cuda_usable(ort, model_bytes: bytes) -> tuple[bool, str]:
    """Try a CUDA session quietly; return (usable, reason)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "onnxruntime has no CUDAExecutionProvider"
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a missing libcudart is expected, not news
    previous = 2
    try:
        ort.set_default_logger_severity(4)
        session = ort.InferenceSession(
            model_bytes, options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return False, f"CUDA session failed: {exc}"
    finally:
        ort.set_default_logger_severity(previous)
    if "CUDAExecutionProvider" in session.get_providers():
        return True, "CUDA libraries loaded"
    return False, "CUDA libraries (libcudart, libcublas, libcudnn) not found"


def choose_providers(model_bytes: bytes) -> list[str]:
    """Choose the execution providers once per process.

    ``GENRESTREAM_DEVICE=cpu`` forces the CPU; ``cuda`` insists on CUDA and
    raises if it is not usable.

    Raises
    ------
    RuntimeError
        If ``GENRESTREAM_DEVICE=cuda`` and CUDA is not usable.
    """
    global _PROVIDER_CACHE
    if _PROVIDER_CACHE is not None:
        return list(_PROVIDER_CACHE)
    import onnxruntime as ort

    wanted = os.environ.get("GENRESTREAM_DEVICE", "auto").lower()
    if wanted == "cpu":
        providers, why = ["CPUExecutionProvider"], "GENRESTREAM_DEVICE=cpu"
    else:
        usable, why = _cuda_usable(ort, model_bytes)
        if usable:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif wanted == "cuda":
            raise RuntimeError(f"GENRESTREAM_DEVICE=cuda but CUDA is not usable: {why}")
        else:
            providers = ["CPUExecutionProvider"]
    log.info("inference on %s (%s), onnxruntime %s", providers[0], why, ort.__version__)
    _PROVIDER_CACHE = providers
    return list(providers)


class GenreModel:
    """An ONNX genre model with its metadata and frontend, ready for batched inference.

    Parameters
    ----------
    path : str or path-like or None
        A shipped model's name or an ONNX file (:func:`resolve_model`); None
        for the default.
    intra_op_threads : int or None
        ONNX Runtime threads per call. None: 1 on the CPU (the engine then
        runs one call per core at once, :class:`stream.engine.InferenceBatcher`),
        ONNX Runtime's default on a GPU; 0: ONNX Runtime's default (every core).
    frame_stage : bool or None
        Use the frame and window stages beside the file when they belong to
        it (:mod:`stream.framestage`); None: yes on the CPU unless
        ``GENRESTREAM_FRAME_STAGE=0``.

    Attributes
    ----------
    info : ModelInfo
    frontend : frontend object
        Rebuilt from the metadata (:func:`stream.frontends.frontend_from_params`).
    provider : str
        The execution provider in use.
    stages : FrameStageRunner or None
        The frame-stage runner when the split model is in use.

    Raises
    ------
    FileNotFoundError
        If ``path`` is neither a file nor a shipped model's name.
    ValueError
        If the file is not an ONNX model, its metadata lacks a field or is
        malformed, it names a frontend (or frontend parameters) this
        genrestream does not compute, or its inputs and outputs do not match
        its metadata. Every message names the path.
    """

    def __init__(self, path: str | os.PathLike | None = None, intra_op_threads: int | None = None,
                 frame_stage: bool | None = None) -> None:
        import onnxruntime as ort

        self.path = resolve_model(path)
        model_bytes = self.path.read_bytes()
        providers = choose_providers(model_bytes)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Idle ONNX Runtime threads sleep instead of spinning: the cores are shared with decoding and features,
        # and spinning threads on a busy core cost 1.5x per window (benchmarks/README.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if intra_op_threads is None:
            intra_op_threads = 1 if providers[0] == "CPUExecutionProvider" else 0
        self.intra_op_threads = int(intra_op_threads) or None  # None: ONNX Runtime's default
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"model: {self.path} is not a loadable ONNX model: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        source = str(self.path)
        self.info = info = ModelInfo.from_metadata(dict(meta), source=source)
        self.frontend = frontend_from_params(info.frontend, source=source)
        if info.sample_rate != self.frontend.sample_rate:
            raise ValueError(
                f"model: {source} says sample_rate {info.sample_rate}, its frontend works at {self.frontend.sample_rate}"
            )
        if abs(info.window_length - self.frontend.window_length) > 1:
            raise ValueError(
                f"model: {source} says window_s {info.window_s}, its frontend's window is "
                f"{self.frontend.window_length / self.frontend.sample_rate} s"
            )
        inputs = {i.name: i for i in self.session.get_inputs()}
        if info.input_name not in inputs or info.input_name != self.frontend.input_name:
            raise ValueError(
                f"model: {source} has no input {self.frontend.input_name!r} for its frontend (has {sorted(inputs)})"
            )
        shape = list(inputs[info.input_name].shape)[1:]
        if len(shape) != len(self.frontend.input_shape) or any(
            isinstance(d, int) and d != e for d, e in zip(shape, self.frontend.input_shape)
        ):
            raise ValueError(
                f"model: {source} input {info.input_name!r} has shape [batch, {shape}], its frontend gives "
                f"{list(self.frontend.input_shape)}"
            )
        outputs = {o.name: o for o in self.session.get_outputs()}
        for name, head in info.heads.items():
            if head.output not in outputs:
                raise ValueError(f"model: {source} has no output {head.output!r} for its {name} head")
            last = outputs[head.output].shape[-1]
            if isinstance(last, int) and last != len(head.labels):
                raise ValueError(
                    f"model: {source} output {head.output!r} has {last} values, its {name} head {len(head.labels)} labels"
                )
        self._head_names = list(info.heads)
        self._output_names = [info.heads[name].output for name in self._head_names]
        self.stages = None
        if frame_stage is None:
            frame_stage = os.environ.get("GENRESTREAM_FRAME_STAGE", "1") != "0" and self.provider == "CPUExecutionProvider"
        if frame_stage:
            self.stages = self._load_stages(ort, options, providers, model_bytes)

    def _load_stages(self, ort, options, providers, model_bytes: bytes):
        """The frame-stage runner, if both stage files lie beside the model and were split from this very file."""
        import hashlib

        from .framestage import FrameStageRunner, stage_paths

        paths = stage_paths(self.path)
        if not all(p.is_file() for p in paths):
            return None
        sha = hashlib.sha256(model_bytes).hexdigest()
        try:
            sessions = [ort.InferenceSession(p.read_bytes(), options, providers=providers) for p in paths]
            for p, session in zip(paths, sessions):
                recorded = session.get_modelmeta().custom_metadata_map.get("whole_sha256")
                if recorded != sha:
                    log.warning("model %s: ignoring %s, split from another file (sha256 %s, this one %s)",
                                self.path, p.name, (recorded or "none")[:12], sha[:12])
                    return None
            runner = FrameStageRunner(sessions[0], sessions[1], self.info.input_name, self._output_names,
                                      getattr(self.frontend, "frame_hop_length", 0) or 1)
        except Exception as exc:  # noqa: BLE001 - the whole model still works: say why and use it
            log.warning("model %s: frame stage not used: %s", self.path, exc)
            return None
        log.info("model %s: frame stage in use (each frame's front end once, %s + %s)", self.path.name,
                 paths[0].name, paths[1].name)
        return runner

    def forget(self, key) -> None:
        """Drop what the frame stage keeps for stream ``key`` (no-op without a frame stage; thread-safe)."""
        if self.stages is not None:
            self.stages.forget(key)

    @property
    def labels(self) -> tuple[str, ...]:
        """Genre labels, in the order of the genre head's probabilities."""
        return self.info.labels

    def predict(self, x: np.ndarray, keys=None, end_samples=None) -> dict[str, np.ndarray]:
        """Every head's probabilities for a batch of windows.

        Parameters
        ----------
        x : np.ndarray [shape=(batch, *frontend.input_shape)]
            The frontend's model inputs (the 57 raw GTZAN features, or log-mel
            patches of shape (187, 96)); cast to float32.
        keys, end_samples : sequences of length batch, or None
            With a frame stage: each window's stream (any hashable, None for
            none) and the sample its window ends at in that stream, so that
            frames shared with the stream's previous window are reused.

        Returns
        -------
        dict of str to np.ndarray [shape=(batch, n_labels), dtype=float32]
            By head name (``genre``, and ``content`` and ``tags`` when the
            model has them).

        Raises
        ------
        ValueError
            If ``x`` is not of shape (batch, *input_shape).
        """
        x = np.asarray(x, dtype=np.float32)
        expected = tuple(self.frontend.input_shape)
        if x.ndim != 1 + len(expected) or x.shape[1:] != expected:
            raise ValueError(f"x: expected shape (batch, {', '.join(map(str, expected))}), got {x.shape}")
        if x.shape[0] == 0:
            return {name: np.zeros((0, len(self.info.heads[name].labels)), dtype=np.float32) for name in self._head_names}
        if self.stages is not None and keys is not None and end_samples is not None:
            results = self.stages.run(x, keys, end_samples)
        else:
            results = self.session.run(self._output_names, {self.info.input_name: x})
        return dict(zip(self._head_names, results))
