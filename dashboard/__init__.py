"""Browser dashboard for genrestream: plain static HTML, CSS and JavaScript.

There is no build step and nothing is fetched from a CDN. The server serves the
files in :data:`STATIC_DIR` over HTTP (``index.html`` at ``/``, every other file
at ``/<name>``) and the event WebSocket at ``/ws`` on the same host and port.
``app.js`` connects to ``ws(s)://<location.host>/ws``, reconnects with
exponential backoff, and draws one card per stream from the ``status``,
``metadata``, ``prediction`` and ``genre_change`` events (schema 1): state,
genre or speech, confidence, probabilities, the timeline (speech drawn as
talk), and, when the model gives them, the top tags and the music/speech/other
split; other event types are ignored.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR: Path = Path(__file__).resolve().parent / "static"
"""Directory holding ``index.html``, ``app.js``, ``style.css`` and ``favicon.svg``."""

__all__ = ["STATIC_DIR"]
