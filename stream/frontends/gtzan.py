"""The GTZAN 57-feature vector over one window of audio.

This is the one feature function of genrestream: training (``training/``) computes
its tables with it when it learns from audio, the exporter records its name and
version in the model, and the engine calls it on every window it classifies, so
serving computes exactly what training saw.

The recipe reproduces the Kaggle GTZAN tables (``features_10_sec.csv``,
``features_30_sec.csv``), which were made with librosa 0.11 default arguments on
mono audio at 22050 Hz: ``n_fft=2048``, ``hop_length=512``, centred frames,
20 MFCCs, :func:`librosa.feature.tempo` for the tempo, and ``np.mean`` /
``np.var`` over frames (or over samples for the harmonic and percussive parts
of :func:`librosa.effects.hpss`).

The spectrogram is computed once per window and shared by the spectral
features, the chroma, the MFCCs and the onset envelope behind the tempo; the
results equal the separate ``librosa.feature.*(y=...)`` calls, which each
compute the same STFT again.
"""

from __future__ import annotations

import numpy as np

FRONTEND_NAME = "genrestream.gtzan57"
"""Name of this feature frontend, recorded in the model's ONNX metadata."""

FRONTEND_VERSION = "1"
"""Version of this feature frontend; bump it whenever an output value can change."""

SAMPLE_RATE = 22050
"""Sample rate in Hz that the features are defined at."""

N_FFT = 2048
HOP_LENGTH = 512
N_MFCC = 20

_FRAME_FEATURES = (
    "chroma_stft",
    "rms",
    "spectral_centroid",
    "spectral_bandwidth",
    "rolloff",
    "zero_crossing_rate",
    "harmony",
    "perceptr",
)

FEATURE_NAMES: tuple[str, ...] = (
    *(f"{name}_{stat}" for name in _FRAME_FEATURES for stat in ("mean", "var")),
    "tempo",
    *(f"mfcc{k}_{stat}" for k in range(1, N_MFCC + 1) for stat in ("mean", "var")),
)
"""The 57 feature names, in the column order of the Kaggle GTZAN tables."""

N_FEATURES = len(FEATURE_NAMES)

MIN_SAMPLES = N_FFT
"""Shortest window, in samples, that :func:`gtzan_features` accepts."""


def _mean_var(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x)), float(np.var(x))


def gtzan_features(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Compute the 57 GTZAN features of one window of mono audio.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32 or float64]
        Mono audio samples in [-1, 1], ``n >= MIN_SAMPLES`` (2048).
    sample_rate : int > 0 [scalar]
        Sample rate of ``y`` in Hz. Must be 22050, the rate the features (and
        every model trained on them) are defined at: resample first
        (``soxr.resample`` or :func:`librosa.resample`).

    Returns
    -------
    features : np.ndarray [shape=(57,), dtype=float64]
        In the order of :data:`FEATURE_NAMES`: mean and variance over frames of
        chroma_stft, rms, spectral_centroid, spectral_bandwidth, rolloff and
        zero_crossing_rate; mean and variance over samples of the harmonic
        ("harmony") and percussive ("perceptr") parts; tempo in BPM; mean and
        variance of MFCC 1-20.

    Raises
    ------
    ValueError
        If ``y`` is not a one-dimensional array of at least ``MIN_SAMPLES``
        finite samples, or ``sample_rate`` is not 22050.

    Notes
    -----
    Reproduces, to float rounding, ``librosa.feature.chroma_stft``,
    ``rms``, ``spectral_centroid``, ``spectral_bandwidth``,
    ``spectral_rolloff``, ``zero_crossing_rate``, ``mfcc(n_mfcc=20)``,
    ``librosa.effects.hpss`` and ``librosa.feature.tempo``, all with
    librosa 0.11 defaults (McFee et al., "librosa: Audio and Music Signal
    Analysis in Python", SciPy 2015), as used for the Kaggle GTZAN tables
    (Tzanetakis & Cook, "Musical genre classification of audio signals",
    IEEE TSAP 2002).

    Examples
    --------
    >>> y = np.zeros(22050, dtype=np.float32)
    >>> gtzan_features(y).shape
    (57,)
    """
    import librosa  # deferred: importing librosa costs ~1 s

    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y: expected mono audio of shape (n,), got shape {y.shape}")
    if y.shape[0] < MIN_SAMPLES:
        raise ValueError(
            f"y: expected at least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s), "
            f"got {y.shape[0]}"
        )
    if int(sample_rate) != SAMPLE_RATE:
        raise ValueError(
            f"sample_rate: expected {SAMPLE_RATE} Hz, got {sample_rate}; resample the audio first"
        )
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"y: expected floating-point samples in [-1, 1], got dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y: expected finite samples, found NaN or infinity")
    sr = SAMPLE_RATE

    # One STFT shared by everything frequency-domain (librosa's own calls each
    # recompute exactly this: center=True, pad_mode="constant", Hann window).
    stft = librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH)
    magnitude = np.abs(stft)
    power = magnitude**2

    chroma = librosa.feature.chroma_stft(S=power, sr=sr)
    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP_LENGTH)
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=sr, n_fft=N_FFT)
    bandwidth = librosa.feature.spectral_bandwidth(S=magnitude, sr=sr, n_fft=N_FFT)
    rolloff = librosa.feature.spectral_rolloff(S=magnitude, sr=sr, n_fft=N_FFT)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP_LENGTH)
    harmonic, percussive = librosa.effects.hpss(y)

    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr))
    mfcc = librosa.feature.mfcc(S=mel_db, sr=sr, n_mfcc=N_MFCC)
    # The tables' tempo is the one librosa.beat.beat_track reports: its onset
    # envelope aggregates over mel bands by median (onset_strength's default,
    # used by a bare feature.tempo(y=...), is the mean, and picks another
    # octave on a third of the GTZAN parity windows).
    onset_envelope = librosa.onset.onset_strength(
        S=mel_db, sr=sr, hop_length=HOP_LENGTH, aggregate=np.median
    )
    tempo = librosa.feature.tempo(onset_envelope=onset_envelope, sr=sr, hop_length=HOP_LENGTH)

    values: list[float] = []
    for part in (chroma, rms, centroid, bandwidth, rolloff, zcr, harmonic, percussive):
        values.extend(_mean_var(part))
    values.append(float(np.atleast_1d(tempo)[0]))
    for row in mfcc:
        values.extend(_mean_var(row))
    return np.asarray(values, dtype=np.float64)


class GtzanFrontend:
    """The 57 GTZAN features as an engine frontend (see :mod:`stream.frontends`).

    Parameters
    ----------
    window_s : float > 0
        Window length in seconds (the shipped model: 10 s, the tables' segments).

    Attributes
    ----------
    name, version : str
        :data:`FRONTEND_NAME`, :data:`FRONTEND_VERSION`.
    sample_rate : int
        22050 Hz.
    window_length : int
        Samples per window.
    input_name : str
        The ONNX input this frontend feeds: ``"features"``.
    input_shape : tuple of int
        Shape of one window's model input: ``(57,)``.
    min_samples : int
        Shortest audio :meth:`window_input` takes (``n_fft``, 2048 samples).

    Raises
    ------
    ValueError
        If ``window_s`` is not positive.
    """

    name = FRONTEND_NAME
    version = FRONTEND_VERSION
    sample_rate = SAMPLE_RATE
    input_name = "features"
    input_shape = (N_FEATURES,)
    min_samples = MIN_SAMPLES

    def __init__(self, window_s: float = 10.0) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s: expected a positive number of seconds, got {window_s}")
        self.window_s = float(window_s)
        self.window_length = int(round(self.window_s * SAMPLE_RATE))

    def params(self) -> dict:
        """Every parameter, JSON-ready, for the model's metadata (``frontend``)."""
        return {
            "name": self.name, "version": self.version, "sample_rate": SAMPLE_RATE, "window_s": self.window_s,
            "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mfcc": N_MFCC, "center": True,
            "feature_names": list(FEATURE_NAMES),
        }

    @classmethod
    def from_params(cls, params: dict) -> "GtzanFrontend":
        """The frontend a model's metadata describes.

        Raises
        ------
        ValueError
            If a parameter (the version included) is missing or differs from
            what this code computes; the message names the parameter.
        """
        reference = cls(float(params.get("window_s", 10.0))).params()
        check_params(params, reference)
        return cls(reference["window_s"])

    def snap_hop(self, hop_length: int) -> int:
        """Any hop of at least one sample works: the windows end exactly where asked."""
        return max(1, int(hop_length))

    def window_input(self, y: np.ndarray) -> np.ndarray:
        """The model input of one window: :func:`gtzan_features` (any length >= ``min_samples``)."""
        return gtzan_features(y, SAMPLE_RATE)

    def extractor(self, hop_length: int):
        """A per-stream :class:`stream.frontends.gtzan_incremental.IncrementalFeatures`."""
        from .gtzan_incremental import IncrementalFeatures

        return IncrementalFeatures(SAMPLE_RATE, self.window_s, self.snap_hop(hop_length) / SAMPLE_RATE)


def check_params(params: dict, reference: dict) -> None:
    """Refuse frontend parameters that differ from ``reference``, what this code computes.

    Raises
    ------
    ValueError
        Naming the first missing or differing parameter.
    """
    missing = sorted(k for k in reference if k not in params)
    if missing:
        raise ValueError(f"the model's frontend metadata lacks {missing}")
    for key, expected in reference.items():
        given = params[key]
        if isinstance(expected, float) and isinstance(given, (int, float)):
            same = abs(float(given) - expected) <= 1e-9 * max(1.0, abs(expected))
        else:
            same = given == expected
        if not same:
            shown = given if not isinstance(given, list) or len(given) < 8 else f"a list of {len(given)}"
            raise ValueError(
                f"frontend {reference['name']} parameter {key}={shown!r}, but this genrestream computes "
                f"{key}={expected if not isinstance(expected, list) or len(expected) < 8 else 'another list'!r}"
            )
