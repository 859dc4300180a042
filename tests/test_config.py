"""Parsing and diffing stream configuration files (pure, no I/O beyond tmp files)."""

from __future__ import annotations

import pytest

from stream.config import StreamConfig, diff, load_config, parse_config

GOOD = """
[defaults]
stall_timeout_s = 20

[[streams]]
name = "jazz-fm"
source = "http://127.0.0.1:8000/jazz.mp3"

[[streams]]
name = "lobby"
source = "/srv/lobby.ogg"
loop = true
stall_timeout_s = 5
"""


def test_parse_applies_defaults_and_overrides():
    streams = parse_config(GOOD)
    assert list(streams) == ["jazz-fm", "lobby"]
    assert streams["jazz-fm"] == StreamConfig("jazz-fm", "http://127.0.0.1:8000/jazz.mp3", {"stall_timeout_s": 20})
    assert streams["lobby"].options == {"stall_timeout_s": 5, "loop": True}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[streams]]\nname = 'a'\n", "missing 'source'"),
        ("[[streams]]\nsource = 'x.ogg'\n", "'name'"),
        ("[[streams]]\nname = 'a b'\nsource = 'x.ogg'\n", "'name'"),
        ("[[streams]]\nname = 'a'\nsource = 'x.ogg'\n[[streams]]\nname = 'a'\nsource = 'y.ogg'\n", "used twice"),
        ("[[streams]]\nname = 'a'\nsource = 'x.ogg'\nvolume = 3\n", "unknown options ['volume']"),
        ("[defaults]\ncolour = 'red'\n", "unknown options ['colour']"),
        ("[station]\nname = 'a'\n", "unknown top-level keys"),
        ("streams = 'a'\n", "array of tables"),
        ("[[streams]\n", "not valid TOML"),
    ],
)
def test_bad_config_names_origin_and_problem(text, message):
    with pytest.raises(ValueError, match="streams.toml") as info:
        parse_config(text, origin="streams.toml")
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_diff_restarts_changed_streams_only():
    old = parse_config(GOOD)
    new = parse_config(GOOD.replace("loop = true", "loop = false") + '\n[[streams]]\nname = "new"\nsource = "n.ogg"\n')
    remove, add = diff(old, new)
    assert remove == ["lobby"]
    assert add == ["lobby", "new"]
    assert diff(new, new) == ([], [])
    assert diff(new, {}) == (["jazz-fm", "lobby", "new"], [])
