"""Stream configuration files (``genrestream run --config streams.toml``).

The format (TOML, read with the standard library's :mod:`tomllib`)::

    [defaults]                 # options for every stream; each stream may override them
    stall_timeout_s = 15

    [[streams]]
    name = "jazz-fm"           # the stream id
    source = "http://radio.example:8000/jazz.mp3"

    [[streams]]
    name = "lobby"
    source = "/srv/audio/lobby.ogg"
    loop = true

Options are the keyword arguments of :func:`stream.sources.open_source`
(``loop``, ``stall_timeout_s``, ``max_backoff_s``...). This module only
parses and compares configurations; the command line applies the difference
to a running engine when the file changes.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources import open_source

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def source_options() -> set[str]:
    """The per-stream option names: keyword arguments of :func:`stream.sources.open_source`."""
    return {name for name in inspect.signature(open_source).parameters if name != "spec"}


@dataclass(frozen=True)
class StreamConfig:
    """One configured stream.

    Attributes
    ----------
    name : str
        Stream id: letters, digits and ``_ . : -``.
    source : str
        What :func:`stream.sources.open_source` takes.
    options : dict
        Keyword arguments for :func:`stream.sources.open_source`.
    """

    name: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)

    def open(self):
        """Open the source (see :func:`stream.sources.open_source`)."""
        return open_source(self.source, **self.options)


def parse_config(text: str, origin: str = "config") -> dict[str, StreamConfig]:
    """Parse a configuration.

    Parameters
    ----------
    text : str
        TOML text.
    origin : str
        Where it came from, for error messages.

    Returns
    -------
    dict of str to StreamConfig
        By stream name, in file order.

    Raises
    ------
    ValueError
        On invalid TOML, a stream without ``name`` or ``source``, a
        duplicated or malformed name, or an unknown option; the message names
        ``origin`` and the stream.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: not valid TOML: {exc}") from exc
    unknown_top = set(data) - {"defaults", "streams"}
    if unknown_top:
        raise ValueError(f"{origin}: unknown top-level keys {sorted(unknown_top)}; expected [defaults] and [[streams]]")
    allowed = source_options()
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ValueError(f"{origin}: [defaults] must be a table")
    bad = set(defaults) - allowed
    if bad:
        raise ValueError(f"{origin}: [defaults]: unknown options {sorted(bad)}; expected some of {sorted(allowed)}")
    streams = data.get("streams", [])
    if not isinstance(streams, list):
        raise ValueError(f"{origin}: streams must be an array of tables, written [[streams]]")
    out: dict[str, StreamConfig] = {}
    for i, entry in enumerate(streams, start=1):
        where = f"{origin}: stream #{i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a table")
        name, source = entry.get("name"), entry.get("source")
        if not isinstance(source, str) or not source:
            raise ValueError(f"{where}: missing 'source' (a file path, an http(s) URL or mic[:DEVICE])")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{where}: 'name' must be 1-100 letters, digits or _ . : - (got {name!r})")
        if name in out:
            raise ValueError(f"{where}: name {name!r} is used twice")
        options = {k: v for k, v in entry.items() if k not in ("name", "source")}
        bad = set(options) - allowed
        if bad:
            raise ValueError(f"{where} ({name}): unknown options {sorted(bad)}; expected some of {sorted(allowed)}")
        out[name] = StreamConfig(name, source, {**defaults, **options})
    return out


def load_config(path: str | Path) -> dict[str, StreamConfig]:
    """Read and parse a configuration file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        See :func:`parse_config`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file {path}")
    return parse_config(path.read_text(encoding="utf-8"), origin=str(path))


def diff(old: dict[str, StreamConfig], new: dict[str, StreamConfig]) -> tuple[list[str], list[str]]:
    """What to stop and what to start to go from ``old`` to ``new``.

    A stream whose source or options changed is stopped and started again.

    Returns
    -------
    (remove, add) : lists of stream names
    """
    remove = [name for name in old if name not in new or new[name] != old[name]]
    add = [name for name in new if name not in old or new[name] != old[name]]
    return remove, add
