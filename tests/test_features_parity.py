"""stream.frontends.gtzan reproduces the GTZAN tables (parity_rows.csv) on the parity clips."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from stream.frontends.gtzan import FEATURE_NAMES, MIN_SAMPLES, N_FEATURES, gtzan_features
from tests.conftest import GTZAN_TABLES, PARITY_AUDIO

pytestmark = pytest.mark.skipif(
    not (PARITY_AUDIO.is_dir() and (GTZAN_TABLES / "parity_rows.csv").is_file()),
    reason=f"GTZAN parity clips or parity_rows.csv not found under {PARITY_AUDIO.parent.parent}",
)

SEGMENT = 220500  # 10 s at 22050 Hz


def _rows():
    with open(GTZAN_TABLES / "parity_rows.csv", newline="") as f:
        return list(csv.DictReader(f))


def _load(genre: str) -> np.ndarray:
    import soundfile

    y, sr = soundfile.read(PARITY_AUDIO / f"{genre}.00000.wav", dtype="float32")
    assert sr == 22050 and y.ndim == 1
    return y


@pytest.fixture(scope="module")
def computed():
    """{filename: (our features, table row)} for all 40 parity rows."""
    out = {}
    audio = {}
    for row in _rows():
        name = row["filename"]
        genre = name.split(".")[0]
        y = audio.setdefault(genre, _load(genre))
        if row["table"] == "features_30_sec.csv":
            window = y
        else:
            k = int(name.split(".")[2])
            window = y[k * SEGMENT : (k + 1) * SEGMENT]
        assert len(window) == int(row["length"]), name
        reference = np.array([float(row[c]) for c in FEATURE_NAMES])
        out[name] = (gtzan_features(window, 22050), reference, row["table"])
    return out


def test_all_forty_rows_present(computed):
    assert len(computed) == 40
    assert sum(1 for *_, table in computed.values() if table == "features_10_sec.csv") == 30


def test_10s_segments_match_every_feature_within_1_percent(computed):
    """Every feature of every 10 s segment, tempo included, within 1 % relative."""
    failures = []
    for name, (ours, ref, table) in computed.items():
        if table != "features_10_sec.csv":
            continue
        rel = np.abs(ours - ref) / np.abs(ref)
        for i in np.flatnonzero(rel > 0.01):
            failures.append(f"{name} {FEATURE_NAMES[i]}: ours {ours[i]:.6g}, table {ref[i]:.6g}")
    assert not failures, "\n".join(failures)


def test_30s_windows_match_within_1_percent_of_scale(computed):
    """The 30 s rows: within 1 % of max(|value|, the feature's spread over the table).

    The 30 s table carries small deviations our librosa 0.11 run does not
    reproduce (rms_var of country.00000 by 1.7 %, MFCC means close to zero by
    up to 6 %, harmonic/percussive means of order 1e-5 with either sign). On
    features whose value sits near zero a plain relative tolerance measures
    noise, so the tolerance is 1 % of the larger of the value and the
    feature's standard deviation across features_30_sec.csv. The means of
    the harmonic and percussive signals (order 1e-5, either sign, of signals
    with a standard deviation near 0.1) are measured against that standard
    deviation, sqrt of the table's own ``*_var``.
    """
    with open(GTZAN_TABLES / "features_30_sec.csv", newline="") as f:
        table = np.array([[float(r[c]) for c in FEATURE_NAMES] for r in csv.DictReader(f)])
    spread = table.std(axis=0)
    failures = []
    for name, (ours, ref, kind) in computed.items():
        if kind != "features_30_sec.csv":
            continue
        scale = np.maximum(np.abs(ref), spread)
        for part in ("harmony", "perceptr"):
            i = FEATURE_NAMES.index(f"{part}_mean")
            scale[i] = max(scale[i], np.sqrt(ref[FEATURE_NAMES.index(f"{part}_var")]))
        for i in np.flatnonzero(np.abs(ours - ref) > 0.01 * scale):
            failures.append(f"{name} {FEATURE_NAMES[i]}: ours {ours[i]:.6g}, table {ref[i]:.6g}")
    assert not failures, "\n".join(failures)


def test_tempo_is_beat_track_tempo_not_mean_onset_tempo(computed):
    """The tables' tempo is librosa.beat.beat_track's (median-aggregated onsets).

    A bare librosa.feature.tempo(y=...) picks another octave on several parity
    segments; this test pins the recipe, and fails if tempo drifts to it.
    """
    import librosa

    y = _load("country")[:SEGMENT]
    ours = computed["country.00000.0.wav"][0][FEATURE_NAMES.index("tempo")]
    beat_track_tempo = float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=22050)[0])[0])
    assert ours == pytest.approx(beat_track_tempo, rel=1e-9)
    assert ours == pytest.approx(83.354, rel=1e-3)


def test_feature_names_are_the_57_kaggle_columns():
    with open(GTZAN_TABLES / "features_10_sec.csv", newline="") as f:
        header = next(csv.reader(f))
    assert N_FEATURES == 57
    assert set(FEATURE_NAMES) == set(header) - {"filename", "length", "label"}


@pytest.mark.parametrize(
    "y, sample_rate, message",
    [
        (np.zeros((2, 22050), dtype=np.float32), 22050, "mono"),
        (np.zeros(MIN_SAMPLES - 1, dtype=np.float32), 22050, "at least"),
        (np.zeros(22050, dtype=np.float32), 44100, "sample_rate"),
        (np.zeros(22050, dtype=np.int16), 22050, "floating-point"),
        (np.full(22050, np.nan, dtype=np.float32), 22050, "finite"),
    ],
)
def test_bad_input_is_named(y, sample_rate, message):
    with pytest.raises(ValueError, match=message):
        gtzan_features(y, sample_rate)


def test_silence_gives_finite_features():
    f = gtzan_features(np.zeros(22050 * 2, dtype=np.float32))
    assert f.shape == (57,) and np.all(np.isfinite(f))
