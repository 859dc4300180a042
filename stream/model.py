"""The genre model at serving time: an ONNX file run by ONNX Runtime.

Every setting the engine needs (labels, sample_rate, window_s, hop_s, the
feature frontend) comes from the model's ``metadata_props``, written by
``export/``. The execution provider is chosen once per process: CUDA when
onnxruntime-gpu is installed *and* its CUDA libraries load, otherwise CPU,
with one log line saying which and why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .frontends import gtzan as features

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gtzan_mlp.onnx"
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


def default_model_path() -> Path:
    """The model used when none is named: ``$GENRESTREAM_MODEL`` if set, else the
    model shipped inside the package (``stream/models/gtzan_mlp.onnx``)."""
    override = os.environ.get("GENRESTREAM_MODEL")
    if override:
        return Path(override)
    return Path(str(resources.files("stream") / "models" / DEFAULT_MODEL))


@dataclass(frozen=True)
class ModelInfo:
    """What a genrestream ONNX model says about itself (its ``metadata_props``).

    Attributes
    ----------
    name, version : str
        Model identity; :attr:`tag` is ``name@version``.
    labels : tuple of str
        Genre labels, in the order of the output probabilities.
    sample_rate : int
        Sample rate in Hz the features are computed at.
    window_s : float
        Length of the analysis window in seconds.
    hop_s : float
        Default hop between windows in seconds.
    feature_frontend, feature_frontend_version : str
        The feature function the model was trained on.
    feature_names : tuple of str
        Names of the input features, in input order.
    silence_rms : float
        Mean frame RMS (the ``rms_mean`` feature; linear, full scale 1.0)
        below which a window counts as silent.
    training_summary : dict
        Free-form summary of the training run.
    """

    name: str
    version: str
    labels: tuple[str, ...]
    sample_rate: int
    window_s: float
    hop_s: float
    feature_frontend: str
    feature_frontend_version: str
    feature_names: tuple[str, ...]
    silence_rms: float = 1e-3
    training_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def window_length(self) -> int:
        """Window length in samples."""
        return int(round(self.window_s * self.sample_rate))

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> "ModelInfo":
        """Parse ``metadata_props``.

        Raises
        ------
        ValueError
            If a required key is missing or malformed; the message names ``source``.
        """
        required = ("labels", "sample_rate", "window_s", "hop_s", "feature_frontend",
                    "feature_frontend_version", "feature_names")
        missing = [k for k in required if k not in meta]
        if missing:
            raise ValueError(f"{source}: ONNX metadata_props lacks {missing}; export it with `genrestream export`")
        try:
            return cls(
                name=meta.get("model_name", Path(source).stem),
                version=meta.get("model_version", "0"),
                labels=tuple(json.loads(meta["labels"])),
                sample_rate=int(meta["sample_rate"]),
                window_s=float(meta["window_s"]),
                hop_s=float(meta["hop_s"]),
                feature_frontend=meta["feature_frontend"],
                feature_frontend_version=meta["feature_frontend_version"],
                feature_names=tuple(json.loads(meta["feature_names"])),
                silence_rms=float(meta.get("silence_rms", 1e-3)),
                training_summary=json.loads(meta.get("training_summary", "{}")),
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: malformed ONNX metadata_props: {exc}") from exc


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
    """An ONNX genre model with its metadata, ready for batched inference.

    Parameters
    ----------
    path : str or Path or None
        The ONNX file; None for :func:`default_model_path`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an ONNX model, lacks genrestream metadata, or was
        trained on another feature frontend than :mod:`stream.frontends.gtzan`.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"model: no such file {self.path}")
        model_bytes = self.path.read_bytes()
        providers = choose_providers(model_bytes)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"model: {self.path} is not a loadable ONNX model: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(dict(meta), source=str(self.path))
        info = self.info
        if (info.feature_frontend, info.feature_frontend_version) != (
            features.FRONTEND_NAME,
            features.FRONTEND_VERSION,
        ):
            raise ValueError(
                f"model: {self.path} was trained on features {info.feature_frontend} "
                f"v{info.feature_frontend_version}, this genrestream computes "
                f"{features.FRONTEND_NAME} v{features.FRONTEND_VERSION}"
            )
        if info.feature_names != features.FEATURE_NAMES:
            raise ValueError(f"model: {self.path} expects other feature names than stream.frontends.gtzan")
        if info.sample_rate != features.SAMPLE_RATE:
            raise ValueError(
                f"model: {self.path} says sample_rate {info.sample_rate}, features are defined at {features.SAMPLE_RATE}"
            )
        inputs = {i.name for i in self.session.get_inputs()}
        if INPUT_NAME not in inputs:
            raise ValueError(f"model: {self.path} has no input named {INPUT_NAME!r} (has {sorted(inputs)})")

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def predict(self, feature_rows: np.ndarray) -> np.ndarray:
        """Genre probabilities for a batch of feature vectors.

        Parameters
        ----------
        feature_rows : np.ndarray [shape=(batch, 57)]
            Raw features from :func:`stream.frontends.gtzan.gtzan_features` (the
            model standardises them itself).

        Returns
        -------
        probabilities : np.ndarray [shape=(batch, n_labels), dtype=float32]

        Raises
        ------
        ValueError
            If ``feature_rows`` is not of shape (batch, 57).
        """
        x = np.asarray(feature_rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.info.feature_names):
            raise ValueError(
                f"feature_rows: expected shape (batch, {len(self.info.feature_names)}), got {x.shape}"
            )
        if x.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        (probabilities,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return probabilities
