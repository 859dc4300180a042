"""stream.frontends.gtzan_incremental: the engine's windows, computed incrementally, against the batch feature function.

Tolerances
----------
``IncrementalFeatures`` evaluates ``gtzan_features`` on the stream's global
STFT frame grid. When the hop is a multiple of 512 samples the grids coincide
and the two agree to float rounding (measured: 3e-6 relative at most, the
harmonic/percussive means, which are of order 1e-5, to 1e-7 absolute), given
exact chroma. At the engine's hop of 22050 samples the frames sit up to 256
samples (11.6 ms) off the batch function's; the per-feature tolerances below
are 1.5 times the largest difference measured by
``benchmarks/incremental_parity.py`` over all 710 windows of ``../shared``
audio at hop 1 s, in units of the feature's standard deviation over
``features_10_sec.csv`` (the scale a standardising model sees; 0.01 means one
hundredth of the feature's spread over the training data). The tempo, a
discrete BPM from an autocorrelation peak, agreed on 92.5 % of those windows;
it is checked for agreement on most windows here.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from stream.frontends.gtzan import FEATURE_NAMES, gtzan_features
from stream.frontends.gtzan_incremental import IncrementalFeatures
from tests.conftest import FREE_AUDIO, GTZAN_TABLES, PARITY_AUDIO, needs_shared

pytestmark = [
    needs_shared,
    pytest.mark.skipif(not PARITY_AUDIO.is_dir(), reason=f"GTZAN parity clips not found at {PARITY_AUDIO}"),
]

SR = 22050
N = 220500  # 10 s window
HOP = 22050  # the engine's 1 s hop

# 1.5 x the largest |incremental - batch| / std(feature over features_10_sec.csv) over 710 windows at hop 1 s.
TOLERANCE_Z = {
    "chroma_stft_mean": 0.19,
    "chroma_stft_var": 0.56,
    "rms_mean": 0.005,
    "rms_var": 0.033,
    "spectral_centroid_mean": 0.027,
    "spectral_centroid_var": 0.11,
    "spectral_bandwidth_mean": 0.027,
    "spectral_bandwidth_var": 0.22,
    "rolloff_mean": 0.034,
    "rolloff_var": 0.14,
    "zero_crossing_rate_mean": 0.0056,
    "zero_crossing_rate_var": 0.037,
    "harmony_mean": 0.2,
    "harmony_var": 0.034,
    "perceptr_mean": 0.31,
    "perceptr_var": 0.046,
    "mfcc1_mean": 0.039,
    "mfcc1_var": 0.094,
    "mfcc2_mean": 0.087,
    "mfcc2_var": 0.36,
    "mfcc3_mean": 0.055,
    "mfcc3_var": 0.08,
    "mfcc4_mean": 0.044,
    "mfcc4_var": 0.15,
    "mfcc5_mean": 0.048,
    "mfcc5_var": 0.14,
    "mfcc6_mean": 0.03,
    "mfcc6_var": 0.22,
    "mfcc7_mean": 0.043,
    "mfcc7_var": 0.17,
    "mfcc8_mean": 0.031,
    "mfcc8_var": 0.11,
    "mfcc9_mean": 0.042,
    "mfcc9_var": 0.086,
    "mfcc10_mean": 0.042,
    "mfcc10_var": 0.12,
    "mfcc11_mean": 0.045,
    "mfcc11_var": 0.14,
    "mfcc12_mean": 0.043,
    "mfcc12_var": 0.11,
    "mfcc13_mean": 0.044,
    "mfcc13_var": 0.11,
    "mfcc14_mean": 0.053,
    "mfcc14_var": 0.083,
    "mfcc15_mean": 0.049,
    "mfcc15_var": 0.067,
    "mfcc16_mean": 0.049,
    "mfcc16_var": 0.13,
    "mfcc17_mean": 0.047,
    "mfcc17_var": 0.12,
    "mfcc18_mean": 0.056,
    "mfcc18_var": 0.079,
    "mfcc19_mean": 0.054,
    "mfcc19_var": 0.15,
    "mfcc20_mean": 0.047,
    "mfcc20_var": 0.087,
}
TEMPO = FEATURE_NAMES.index("tempo")
MEANS_NEAR_ZERO = [FEATURE_NAMES.index("harmony_mean"), FEATURE_NAMES.index("perceptr_mean")]


def _parity_clip(genre: str) -> np.ndarray:
    import soundfile

    y, sr = soundfile.read(PARITY_AUDIO / f"{genre}.00000.wav", dtype="float32")
    assert sr == SR and y.ndim == 1
    return y


def _free(name: str, seconds: float) -> np.ndarray:
    """A free clip as the engine decodes it: channel mean, soxr HQ to 22050 Hz."""
    import soundfile
    import soxr

    y, sr = soundfile.read(FREE_AUDIO / name, dtype="float32", always_2d=True)
    y = soxr.resample(y.mean(axis=1), sr, SR, quality="HQ")
    return np.ascontiguousarray(y[: int(seconds * SR)], dtype=np.float32)


def _push_in_blocks(inc: IncrementalFeatures, y: np.ndarray, sizes) -> list[tuple[int, np.ndarray]]:
    out, pos, i = [], 0, 0
    while pos < len(y):
        n = sizes[i % len(sizes)]
        out.extend(inc.push(y[pos : pos + n]))
        pos += n
        i += 1
    return out


@pytest.fixture(scope="module")
def table_std() -> np.ndarray:
    with open(GTZAN_TABLES / "features_10_sec.csv", newline="") as f:
        return np.array([[float(r[c]) for c in FEATURE_NAMES] for r in csv.DictReader(f)]).std(axis=0)


def test_windows_end_where_the_engine_cuts_them_whatever_the_blocks():
    y = _free("jazz_kevin_macleod_vibe_ace.ogg", 13.3)
    runs = {}
    for sizes in ([512], [4410], [SR], [1, 7919, 333, 40000]):
        out = _push_in_blocks(IncrementalFeatures(window_s=10.0, hop_s=1.0), y, sizes)
        assert [end for end, _ in out] == [N, N + HOP, N + 2 * HOP, N + 3 * HOP], sizes
        runs[tuple(sizes)] = (np.array([f for _, f in out]), [w.rms for w in out])
    reference, reference_rms = runs[(SR,)]
    assert reference.shape == (4, 57) and np.all(np.isfinite(reference))
    for sizes, (feats, rms) in runs.items():
        assert np.array_equal(feats, reference), f"block sizes {sizes} changed the features"
        assert rms == reference_rms, f"block sizes {sizes} changed the RMS"
    # the engine's silence test: RMS of the window's samples, as the engine computes it
    expected = [float(np.sqrt(np.mean(np.square(y[e - N : e], dtype=np.float64)))) for e in (N, N + 3 * HOP)]
    assert reference_rms[0] == pytest.approx(expected[0], rel=1e-12)
    assert reference_rms[3] == pytest.approx(expected[1], rel=1e-12)


def test_equals_batch_when_the_hop_is_on_the_frame_grid():
    """Hop 43 * 512 samples: same frames as the batch function, so the same numbers to float rounding."""
    y = _parity_clip("blues")[: N + 4 * 22016]
    exact = IncrementalFeatures(hop_s=22016 / SR, exact_chroma=True).push(y)
    approx = IncrementalFeatures(hop_s=22016 / SR).push(y)
    assert [e for e, _ in exact] == [N + m * 22016 for m in range(5)]
    for m in (0, 4):
        end, inc = exact[m]
        batch = gtzan_features(y[end - N : end])
        close = np.isclose(inc, batch, rtol=1e-4, atol=0)
        close[MEANS_NEAR_ZERO] = np.abs(inc - batch)[MEANS_NEAR_ZERO] < 1e-6
        assert close.all(), [(FEATURE_NAMES[i], inc[i], batch[i]) for i in np.flatnonzero(~close)]
        # chroma at each frame's first window's tuning, not the window's own: 1 % measured
        assert np.allclose(approx[m][1][:2], batch[:2], rtol=0.02)
        assert np.allclose(approx[m][1][2:], inc[2:], rtol=1e-9, atol=1e-12)


def test_matches_batch_at_the_engine_hop_within_measured_tolerances(table_std):
    """Hop 22050 samples: frames up to 256 samples off the batch function's; per-feature tolerances (module doc)."""
    import librosa

    bpm_grid = librosa.tempo_frequencies(344, sr=SR, hop_length=512)
    failures, same_tempo, checked = [], 0, 0
    for genre in ("country", "metal"):
        y = _parity_clip(genre)
        out = IncrementalFeatures(hop_s=1.0).push(y)
        assert len(out) == 21
        for m in (0, 7, 14, 20):
            end, inc = out[m]
            batch = gtzan_features(y[end - N : end])
            z = np.abs(inc - batch) / table_std
            for name, tol in TOLERANCE_Z.items():
                i = FEATURE_NAMES.index(name)
                if not z[i] <= tol:
                    failures.append(f"{genre} window {m} {name}: {z[i]:.3g} std > {tol}")
            assert np.any(np.isclose(inc[TEMPO], bpm_grid)), inc[TEMPO]
            same_tempo += bool(np.isclose(inc[TEMPO], batch[TEMPO]))
            checked += 1
    assert not failures, "\n".join(failures)
    assert same_tempo >= checked - 2, f"tempo agreed on {same_tempo} of {checked} windows"


def test_reset_after_a_gap_restarts_the_windows():
    a = _parity_clip("rock")
    b = _parity_clip("disco")[: N + HOP + 100]
    inc = IncrementalFeatures(hop_s=1.0)
    assert [e for e, _ in inc.push(a[: N + HOP // 2])] == [N]
    inc.reset()
    assert inc.samples_seen == 0 and inc.next_end == N
    after = inc.push(b)
    fresh = IncrementalFeatures(hop_s=1.0).push(b)
    assert [e for e, _ in after] == [N, N + HOP] == [e for e, _ in fresh]
    for (_, f1), (_, f2) in zip(after, fresh):
        assert np.array_equal(f1, f2)


@pytest.mark.parametrize(
    "block, message",
    [
        (np.zeros((2, 512), dtype=np.float32), "block: expected mono"),
        (np.zeros(512, dtype=np.int16), "block: expected floating-point"),
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), "block: expected finite"),
        (np.array([0.0, np.inf], dtype=np.float64), "block: expected finite"),
    ],
)
def test_bad_input_is_named_and_leaves_the_stream_intact(block, message):
    y = _parity_clip("pop")[: N + 10]
    inc = IncrementalFeatures()
    inc.push(y[:1000])
    with pytest.raises(ValueError, match=message):
        inc.push(block)
    assert inc.samples_seen == 1000
    (end, f), = inc.push(y[1000:])
    (end0, f0), = IncrementalFeatures().push(y)
    assert end == end0 == N and np.array_equal(f, f0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sample_rate": 44100}, "sample_rate"),
        ({"window_s": 1.0}, "window_s"),
        ({"hop_s": 0.0}, "hop_s"),
    ],
)
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IncrementalFeatures(**kwargs)


def test_state_stays_bounded_over_a_long_stream():
    y = np.tile(_parity_clip("reggae"), 3)  # 90 s
    inc = IncrementalFeatures(hop_s=1.0)
    sizes = []
    for pos in range(0, len(y), SR):
        inc.push(y[pos : pos + SR])
        if pos >= 30 * SR:
            sizes.append(inc.nbytes)
    assert max(sizes) <= 1.1 * min(sizes), (min(sizes), max(sizes))
    assert max(sizes) < 2 * N * 4  # at most two of the engine's float32 window buffers


def test_silence_gives_the_batch_features():
    z = np.zeros(N + HOP, dtype=np.float32)
    (_, f0), (_, f1) = IncrementalFeatures().push(z)
    with pytest.warns(UserWarning):  # librosa: tuning from an empty frequency set
        batch = gtzan_features(z[:N])
    for f in (f0, f1):
        assert np.allclose(f, batch, rtol=1e-6, atol=1e-9)


def test_kernels_equal_their_references():
    """The tempogram by sliding DFT and the branch-free running median, against librosa and scipy."""
    import librosa
    from scipy.ndimage import median_filter

    from stream.frontends.gtzan_incremental import _harmonic_median, _percussive_median

    rng = np.random.default_rng(0)
    inc = IncrementalFeatures()
    y = _parity_clip("hiphop")[:N]
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR))
    envelopes = [librosa.onset.onset_strength(S=mel_db, sr=SR, aggregate=np.median)]
    for _ in range(12):
        env = (rng.random(431) ** 4 * 10).astype(np.float32)
        env[:3] = 0
        env[rng.random(431) < 0.5] = 0
        envelopes.append(env)
    envelopes.append(np.zeros(431, dtype=np.float32))
    for env in envelopes:
        assert inc._tempo(env) == float(librosa.feature.tempo(onset_envelope=env, sr=SR)[0])

    mag = (rng.random((80, 1025)) ** 3).astype(np.float32)
    mag[:, 100:140] = 0.25  # ties
    mag[:, 600:700] = 0.0
    assert np.array_equal(_harmonic_median(mag), median_filter(mag, size=(31, 1), mode="reflect")[15:-15])
    for n in (1, 3, 21, 43):
        assert np.array_equal(_percussive_median(mag[:n]), median_filter(mag[:n], size=(1, 31), mode="reflect"))
