"""Training: feature tables, honest splits, a short real training run, training from audio.

Real data from the shared folder ($GENRESTREAM_SHARED, default ../shared); tests
that need it skip when it is absent, tests that train skip without TensorFlow.
"""

from __future__ import annotations

import csv
import json
import os
import warnings

import numpy as np
import pytest

from stream.frontends.gtzan import FEATURE_NAMES
from training.data import (
    GTZAN_GENRES,
    features_from_audio_dir,
    gtzan_table_path,
    load_feature_table,
    parse_filename,
    shared_dir,
    write_feature_table,
)
from training.splits import block_groups, group_kfold, holdout_split, make_groups, track_groups

TABLE_10 = gtzan_table_path("features_10_sec.csv")
FREE_AUDIO = shared_dir() / "audio" / "free"

needs_table = pytest.mark.skipif(
    not TABLE_10.is_file(), reason=f"shared GTZAN table not found at {TABLE_10} (set GENRESTREAM_SHARED)"
)
needs_audio = pytest.mark.skipif(
    not FREE_AUDIO.is_dir(), reason=f"shared free audio not found at {FREE_AUDIO} (set GENRESTREAM_SHARED)"
)


def _tensorflow():
    return pytest.importorskip("tensorflow", reason="training needs TensorFlow (pip install genrestream[train])")


@pytest.fixture(scope="module")
def table():
    if not TABLE_10.is_file():
        pytest.skip(f"shared GTZAN table not found at {TABLE_10} (set GENRESTREAM_SHARED)")
    return load_feature_table(TABLE_10)


# --- tables -----------------------------------------------------------------


@needs_table
def test_table_columns_selected_by_name(table):
    assert table.X.shape == (2694, len(FEATURE_NAMES))
    assert table.X.dtype == np.float32
    assert table.labels == GTZAN_GENRES
    # The CSV puts mfcc first and tempo late; X must follow FEATURE_NAMES.
    with TABLE_10.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i in (0, 1000, 2693):
        expected = np.array([float(rows[i][name]) for name in FEATURE_NAMES], dtype=np.float32)
        np.testing.assert_array_equal(table.X[i], expected)
        genre, number, _ = parse_filename(rows[i]["filename"])
        assert table.track_ids[i] == f"{genre}.{number:05d}"
        assert table.track_numbers[i] == number
        assert table.labels[table.y[i]] == rows[i]["label"]
    # Tracks 00000-00009 are absent; every track has 2 or 3 segments.
    assert table.track_numbers.min() == 10 and table.track_numbers.max() == 99
    _, counts = np.unique(table.track_ids, return_counts=True)
    assert len(counts) == 900 and set(counts) <= {2, 3}


def test_missing_columns_error_names_file_and_columns(tmp_path):
    path = tmp_path / "bad.csv"
    kept = [name for name in FEATURE_NAMES if name not in ("tempo", "mfcc3_var")]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", *kept])
        writer.writerow(["blues.00010.0.wav", *["1.0"] * len(kept)])
    with pytest.raises(ValueError) as info:
        load_feature_table(path)
    message = str(info.value)
    assert str(path) in message
    for name in ("tempo", "mfcc3_var", "label"):
        assert name in message
    assert "chroma_stft_mean" not in message


def _write_rows(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", *FEATURE_NAMES, "label"])
        writer.writerows(rows)


def test_bad_values_and_filenames_are_errors(tmp_path):
    good = ["blues.00010.0.wav", *["0.5"] * len(FEATURE_NAMES), "blues"]
    path = tmp_path / "t.csv"
    _write_rows(path, [good, ["blues.00011.0.wav", "x", *["0.5"] * (len(FEATURE_NAMES) - 1), "blues"]])
    with pytest.raises(ValueError, match="line 3, column chroma_stft_mean: not a number"):
        load_feature_table(path)
    _write_rows(path, [good, ["bluesTen.wav", *["0.5"] * len(FEATURE_NAMES), "blues"]])
    with pytest.raises(ValueError, match="bluesTen.wav"):
        load_feature_table(path)
    _write_rows(path, [good, ["rock.00010.0.wav", *["nan"] * len(FEATURE_NAMES), "rock"]])
    with pytest.raises(ValueError, match="non-finite"):
        load_feature_table(path)
    _write_rows(path, [good])
    with pytest.raises(ValueError, match="not in the class list"):
        load_feature_table(path, labels=("rock",))
    with pytest.raises(FileNotFoundError):
        load_feature_table(tmp_path / "absent.csv")


@needs_table
def test_row_filter(table):
    parity = gtzan_table_path("parity_rows.csv")
    if not parity.is_file():
        pytest.skip(f"{parity} not found")
    ten = load_feature_table(parity, labels=GTZAN_GENRES, where={"table": "features_10_sec.csv"})
    assert len(ten) == 30 and set(ten.track_numbers) == {0}
    assert len(load_feature_table(parity, where={"table": "features_30_sec.csv"})) == 10
    with pytest.raises(ValueError, match="missing 1 column.*: split"):
        load_feature_table(parity, where={"split": "test"})
    with pytest.raises(ValueError, match="no data rows where"):
        load_feature_table(parity, where={"table": "features_3_sec.csv"})


@needs_table
def test_table_round_trip(table, tmp_path):
    part = table.subset(np.arange(0, len(table), 97))
    path = write_feature_table(part, tmp_path / "part.csv", window_s=10.0)
    again = load_feature_table(path, labels=table.labels)
    np.testing.assert_array_equal(again.X, part.X)
    np.testing.assert_array_equal(again.y, part.y)
    np.testing.assert_array_equal(again.track_ids, part.track_ids)


# --- splits -----------------------------------------------------------------


@needs_table
@pytest.mark.parametrize("scheme", ["track", "block"])
def test_folds_never_split_a_group(table, scheme):
    groups = make_groups(table, scheme)
    folds = group_kfold(groups, table.y, n_folds=5, seed=0)
    assert len(folds) == 5
    seen = np.zeros(len(table), dtype=int)
    for train_index, val_index in folds:
        seen[val_index] += 1
        assert len(np.intersect1d(train_index, val_index)) == 0
        assert len(train_index) + len(val_index) == len(table)
        # No track, and no block, on both sides.
        assert not set(table.track_ids[train_index]) & set(table.track_ids[val_index])
        blocks = block_groups(table)
        if scheme == "block":
            assert not set(blocks[train_index]) & set(blocks[val_index])
        # Stratified: every genre is held out in every fold.
        assert set(table.y[val_index]) == set(range(10))
    assert np.all(seen == 1)  # each row validated exactly once


@needs_table
def test_blocks_are_ten_consecutive_tracks_of_a_genre(table):
    blocks = block_groups(table)
    assert len(np.unique(blocks)) == 90  # 10 genres x tracks 10-99
    folds = group_kfold(blocks, table.y, n_folds=5, seed=3)
    fold_of = np.empty(len(table), dtype=int)
    for k, (_, val_index) in enumerate(folds):
        fold_of[val_index] = k
    for genre in range(10):
        for block in range(1, 10):
            rows = (table.y == genre) & (table.track_numbers // 10 == block)
            assert rows.sum() >= 28
            assert len(set(fold_of[rows])) == 1, f"block {block} of {table.labels[genre]} split"
    # A track split does separate neighbours of a block (that is why blocks exist).
    track_folds = group_kfold(track_groups(table), table.y, n_folds=5, seed=3)
    fold_of_track = np.empty(len(table), dtype=int)
    for k, (_, val_index) in enumerate(track_folds):
        fold_of_track[val_index] = k
    assert any(
        len(set(fold_of_track[(table.y == 0) & (table.track_numbers // 10 == b)])) > 1 for b in range(1, 10)
    )


@needs_table
def test_folds_are_seeded(table):
    groups = track_groups(table)
    a = group_kfold(groups, table.y, 5, seed=0)
    b = group_kfold(groups, table.y, 5, seed=0)
    c = group_kfold(groups, table.y, 5, seed=1)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    train_index, val_index = holdout_split(groups, table.y, val_fraction=0.2, seed=0)
    np.testing.assert_array_equal(val_index, a[0][1])
    assert 0.15 < len(val_index) / len(table) < 0.25


def test_group_kfold_small_and_bad_input():
    folds = group_kfold(["a", "a", "b", "c"], [0, 0, 1, 1], n_folds=5)
    assert len(folds) == 3  # lowered to the number of groups
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least 2 groups"):
        group_kfold(["a", "a"], [0, 0])
    with pytest.raises(ValueError):
        group_kfold(["a", "b"], [0])


# --- training -----------------------------------------------------------------


@needs_table
def test_short_training_beats_chance_on_held_out_tracks(table):
    _tensorflow()
    from training.train import TrainConfig, fit_model, predict_proba

    train_index, val_index = holdout_split(track_groups(table), table.y, 0.2, seed=0)
    config = TrainConfig(epochs=8, seed=0)
    model, history = fit_model(table.X[train_index], table.y[train_index], 10, config, progress=False)
    assert len(history["loss"]) == 8 and history["loss"][-1] < history["loss"][0]
    probabilities = predict_proba(model, table.X[val_index])
    assert probabilities.shape == (len(val_index), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = np.mean(probabilities.argmax(axis=1) == table.y[val_index])
    assert accuracy > 0.55, accuracy  # chance is 0.10; 40 epochs give ~0.77


@needs_table
def test_training_is_deterministic(table):
    _tensorflow()
    from training.train import TrainConfig, fit_model

    rows = np.arange(0, len(table), 3)
    config = TrainConfig(epochs=2, seed=5)
    a, _ = fit_model(table.X[rows], table.y[rows], 10, config, progress=False)
    b, _ = fit_model(table.X[rows], table.y[rows], 10, config, progress=False)
    c, _ = fit_model(table.X[rows], table.y[rows], 10, TrainConfig(epochs=2, seed=6), progress=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not all(np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights()))


@needs_table
def test_train_writes_model_and_report(tmp_path, capsys):
    _tensorflow()
    from training.train import main

    out = tmp_path / "run"
    status = main(["--table", str(TABLE_10), "--epochs", "4", "--folds", "2", "--out-dir", str(out), "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "validation by track" in printed and "validation by block" in printed
    report = json.loads((out / "report.json").read_text())
    assert (out / "model.keras").is_file()
    assert report["labels"] == list(GTZAN_GENRES)
    assert report["feature_names"] == list(FEATURE_NAMES)
    assert report["data"]["rows"] == 2694 and report["data"]["tracks"] == 900
    assert report["window_s"] == 10.0 and report["config"]["epochs"] == 4
    for scheme in ("track", "block"):
        result = report["validation"][scheme]
        assert result["n_folds"] == 2 and result["rows"] == 2694
        assert result["accuracy"] > 0.3, result["accuracy"]
        confusion = np.array(result["confusion_matrix"])
        assert confusion.shape == (10, 10) and confusion.sum() == 2694
        assert np.isclose(np.trace(confusion) / 2694, result["accuracy"], atol=1e-4)
        assert set(result["per_genre_recall"]) == set(GTZAN_GENRES)
    assert report["validation"]["block"]["groups"] == 90
    assert "test" not in report  # an explicit --table gets no automatic test table
    assert report["summary"]["validation_accuracy"]["block"]["accuracy"] == report["validation"]["block"]["accuracy"]


def test_train_cli_reports_bad_table(tmp_path, capsys):
    from training.train import main

    bad = tmp_path / "bad.csv"
    bad.write_text("filename,label\nblues.00010.0.wav,blues\n")
    assert main(["--table", str(bad), "--out-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "missing 57 column(s)" in capsys.readouterr().err


# --- audio folders -----------------------------------------------------------------


def _gtzan_layout(root, genres=("classical", "metal", "electronic")):
    for genre in genres:
        (root / genre).mkdir(parents=True)
        for source in sorted(FREE_AUDIO.glob(f"{genre}_*.ogg")):
            os.symlink(source, root / genre / source.name)
    return root


@needs_audio
def test_train_from_gtzan_layout_audio_folder(tmp_path):
    _tensorflow()
    from training.train import train

    audio = _gtzan_layout(tmp_path / "audio")
    out = tmp_path / "run"
    # 5 s windows over the first 10 s of each 45 s file keep the test short.
    model, report = train(
        audio_dir=audio, out_dir=out, epochs=3, n_folds=2, window_s=5.0, max_duration_s=10.0,
        progress=False, verbose=False,
    )
    assert report["labels"] == ["classical", "electronic", "metal"]
    assert report["data"]["rows"] == 12 and report["data"]["tracks"] == 6
    assert report["window_s"] == 5.0
    table = load_feature_table(out / "features.csv")
    assert table.X.shape == (12, 57) and table.labels == ("classical", "electronic", "metal")
    # Both windows of a file are one track: never split by the track folds.
    assert len(np.unique(table.track_ids)) == 6
    for train_index, val_index in group_kfold(track_groups(table), table.y, 2, seed=0):
        assert not set(table.track_ids[train_index]) & set(table.track_ids[val_index])
    probabilities = np.asarray(model(table.X, training=False))
    assert probabilities.shape == (12, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert report["validation"]["track"]["rows"] == 12


@needs_audio
def test_short_files_are_skipped_with_a_warning(tmp_path):
    root = tmp_path / "audio"
    (root / "jazz").mkdir(parents=True)
    os.symlink(FREE_AUDIO / "jazz_solo_trumpet_loop.ogg", root / "jazz" / "loop.ogg")  # 5.3 s
    with pytest.raises(ValueError, match="no file gave a full 10 s window"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features_from_audio_dir(root, progress=False)
    assert any("shorter than one 10 s window" in str(w.message) for w in caught)
    with pytest.raises(FileNotFoundError):
        features_from_audio_dir(tmp_path / "absent")
    with pytest.raises(ValueError, match="layout"):
        features_from_audio_dir(root, layout="spotify")


def test_fma_layout_genres_from_tracks_csv(tmp_path):
    from training.data import _list_fma_layout, _read_fma_genres

    root = tmp_path / "fma_small"
    for track in ("000002", "000005", "000010"):
        (root / track[:3]).mkdir(parents=True, exist_ok=True)
        (root / track[:3] / f"{track}.mp3").write_bytes(b"")
    # FMA's own tracks.csv: three header rows, genre_top under "track".
    meta = tmp_path / "fma_metadata"
    meta.mkdir()
    with (meta / "tracks.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "album", "track", "track"])
        writer.writerow(["", "title", "genre_top", "title"])
        writer.writerow(["track_id", "", "", ""])
        writer.writerow(["2", "AWOL", "Hip-Hop", "Food"])
        writer.writerow(["5", "AWOL", "Hip-Hop", "This World"])
        writer.writerow(["10", "Constant Hitmaker", "", "Freeway"])
    assert _read_fma_genres(meta / "tracks.csv") == {2: "Hip-Hop", 5: "Hip-Hop"}
    with pytest.warns(UserWarning, match="1 audio file"):
        items = _list_fma_layout(root, (".mp3",), meta / "tracks.csv")
    assert [(p.name, genre, number) for p, genre, number in items] == [
        ("000002.mp3", "Hip-Hop", 2),
        ("000005.mp3", "Hip-Hop", 5),
    ]
    # The simple form: columns track_id, genre_top.
    simple = tmp_path / "simple.csv"
    simple.write_text("track_id,genre_top\n10,Rock\n")
    assert _read_fma_genres(simple) == {10: "Rock"}
