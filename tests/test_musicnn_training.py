"""`genrestream train` and `genrestream export` of the musicnn model on small audio folders from ../shared."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import FREE_AUDIO, REPO, SHARED, genrestream_cmd, needs_shared

pytestmark = [needs_shared, pytest.mark.slow]

GTZAN = SHARED / "audio" / "gtzan-extra"
SPEECH = SHARED / "audio" / "musicspeech" / "speech"
MUSIC = SHARED / "audio" / "musicspeech" / "music"


def _link(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    pytest.importorskip("tensorflow", reason="training needs the train extra: pip install -e '.[train]'")
    root = tmp_path_factory.mktemp("small")
    audio, content = root / "audio", root / "content"
    _link(audio / "metal", sorted(GTZAN.glob("metal.*.flac"))[:3])
    _link(audio / "classical", sorted(GTZAN.glob("classical.*.flac"))[:3])
    # Music of other kinds than the genre clips', so the content head knows loud guitars are music too.
    _link(content / "music", [*sorted(MUSIC.glob("*.flac"))[:2],
                              *(sorted(GTZAN.glob(f"{g}.*.flac"))[0] for g in ("rock", "pop", "hiphop"))])
    _link(content / "speech", sorted(SPEECH.glob("*.flac"))[:5])
    run = root / "run"
    train = subprocess.run(genrestream_cmd("train", "--audio-dir", str(audio), "--layout", "folders",
                                           "--content-dir", str(content), "--folds", "3", "--out-dir", str(run),
                                           "--cache", str(root / "cache"), "--no-progress"),
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    return root, run, train


def test_train_reports_validation_by_files(small_run):
    _, run, train = small_run
    assert train.returncode == 0, train.stderr[-3000:]
    assert "genre: 6 clips" in train.stdout and "validation by files" in train.stdout, train.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["genre_labels"] == ["classical", "metal"] and report["content_labels"] == ["music", "speech"]
    genre = report["validation"]["genre"]
    assert genre["n_folds"] == 3 and genre["groups"] == 6
    # Metal against classical on the musicnn embedding: near-certain even on 4 training clips a fold.
    assert genre["calibrated"]["clip_accuracy"] >= 5 / 6, genre["calibrated"]
    for name in ("genre_head.keras", "content_head.keras", "backbone.onnx", "verify_windows.npy"):
        assert (run / name).is_file(), name


def test_export_writes_to_the_working_directory_and_the_model_classifies(small_run):
    root, run, _ = small_run
    export = subprocess.run(genrestream_cmd("export", "--model-dir", str(run)), cwd=root,
                            capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    model = root / "musicnn_msd.onnx"
    assert model.is_file() and (root / "musicnn_msd.report.json").is_file()
    classify = subprocess.run(genrestream_cmd("classify", "--json", "--model", str(model),
                                              str(FREE_AUDIO / "metal_el_senator_chaos_god.ogg"),
                                              str(FREE_AUDIO / "speech_librispeech_198-209-0000.ogg")),
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert classify.returncode == 0, classify.stderr[-3000:]
    metal, speech = (json.loads(line) for line in classify.stdout.splitlines())
    assert set(metal["probabilities"]) == {"classical", "metal"}
    assert metal["genre"] == "metal" and speech["genre"] == "speech"


def test_a_given_split_replaces_the_cross_validation(small_run, tmp_path):
    root, _, _ = small_run
    split = tmp_path / "split.txt"
    names = [sorted((root / "audio" / g).iterdir())[0].name for g in ("metal", "classical")]
    split.write_text("\n".join(names) + "\n")
    out = tmp_path / "run"
    train = subprocess.run(genrestream_cmd("train", "--audio-dir", str(root / "audio"), "--layout", "folders",
                                           "--content-dir", str(root / "content"), "--split", str(split),
                                           "--out-dir", str(out), "--cache", str(root / "cache"), "--no-progress"),
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    genre = json.loads((out / "report.json").read_text())["validation"]["genre"]
    assert genre["scheme"] == "given split" and genre["n_folds"] == 1 and genre["calibrated"]["clips"] == 2


def test_bad_folders_are_refused_by_name(tmp_path):
    pytest.importorskip("tensorflow", reason="training needs the train extra")
    content = tmp_path / "content"
    _link(content / "music", sorted(MUSIC.glob("*.flac"))[:1])
    _link(content / "jingles", sorted(MUSIC.glob("*.flac"))[1:2])
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in ((["--audio-dir", str(empty), "--layout", "folders"], "no labelled audio file"),
                          (["--audio-dir", str(tmp_path / "absent")], "is not a folder"),
                          (["--content-dir", str(content)], "['jingles'] are not among")):
        proc = subprocess.run(genrestream_cmd("train", *args, "--out-dir", str(tmp_path / "run"), "--no-progress"),
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-2000:])
