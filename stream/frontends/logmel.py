"""musicnn's log-mel patches: batch (one window, whole files) and incremental (per stream).

musicnn (Pons & Serra, "musicnn: pre-trained convolutional neural networks
for music audio tagging", ISMIR 2019 LBD) reads 3 s patches of a log-mel
spectrogram: mono audio at 16 kHz, ``librosa.feature.melspectrogram(y=y,
sr=16000, n_fft=512, hop_length=256, n_mels=96)`` (power spectrogram, periodic
Hann window, librosa's Slaney mel filters), then ``log10(10000 x + 1)``, in
patches of 187 frames; the model input is ``[N, 187, 96]`` (time, mel).
musicnn casts the spectrogram to float16 before the log, which overflows to
infinity under NumPy 2; everything here stays in float32.

Framing
-------
Frames lie on a grid anchored at the stream's (or file's) first sample, with
no centre padding: frame ``j`` covers samples ``[256 j, 256 j + 512)``, as
``librosa.stft(center=False)`` frames a whole signal. A window is 187
consecutive frames, ``window_length = 512 + 186 * 256 = 48128`` samples
(3.008 s). Windows end at ``window_length + k * hop_length`` with
``hop_length`` a multiple of the frame hop (:func:`snap_hop` rounds a
requested hop to the nearest one), so the window ending at sample ``e``
covers ``[e - 48128, e)`` and holds stream frames ``(e - 48128) / 256`` to
``(e - 48128) / 256 + 186``: every window is a slice of the one log-mel
spectrogram of the whole stream (:func:`patches` computes it that way).

Batch and incremental
---------------------
:func:`log_mel` is the reference (librosa on a whole signal); :func:`patches`
slices it into the windows of a file (training), :func:`window_input` computes
one window from its samples (classification of short audio; the engine's
reference extractor). :class:`IncrementalLogMel` is the engine's per-stream
extractor: each frame is computed once, when the block that completes it
arrives, vectorised over the frames the block completes (frame matrix,
``np.fft.rfft``, ``|X|**2``, mel filter bank, log), into a ring of the last
187 frames; a window is a copy of the ring. Its power spectra equal
librosa's bit for bit (the same float64 windowing and FFT, rounded to
complex64 as ``librosa.stft`` stores them). The mel projection is a small
numba kernel that sums each band's bins (the 502 non-zero weights of
``librosa.filters.mel``) in a fixed order, instead of librosa's BLAS matrix
product, whose rounding depends on the shape of the batch: a frame's values
do not depend on which other frames share its batch, so the windows are
identical, bit for bit, however the stream is cut into blocks, and differ
from :func:`patches` only by float32 rounding (measured on music and speech:
at most 4.8e-7 absolute, one float32 ulp of log values of 0 to about 6).

Cost and state
--------------
A second of audio is 62.5 frames: one 512-point FFT and 502 multiply-adds of
the mel projection each, plus a fixed cost of 20-40 us per block (NumPy
calls) and a 72 kB copy per window emitted. ``benchmarks/logmel_speed.py``
measures it against :func:`window_input` on every window: at hop 1 s and
the engine's 0.25 s blocks, 0.26 CPU-ms per audio second against 1.25
(x4.8; 2 shared cores, load average 10). Blocks of one frame (256 samples)
would cost 2.3 ms per audio second, the fixed cost 62 times a second.
State per stream: the ring of 187 frames of 96 float32 (71.8 kB)
and fewer than 512 samples carried over to the next block, 73.9 kB in all
(:attr:`IncrementalLogMel.nbytes`). The kernel compiles on first use (about
a second) and is cached next to this file (``__pycache__``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "FRONTEND_NAME",
    "FRONTEND_VERSION",
    "HOP_LENGTH",
    "LOG_SCALE",
    "N_FFT",
    "N_MELS",
    "PATCH_FRAMES",
    "SAMPLE_RATE",
    "WINDOW_LENGTH",
    "IncrementalLogMel",
    "LogMelFrontend",
    "log_mel",
    "patches",
    "snap_hop",
    "window_input",
]

FRONTEND_NAME = "musicnn-logmel"
"""Name of this frontend, recorded in the model's ONNX metadata."""

FRONTEND_VERSION = "1"
"""Version of this frontend; bump it whenever an output value can change."""

SAMPLE_RATE = 16000
"""Sample rate in Hz that the log-mel spectrogram is defined at."""

N_FFT = 512
"""Frame length and FFT size, in samples (32 ms)."""

HOP_LENGTH = 256
"""Frame hop, in samples (16 ms)."""

N_MELS = 96
"""Mel bands (librosa's Slaney filters, 0 to 8000 Hz)."""

PATCH_FRAMES = 187
"""Frames per window (the model's patch, about 3 s)."""

LOG_SCALE = 10000.0
"""The log-mel compression is ``log10(LOG_SCALE * x + 1)``."""

WINDOW_LENGTH = N_FFT + (PATCH_FRAMES - 1) * HOP_LENGTH
"""Samples per window: 48128 (3.008 s)."""

_N_BINS = N_FFT // 2 + 1


# --------------------------------------------------------------------------
# Input checks


def _check_audio(y, name: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected mono audio of shape (n,), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"{name}: expected floating-point samples in [-1, 1], got dtype {y.dtype}")
    y = y.astype(np.float32, copy=False)
    if not np.isfinite(y).all():
        raise ValueError(f"{name}: expected finite samples, found NaN or infinity")
    return y


def snap_hop(hop_length: int) -> int:
    """The hop the windows use for a requested one: the nearest multiple of the frame hop.

    Parameters
    ----------
    hop_length : int > 0 [scalar]
        Requested samples between window ends (``round(hop_s * 16000)``).

    Returns
    -------
    hop_length : int
        The nearest multiple of :data:`HOP_LENGTH` (256), at least 256; ties
        round up (16000, 62.5 frames, gives 16128, 1.008 s).

    Raises
    ------
    ValueError
        If ``hop_length`` is not a positive finite number.

    Examples
    --------
    >>> snap_hop(16000), snap_hop(100), snap_hop(48128)
    (16128, 256, 48128)
    """
    try:
        h = float(hop_length)
    except (TypeError, ValueError):
        raise ValueError(f"hop_length: expected a positive number of samples, got {hop_length!r}") from None
    if isinstance(hop_length, bool) or not (np.isfinite(h) and h > 0):
        raise ValueError(f"hop_length: expected a positive number of samples, got {hop_length!r}")
    return HOP_LENGTH * max(1, int(np.floor(h / HOP_LENGTH + 0.5)))


# --------------------------------------------------------------------------
# Batch: the reference


def log_mel(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """musicnn's log-mel spectrogram of a whole signal, frames on the grid of its first sample.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32 or float64]
        Mono audio samples in [-1, 1], ``n >= N_FFT`` (512). Float64 input is
        rounded to float32 first (what serving sees).
    sample_rate : int [scalar]
        Sample rate of ``y`` in Hz; must be 16000.

    Returns
    -------
    S : np.ndarray [shape=(n_frames, 96), dtype=float32]
        ``log10(10000 * M + 1)`` of the mel power spectrogram ``M``, time
        first; ``n_frames = 1 + (n - 512) // 256``, frame ``j`` covering
        samples ``[256 j, 256 j + 512)``.

    Raises
    ------
    ValueError
        If ``y`` is not a one-dimensional array of at least 512 finite
        floating-point samples, or ``sample_rate`` is not 16000.

    Notes
    -----
    ``librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512,
    hop_length=256, n_mels=96, center=False)`` (McFee et al., "librosa:
    Audio and Music Signal Analysis in Python", SciPy 2015): periodic Hann
    window, power 2, ``librosa.filters.mel`` (Slaney's mel scale and area
    normalisation, 0 to 8000 Hz), followed by musicnn's compression
    (Pons & Serra, ISMIR 2019 LBD) in float32. musicnn frames with
    ``center=True``; this frontend does not (see the module docstring).

    Examples
    --------
    >>> log_mel(np.zeros(16000, dtype=np.float32)).shape
    (61, 96)
    """
    import librosa  # deferred: importing librosa costs about a second

    y = _check_audio(y)
    if y.shape[0] < N_FFT:
        raise ValueError(f"y: expected at least {N_FFT} samples ({N_FFT / SAMPLE_RATE * 1e3:.0f} ms), got {y.shape[0]}")
    if isinstance(sample_rate, bool) or int(sample_rate) != SAMPLE_RATE:
        raise ValueError(f"sample_rate: expected {SAMPLE_RATE} Hz, got {sample_rate}; resample the audio first")
    mel = librosa.feature.melspectrogram(
        y=y, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, center=False
    )
    out = np.log10(LOG_SCALE * mel + 1)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def window_input(y: np.ndarray) -> np.ndarray:
    """The model input of one window of audio.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32 or float64]
        Mono samples at 16 kHz, ``n >= 1``. Shorter than
        :data:`WINDOW_LENGTH` (48128): zero-padded at the end to that length
        (audio shorter than a window is classified on what there is); longer:
        its last 48128 samples.

    Returns
    -------
    x : np.ndarray [shape=(187, 96), dtype=float32]
        :func:`log_mel` of the window.

    Raises
    ------
    ValueError
        If ``y`` is not one-dimensional, is empty, is not floating-point or
        holds NaN or infinity.

    Examples
    --------
    >>> window_input(np.zeros(1000, dtype=np.float32)).shape
    (187, 96)
    """
    y = _check_audio(y)
    if y.shape[0] == 0:
        raise ValueError("y: expected at least one sample, got an empty array")
    if y.shape[0] < WINDOW_LENGTH:
        y = np.concatenate([y, np.zeros(WINDOW_LENGTH - y.shape[0], dtype=np.float32)])
    return log_mel(y[-WINDOW_LENGTH:])


def patches(y: np.ndarray, hop_length: int) -> tuple[np.ndarray, np.ndarray]:
    """All the windows of a whole signal, as the engine would cut them from a stream.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32 or float64]
        Mono samples at 16 kHz, ``n >= 1``.
    hop_length : int > 0 [scalar]
        Samples between window ends, snapped with :func:`snap_hop`.

    Returns
    -------
    x : np.ndarray [shape=(n_windows, 187, 96), dtype=float32]
        Window ``k`` is frames ``k * hop / 256`` to ``k * hop / 256 + 186``
        of one :func:`log_mel` of ``y`` (the frames of samples
        ``[end_k - 48128, end_k)``).
    ends : np.ndarray [shape=(n_windows,), dtype=int64]
        ``end_k = 48128 + k * hop`` for every ``end_k <= n``. A signal shorter
        than one window gives one window, :func:`window_input` of it
        (zero-padded), with ``end = n``.

    Notes
    -----
    The windows are copies, 71.8 kB each: at hop 1 s a minute of audio gives
    57 of them (4.1 MB), at hop 256 samples 3,563 (256 MB).

    Raises
    ------
    ValueError
        If ``y`` is not a non-empty one-dimensional array of finite
        floating-point samples, or ``hop_length`` is not positive.

    Examples
    --------
    >>> x, ends = patches(np.zeros(16000 * 5, dtype=np.float32), 16000)
    >>> x.shape, ends.tolist()
    ((2, 187, 96), [48128, 64256])
    """
    hop = snap_hop(hop_length)
    y = _check_audio(y)
    if y.shape[0] == 0:
        raise ValueError("y: expected at least one sample, got an empty array")
    n = y.shape[0]
    if n < WINDOW_LENGTH:
        return window_input(y)[None], np.array([n], dtype=np.int64)
    n_windows = 1 + (n - WINDOW_LENGTH) // hop
    ends = WINDOW_LENGTH + hop * np.arange(n_windows, dtype=np.int64)
    S = log_mel(y[: int(ends[-1])])
    step = hop // HOP_LENGTH
    view = np.lib.stride_tricks.sliding_window_view(S, PATCH_FRAMES, axis=0)[::step]  # (n_windows, 96, 187)
    return np.ascontiguousarray(view.transpose(0, 2, 1)), ends


# --------------------------------------------------------------------------
# Incremental


@dataclass(frozen=True)
class _Tables:
    window: np.ndarray  # (512,) float64 periodic Hann, as librosa.stft uses it
    mel_lo: np.ndarray  # (96,) int64: lowest bin of each band of librosa.filters.mel
    mel_len: np.ndarray  # (96,) int64: the band's bins, lo .. lo + len - 1 (contiguous)
    mel_weights: np.ndarray  # (96, max len) float32: their weights


@functools.cache
def _tables() -> _Tables:
    import librosa

    window = np.asarray(librosa.filters.get_window("hann", N_FFT, fftbins=True), dtype=np.float64)
    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)  # (96, 257) float32
    bands = [np.flatnonzero(row) for row in mel]
    lo = np.zeros(N_MELS, dtype=np.int64)
    length = np.zeros(N_MELS, dtype=np.int64)
    weights = np.zeros((N_MELS, max(b.size for b in bands)), dtype=np.float32)
    for m, b in enumerate(bands):
        if b.size and b[-1] - b[0] + 1 != b.size:  # pragma: no cover - librosa's triangles are contiguous
            raise RuntimeError(f"mel filter bank: band {m} has non-contiguous bins {b}")
        lo[m] = b[0] if b.size else 0
        length[m] = b.size
        weights[m, : b.size] = mel[m, b]
    return _Tables(window=window, mel_lo=lo, mel_len=length, mel_weights=weights)


@numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False)
def _mel_project(power, lo, length, weights, out):  # pragma: no cover - compiled
    """``out[i, m] = sum_k weights[m, k] * power[i, lo[m] + k]``, summed in the order of k, in float32.

    The same scalar code for every element, so a frame's values do not
    depend on the other frames of its batch (a BLAS product's do). Without
    fast-math: the sums are not reordered.
    """
    for i in range(power.shape[0]):
        for m in range(lo.shape[0]):
            acc = np.float32(0.0)
            base = lo[m]
            for k in range(length[m]):
                acc += weights[m, k] * power[i, base + k]
            out[i, m] = acc


def _frames_log_mel(frames: np.ndarray, t: _Tables) -> np.ndarray:
    """Log-mel of a frame matrix (n, 512) float32: (n, 96) float32, each row independent of the others."""
    spec = np.fft.rfft(frames * t.window, axis=-1).astype(np.complex64)  # as librosa.stft: float64 FFT, complex64
    power = np.abs(spec) ** 2  # float32, as librosa's _spectrogram
    mel = np.empty((power.shape[0], N_MELS), dtype=np.float32)
    _mel_project(power, t.mel_lo, t.mel_len, t.mel_weights, mel)
    mel *= np.float32(LOG_SCALE)
    mel += np.float32(1.0)
    return np.log10(mel, out=mel)


class IncrementalLogMel:
    """Sliding-window log-mel patches of one audio stream, each frame computed once.

    Feed the stream with :meth:`push`; every window that completes comes back
    as ``(end_sample, x)`` with ``x`` the model input of samples
    ``[end_sample - 48128, end_sample)``. Windows end at ``window_length``,
    ``window_length + hop_length``, ... samples after the start (or the last
    :meth:`reset`), whatever the block sizes, and equal :func:`patches` of the
    stream to float32 rounding; they do not depend on the block sizes at all,
    bit for bit.

    Parameters
    ----------
    hop_length : int > 0 [scalar]
        Samples between window ends; snapped with :func:`snap_hop` to a
        multiple of 256.

    Attributes
    ----------
    sample_rate : int
        16000 Hz.
    window_length, hop_length : int
        Window (48128) and snapped hop, in samples.
    n_frames : int
        Frames per window, 187.

    Raises
    ------
    ValueError
        If ``hop_length`` is not positive.

    Notes
    -----
    Each frame is computed when the block that completes it arrives, in one
    vectorised batch with the other frames the block completes (split at
    window ends, so that 187 slots of frames suffice); frames that no window
    holds (between windows, when the hop exceeds the window) are skipped, and
    so are their samples. One instance per stream, fed from one thread at a
    time; instances are independent (the mel kernel releases the GIL). The
    module docstring gives the definition and the cost.

    Examples
    --------
    >>> inc = IncrementalLogMel(16000)
    >>> out = inc.push(np.zeros(16000 * 5, dtype=np.float32))
    >>> [end for end, _ in out], out[0][1].shape
    ([48128, 64256], (187, 96))
    """

    sample_rate = SAMPLE_RATE
    window_length = WINDOW_LENGTH
    n_frames = PATCH_FRAMES

    def __init__(self, hop_length: int) -> None:
        self.hop_length = snap_hop(hop_length)
        self._hop_frames = self.hop_length // HOP_LENGTH
        self._tables = _tables()
        self._ring = np.zeros((PATCH_FRAMES, N_MELS), dtype=np.float32)  # frame j in slot j % 187
        self._carry = np.zeros(N_FFT, dtype=np.float32)  # samples of the incomplete frame
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample pushed is sample 0 of a new stream.

        Call it after a gap in the audio. The next window ends
        ``window_length`` samples later, as at the start.
        """
        self._total = 0  # samples pushed since the start
        self._m = 0  # index of the next window
        self._next_frame = 0  # every frame a window needs before this one is in the ring
        self._carry_start = 0  # stream index of self._carry[0]
        self._carry_n = 0

    @property
    def samples_seen(self) -> int:
        """Samples pushed since the start or the last :meth:`reset`."""
        return self._total

    @property
    def next_end(self) -> int:
        """Stream position at which the next window completes."""
        return self.window_length + self._m * self.hop_length

    @property
    def nbytes(self) -> int:
        """Bytes of this stream's state (the frame ring and the carried samples; the filter bank is shared)."""
        return self._ring.nbytes + self._carry.nbytes

    def push(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Append samples; return every window they completed.

        Parameters
        ----------
        block : np.ndarray [shape=(n,), dtype=float32 or float64]
            The next mono samples at 16 kHz, in [-1, 1]; may be empty.
            Float64 input is rounded to float32 (the engine's sample type).

        Returns
        -------
        windows : list of (int, np.ndarray [shape=(187, 96), dtype=float32])
            ``(end, x)`` for each window that completed, in order: ``end`` is
            the stream position (samples since the start or the last
            :meth:`reset`) one past the window's last sample, ``x`` its
            log-mel patch (a new array).

        Raises
        ------
        ValueError
            If ``block`` is not a one-dimensional floating-point array of
            finite values. The stream's state is unchanged.
        """
        block = _check_audio(block, "block")
        n = block.shape[0]
        if n == 0:
            return []
        c = self._carry_n
        x0 = self._carry_start  # stream index of x[0]
        x = np.empty(c + n, dtype=np.float32)
        x[:c] = self._carry[:c]
        x[c:] = block
        self._total += n
        last_complete = (self._total - N_FFT) // HOP_LENGTH  # last frame whose samples are all here
        out: list[tuple[int, np.ndarray]] = []
        while True:
            first = self._m * self._hop_frames  # frames of the next window: first .. first + 186
            last = first + PATCH_FRAMES - 1
            j0 = max(self._next_frame, first)
            j1 = min(last, last_complete)
            if j1 >= j0:
                self._compute(x, x0, j0, j1)
                self._next_frame = j1 + 1
            if last_complete < last:
                break
            out.append((HOP_LENGTH * last + N_FFT, self._window(first)))
            self._m += 1
        # carry over the samples of the next frame a window needs (fewer than 512)
        keep = HOP_LENGTH * max(self._next_frame, self._m * self._hop_frames)
        if keep >= self._total:
            self._carry_start, self._carry_n = self._total, 0
        else:
            rest = x[keep - x0 :]
            self._carry[: rest.shape[0]] = rest
            self._carry_start, self._carry_n = keep, rest.shape[0]
        return out

    def _compute(self, x: np.ndarray, x0: int, j0: int, j1: int) -> None:
        """Frames j0..j1 (stream indices) from ``x``, whose first sample is stream sample ``x0``, into the ring."""
        lo = HOP_LENGTH * j0 - x0
        b = j1 - j0 + 1
        span = x[lo : lo + HOP_LENGTH * (b - 1) + N_FFT]
        assert span.shape[0] == HOP_LENGTH * (b - 1) + N_FFT and span.strides == (4,)
        frames = np.lib.stride_tricks.as_strided(span, shape=(b, N_FFT), strides=(4 * HOP_LENGTH, 4), writeable=False)
        values = _frames_log_mel(frames, self._tables)
        a = j0 % PATCH_FRAMES
        head = min(b, PATCH_FRAMES - a)
        self._ring[a : a + head] = values[:head]
        self._ring[: b - head] = values[head:]

    def _window(self, first: int) -> np.ndarray:
        a = first % PATCH_FRAMES
        return np.concatenate([self._ring[a:], self._ring[:a]])


# --------------------------------------------------------------------------
# The frontend object


class LogMelFrontend:
    """musicnn's log-mel patches as an engine frontend (see :mod:`stream.frontends`).

    Attributes
    ----------
    name, version : str
        :data:`FRONTEND_NAME`, :data:`FRONTEND_VERSION`.
    sample_rate : int
        16000 Hz.
    window_length : int
        Samples per window, 48128.
    window_s : float
        Seconds per window, 3.008.
    frame_hop_length : int
        Samples between frames, 256; window hops are multiples of it.
    input_name : str
        The ONNX input this frontend feeds: ``"logmel"``.
    input_shape : tuple of int
        Shape of one window's model input: ``(187, 96)`` (time, mel).
    min_samples : int
        Shortest audio worth classifying (:meth:`window_input` pads the
        rest with zeros): one frame, 512 samples.
    """

    name = FRONTEND_NAME
    version = FRONTEND_VERSION
    sample_rate = SAMPLE_RATE
    window_length = WINDOW_LENGTH
    window_s = WINDOW_LENGTH / SAMPLE_RATE
    frame_hop_length = HOP_LENGTH
    input_name = "logmel"
    input_shape = (PATCH_FRAMES, N_MELS)
    min_samples = N_FFT

    def params(self) -> dict:
        """Every parameter, JSON-ready, for the model's metadata (``frontend``).

        The mel filter bank is ``librosa.filters.mel(sr=16000, n_fft=512,
        n_mels=96)``: Slaney's scale (``htk=False``), ``norm="slaney"``,
        ``fmin=0``, ``fmax=sr/2``.
        """
        return {
            "name": FRONTEND_NAME,
            "version": FRONTEND_VERSION,
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "n_mels": N_MELS,
            "fmin": 0.0,
            "fmax": SAMPLE_RATE / 2.0,
            "htk": False,
            "norm": "slaney",
            "window": "hann",
            "center": False,
            "power": 2.0,
            "log": "log10(10000*x+1)",
            "patch_frames": PATCH_FRAMES,
            "dtype": "float32",
        }

    @classmethod
    def from_params(cls, params: dict) -> LogMelFrontend:
        """The frontend a model's metadata describes.

        Parameters
        ----------
        params : dict
            The model's ``frontend`` metadata, as :meth:`params` wrote it.

        Raises
        ------
        ValueError
            If a parameter (the version included) is missing, unknown, or
            differs from what this code computes; the message names the
            parameter and the value expected.
        """
        from .gtzan import check_params

        if not isinstance(params, dict):
            raise TypeError(f"frontend {FRONTEND_NAME}: expected a dict of parameters, got {type(params).__name__}")
        reference = cls().params()
        unknown = sorted(set(params) - set(reference))
        if unknown:
            raise ValueError(
                f"frontend {FRONTEND_NAME} parameters {unknown} are not ones this genrestream computes "
                f"(it computes {sorted(reference)})"
            )
        for key, expected in reference.items():  # True == 1 in Python: booleans must be booleans
            if isinstance(expected, bool) and key in params and not isinstance(params[key], bool):
                raise ValueError(
                    f"frontend {FRONTEND_NAME} parameter {key}={params[key]!r}, but this genrestream computes "
                    f"{key}={expected!r}"
                )
        check_params(params, reference)
        return cls()

    def snap_hop(self, hop_length: int) -> int:
        """The nearest multiple of the frame hop (256 samples), at least 256: :func:`snap_hop`."""
        return snap_hop(hop_length)

    def window_input(self, y: np.ndarray) -> np.ndarray:
        """The model input of one window, (187, 96) float32: :func:`window_input`."""
        return window_input(y)

    def extractor(self, hop_length: int) -> IncrementalLogMel:
        """A per-stream :class:`IncrementalLogMel` at ``snap_hop(hop_length)``."""
        return IncrementalLogMel(hop_length)
