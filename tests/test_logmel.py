"""stream.frontends.logmel: musicnn's log-mel patches, batch against librosa and incremental against batch.

Tolerances
----------
``log_mel`` calls librosa; it is compared with an explicit librosa call
(every argument spelled out) within 1e-5 and with an independent float64
route (numpy FFT of the frames, the mel filter bank as a matrix) within 1e-4.
``IncrementalLogMel`` computes the same power spectra as librosa (bit for
bit) but sums the mel bands in a fixed order instead of a BLAS product, so it
differs from ``patches`` by float32 rounding: measured at most 4.8e-7 (one
float32 ulp) on log values of 0 to 6.2, checked within 1e-4. It does not depend on the block
sizes at all: checked bit for bit.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from stream.frontends.logmel import (
    FRONTEND_NAME,
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    PATCH_FRAMES,
    SAMPLE_RATE,
    WINDOW_LENGTH,
    IncrementalLogMel,
    LogMelFrontend,
    log_mel,
    patches,
    snap_hop,
    window_input,
)
from tests.conftest import FREE_AUDIO, PARITY_AUDIO, needs_shared

CLIPS = {
    "gtzan": PARITY_AUDIO / "blues.00000.wav",  # 22050 Hz, resampled
    "free": FREE_AUDIO / "jazz_kevin_macleod_vibe_ace.ogg",  # 44.1 kHz stereo, downmixed and resampled
    "speech": FREE_AUDIO / "speech_librispeech_198-209-0000.ogg",  # 16 kHz
}
MAX_SECONDS = 30.0


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    import librosa

    out = {}
    for name, path in CLIPS.items():
        if not path.is_file():
            pytest.skip(f"audio not found: {path} (set GENRESTREAM_SHARED)")
        y, sr = librosa.load(str(path), sr=SAMPLE_RATE, mono=True, duration=MAX_SECONDS)
        assert sr == SAMPLE_RATE and y.dtype == np.float32
        out[name] = y
    return out


def _random_blocks(y: np.ndarray, seed: int, max_block: int = 2 * SAMPLE_RATE):
    """``y`` cut into blocks of 1 sample to 2 s, log-uniformly distributed."""
    rng = np.random.default_rng(seed)
    pos = 0
    while pos < y.shape[0]:
        n = int(np.exp(rng.uniform(0.0, np.log(max_block))))
        yield y[pos : pos + n]
        pos += n


def _run(inc: IncrementalLogMel, blocks) -> tuple[np.ndarray, np.ndarray]:
    ends, xs = [], []
    for block in blocks:
        for end, x in inc.push(block):
            assert x.shape == (PATCH_FRAMES, N_MELS) and x.dtype == np.float32
            ends.append(end)
            xs.append(x)
    return np.array(ends, dtype=np.int64), np.stack(xs)


# ----------------------------------------------------------------------------- batch: log_mel


@needs_shared
@pytest.mark.parametrize("clip", list(CLIPS))
def test_log_mel_is_librosa_melspectrogram_without_centring(clips, clip):
    import librosa

    y = clips[clip]
    S = log_mel(y)
    n_frames = 1 + (y.shape[0] - N_FFT) // HOP_LENGTH
    assert S.shape == (n_frames, N_MELS) and S.dtype == np.float32 and S.flags.c_contiguous
    mel = librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96, center=False,
        window="hann", power=2.0, htk=False, norm="slaney", fmin=0.0, fmax=8000.0,
    )
    reference = np.log10(10000.0 * mel + 1.0).T
    assert np.abs(S - reference).max() <= 1e-5

    # an independent route, in float64: frame j is samples [256 j, 256 j + 512)
    frames = np.lib.stride_tricks.sliding_window_view(y.astype(np.float64), N_FFT)[::HOP_LENGTH]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic
    power = np.abs(np.fft.rfft(frames * hann, axis=-1)) ** 2
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96).astype(np.float64)
    independent = np.log10(10000.0 * power @ fb.T + 1.0)
    assert np.abs(S - independent).max() <= 1e-4
    assert S.max() > 2.0  # real audio, not silence: the comparisons above mean something


# ----------------------------------------------------------------------------- incremental against patches


@needs_shared
@pytest.mark.parametrize("hop, snapped", [(256, 256), (16000, 16128), (48128, 48128), (60000, 59904)])
@pytest.mark.parametrize("clip", list(CLIPS))
def test_incremental_windows_are_those_of_patches(clips, clip, hop, snapped):
    y = clips[clip]
    if hop == HOP_LENGTH:
        y = y[: 8 * SAMPLE_RATE]  # 750 windows of 72 kB; enough
    x_ref, ends_ref = patches(y, hop)
    assert ends_ref.tolist() == list(range(WINDOW_LENGTH, y.shape[0] + 1, snapped))
    inc = IncrementalLogMel(hop)
    assert inc.hop_length == snapped
    state = inc.nbytes
    ends, xs = _run(inc, _random_blocks(y, seed=7))
    assert ends.tolist() == ends_ref.tolist()
    assert np.abs(xs - x_ref).max() <= 1e-4
    assert inc.samples_seen == y.shape[0]
    # per-stream state: a window of frames and less than one frame of samples, whatever the hop
    assert inc.nbytes == state <= PATCH_FRAMES * N_MELS * 4 + N_FFT * 4
    assert inc._carry_n < N_FFT


@needs_shared
@pytest.mark.parametrize("hop", [256, 16000])
def test_windows_do_not_depend_on_the_block_sizes(clips, hop):
    y = clips["free"][: (4 if hop == HOP_LENGTH else 10) * SAMPLE_RATE]
    schedules = {
        "whole": [y],
        "one sample": (y[i : i + 1] for i in range(y.shape[0])),
        "4097": (y[i : i + 4097] for i in range(0, y.shape[0], 4097)),
        "random 1": _random_blocks(y, seed=1),
        "random 2": _random_blocks(y, seed=2, max_block=300),
    }
    results = {name: _run(IncrementalLogMel(hop), blocks) for name, blocks in schedules.items()}
    ends0, xs0 = results["whole"]
    assert len(ends0) == 1 + (y.shape[0] - WINDOW_LENGTH) // snap_hop(hop)
    for name, (ends, xs) in results.items():
        assert ends.tolist() == ends0.tolist(), name
        assert np.array_equal(xs, xs0), name  # bit for bit


@needs_shared
def test_reset_starts_a_new_stream(clips):
    a, b = clips["gtzan"], clips["speech"]
    inc = IncrementalLogMel(16000)
    _run(inc, _random_blocks(a[: 7 * SAMPLE_RATE + 1234], seed=3))
    assert inc.samples_seen == 7 * SAMPLE_RATE + 1234
    inc.reset()
    assert inc.samples_seen == 0 and inc.next_end == WINDOW_LENGTH
    assert inc.push(b[: WINDOW_LENGTH - 1]) == []
    (end, x), = inc.push(b[WINDOW_LENGTH - 1 : WINDOW_LENGTH])
    assert end == WINDOW_LENGTH
    assert np.array_equal(x, IncrementalLogMel(16000).push(b[:WINDOW_LENGTH])[0][1])
    ends, xs = _run(inc, _random_blocks(b[WINDOW_LENGTH:], seed=4))
    fresh_ends, fresh_xs = _run(IncrementalLogMel(16000), [b])
    assert [WINDOW_LENGTH, *ends.tolist()] == fresh_ends.tolist()
    assert np.array_equal(np.concatenate([x[None], xs]), fresh_xs)


def test_push_refuses_bad_blocks_and_keeps_its_state():
    inc = IncrementalLogMel(256)
    inc.push(np.zeros(1000, dtype=np.float32))
    for bad in (np.zeros((10, 2), dtype=np.float32), np.arange(10), np.array([0.0, np.nan])):
        with pytest.raises(ValueError, match="block"):
            inc.push(bad)
    assert inc.samples_seen == 1000
    assert inc.push(np.zeros(0, dtype=np.float32)) == []
    ends, xs = _run(inc, [np.zeros(WINDOW_LENGTH - 1000 + 256, dtype=np.float64)])
    assert ends.tolist() == [WINDOW_LENGTH, WINDOW_LENGTH + 256]
    assert not xs.any()  # log10(10000 * 0 + 1)


# ----------------------------------------------------------------------------- window_input, patches of short audio


@needs_shared
def test_window_input_pads_short_audio_and_takes_the_end_of_long(clips):
    y = clips["speech"]
    short = y[:20000]
    x = window_input(short)
    assert x.shape == (PATCH_FRAMES, N_MELS) and x.dtype == np.float32
    assert np.array_equal(x, log_mel(np.concatenate([short, np.zeros(WINDOW_LENGTH - 20000, np.float32)])))
    first_silent = -(-20000 // HOP_LENGTH)  # frames from 79 on hold padding only
    assert not x[first_silent:].any() and x[first_silent - 1].any()
    # a signal shorter than a window: one padded window, ending where the audio does
    xp, ends = patches(short, 16000)
    assert ends.tolist() == [20000] and np.array_equal(xp[0], x)
    # longer: the last window_length samples, the last window of patches
    long = y[: WINDOW_LENGTH + 10 * HOP_LENGTH]
    assert np.array_equal(window_input(long), log_mel(long[-WINDOW_LENGTH:]))
    xp, ends = patches(long, HOP_LENGTH)
    assert ends[-1] == long.shape[0]
    assert np.abs(window_input(long) - xp[-1]).max() <= 1e-5
    # the shortest audio worth classifying, and less
    assert window_input(y[: LogMelFrontend.min_samples])[0].any()
    assert window_input(y[:1]).shape == (PATCH_FRAMES, N_MELS)


def test_window_input_and_log_mel_refuse_bad_input():
    for bad in (np.zeros((2, WINDOW_LENGTH), np.float32), np.zeros(0, np.float32), np.zeros(100, np.int16),
                np.full(100, np.inf, np.float32)):
        with pytest.raises(ValueError, match="^y: "):
            window_input(bad)
    with pytest.raises(ValueError, match="^y: expected at least 512 samples"):
        log_mel(np.zeros(511, np.float32))
    with pytest.raises(ValueError, match="^sample_rate: expected 16000 Hz, got 22050"):
        log_mel(np.zeros(1000, np.float32), sample_rate=22050)
    with pytest.raises(ValueError, match="^y: expected at least one sample"):
        patches(np.zeros(0, np.float32), 16000)


# ----------------------------------------------------------------------------- the frontend object


def test_frontend_attributes_and_hops():
    fe = LogMelFrontend()
    assert (fe.name, fe.version, fe.sample_rate) == (FRONTEND_NAME, "1", 16000)
    assert fe.window_length == WINDOW_LENGTH == 48128 and fe.window_s == pytest.approx(3.008)
    assert (fe.frame_hop_length, fe.input_name, fe.input_shape, fe.min_samples) == (256, "logmel", (187, 96), 512)
    assert [fe.snap_hop(h) for h in (1, 100, 383, 384, 16000, 16000.0, 48128, 60000)] == [
        256, 256, 256, 512, 16128, 16128, 48128, 59904]
    for bad in (0, -256, float("nan"), float("inf"), "1s", True):
        with pytest.raises(ValueError, match="hop_length"):
            fe.snap_hop(bad)
    inc = fe.extractor(16000)
    assert isinstance(inc, IncrementalLogMel) and inc.hop_length == 16128 and inc.next_end == 48128


def test_params_round_trip_through_json():
    import librosa

    params = json.loads(json.dumps(LogMelFrontend().params()))
    assert params["n_fft"] == 512 and params["center"] is False and params["log"] == "log10(10000*x+1)"
    # the filter bank the parameters describe is librosa's default one
    fb = librosa.filters.mel(sr=params["sample_rate"], n_fft=params["n_fft"], n_mels=params["n_mels"],
                             fmin=params["fmin"], fmax=params["fmax"], htk=params["htk"], norm=params["norm"])
    assert np.array_equal(fb, librosa.filters.mel(sr=16000, n_fft=512, n_mels=96))
    assert isinstance(LogMelFrontend.from_params(params), LogMelFrontend)
    from stream.frontends import frontend_from_params

    assert isinstance(frontend_from_params(params), LogMelFrontend)


@pytest.mark.parametrize(
    "key, value, expected",
    [("n_fft", 1024, "512"), ("n_mels", 128, "96"), ("sample_rate", 22050, "16000"), ("version", "2", "'1'"),
     ("hop_length", 512, "256"), ("center", True, "False"), ("htk", 0, "False"), ("norm", None, "'slaney'"),
     ("log", "log10(x+1e-6)", "'log10(10000*x+1)'"), ("dtype", "float16", "'float32'"),
     ("patch_frames", 96, "187"), ("fmax", 11025.0, "8000.0"), ("power", 1.0, "2.0")],
)
def test_from_params_refuses_what_it_does_not_compute(key, value, expected):
    params = LogMelFrontend().params()
    params[key] = value
    with pytest.raises(ValueError, match=rf"{key}=.*{key}={re.escape(expected)}"):
        LogMelFrontend.from_params(params)


def test_from_params_refuses_missing_and_unknown_parameters():
    params = LogMelFrontend().params()
    del params["n_mels"]
    with pytest.raises(ValueError, match="n_mels"):
        LogMelFrontend.from_params(params)
    params = {**LogMelFrontend().params(), "preemphasis": 0.97}
    with pytest.raises(ValueError, match="preemphasis"):
        LogMelFrontend.from_params(params)
