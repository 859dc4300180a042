"""`genrestream classify` on real clips from ../shared/audio/free, through the real console script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import FREE_AUDIO, REPO, genrestream_cmd, needs_shared

pytestmark = needs_shared

REQUIRED = {"file", "genre", "confidence", "probabilities", "segments"}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(genrestream_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def metal_and_classical():
    files = [str(FREE_AUDIO / "metal_el_senator_armygeddon.ogg"), str(FREE_AUDIO / "classical_brahms_hungarian_dance_5.ogg")]
    proc = run_cli("classify", "--json", *files)
    return files, proc


def test_json_is_one_object_per_file_per_line(metal_and_classical):
    files, proc = metal_and_classical
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(files)
    for line, f in zip(lines, files):
        result = json.loads(line)
        assert REQUIRED <= set(result)
        assert result["file"] == f
        assert abs(sum(result["probabilities"].values()) - 1.0) < 1e-3
        assert result["genre"] == max(result["probabilities"], key=result["probabilities"].get)
        assert 0.0 < result["confidence"] <= 1.0
        assert result["segments"], "a 45 s clip has at least one segment"
        for seg in result["segments"]:
            assert set(seg) == {"start_s", "end_s", "genre", "confidence"}
            assert 0.0 <= seg["start_s"] < seg["end_s"] <= 45.5
        assert result["segments"][0]["start_s"] == 0.0
        assert result["segments"][-1]["end_s"] == pytest.approx(45.0, abs=0.1)


def test_real_music_gets_its_genre(metal_and_classical):
    """The shipped model knows metal from classical on free-licensed recordings it never saw."""
    _, proc = metal_and_classical
    metal, classical = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert metal["genre"] == "metal", metal
    assert classical["genre"] == "classical", classical


def test_short_clip_gets_one_result_and_one_segment():
    """A 5.3 s loop (two 3 s windows of the default model; shorter than a window of gtzan-mlp's:
    tests/test_musicnn_model.py covers audio shorter than a window): one result, one segment to its end."""
    proc = run_cli("classify", "--json", str(FREE_AUDIO / "jazz_solo_trumpet_loop.ogg"))
    assert proc.returncode == 0, proc.stderr
    (result,) = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert result["genre"] in result["probabilities"]
    assert len(result["segments"]) == 1
    assert result["segments"][0]["end_s"] == pytest.approx(5.33, abs=0.05)


def test_bad_files_fail_by_name_and_good_results_still_print(tmp_path):
    missing = tmp_path / "missing.wav"
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n" * 100)
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    good = str(FREE_AUDIO / "drumandbass_admiral_bob_choice.ogg")
    proc = run_cli("classify", "--json", str(missing), good, str(text), str(empty))
    assert proc.returncode != 0
    results = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["file"] for r in results] == [str(missing), good, str(text), str(empty)]
    assert results[1]["genre"] in results[1]["probabilities"] and "error" not in results[1]
    for bad in (results[0], results[2], results[3]):
        assert bad["genre"] is None and bad["error"]
    assert "no such file" in results[0]["error"]
    assert str(text) in results[2]["error"] and "not audio" in results[2]["error"]
    assert str(missing) in proc.stderr and str(text) in proc.stderr


def test_human_output_lists_segments():
    proc = run_cli("classify", str(FREE_AUDIO / "metal_el_senator_chaos_god.ogg"))
    assert proc.returncode == 0, proc.stderr
    first, *segments = proc.stdout.strip().splitlines()
    assert first.startswith("metal_el_senator_chaos_god.ogg: ")
    assert "%" in first
    assert segments and all(" s " in s for s in segments)


def test_serving_never_imports_tensorflow():
    """Import stream and dashboard and classify a clip: no TensorFlow in sys.modules."""
    code = (
        "import sys, stream, dashboard, stream.cli, stream.server\n"
        "from stream.classify import classify_files\n"
        f"r = classify_files([{str(FREE_AUDIO / 'jazz_solo_trumpet_loop.ogg')!r}])\n"
        "assert r[0]['genre'], r\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'training', 'export'))\n"
        "print('LOADED', bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout


def test_segments_cover_the_file_with_unknown_where_no_genre_was_announced():
    from stream.classify import summarise

    labels = ("jazz", "rock")
    preds = [
        {"type": "prediction", "stream_time_s": t, "probabilities": {"jazz": 0.45, "rock": 0.55}}
        for t in (10.0, 11.0, 12.0)
    ]
    result = summarise("f.ogg", labels, preds, audio_s=12.5, window_s=10.0)
    assert result["genre"] == "rock"
    assert result["segments"] == [{"start_s": 0.0, "end_s": 12.5, "genre": "unknown", "confidence": 0.55}]

    change = {"type": "genre_change", "genre": "rock", "confidence": 0.6, "onset_s": 4.0}
    result = summarise("f.ogg", labels, [*preds, change], audio_s=12.5, window_s=10.0)
    assert [(s["start_s"], s["end_s"], s["genre"]) for s in result["segments"]] == [
        (0.0, 4.0, "unknown"), (4.0, 12.5, "rock")]
