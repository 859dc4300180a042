"""training.audio: which clips a folder holds, with which label and which validation group."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED, needs_shared
from training.audio import gtzan_block, list_audio

GTZAN = SHARED / "audio" / "gtzan-extra"


@needs_shared
def test_the_shared_gtzan_clips_are_grouped_by_blocks_of_ten_tracks():
    from training.audio import content_clips, gtzan_clips

    clips = gtzan_clips()
    assert len(clips) == 58 and {c.label for c in clips} == {"blues", "classical", "country", "disco", "hiphop",
                                                              "jazz", "metal", "pop", "reggae", "rock"}
    assert {c.group for c in clips if c.label == "disco"} == {"disco/00000-00009", "disco/00070-00079"}
    kinds = {c.label for c in content_clips()}
    assert kinds == {"music", "speech", "other"}


@needs_shared
def test_layouts(tmp_path):
    metal = sorted(GTZAN.glob("metal.*.flac"))[:2]
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in metal:
        (flat / f.name).symlink_to(f)
    clips = list_audio(flat, "gtzan")
    assert [(c.label, c.track, c.group) for c in clips] == [
        ("metal", int(f.name.split(".")[1]), gtzan_block("metal", int(f.name.split(".")[1]))) for f in metal]

    fma = tmp_path / "fma" / "000"
    fma.mkdir(parents=True)
    for track, f in zip((123, 456), metal):
        (fma / f"{track:06d}.flac").symlink_to(f)
    (tmp_path / "fma" / "tracks.csv").write_text("track_id,genre_top\n123,Rock\n456,Electronic\n789,Jazz\n")
    clips = list_audio(tmp_path / "fma", "fma")
    assert [(c.label, c.group) for c in clips] == [("Electronic", "track/456"), ("Rock", "track/123")]

    folders = tmp_path / "folders"
    (folders / "loud").mkdir(parents=True)
    (folders / "loud" / "a.flac").symlink_to(metal[0])
    (folders / "stray.flac").symlink_to(metal[1])  # beside the label folders: no label
    assert [(c.label, c.group) for c in list_audio(folders, "folders")] == [("loud", "file/loud/a.flac")]


def test_bad_layouts_are_named(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="layout: expected one of"):
        list_audio(tmp_path, "itunes")
    with pytest.raises(ValueError, match="not named <genre>.<number>"):
        list_audio(tmp_path, "gtzan")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        list_audio(tmp_path / "nope", "folders")
