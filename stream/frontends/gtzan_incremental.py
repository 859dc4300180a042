"""The 57 GTZAN features of a stream's sliding windows, computed incrementally.

:func:`stream.frontends.gtzan.gtzan_features` analyses each window from scratch: at a
10 s window and a 1 s hop, every sample goes through the STFT, the median
filters of the harmonic/percussive separation and the tempogram ten times,
and one window costs about a second of CPU. :class:`IncrementalFeatures` keeps
per-stream state so that every STFT frame is analysed once, when the audio
that completes it arrives, and a hop costs work in proportion to the hop.

Definition
----------
The features of the window ``[s, e)`` (``e = window_length + m * hop_length``)
are :func:`~stream.frontends.gtzan.gtzan_features` evaluated on a **stream-global
frame grid**: frame ``k`` is centred on stream sample ``512 * k`` (as
``librosa.stft(center=True)`` frames the whole stream). The window holds the
``1 + window_length // 512`` frames (the count of the batch function) whose
centres lie in ``[s - 256, s - 256 + 512 * n_frames)``: the grid frame
nearest to each of the batch function's frames, which are centred on
``s + 512 * j``. The engine's hop (22050 samples) is not a multiple of 512, so
the two sets differ by a shift of ``-256 <= delta < 256`` samples; that shift
is the only difference in kind from the batch function. With a hop that is a
multiple of 512 samples the frames coincide and the result equals
``gtzan_features`` to float rounding (save the chroma tuning, below).

Everything the batch function does at the edges of its window is reproduced
per window: the frames that reach past ``s`` or ``e`` see zeros there
(``center=True``, ``pad_mode="constant"``; edge padding for the zero-crossing
rate); the harmonic median filter reflects at the window's first and last
frame (``scipy.ndimage.median_filter(mode="reflect")``); the inverse STFT of
the harmonic part is normalised by the window sum-square of the window's own
frames only. These edge regions (about 0.45 s at each end) are computed per
window (from zero-padded samples for the frames that reach past the window,
from the running state's recent frames for the others); everything in
between comes from the stream's running state. Window-global steps use the
whole window:
``power_to_db(top_db=80)`` clips at the window's maximum (MFCCs and onset
envelope); ``estimate_tuning`` takes the median and histogram of the pitch
candidates of all the window's frames; the tempo is
``librosa.feature.tempo`` of the window's onset envelope, evaluated exactly
by a sliding DFT (:func:`_tempogram_power_sum`).

Approximation
-------------
``chroma_stft`` filters every frame with a filterbank that depends on the
window's tuning estimate. The state keeps each frame's chroma, not its
spectrum, so a frame's chroma uses the tuning of the window during whose
computation the frame arrived (the first window that contains it; for the
zero-padded frames at a window's start, the latest window before them).
While the tuning estimate is stable from window to window this is exact;
where it moves, chroma_stft_mean/var move by up to 1 % at a hop on the frame
grid. At the engine's hop the frame-grid shift dominates: with
``exact_chroma=True`` (spectra kept, every frame at the window's tuning) the
model's decisions agree with the batch function's on 98.3 % of windows
instead of 98.2 % (``benchmarks/incremental_parity.py``).

How close is close enough: over the 710 windows of ``../shared`` audio at the
engine's hop, every feature's 95th-percentile difference from the batch
function is smaller than the batch function's own difference when its window
is moved by 256 samples (11.6 ms), and the shipped model's argmax agrees on
98.2 % of windows (97.5 % for the moved batch windows).

Cost
----
All work happens when a window completes, on the frames that arrived since
the last one (so results do not depend on how the stream was cut into
blocks): one FFT per new frame; two exact 31-point running medians per new
frame and bin (:func:`_sliding_median_axis0`, branch-free sorted windows
vectorised across bins); one inverse FFT per new frame; sparse mel, chroma,
DCT and per-frame scalars in numba kernels (no BLAS, whose threads would
compete with the engine's workers). Per window, a fixed amount on top: the
two edge regions (21 frames each of medians and inverse FFTs, 3 FFTs of
zero-padded frames; the other frames they read come from the running
state), the tempogram (a sliding DFT, under 0.5 ms), the tuning estimate and the
statistics over the window's per-frame matrix (431 rows; recomputed, not
kept as running sums: 0.1 ms, exact, no drift). A 1 s hop of a 10 s window
costs about 8 ms of one core (2.5 GHz Xeon, shared) against 0.6 s for
:func:`~stream.frontends.gtzan.gtzan_features`; ``benchmarks/features_speed.py``
measures it. State: about 1.1 MB per stream (the last 33 frames' STFT
columns and percussive medians, 431 frames of mel spectra and per-frame
features, a hop of samples), see :attr:`IncrementalFeatures.nbytes`.

The numba kernels compile on first use (about 8 s of CPU) and are cached
next to this file (``__pycache__``); later processes load them in well
under a second.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from .gtzan import HOP_LENGTH, N_FEATURES, N_FFT, N_MFCC, SAMPLE_RATE

__all__ = ["IncrementalFeatures", "WindowFeatures", "MIN_WINDOW_LENGTH"]

_HALF = N_FFT // 2  # 1024: frame k covers samples [512 k - 1024, 512 k + 1024)
_N_BINS = N_FFT // 2 + 1
_N_MELS = 128
_KERNEL = 31  # librosa.decompose.hpss kernel_size
_KH = _KERNEL // 2
_TOP_DB = 80.0
_AMIN = 1e-10
_ROLL_PERCENT = 0.85
_ZC_THRESHOLD = 1e-10
_N_TUNING_BINS = 100  # estimate_tuning(resolution=0.01)
_ONSET_PAD = 1 + N_FFT // (2 * HOP_LENGTH)  # onset_strength: lag + n_fft // (2 hop) = 3
# An edge region of a window: its zero-padded frames, the 15 frames whose
# harmonic median sees them or the reflection, and the 3 frames after those
# that overlap the same samples; their medians need 15 frames more.
_EDGE_EXTRA = _KH + 3  # frames after the special ones whose masks are computed (18)
_EDGE_CONTEXT = _EDGE_EXTRA + _KH  # frames after the special ones that are read (33)

MIN_WINDOW_LENGTH = 80 * HOP_LENGTH
"""Shortest window, in samples (40960, 1.86 s), whose two edge regions do not overlap."""


# --------------------------------------------------------------------------
# Constants derived from librosa (built once, on first use: importing librosa
# costs about a second).


@dataclass(frozen=True)
class _Tables:
    window: np.ndarray  # (2048,) float64 periodic Hann, as librosa.stft uses
    window32: np.ndarray  # the same, float32
    window_sq: np.ndarray  # its square, float64
    wss_profile: np.ndarray  # (512,) float64 sum of the squared windows of the 4 frames over a sample
    freqs: np.ndarray  # (1025,) float64 librosa.fft_frequencies
    mel_band: np.ndarray  # (1025,) int64 1 + the lower of the (at most two) librosa.filters.mel bands of each bin
    mel_w_lo: np.ndarray  # (1025,) float32 its weight in that band
    mel_w_hi: np.ndarray  # (1025,) float32 its weight in the next band
    dct: np.ndarray  # (20, 128) float64 orthonormal DCT-II
    pip_lo: int  # first bin with 150 Hz <= f
    pip_hi: int  # last bin with f < 4000 Hz, plus one
    tuning_edges: np.ndarray  # (101,) float64 estimate_tuning's histogram edges
    tempo_window: np.ndarray  # (344,) float64 Hann window of the tempogram
    tempo_bpms: np.ndarray  # (344,) float64 librosa.tempo_frequencies
    tempo_logprior: np.ndarray  # (344,) float64 log-normal prior, -inf above 320 BPM
    tempo_cos: np.ndarray  # (345,) float64 cos(2 pi f / 688)
    tempo_sin: np.ndarray  # (345,) float64 sin(2 pi f / 688)
    tempo_sign: np.ndarray  # (345,) float64 (-1) ** f


@functools.cache
def _tables() -> _Tables:
    import librosa
    import scipy.fft

    sr = SAMPLE_RATE
    window = np.asarray(librosa.filters.get_window("hann", N_FFT, fftbins=True), dtype=np.float64)
    wsq = window**2
    profile = wsq[0:512] + wsq[512:1024] + wsq[1024:1536] + wsq[1536:2048]
    freqs = np.asarray(librosa.fft_frequencies(sr=sr, n_fft=N_FFT), dtype=np.float64)
    mel = librosa.filters.mel(sr=sr, n_fft=N_FFT)  # (128, 1025) float32
    mel_band = np.zeros(_N_BINS, dtype=np.int64)  # padded rows: 0 and 129 are discarded
    mel_w_lo = np.zeros(_N_BINS, dtype=np.float32)
    mel_w_hi = np.zeros(_N_BINS, dtype=np.float32)
    for f in range(_N_BINS):
        bands = np.flatnonzero(mel[:, f])
        if bands.size == 0:
            continue
        if bands.size > 2 or (bands.size == 2 and bands[1] != bands[0] + 1):  # pragma: no cover - librosa's mel
            raise RuntimeError(f"mel filterbank: bin {f} lies in bands {bands}, expected at most two adjacent")
        mel_band[f] = bands[0] + 1
        mel_w_lo[f] = mel[bands[0], f]
        if bands.size == 2:
            mel_w_hi[f] = mel[bands[1], f]
    dct = np.ascontiguousarray(scipy.fft.dct(np.eye(_N_MELS), type=2, norm="ortho", axis=0)[:N_MFCC])
    in_range = np.flatnonzero((freqs >= 150.0) & (freqs < 4000.0))
    win_length = int(librosa.time_to_frames(8.0, sr=sr, hop_length=HOP_LENGTH).item())
    tempo_window = np.asarray(librosa.filters.get_window("hann", win_length, fftbins=True), dtype=np.float64)
    bpms = np.asarray(librosa.tempo_frequencies(win_length, hop_length=HOP_LENGTH, sr=sr), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logprior = -0.5 * ((np.log2(bpms) - np.log2(120.0)) / 1.0) ** 2
    logprior[: int(np.argmax(bpms < 320.0))] = -np.inf
    return _Tables(
        window=window,
        window32=window.astype(np.float32),
        window_sq=window**2,
        wss_profile=profile,
        freqs=freqs,
        mel_band=mel_band,
        mel_w_lo=mel_w_lo,
        mel_w_hi=mel_w_hi,
        dct=dct,
        pip_lo=int(in_range[0]),
        pip_hi=int(in_range[-1]) + 1,
        tuning_edges=np.linspace(-0.5, 0.5, _N_TUNING_BINS + 1),
        tempo_window=tempo_window,
        tempo_bpms=bpms,
        tempo_logprior=logprior,
        tempo_cos=np.cos(2 * np.pi * np.arange(win_length + 1) / (2 * win_length)),
        tempo_sin=np.sin(2 * np.pi * np.arange(win_length + 1) / (2 * win_length)),
        tempo_sign=np.where(np.arange(win_length + 1) % 2 == 0, 1.0, -1.0),
    )


@functools.lru_cache(maxsize=None)
def _chroma_filterbank(tuning_bin: int) -> np.ndarray:
    """``librosa.filters.chroma`` at the tuning of histogram bin ``tuning_bin``: (12, 1025) float64."""
    import librosa

    tuning = float(_tables().tuning_edges[tuning_bin])
    fb = librosa.filters.chroma(sr=SAMPLE_RATE, n_fft=N_FFT, tuning=tuning, n_chroma=12)
    return np.ascontiguousarray(fb, dtype=np.float64)


# --------------------------------------------------------------------------
# Numba kernels (numba is a dependency of librosa). Compiled on first use and
# cached next to this file.

try:
    import numba as _numba
except ImportError:  # pragma: no cover - librosa requires numba
    _numba = None


def _njit(fn):
    if _numba is None:  # pragma: no cover
        return fn
    return _numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)(fn)


def _njit_exact(fn):
    """As :func:`_njit`, without fast-math: for kernels whose float rounding must follow the reference's order."""
    if _numba is None:  # pragma: no cover
        return fn
    return _numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False)(fn)


_uint = _numba.uint64 if _numba is not None else int


_LANES = 128


def _sorting_network(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Batcher's odd-even merge sort for ``n`` (a power of two) values, as comparator pairs (i < j)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    arr = np.array(pairs, dtype=np.int64)
    return arr[:, 0].copy(), arr[:, 1].copy()


_NET_I, _NET_J = _sorting_network(_KERNEL + 1)  # 191 comparators for 32 values


@_njit
def _sliding_median_axis0(x, out, half, net_i, net_j):  # pragma: no cover - compiled
    """``out[t, j] = median(x[t : t + 2 half + 1, j])`` for every lane ``j``.

    Keeps one sorted window per lane and updates it without branches: removing
    ``u`` and inserting ``v`` is one pass of ``a_i = w[i+1] if w[i] >= u else
    w[i]`` (the window without ``u``) and ``w'[i] = max(min(a_i, v), a_{i-1})``
    (with ``v`` inserted), so the inner loops vectorise across lanes (64 per
    tile; flat unsigned indices keep them free of bounds and wraparound
    logic). The first window of each lane is sorted by the comparator network
    ``net_i, net_j`` (:func:`_sorting_network` for ``2 half + 2`` values).
    Exact: the median of an odd number of values is one of them, as
    ``scipy.ndimage.median_filter`` gives.
    """
    n_rows, n_lanes = x.shape
    k = 2 * half + 1
    n_out = n_rows - k + 1
    B = _uint(_LANES)
    xf = x.ravel()
    of = out.ravel()
    NL = _uint(n_lanes)
    H1 = _uint(half + 1)
    wa = np.empty((k + 2) * _LANES, x.dtype)  # sorted window in rows 1..k; row 0 = -inf, row k+1 = +inf
    wb = np.empty((k + 2) * _LANES, x.dtype)
    uu = np.empty(_LANES, x.dtype)
    vv = np.empty(_LANES, x.dtype)
    for j0 in range(0, n_lanes, _LANES):
        nb = min(_LANES, n_lanes - j0)
        J0 = _uint(j0)
        for j in range(_LANES):
            wa[j] = -np.inf
            wb[j] = -np.inf
        for i in range(_LANES, (k + 2) * _LANES):
            wa[i] = np.inf
            wb[i] = np.inf
        # first window: rows 1..k, sorted by a sorting network over rows 1..n_net (row k+1 is +inf)
        for m in range(k):
            row = _uint(m) * NL + J0
            o = _uint(m + 1) * B
            for jj in range(nb):
                wa[o + _uint(jj)] = xf[row + _uint(jj)]
        for q in range(net_i.shape[0]):
            oi = _uint(net_i[q] + 1) * B
            oj = _uint(net_j[q] + 1) * B
            for jj in range(nb):
                j = _uint(jj)
                a = wa[oi + j]
                b = wa[oj + j]
                wa[oi + j] = min(a, b)
                wa[oj + j] = max(a, b)
        for jj in range(nb):
            of[J0 + _uint(jj)] = wa[H1 * B + _uint(jj)]
        src = wa
        dst = wb
        for t in range(1, n_out):
            ru = _uint(t - 1) * NL + J0
            rv = _uint(t - 1 + k) * NL + J0
            for jj in range(nb):
                j = _uint(jj)
                uu[j] = xf[ru + j]
                vv[j] = xf[rv + j]
            i = 1
            while i + 1 <= k:  # two rows per pass share their loads and comparisons
                o = _uint(i) * B
                for jj in range(nb):
                    j = _uint(jj)
                    a0 = src[o - B + j]
                    a1 = src[o + j]
                    a2 = src[o + B + j]
                    a3 = src[o + B + B + j]
                    u = uu[j]
                    v = vv[j]
                    c0 = a1 if a0 >= u else a0
                    c1 = a2 if a1 >= u else a1
                    c2 = a3 if a2 >= u else a2
                    dst[o + j] = max(min(c1, v), c0)
                    dst[o + B + j] = max(min(c2, v), c1)
                i += 2
            if i == k:
                o = _uint(i) * B
                for jj in range(nb):
                    j = _uint(jj)
                    a0 = src[o - B + j]
                    a1 = src[o + j]
                    a2 = src[o + B + j]
                    u = uu[j]
                    c0 = a1 if a0 >= u else a0
                    c1 = a2 if a1 >= u else a1
                    dst[o + j] = max(min(c1, vv[j]), c0)
            src, dst = dst, src
            ro = _uint(t) * NL + J0
            for jj in range(nb):
                of[ro + _uint(jj)] = src[H1 * B + _uint(jj)]


@_njit
def _tempogram_power_sum(p, n_cols, b0r, b0i, cos_f, sin_f, sign_f):  # pragma: no cover - compiled
    """Sum over columns of the normalised power spectra of the tempogram's frames.

    Column ``t`` of ``librosa.feature.tempogram`` is the autocorrelation of
    ``a_t = p[t : t + L] * hann(L)``, divided by its maximum, which is its value
    at lag 0, ``E_t = sum(a_t ** 2)``. The autocorrelation is the inverse
    DFT (size ``M = 2 L``) of ``|A_t|**2``, so the mean tempogram is
    ``irfft(sum_t |A_t|**2 / E_t, M) / n_cols``, with ``E_t`` from Parseval's
    theorem. ``A_t`` is the DFT ``B_t``
    of the rectangular segment ``p[t : t + L]`` convolved with the Hann
    window's three taps in frequency (its period ``L`` is half the DFT size),
    and ``B_{t+1}[f] = exp(2 pi i f / M) (B_t[f] - p[t] + (-1)**f p[t + L])``:
    one sliding-DFT step per column instead of an FFT pair. All-zero columns
    (counted exactly, not from the DFT's rounding) add nothing, as
    ``librosa.util.normalize`` leaves them at zero.

    ``b0r + 1j b0i`` is ``B_0`` (bins 0..L); returns the half spectrum, (L + 1,).
    """
    H = b0r.shape[0]
    L = H - 1
    # e[f + 2] = B[f] for f = -2 .. L + 2, by conjugate symmetry B[-f] = B[M - f] = conj(B[f])
    er = np.zeros(H + 4)
    ei = np.zeros(H + 4)
    er[2 : H + 2] = b0r
    ei[2 : H + 2] = b0i
    acc = np.zeros(H)
    pw = np.empty(H)
    nonzero = 0
    for i in range(L):
        nonzero += p[i] != 0.0
    M = 2 * L
    for t in range(n_cols):
        er[0] = er[4]
        ei[0] = -ei[4]
        er[1] = er[3]
        ei[1] = -ei[3]
        er[L + 3] = er[L + 1]
        ei[L + 3] = -ei[L + 1]
        er[L + 4] = er[L]
        ei[L + 4] = -ei[L]
        if nonzero > 0:
            total = 0.0
            for f in range(H):
                ar = 0.5 * er[f + 2] - 0.25 * (er[f] + er[f + 4])
                ai = 0.5 * ei[f + 2] - 0.25 * (ei[f] + ei[f + 4])
                pw[f] = ar * ar + ai * ai
                total += pw[f]
            energy = (2.0 * total - pw[0] - pw[L]) / M
            if energy > 0.0:
                inv = 1.0 / energy
                for f in range(H):
                    acc[f] += pw[f] * inv
        old = p[t]
        new = p[t + L]
        nonzero += (new != 0.0) - (old != 0.0)
        for f in range(H):
            xr = er[f + 2] - old + sign_f[f] * new
            xi = ei[f + 2]
            er[f + 2] = xr * cos_f[f] - xi * sin_f[f]
            ei[f + 2] = xr * sin_f[f] + xi * cos_f[f]
    return acc


# --------------------------------------------------------------------------
# Per-frame analysis, shared by the running state and the window edges.


def _rfft_frames(frames: np.ndarray, tables: _Tables) -> np.ndarray:
    """STFT columns of framed audio, as ``librosa.stft`` computes them: (n, 1025) complex64.

    In single precision (librosa windows and transforms in double precision
    and stores complex64): the difference is float32 rounding.
    """
    import scipy.fft

    return scipy.fft.rfft(frames * tables.window32, axis=1)


def _percussive_median(mag: np.ndarray) -> np.ndarray:
    """31-bin median along frequency, ``mode="reflect"``: (n, 1025) float32 (frames are the lanes)."""
    n = mag.shape[0]
    lanes = -(-n // 16) * 16  # whole SIMD vectors: a remainder lane costs about as much as a vector
    ext = _scratch("perc_ext", (_N_BINS + 2 * _KH, lanes), np.float32)
    if lanes > n:
        ext[:, n:] = 0.0
    magt = mag.T
    ext[_KH : _KH + _N_BINS, :n] = magt
    ext[:_KH, :n] = magt[_KH - 1 :: -1]
    ext[_KH + _N_BINS :, :n] = magt[: -_KH - 1 : -1]
    out = np.empty((_N_BINS, lanes), dtype=np.float32)
    if n:
        _sliding_median_axis0(ext, out, _KH, _NET_I, _NET_J)
    return out[:, :n].T


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A per-thread work array (contents undefined), reused from call to call and stream to
    stream: large temporaries without fresh allocations and their page faults. Valid until
    the next request of the same name on the same thread."""
    store = getattr(_SCRATCH, "store", None)
    if store is None:
        store = _SCRATCH.store = {}
    size = int(np.prod(shape))
    buf = store.get(name)
    if buf is None or buf.dtype != np.dtype(dtype) or buf.size < size:
        buf = store[name] = np.empty(max(size, 1), dtype=dtype)
    return buf[:size].reshape(shape)


def _harmonic_median(ext: np.ndarray) -> np.ndarray:
    """31-frame median along time of ``ext`` (n + 30, 1025) float32: (n, 1025) float32."""
    ext = np.ascontiguousarray(ext, dtype=np.float32)
    out = np.empty((ext.shape[0] - 2 * _KH, _N_BINS), dtype=np.float32)
    if out.shape[0]:
        _sliding_median_axis0(ext, out, _KH, _NET_I, _NET_J)
    return out


@_njit
def _harmonic_gain(harm, perc, out):  # pragma: no cover - compiled
    """``librosa.util.softmask(harm, perc, power=2, split_zeros=True)``, the harmonic mask of
    ``librosa.decompose.hpss`` (margin 1), in single precision."""
    hf = harm.ravel()
    pf = perc.ravel()
    of = out.ravel()
    tiny = np.finfo(np.float32).tiny
    for i in range(hf.shape[0]):
        h = hf[i]
        q = pf[i]
        z = max(h, q)
        ok = z >= tiny
        zz = z if ok else np.float32(1.0)
        a = h / zz
        b = q / zz
        a = a * a
        b = b * b
        of[i] = a / (a + b) if ok else np.float32(0.5)


def _harmonic_frames(spec: np.ndarray, harm: np.ndarray, perc: np.ndarray, tables: _Tables) -> np.ndarray:
    """Windowed inverse FFT of the harmonic-masked columns, as ``librosa.istft`` overlap-adds them: (n, 2048) float32."""
    import scipy.fft

    gain = np.empty(harm.shape, dtype=np.float32)
    if spec.shape[0]:
        _harmonic_gain(np.ascontiguousarray(harm), np.ascontiguousarray(perc), gain)
    out = scipy.fft.irfft(spec * gain, n=N_FFT, axis=1)
    out *= tables.window32
    return out


@_njit
def _time_scalars(frames, out):  # pragma: no cover - compiled
    """RMS (``librosa.feature.rms``) and zero-crossing rate (``zero_crossing_rate``, values within
    1e-10 of zero count as zero, which is positive) of each frame, into ``out[:, 0]`` and ``out[:, 4]``."""
    n, length = frames.shape
    for t in range(n):
        acc = 0.0
        for i in range(length):
            v = np.float64(frames[t, i])
            acc += v * v
        out[t, 0] = np.sqrt(acc / length)
        count = 0
        prev = frames[t, 0] < -_ZC_THRESHOLD
        for i in range(1, length):
            cur = frames[t, i] < -_ZC_THRESHOLD
            count += cur != prev
            prev = cur
        out[t, 4] = count / length


@_njit
def _spectral_moments(mag, freqs, out):  # pragma: no cover - compiled
    """Spectral centroid and bandwidth (p=2) of magnitude columns, into ``out[:, 1:3]``: as
    ``librosa.feature.spectral_*``, each column normalised by its sum unless that is below
    float32's tiny (then left as is)."""
    n, n_bins = mag.shape
    tiny = np.float64(np.finfo(np.float32).tiny)
    for t in range(n):
        s0 = 0.0
        s1 = 0.0
        for f in range(n_bins):
            m = np.float64(mag[t, f])
            s0 += m
            s1 += m * freqs[f]
        denom = s0 if s0 >= tiny else 1.0
        c = s1 / denom
        s2 = 0.0
        for f in range(n_bins):
            d = freqs[f] - c
            s2 += np.float64(mag[t, f]) * d * d
        out[t, 1] = c
        out[t, 2] = np.sqrt(s2 / denom)


@_njit_exact
def _spectral_rolloff(mag, freqs, roll_percent, out):  # pragma: no cover - compiled
    """``librosa.feature.spectral_rolloff`` of magnitude columns, into ``out[:, 3]``: the first
    bin whose float32 cumulative sum (in order, as ``np.cumsum``) reaches ``roll_percent`` of
    the total."""
    n, n_bins = mag.shape
    cum = np.empty(n_bins, np.float32)
    for t in range(n):
        run = np.float32(0.0)
        for f in range(n_bins):
            run += mag[t, f]
            cum[f] = run
        threshold = np.float32(roll_percent) * run
        idx = 0
        for f in range(n_bins):
            if cum[f] >= threshold:
                idx = f
                break
        out[t, 3] = freqs[idx]


@_njit_exact
def _pitch_peaks(S, lo, hi, edges, fi, mags, bins):  # pragma: no cover - compiled
    """``librosa.piptrack`` on power columns ``S`` (n, 1025): local maxima above 0.1 of the
    frame's maximum in bins [lo, hi), with parabolic interpolation; for each, its frame, its
    magnitude and the bin of ``estimate_tuning``'s histogram (``edges``) its pitch falls in
    (``pitch_tuning``: the pitch's deviation from the equal-tempered grid, in semitones,
    wrapped to [-0.5, 0.5)). Returns the count."""
    n, n_bins = S.shape
    c = 0
    for t in range(n):
        mx = S[t, 0]
        for f in range(1, n_bins):
            if S[t, f] > mx:
                mx = S[t, f]
        ref = np.float32(0.1) * mx
        for b in range(lo, hi):
            here = S[t, b] if S[t, b] > ref else np.float32(0.0)
            before = S[t, b - 1] if S[t, b - 1] > ref else np.float32(0.0)
            after = S[t, b + 1] if S[t, b + 1] > ref else np.float32(0.0)
            if here > before and here >= after:
                s_prev = S[t, b - 1]
                s_next = S[t, b + 1]
                a = s_next + s_prev - np.float32(2.0) * S[t, b]
                bb = (s_next - s_prev) / np.float32(2.0)
                shift = np.float32(0.0)
                if abs(bb) < abs(a):
                    shift = -bb / a
                avg = (s_next - s_prev) / np.float32(2.0)
                fi[c] = t
                mags[c] = S[t, b] + np.float32(0.5) * avg * shift
                pitch = np.float32((np.float64(b) + np.float64(shift)) * float(SAMPLE_RATE) / N_FFT)
                octs = np.log2(pitch / np.float32(27.5))
                r = np.float32(12.0) * octs
                r = r - np.floor(r)
                if r >= np.float32(0.5):
                    r -= np.float32(1.0)
                r64 = np.float64(r)
                nb = edges.shape[0] - 1  # np.histogram's bin: edges[k] <= r < edges[k + 1]
                k = int(np.floor((r64 - edges[0]) / (edges[nb] - edges[0]) * nb))
                k = min(max(k, 0), nb - 1)
                if r64 < edges[k] and k > 0:
                    k -= 1
                elif r64 >= edges[k + 1] and k < nb - 1:
                    k += 1
                bins[c] = k
                c += 1
    return c


@_njit
def _mel_kernel(power, band, w_lo, w_hi, out):  # pragma: no cover - compiled
    """``mel @ power`` for each frame: bin ``f`` adds ``w_lo[f]`` of its power to band
    ``band[f]`` and ``w_hi[f]`` to band ``band[f] + 1`` (a bin of librosa's triangular
    filterbank lies in at most two adjacent bands; ``band`` indexes a padded row, so
    bins in no band land in a discarded slot). Accumulated in float32, as the float32
    ``melspectrogram`` product; ``out`` is (n, n_mels + 2), columns 1..n_mels used."""
    n, n_bins = power.shape
    m = out.shape[1]
    for t in range(n):
        for j in range(m):
            out[t, j] = 0.0
        for f in range(n_bins):
            p = power[t, f]
            b = band[f]
            out[t, b] += w_lo[f] * p
            out[t, b + 1] += w_hi[f] * p


@_njit
def _project(x, basis_t, clip_floor, clip, out):  # pragma: no cover - compiled
    """``out = max(x, clip_floor) @ basis_t.T`` (the clip only if ``clip``), accumulated in float64.

    Small matrix products without BLAS (whose threads would compete with the
    engine's workers): the MFCC DCT and the chroma filterbank. ``basis_t`` is
    (k, m), so each output is one contiguous dot product.
    """
    n, m = x.shape
    k = basis_t.shape[0]
    row = np.empty(m, np.float64)
    for t in range(n):
        for j in range(m):
            v = np.float64(x[t, j])
            if clip:
                v = max(v, clip_floor)
            row[j] = v
        for c in range(k):
            acc = 0.0
            for j in range(m):
                acc += row[j] * basis_t[c, j]
            out[t, c] = acc


@_njit
def _ola_region_sums(frames, wsq, r_lo, r_hi, y, out):  # pragma: no cover - compiled
    """Overlap-add ``frames`` (hop 512, frame i starting at sample 512 i) normalised by the
    sum of ``wsq`` over the same frames, and sum over samples [r_lo, r_hi) of the result
    ``h`` and of ``y - h`` (``y`` holds those samples): out = [sum h, sum h^2, sum p, sum p^2]."""
    n, length = frames.shape
    total = 512 * (n - 1) + length
    acc = np.zeros(total)
    wss = np.zeros(total)
    for i in range(n):
        o = 512 * i
        for j in range(length):
            acc[o + j] += frames[i, j]
            wss[o + j] += wsq[j]
    s1 = 0.0
    s2 = 0.0
    p1 = 0.0
    p2 = 0.0
    tiny = np.finfo(np.float64).tiny
    for q in range(r_lo, r_hi):
        h = acc[q] / wss[q] if wss[q] > tiny else 0.0
        p = np.float64(y[q - r_lo]) - h
        s1 += h
        s2 += h * h
        p1 += p
        p2 += p * p
    out[0] = s1
    out[1] = s2
    out[2] = p1
    out[3] = p2


@_njit
def _ola_segments(frames, carry, profile, y, seg_sums):  # pragma: no cover - compiled
    """Running overlap-add: add ``frames`` (frame i at offset 512 i) to ``carry`` (the 1536
    samples still open), normalise the ``n`` completed 512-sample segments by the window
    sum-square ``profile``, and sum each segment's harmonic part ``h`` and ``y - h``
    into ``seg_sums`` (n, 4). ``carry`` is updated in place."""
    n, length = frames.shape
    total = 512 * (n - 1) + length
    acc = np.zeros(total)
    for j in range(carry.shape[0]):
        acc[j] = carry[j]
    for i in range(n):
        o = 512 * i
        for j in range(length):
            acc[o + j] += frames[i, j]
    for g in range(n):
        s1 = 0.0
        s2 = 0.0
        p1 = 0.0
        p2 = 0.0
        for r in range(512):
            q = 512 * g + r
            h = acc[q] / profile[r]
            p = np.float64(y[q]) - h
            s1 += h
            s2 += h * h
            p1 += p
            p2 += p * p
        seg_sums[g, 0] = s1
        seg_sums[g, 1] = s2
        seg_sums[g, 2] = p1
        seg_sums[g, 3] = p2
    for j in range(carry.shape[0]):
        carry[j] = acc[512 * n + j]


@_njit_exact
def _select(d, k):  # pragma: no cover - compiled
    """The k-th smallest of ``d`` (Hoare's quickselect, in place): afterwards d[:k] <= d[k] <= d[k+1:]."""
    lo = 0
    hi = d.shape[0] - 1
    while hi > lo:
        pivot = d[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while d[i] < pivot:
                i += 1
            while d[j] > pivot:
                j -= 1
            if i <= j:
                tmp = d[i]
                d[i] = d[j]
                d[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return d[k]


@_njit_exact
def _tuning_bin(mags, bins, n_bins):  # pragma: no cover - compiled
    """``estimate_tuning``'s choice from pitch candidates: the most frequent histogram bin
    among candidates whose magnitude reaches the median (as ``np.median``: the mean of the two
    middle values, in float32, for an even count); the first such bin on ties."""
    n = mags.shape[0]
    d = mags.copy()
    k = n // 2
    hi = _select(d, k)
    if n % 2:
        threshold = hi
    else:
        lo = d[0]
        for j in range(1, k):
            if d[j] > lo:
                lo = d[j]
        threshold = (lo + hi) / np.float32(2.0)
    counts = np.zeros(n_bins, np.int64)
    for j in range(n):
        if mags[j] >= threshold:
            counts[bins[j]] += 1
    best = 0
    for j in range(1, n_bins):
        if counts[j] > counts[best]:
            best = j
    return best


@_njit_exact
def _onset_medians(a, b, floor, clip, out):  # pragma: no cover - compiled
    """``median(max(0, b - a))`` over mel bands per row (after ``max(., floor)`` if ``clip``), float32."""
    n, m = a.shape
    d = np.empty(m, np.float32)
    for t in range(n):
        for j in range(m):
            x = a[t, j]
            y = b[t, j]
            if clip:
                x = max(x, floor)
                y = max(y, floor)
            v = y - x
            d[j] = v if v > 0 else np.float32(0.0)
        hi_ = _select(d, m // 2)
        if m % 2:
            out[t] = hi_
        else:
            lo_ = d[0]
            for j in range(1, m // 2):
                if d[j] > lo_:
                    lo_ = d[j]
            out[t] = (lo_ + hi_) / np.float32(2.0)


@dataclass
class _FrameBlock:
    """Per-frame quantities of ``n`` frames (all but chroma, which needs the window's tuning)."""

    power: np.ndarray  # (n, 1025) float32
    scalars: np.ndarray  # (n, 5) float64: rms, centroid, bandwidth, rolloff, zcr
    mel_db: np.ndarray  # (n, 128) float32, not clipped
    mfcc: np.ndarray  # (n, 20) float32 of the unclipped mel_db
    cand_frame: np.ndarray  # (c,) int64 frame offset (0..n-1) of each pitch candidate
    cand_mag: np.ndarray  # (c,) float32 piptrack magnitude
    cand_bin: np.ndarray  # (c,) int64 tuning histogram bin of its pitch


def _analyse_frames(
    frames: np.ndarray, mag: np.ndarray, tables: _Tables, zcr_frames: np.ndarray | None = None
) -> _FrameBlock:
    """Everything per frame but the chroma, from the frames (n, 2048) and their STFT magnitudes (n, 1025).

    ``zcr_frames``, if given, replaces ``frames`` for the zero-crossing rate
    (edge-padded where ``frames`` are zero-padded, as the batch function pads).
    """
    n = frames.shape[0]
    power = mag**2
    scalars = np.empty((n, 5), dtype=np.float64)
    if n:
        _time_scalars(frames, scalars)
        if zcr_frames is not None:
            zs = np.empty((n, 5), dtype=np.float64)
            _time_scalars(zcr_frames, zs)
            scalars[:, 4] = zs[:, 4]
        _spectral_moments(mag, tables.freqs, scalars)
        _spectral_rolloff(mag, tables.freqs, _ROLL_PERCENT, scalars)
    mel_pad = np.empty((n, _N_MELS + 2), dtype=np.float32)
    mfcc = np.empty((n, N_MFCC), dtype=np.float32)
    if n:
        _mel_kernel(power, tables.mel_band, tables.mel_w_lo, tables.mel_w_hi, mel_pad)
    mel_db = np.ascontiguousarray(mel_pad[:, 1 : _N_MELS + 1])
    if n:
        np.maximum(mel_db, np.float32(_AMIN), out=mel_db)
        np.log10(mel_db, out=mel_db)
        mel_db *= np.float32(10.0)  # power_to_db: ref 1, amin 1e-10, no top_db (clipped per window)
        _project(mel_db, tables.dct, 0.0, False, mfcc)
    cf, cm, cb = _pitch_candidates(power, tables)
    return _FrameBlock(power, scalars, mel_db, mfcc, cf, cm, cb)


def _split_block(blk: _FrameBlock, sizes: list[int]) -> list[_FrameBlock]:
    """Cut a block of frames into consecutive blocks of ``sizes`` frames."""
    out = []
    first = 0
    for n in sizes:
        sel = (blk.cand_frame >= first) & (blk.cand_frame < first + n)
        rows = slice(first, first + n)
        out.append(
            _FrameBlock(
                blk.power[rows], blk.scalars[rows], blk.mel_db[rows], blk.mfcc[rows],
                blk.cand_frame[sel] - first, blk.cand_mag[sel], blk.cand_bin[sel],
            )
        )
        first += n
    return out


def _pitch_candidates(power: np.ndarray, tables: _Tables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``librosa.piptrack(S=power)`` peaks and the tuning-histogram bin of each.

    As ``chroma_stft`` calls it through ``estimate_tuning``: the power
    spectrogram is the "magnitude" that is peak-picked, fmin 150 Hz,
    fmax 4000 Hz, threshold 0.1 of each frame's maximum.
    """
    n = power.shape[0]
    size = n * ((tables.pip_hi - tables.pip_lo) // 2 + 1)
    fi = np.empty(size, dtype=np.int64)
    mags = np.empty(size, dtype=np.float32)
    bins = np.empty(size, dtype=np.int64)
    c = _pitch_peaks(power, tables.pip_lo, tables.pip_hi, tables.tuning_edges, fi, mags, bins) if n else 0
    return fi[:c], mags[:c], bins[:c]


def _mfcc_clipped(mel_db: np.ndarray, floor: np.float32, tables: _Tables) -> np.ndarray:
    """MFCCs of mel dB frames clipped at ``floor`` (``power_to_db``'s top_db): (n, 20) float32."""
    out = np.empty((mel_db.shape[0], N_MFCC), dtype=np.float32)
    if mel_db.shape[0]:
        _project(np.ascontiguousarray(mel_db), tables.dct, float(floor), True, out)
    return out


def _chroma(power: np.ndarray, tuning_bin: int) -> np.ndarray:
    """``chroma_stft`` columns (inf-norm normalised) at a tuning: (n, 12) float32."""
    raw64 = np.empty((power.shape[0], 12), dtype=np.float64)
    if power.shape[0]:
        _project(power, _chroma_filterbank(tuning_bin), 0.0, False, raw64)
    raw = raw64.astype(np.float32)
    length = np.max(np.abs(raw), axis=1, keepdims=True)
    length[length < np.finfo(np.float32).tiny] = 1.0
    return raw / length


def _onset_diff(a: np.ndarray, b: np.ndarray, floor: float | None) -> np.ndarray:
    """``onset_strength`` (lag 1, median over mel bands) between frames ``a`` and ``b`` (n, 128)."""
    out = np.empty(a.shape[0], dtype=np.float32)
    if a.shape[0]:
        _onset_medians(a, b, np.float32(0.0 if floor is None else floor), floor is not None, out)
    return out


# --------------------------------------------------------------------------


@dataclass
class _Work:
    """The arrays of one batch of running frames ka..kmax."""

    ka: int
    kmax: int
    power: np.ndarray  # (kmax - ka + 1, 1025) float32: chroma waits for the window's tuning
    tail_frames: np.ndarray | None  # masked harmonic frames kmax-17 .. k_last of the window's end region
    mags: np.ndarray  # frames ka-33 .. kmax: magnitudes,
    specs: np.ndarray  # STFT columns,
    percs: np.ndarray  # percussive medians
    head_percs: list[np.ndarray]  # percussive medians of the start regions' special frames

    def rows(self, first: int, last: int) -> slice | None:
        """Rows of frames first..last in mags/specs/percs, or None if not all held."""
        base = self.ka - _EDGE_CONTEXT
        if first < base or last > self.kmax:
            return None
        return slice(first - base, last - base + 1)


@dataclass
class _Edge:
    """A window's edge region: its special frames and the HPSS sums over its samples."""

    first: int  # first special frame
    n_special: int
    scalars: np.ndarray
    mel_db: np.ndarray
    mfcc: np.ndarray
    chroma: np.ndarray | None
    power: np.ndarray | None  # kept only until the chroma is computed (tail) or with exact chroma
    cand_mag: np.ndarray
    cand_bin: np.ndarray
    sums: np.ndarray  # (4,) float64: sum, sum of squares of harmonic; same of percussive
    lo: int  # the sample range the sums cover
    hi: int


class WindowFeatures(tuple):
    """One completed window: the pair ``(end, features)``, plus ``rms``.

    Unpacks as ``end, features = w``; ``w.end``, ``w.features`` and ``w.rms``
    (the window's RMS, ``sqrt(mean(y ** 2))``, float) name the parts.
    """

    def __new__(cls, end: int, features: np.ndarray, rms: float) -> "WindowFeatures":
        self = super().__new__(cls, (end, features))
        self.rms = rms
        return self

    def __getnewargs__(self) -> tuple:  # pickling (process pools)
        return (self[0], self[1], self.rms)

    @property
    def end(self) -> int:
        return self[0]

    @property
    def features(self) -> np.ndarray:
        return self[1]


class IncrementalFeatures:
    """Sliding-window GTZAN features of one audio stream, computed incrementally.

    Feed the stream with :meth:`push`; every window that completes comes back
    with its 57 features, in the order of
    :data:`stream.frontends.gtzan.FEATURE_NAMES`. Windows end at ``window_length``,
    ``window_length + hop_length``, ... samples after the start (or the last
    :meth:`reset`), exactly where the engine's ring buffer cuts them, whatever
    the block sizes. The output does not depend on how the stream is cut into
    blocks (all work happens at window ends, on batches of frames fixed by the
    window positions), bit for bit.

    Parameters
    ----------
    sample_rate : int [scalar]
        Must be 22050 Hz, the rate the features are defined at.
    window_s : float > 0 [scalar]
        Window length in seconds; ``window_length = round(window_s * sample_rate)``
        samples, at least :data:`MIN_WINDOW_LENGTH`.
    hop_s : float > 0 [scalar]
        Hop between window ends in seconds;
        ``hop_length = max(1, round(hop_s * sample_rate))`` samples, as the
        engine rounds it.
    exact_chroma : bool
        For validation: keep every frame's power spectrum (4.1 kB per frame,
        1.8 MB per stream at 10 s) and compute the chroma of all the window's
        frames at the window's own tuning, as the batch function does.

    Attributes
    ----------
    window_length, hop_length : int
        Window and hop in samples.
    n_frames : int
        STFT frames per window, ``1 + window_length // 512`` (431 at 10 s).

    Raises
    ------
    ValueError
        If ``sample_rate`` is not 22050, ``window_s`` gives fewer than
        :data:`MIN_WINDOW_LENGTH` samples, or ``hop_s`` is not positive.

    Notes
    -----
    One instance per stream, fed from one thread at a time; instances are
    independent and may run in parallel threads (the kernels release the GIL).

    The module docstring gives the definition (a stream-global STFT frame
    grid; the batch function's edge handling reproduced per window), the one
    approximation (chroma tuning) and the cost. Algorithms: librosa 0.11
    (McFee et al., SciPy 2015) for every feature, as
    :func:`stream.frontends.gtzan.gtzan_features` calls it; harmonic/percussive
    separation by median filtering (Fitzgerald, DAFx 2010) with soft masks
    (Driedger, Müller & Disch, ISMIR 2014) as ``librosa.decompose.hpss``;
    tempo as ``librosa.feature.tempo`` (autocorrelation tempogram with a
    log-normal prior, Ellis, JNMR 2007).

    Examples
    --------
    >>> inc = IncrementalFeatures(window_s=10.0, hop_s=1.0)
    >>> out = inc.push(np.zeros(22050 * 12, dtype=np.float32))
    >>> [end for end, _ in out]
    [220500, 242550, 264600]
    >>> out[0][1].shape
    (57,)
    >>> out[0].rms
    0.0
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        window_s: float = 10.0,
        hop_s: float = 1.0,
        *,
        exact_chroma: bool = False,
    ) -> None:
        if int(sample_rate) != SAMPLE_RATE:
            raise ValueError(
                f"sample_rate: expected {SAMPLE_RATE} Hz, got {sample_rate}; resample the audio first"
            )
        window_s, hop_s = float(window_s), float(hop_s)
        window_length = int(round(window_s * SAMPLE_RATE)) if np.isfinite(window_s) else 0
        if not window_length >= MIN_WINDOW_LENGTH:
            raise ValueError(
                f"window_s: expected at least {MIN_WINDOW_LENGTH / SAMPLE_RATE:.2f} s "
                f"({MIN_WINDOW_LENGTH} samples), got {window_s}"
            )
        if not (hop_s > 0 and np.isfinite(hop_s)):
            raise ValueError(f"hop_s: expected a positive number of seconds, got {hop_s}")
        self.sample_rate = SAMPLE_RATE
        self.window_length = window_length
        self.hop_length = max(1, int(round(hop_s * SAMPLE_RATE)))
        self.n_frames = 1 + window_length // HOP_LENGTH
        self._tables = _tables()
        self._exact_chroma = bool(exact_chroma)
        self.reset()

    # ------------------------------------------------------------------ API

    def reset(self) -> None:
        """Forget the stream: the next sample pushed is sample 0 of a new stream.

        Call it after a gap in the audio. The next window ends
        ``window_length`` samples later, as at the start.
        """
        F = self.n_frames
        self._total = 0  # samples pushed since the start
        self._buf = np.zeros(max(4 * self.hop_length, 1 << 16), dtype=np.float32)
        self._buf0 = 0  # stream index of self._buf[0]
        self._buf_n = 0  # valid samples in self._buf
        self._m = 0  # index of the next window
        self._k_done = -1  # last frame analysed by the running state
        self._k_masked = _KH - 1  # last frame whose harmonic mask is applied
        # per-frame ring, frame k in slot k % cap
        cap = F + 8
        self._cap = cap
        self._r_scalars = np.zeros((cap, 5), dtype=np.float64)
        self._r_chroma = np.zeros((cap, 12), dtype=np.float32)
        self._r_mel = np.zeros((cap, _N_MELS), dtype=np.float32)
        self._r_melmin = np.zeros(cap, dtype=np.float32)
        self._r_melmax = np.zeros(cap, dtype=np.float32)
        self._r_mfcc = np.zeros((cap, N_MFCC), dtype=np.float32)  # float32, as librosa.feature.mfcc
        self._r_mfcc_clip = np.zeros((cap, N_MFCC), dtype=np.float32)
        self._r_mfcc_floor = np.full(cap, np.nan, dtype=np.float32)
        self._r_onset = np.zeros(cap, dtype=np.float32)  # pair (k, k+1) in slot k
        self._r_onset_clip = np.zeros(cap, dtype=np.float32)
        self._r_onset_floor = np.full(cap, np.nan, dtype=np.float32)
        self._r_power = np.zeros((cap, _N_BINS), dtype=np.float32) if self._exact_chroma else None
        self._cands: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = deque()  # (last frame, frames, mags, bins)
        # harmonic/percussive running state
        # the last 33 frames (k_done-32 .. k_done): the harmonic median reads 30 back, and a
        # window's start region reuses up to 33 running frames (magnitudes are |spec|)
        self._h_spec = np.zeros((_EDGE_CONTEXT, _N_BINS), dtype=np.complex64)
        self._h_perc = np.zeros((_EDGE_CONTEXT, _N_BINS), dtype=np.float32)
        self._h_carry = np.zeros(3 * HOP_LENGTH, dtype=np.float64)  # overlap-add not yet complete
        n_seg = self.window_length // HOP_LENGTH + 8
        self._seg_cap = n_seg
        self._seg = np.zeros((n_seg, 4), dtype=np.float64)  # samples [512 j, 512 j + 512) in slot j % n_seg
        self._heads: dict[int, _Edge] = {}
        self._next_head = 0
        self._tuning_bin = _N_TUNING_BINS // 2  # tuning 0.0 until a window has estimated one
        # window RMS: the running sum of squares (of segments < _energy_seg), noted at each window start
        self._energy = 0.0
        self._energy_seg = 0
        self._start_energy: dict[int, float] = {}
        self._m_start = 0
        self._mark_starts()

    def push(self, block: np.ndarray) -> list[WindowFeatures]:
        """Append samples; return the features of every window that completed.

        Parameters
        ----------
        block : np.ndarray [shape=(n,), dtype=float32 or float64]
            The next mono samples at 22050 Hz, in [-1, 1]; may be empty.
            Float64 input is rounded to float32 (the engine's sample type).

        Returns
        -------
        windows : list of WindowFeatures, i.e. (int, np.ndarray [shape=(57,), dtype=float64])
            ``(end, features)`` for each window that completed, in order:
            ``end`` is the stream position (samples since the start or the
            last :meth:`reset`) one past the window's last sample. Each also
            carries ``.rms``, the window's RMS (``sqrt(mean(y**2))`` in
            float64, for the engine's silence test).

        Raises
        ------
        ValueError
            If ``block`` is not a one-dimensional floating-point array of
            finite values. The stream's state is unchanged.
        """
        block = np.asarray(block)
        if block.ndim != 1:
            raise ValueError(f"block: expected mono samples of shape (n,), got shape {block.shape}")
        if not np.issubdtype(block.dtype, np.floating):
            raise ValueError(f"block: expected floating-point samples in [-1, 1], got dtype {block.dtype}")
        block = block.astype(np.float32, copy=False)
        if not np.all(np.isfinite(block)):
            raise ValueError("block: expected finite samples, found NaN or infinity")
        out: list[WindowFeatures] = []
        pos = 0
        n = block.shape[0]
        while pos < n:
            end = self.window_length + self._m * self.hop_length
            mark = self._m_start * self.hop_length  # start of the next window not yet passed
            take = min(min(end, mark) - self._total, n - pos)
            self._append(block[pos : pos + take])
            pos += take
            self._mark_starts()
            if self._total == end:
                energy = self._energy_at(end) - self._start_energy.pop(self._m)
                rms = float(np.sqrt(max(energy, 0.0) / self.window_length))
                out.append(WindowFeatures(end, self._window(end), rms))
                self._m += 1
        return out

    def _mark_starts(self) -> None:
        """Note the stream's energy at every window start it has reached."""
        while self._m_start * self.hop_length == self._total:
            self._start_energy[self._m_start] = self._energy_at(self._total)
            self._m_start += 1

    def _energy_at(self, p: int) -> float:
        """Sum of squares of samples [0, p), in float64: whole 512-sample segments added in
        order, then the partial one, so the value does not depend on how blocks were cut."""
        j = p // HOP_LENGTH
        if j > self._energy_seg:
            x = self._samples(HOP_LENGTH * self._energy_seg, HOP_LENGTH * j).astype(np.float64)
            seg = np.square(x).reshape(-1, HOP_LENGTH).sum(axis=1)
            self._energy = float(np.cumsum(np.concatenate([[self._energy], seg]))[-1])
            self._energy_seg = j
        tail = self._samples(HOP_LENGTH * j, p).astype(np.float64)
        return self._energy + float(np.square(tail).sum())

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
        """Bytes held by this stream's state (its NumPy arrays; the filterbanks are shared)."""
        total = 0
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
        for _, a, b, c in self._cands:
            total += a.nbytes + b.nbytes + c.nbytes
        for edge in self._heads.values():
            for value in vars(edge).values():
                if isinstance(value, np.ndarray):
                    total += value.nbytes
        return total

    # ------------------------------------------------------------ internals

    def _append(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if self._buf_n + n > self._buf.shape[0]:
            keep = max(self._keep_from() - self._buf0, 0)
            keep = min(keep, self._buf_n)
            live = self._buf_n - keep
            size = self._buf.shape[0]
            if live + n > size or 4 * (live + n) < size:  # grow, or shrink after the first window
                new = np.zeros(max(2 * (live + n), 1 << 16), dtype=np.float32)
                new[:live] = self._buf[keep : self._buf_n]
                self._buf = new
            else:
                self._buf[:live] = self._buf[keep : self._buf_n]
            self._buf0 += keep
            self._buf_n = live
        self._buf[self._buf_n : self._buf_n + n] = x
        self._buf_n += n
        self._total += n

    def _keep_from(self) -> int:
        """First stream sample a future computation may read."""
        nxt = self.window_length + self._m * self.hop_length
        k0, _, k_last, _ = self._frames_of(nxt - self.window_length)
        head_s = self._next_head * self.hop_length
        return min(
            HOP_LENGTH * self._energy_seg,  # samples not yet in the running energy
            HOP_LENGTH * (self._k_done + 1) - _HALF,  # next running frame
            HOP_LENGTH * (self._k_masked + 1) - _HALF,  # samples whose harmonic part is pending
            head_s,  # next window whose start region is not computed
            HOP_LENGTH * (k_last - 3 - _EDGE_CONTEXT) - _HALF,  # next window's end region
        )

    def _samples(self, lo: int, hi: int) -> np.ndarray:
        """Stream samples [lo, hi) (zeros before the stream start), float32."""
        out = np.zeros(hi - lo, dtype=np.float32)
        a = max(lo, 0)
        if hi > a:
            assert a >= self._buf0 and hi <= self._buf0 + self._buf_n, (lo, hi, self._buf0, self._buf_n)
            out[a - lo :] = self._buf[a - self._buf0 : hi - self._buf0]
        return out

    @staticmethod
    def _frame(x: np.ndarray, n: int) -> np.ndarray:
        """Frames of 2048 every 512 samples from the start of ``x``: (n, 2048) float32 copy."""
        if n <= 0:
            return np.zeros((0, N_FFT), dtype=np.float32)
        x = np.ascontiguousarray(x)
        assert x.shape[0] >= HOP_LENGTH * (n - 1) + N_FFT
        return np.lib.stride_tricks.as_strided(x, (n, N_FFT), (HOP_LENGTH * x.itemsize, x.itemsize)).copy()

    def _frames_of(self, s: int) -> tuple[int, int, int, int]:
        """First frame, number of zero-padded frames at the start, last frame, and at the end, of window [s, s + N)."""
        e = s + self.window_length
        k0 = -((256 - s) // HOP_LENGTH)  # ceil((s - 256) / 512)
        k_last = k0 + self.n_frames - 1
        n_head = -((-(s + _HALF)) // HOP_LENGTH) - k0  # frames with 512 k - 1024 < s
        kmax = (e - _HALF) // HOP_LENGTH  # last frame with 512 k + 1024 <= e
        n_tail = k_last - kmax
        return k0, n_head, k_last, n_tail

    # -- running state

    def _advance(
        self, kmax: int, tail: tuple[np.ndarray, np.ndarray] | None = None, head_mags: list[np.ndarray] = ()
    ) -> _Work | None:
        """Analyse frames k_done+1 .. kmax; apply the harmonic masks that became computable.

        ``tail`` is ``(spec, mag)`` of the window's end special frames
        ``kmax+1 .. k_last``: their percussive medians join this batch's, and
        the harmonic median runs on through them into the window's reflection,
        giving the masked frames of the window's end region in the same pass.
        ``head_mags`` (magnitudes of start regions' special frames) only join
        the percussive-median call. Returns the batch's working arrays, or
        None if no frame was new.
        """
        ka = self._k_done + 1
        n = kmax - ka + 1
        if n <= 0:
            return None
        t = self._tables
        frames = self._frame(self._samples(HOP_LENGTH * ka - _HALF, HOP_LENGTH * kmax + _HALF), n)
        spec = _rfft_frames(frames, t)
        mag = np.abs(spec)
        blk = _analyse_frames(frames, mag, t)
        slots = np.arange(ka, kmax + 1) % self._cap
        self._r_scalars[slots] = blk.scalars
        self._r_mel[slots] = blk.mel_db
        self._r_melmin[slots] = blk.mel_db.min(axis=1)
        self._r_melmax[slots] = blk.mel_db.max(axis=1)
        self._r_mfcc[slots] = blk.mfcc
        self._r_mfcc_floor[slots] = np.nan
        if self._r_power is not None:
            self._r_power[slots] = blk.power
        # onset pairs (k-1, k) for k = ka..kmax, stored in slot k-1
        prev = self._r_mel[(ka - 1) % self._cap][None, :] if ka > 0 else blk.mel_db[:1]
        d = _onset_diff(np.concatenate([prev, blk.mel_db[:-1]]), blk.mel_db, None)
        pslots = np.arange(ka - 1, kmax) % self._cap
        self._r_onset[pslots] = d
        self._r_onset_floor[pslots] = np.nan
        self._cands.append((kmax, blk.cand_frame + ka, blk.cand_mag, blk.cand_bin))
        # harmonic/percussive: masks for frames k_masked+1 .. kmax-15
        a = self._k_masked + 1
        b = kmax - _KH
        merge = tail is not None and b >= a and a <= kmax - _EDGE_EXTRA + 1
        nt = tail[0].shape[0] if merge else 0
        H = _EDGE_CONTEXT
        # rows: the last 33 frames, the new ones, the window's end special frames (if merged)
        rows = H + n + nt
        specs = _scratch("specs", (rows, _N_BINS), np.complex64)  # frames ka-33 .. kmax (.. k_last)
        specs[:H] = self._h_spec
        specs[H : H + n] = spec
        mags = _scratch("mags", (rows, _N_BINS), np.float32)
        np.abs(specs[:H], out=mags[:H])
        mags[H : H + n] = mag
        if nt:
            specs[H + n :] = tail[0]
            mags[H + n :] = tail[1]
        percs = _scratch("percs", (rows, _N_BINS), np.float32)
        percs[:H] = self._h_perc
        if head_mags:
            perc_all = _percussive_median(np.concatenate([mags[H:], *head_mags]))
            percs[H:] = perc_all[: rows - H]
            cuts = np.cumsum([rows - H] + [m.shape[0] for m in head_mags])
            head_percs = [perc_all[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        else:
            percs[H:] = _percussive_median(mags[H:])
            head_percs = []
        tail_frames = None
        if b >= a:
            m0 = ka - H  # frame of row 0
            if merge:
                seq = mags[a - _KH - m0 :]  # frames a-15 .. k_last
                ext = _scratch("ext", (seq.shape[0] + _KH, _N_BINS), np.float32)
                ext[: seq.shape[0]] = seq
                ext[seq.shape[0] :] = seq[: -_KH - 1 : -1]  # reflect at k_last
                yh = _harmonic_frames(specs[a - m0 :], _harmonic_median(ext), percs[a - m0 :], t)  # frames a .. k_last
                tail_frames = yh[kmax - _EDGE_EXTRA + 1 - a :]  # frames kmax-17 .. k_last
                yh = yh[: b - a + 1]
            else:
                harm = _harmonic_median(mags[a - _KH - m0 : b + _KH - m0 + 1])
                yh = _harmonic_frames(specs[a - m0 : b - m0 + 1], harm, percs[a - m0 : b - m0 + 1], t)
            self._overlap_add(a, b, yh)
            self._k_masked = b
        self._h_spec = specs[n : H + n].copy()
        self._h_perc = percs[n : H + n].copy()
        self._k_done = kmax
        held = slice(0, H + n)
        return _Work(
            ka=ka, kmax=kmax, power=blk.power, tail_frames=tail_frames,
            mags=mags[held], specs=specs[held], percs=percs[held], head_percs=head_percs,
        )

    def _overlap_add(self, a: int, b: int, frames: np.ndarray) -> None:
        """Overlap-add harmonic frames a..b; close the 512-sample segments that became complete."""
        n = b - a + 1
        lo = HOP_LENGTH * a - _HALF  # samples [lo, lo + 512 n) now have all four frames
        sums = np.empty((n, 4), dtype=np.float64)
        _ola_segments(frames, self._h_carry, self._tables.wss_profile, self._samples(lo, lo + HOP_LENGTH * n), sums)
        first_seg = lo // HOP_LENGTH
        self._seg[np.arange(first_seg, first_seg + n) % self._seg_cap] = sums

    # -- window edges

    def _specials(self, s: int, e: int, first: int, n_sp: int, head: bool):
        """Frames ``first .. first + n_sp - 1`` of window [s, e), which reach past its start
        (``head``) or end: zero-padded there, and edge-padded for the zero-crossing rate."""
        sp_lo = HOP_LENGTH * first - _HALF
        x = np.zeros(HOP_LENGTH * (n_sp - 1) + N_FFT, dtype=np.float32)
        lo, hi = max(sp_lo, s), min(sp_lo + x.shape[0], e)
        x[lo - sp_lo : hi - sp_lo] = self._samples(lo, hi)
        zx = x.copy()
        if head:
            zx[: s - sp_lo] = x[s - sp_lo]
        else:
            zx[e - sp_lo :] = x[e - sp_lo - 1]
        frames = self._frame(x, n_sp)
        spec = _rfft_frames(frames, self._tables)
        return frames, self._frame(zx, n_sp), spec, np.abs(spec)

    def _edge_sums(self, yh_frames: np.ndarray, out_first: int, r_lo: int, r_hi: int) -> np.ndarray:
        """Sums over samples [r_lo, r_hi) of the harmonic part overlap-added from ``yh_frames``
        (frames out_first..), normalised by the window sum-square of these frames only, and of
        the percussive part (the samples minus the harmonic part): (4,) float64."""
        o_lo = HOP_LENGTH * out_first - _HALF
        out = np.empty(4, dtype=np.float64)
        _ola_region_sums(yh_frames, self._tables.window_sq, r_lo - o_lo, r_hi - o_lo, self._samples(r_lo, r_hi), out)
        return out

    def _edge(
        self,
        s: int,
        e: int,
        head: bool,
        specials=None,
        yh_frames=None,
        work: _Work | None = None,
        perc_sp: np.ndarray | None = None,
        blk: _FrameBlock | None = None,
    ) -> _Edge:
        """The start (``head``) or end region of window [s, e).

        Its frames reaching past ``s`` or ``e`` are zero-padded there; the
        harmonic median reflects at the window's first or last frame; the
        overlap-add is normalised by the window's frames only. ``specials``
        and ``yh_frames`` (the region's masked frames) may come from the
        running state's batch (end region); the running frames it reads from
        ``work`` if it holds them (start region); otherwise all is computed
        from the samples.
        """
        t = self._tables
        k0, n_head, k_last, n_tail = self._frames_of(s)
        if head:
            n_sp, sp_first, out_first = n_head, k0, k0
            r_lo, r_hi = s, HOP_LENGTH * (k0 + n_sp + _KH - 1) + _HALF  # A: masks there differ from the running ones
        else:
            n_sp, sp_first = n_tail, k_last - n_tail + 1
            out_first = k_last - n_sp - _EDGE_EXTRA + 1
            r_lo, r_hi = HOP_LENGTH * (k_last - n_sp - _KH + 1) - _HALF, e  # B
        if specials is None:
            specials = self._specials(s, e, sp_first, n_sp, head)
        frames_sp, zframes_sp, spec_sp, mag_sp = specials
        if yh_frames is None:
            n_out = n_sp + _EDGE_EXTRA
            if head:
                run_first, run_last = k0 + n_sp, k0 + n_sp + _EDGE_CONTEXT - 1
            else:
                run_first, run_last = sp_first - _EDGE_CONTEXT, sp_first - 1
            rows = work.rows(run_first, run_last) if work is not None else None
            if rows is not None:
                spec_run, mag_run, perc_run = work.specs[rows], work.mags[rows], work.percs[rows]
            else:
                frames_run = self._frame(
                    self._samples(HOP_LENGTH * run_first - _HALF, HOP_LENGTH * run_last + _HALF), _EDGE_CONTEXT
                )
                spec_run = _rfft_frames(frames_run, t)
                mag_run = np.abs(spec_run)
                perc_run = None
            if head and perc_run is not None:
                if perc_sp is None:
                    perc_sp = _percussive_median(mag_sp)
                perc = np.concatenate([perc_sp, perc_run[:_EDGE_EXTRA]])
                mag = np.concatenate([mag_sp, mag_run])
                ext = np.concatenate([mag[_KH - 1 :: -1], mag[: n_out + _KH]])  # reflect at the first frame
                spec_out = np.concatenate([spec_sp, spec_run[:_EDGE_EXTRA]])
            elif head:
                perc = _percussive_median(np.concatenate([mag_sp, mag_run[:_EDGE_EXTRA]]))
                mag = np.concatenate([mag_sp, mag_run])
                ext = np.concatenate([mag[_KH - 1 :: -1], mag[: n_out + _KH]])  # reflect at the first frame
                spec_out = np.concatenate([spec_sp, spec_run[:_EDGE_EXTRA]])
            else:
                perc = _percussive_median(np.concatenate([mag_run[-_EDGE_EXTRA:], mag_sp]))
                mag = np.concatenate([mag_run, mag_sp])
                ext = np.concatenate([mag[-n_out - _KH :], mag[: -_KH - 1 : -1]])  # reflect at the last frame
                spec_out = np.concatenate([spec_run[-_EDGE_EXTRA:], spec_sp])
            yh_frames = _harmonic_frames(spec_out, _harmonic_median(ext), perc, t)
        sums = self._edge_sums(yh_frames, out_first, r_lo, r_hi)
        if blk is None:
            blk = _analyse_frames(frames_sp, mag_sp, t, zframes_sp)
        return _Edge(
            first=sp_first,
            n_special=n_sp,
            scalars=blk.scalars,
            mel_db=blk.mel_db,
            mfcc=blk.mfcc,
            chroma=None,
            power=blk.power,
            cand_mag=blk.cand_mag,
            cand_bin=blk.cand_bin,
            sums=sums,
            lo=r_lo,
            hi=r_hi,
        )

    # -- one window

    def _window(self, e: int) -> np.ndarray:
        s = e - self.window_length
        F = self.n_frames
        k0, n_head, k_last, n_tail = self._frames_of(s)
        kmax = k_last - n_tail
        specials = self._specials(s, e, kmax + 1, n_tail, head=False)
        # start regions of this and later windows whose samples are all here
        heads = []
        while True:
            m2 = self._next_head
            s2 = m2 * self.hop_length
            k02, nh2, _, _ = self._frames_of(s2)
            if HOP_LENGTH * (k02 + nh2 + _EDGE_CONTEXT - 1) + _HALF > self._total:
                break
            heads.append((m2, s2, self._specials(s2, s2 + self.window_length, k02, nh2, head=True)))
            self._next_head += 1
        # all the special frames: one percussive-median call (with the new frames'), one analysis
        work = self._advance(kmax, (specials[2], specials[3]), [sp[3] for _, _, sp in heads])
        edge_frames = [specials] + [sp for _, _, sp in heads]
        blocks = _split_block(
            _analyse_frames(
                np.concatenate([f[0] for f in edge_frames]),
                np.concatenate([f[3] for f in edge_frames]),
                self._tables,
                np.concatenate([f[1] for f in edge_frames]),
            ),
            [f[0].shape[0] for f in edge_frames],
        )
        for i, (m2, s2, sp) in enumerate(heads):
            perc_sp = work.head_percs[i] if work is not None else None
            head2 = self._edge(s2, s2 + self.window_length, True, sp, work=work, perc_sp=perc_sp, blk=blocks[1 + i])
            if not self._exact_chroma:
                head2.chroma = _chroma(head2.power, self._tuning_bin)
                head2.power = None
            self._heads[m2] = head2
        head = self._heads.pop(self._m)
        tail = self._edge(s, e, False, specials, None if work is None else work.tail_frames, blk=blocks[0])
        # tuning of this window: piptrack peaks of all its frames
        lo_k, hi_k = k0 + n_head, kmax  # running frames of this window
        while self._cands and self._cands[0][0] < lo_k:
            self._cands.popleft()
        mags = [head.cand_mag, tail.cand_mag]
        bins = [head.cand_bin, tail.cand_bin]
        for _, fr, mg, bn in self._cands:
            if fr.size and (fr[0] < lo_k or fr[-1] > hi_k):
                sel = (fr >= lo_k) & (fr <= hi_k)
                mg, bn = mg[sel], bn[sel]
            mags.append(mg)
            bins.append(bn)
        cand_mag = np.concatenate(mags)
        cand_bin = np.concatenate(bins)
        if cand_mag.size:
            self._tuning_bin = int(_tuning_bin(cand_mag, cand_bin, _N_TUNING_BINS))
        else:
            self._tuning_bin = _N_TUNING_BINS // 2
        tb = self._tuning_bin
        if work is not None:
            self._r_chroma[np.arange(work.ka, work.kmax + 1) % self._cap] = _chroma(work.power, tb)
        tail.chroma = _chroma(tail.power, tb)
        ring = np.arange(lo_k, hi_k + 1) % self._cap
        if self._exact_chroma:
            head.chroma = _chroma(head.power, tb)
            self._r_chroma[ring] = _chroma(self._r_power[ring], tb)
        # --- per-frame matrices of the window, frames k0 .. k_last
        chroma = np.concatenate([head.chroma, self._r_chroma[ring], tail.chroma])
        scalars = np.concatenate([head.scalars, self._r_scalars[ring], tail.scalars])
        mel_max = max(float(head.mel_db.max()), float(self._r_melmax[ring].max()), float(tail.mel_db.max()))
        floor = np.float32(np.float32(mel_max) - _TOP_DB)
        mfcc = np.concatenate([self._mfcc_edge(head, floor), self._mfcc_ring(ring, floor), self._mfcc_edge(tail, floor)])
        onset = self._onset_envelope(head, tail, k0, n_head, ring, floor)
        tempo = self._tempo(onset)
        # --- harmonic/percussive sums over [s, e)
        a_seg, b_seg = head.hi // HOP_LENGTH, tail.lo // HOP_LENGTH
        mid = self._seg[np.arange(a_seg, b_seg) % self._seg_cap].sum(axis=0)
        hp = head.sums + mid + tail.sums
        n = float(self.window_length)
        feats = np.empty(N_FEATURES, dtype=np.float64)
        c64 = chroma.astype(np.float64)
        feats[0], feats[1] = c64.mean(), c64.var()
        feats[2:12:2] = scalars.mean(axis=0)
        feats[3:12:2] = scalars.var(axis=0)
        h_mean, p_mean = hp[0] / n, hp[2] / n
        feats[12], feats[13] = h_mean, max(hp[1] / n - h_mean * h_mean, 0.0)
        feats[14], feats[15] = p_mean, max(hp[3] / n - p_mean * p_mean, 0.0)
        feats[16] = tempo
        m64 = mfcc.astype(np.float64)
        feats[17::2] = m64.mean(axis=0)
        feats[18::2] = m64.var(axis=0)
        assert chroma.shape[0] == F and mfcc.shape[0] == F and onset.shape[0] == F
        return feats

    def _mfcc_edge(self, edge: _Edge, floor: np.float32) -> np.ndarray:
        if float(edge.mel_db.min()) >= floor:
            return edge.mfcc
        return _mfcc_clipped(edge.mel_db, floor, self._tables)

    def _mfcc_ring(self, ring: np.ndarray, floor: np.float32) -> np.ndarray:
        """MFCCs of running frames at the window's top_db floor, reusing each frame's last result."""
        out = self._r_mfcc[ring]
        clipped = self._r_melmin[ring] < floor
        if clipped.any():
            slots = ring[clipped]
            cached = self._r_mfcc_floor[slots] == floor
            redo = slots[~cached]
            if redo.size:
                self._r_mfcc_clip[redo] = _mfcc_clipped(self._r_mel[redo], floor, self._tables)
                self._r_mfcc_floor[redo] = floor
            out[clipped] = self._r_mfcc_clip[slots]
        return out

    def _onset_envelope(
        self, head: _Edge, tail: _Edge, k0: int, n_head: int, ring: np.ndarray, floor: np.float32
    ) -> np.ndarray:
        """The window's onset envelope, as ``onset_strength(S=mel_db, aggregate=np.median)``: (F,) float32."""
        F = self.n_frames
        env = np.zeros(F, dtype=np.float32)
        # env[3 + j] = diff of window frames j -> j + 1, j = 0 .. F - 4
        n_pairs = F - _ONSET_PAD
        # pairs touching the start's special frames: j = 0 .. n_head - 1 (frame j+1 may be the first running one)
        first_run = self._r_mel[ring[0]]
        a = head.mel_db
        b = np.concatenate([head.mel_db[1:], first_run[None, :]])
        env[_ONSET_PAD : _ONSET_PAD + n_head] = _onset_diff(a, b, floor)
        # pairs of two running frames: j = n_head .. (last running frame index) - 1
        n_run = ring.shape[0]
        j_hi = min(n_head + n_run - 1, n_pairs)  # exclusive
        pr = ring[: j_hi - n_head]
        pr_next = ring[1 : j_hi - n_head + 1]
        d = self._r_onset[pr].copy()
        clipped = (self._r_melmin[pr] < floor) | (self._r_melmin[pr_next] < floor)
        if clipped.any():
            slots = pr[clipped]
            cached = self._r_onset_floor[slots] == floor
            redo = slots[~cached]
            if redo.size:
                nxt = (redo + 1) % self._cap
                self._r_onset_clip[redo] = _onset_diff(self._r_mel[redo], self._r_mel[nxt], floor)
                self._r_onset_floor[redo] = floor
            d[clipped] = self._r_onset_clip[slots]
        env[_ONSET_PAD + n_head : _ONSET_PAD + j_hi] = d
        if j_hi < n_pairs:  # pairs reaching the end's special frames
            mel = np.concatenate([self._r_mel[ring[-1]][None, :], tail.mel_db])
            rest = _onset_diff(mel[:-1], mel[1:], floor)
            env[_ONSET_PAD + j_hi : _ONSET_PAD + n_pairs] = rest[: n_pairs - j_hi]
        return env

    def _tempo(self, onset: np.ndarray) -> float:
        """``librosa.feature.tempo(onset_envelope=onset)``, in BPM."""
        t = self._tables
        L = t.tempo_window.shape[0]
        n = onset.shape[0]
        p = np.pad(onset, (L // 2, L // 2), mode="linear_ramp", end_values=(0, 0)).astype(np.float64)
        b0 = np.fft.rfft(p[:L], n=2 * L)
        power_sum = _tempogram_power_sum(p, n, b0.real.copy(), b0.imag.copy(), t.tempo_cos, t.tempo_sin, t.tempo_sign)
        tg = np.fft.irfft(power_sum, n=2 * L)[:L] / n
        best = int(np.argmax(np.log1p(1e6 * tg) + t.tempo_logprior))
        return float(t.tempo_bpms[best])
