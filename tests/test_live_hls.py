"""Live HLS on loopback: a playlist that grows while the engine reads it, an outage, dead segments.

Segments are made from ../shared audio by the ffmpeg CLI's hls muxer (AAC in
MPEG-TS, 2 s each); the playlist is served by a real HTTP server on
127.0.0.1 and lists one more segment every ``2 s / speed``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stream.sources.radio import HTTPSource, ReconnectPolicy
from stream.sources import SourceError, SourceGap, SourceStatus
from tests.conftest import FREE_AUDIO, needs_shared
from tests.live_servers import FFMPEG, EngineRun, LiveHLS, RadioServer, stand_in_model

pytestmark = [needs_shared, pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg CLI is needed to make HLS segments "
                                                                       "(scripts/setup.sh test installs Debian's ffmpeg)")]

SR = 22050


@pytest.fixture(scope="module")
def segments(tmp_path_factory) -> Path:
    import subprocess

    folder = tmp_path_factory.mktemp("hls")
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-t", "24",
                    "-i", str(FREE_AUDIO / "country_karissa_hobbs_lets_go_fishin.ogg"),
                    "-c:a", "aac", "-b:a", "64k", "-f", "hls", "-hls_time", "2", "-hls_list_size", "0",
                    "-hls_segment_filename", str(folder / "seg%03d.ts"), str(folder / "vod.m3u8")],
                   check=True, timeout=120)
    assert len(list(folder.glob("seg*.ts"))) >= 12
    return folder


@pytest.fixture
def radio():
    server = RadioServer()
    yield server
    server.close()


def test_live_hls_is_read_while_the_playlist_grows(radio, segments, tmp_path):
    hls = LiveHLS(radio, segments, speed=2.0, start_with=3, window=5)
    hls.end = True  # #EXT-X-ENDLIST once the last segment is listed: the stream then ends
    sizes: list[int] = []
    playlist = radio.routes["/live/index.m3u8"]

    def counting(conn, request):
        sizes.append(hls.visible())
        playlist(conn, request)

    radio.routes["/live/index.m3u8"] = counting
    run = EngineRun(stand_in_model(tmp_path / "m.onnx"), {"hls": HTTPSource(hls.url, stall_timeout_s=8)}, hop_s=8.0)
    try:
        run.wait_for(lambda r: any(e["state"] in ("ended", "failed") for e in r.snapshot("hls", "status")), 60,
                     "the end of the HLS stream")
    finally:
        run.stop()
    statuses = run.snapshot("hls", "status")
    assert [s["state"] for s in statuses] == ["connecting", "playing", "ended"], statuses
    assert "HLS aac" in statuses[1]["detail"]
    assert len(sizes) >= 4 and sizes[0] == 3 and sizes[-1] == len(hls.segments), f"the playlist did not grow: {sizes}"
    assert sizes == sorted(sizes)
    predictions = [p["stream_time_s"] for p in run.snapshot("hls", "prediction")]
    assert predictions == [10.0, 18.0]  # 24 s of audio, every segment decoded once, in order
    stats = statuses[-1]["stats"]
    assert stats["seconds_decoded"] == pytest.approx(24.0, abs=0.2)
    assert stats["bytes_read"] >= sum(f.stat().st_size for f in segments.glob("seg*.ts"))
    assert stats["reconnects"] == 0


def test_an_hls_outage_is_a_gap_then_it_plays_on(radio, segments):
    hls = LiveHLS(radio, segments, speed=1.0, start_with=3)
    playlist = radio.routes["/live/index.m3u8"]
    down = threading.Event()

    def flaky(conn, request):
        if down.is_set():
            radio._head(conn, 503, "text/plain", {"Content-Length": "0"})
        else:
            playlist(conn, request)

    radio.routes["/live/index.m3u8"] = flaky
    threading.Timer(3.0, down.set).start()
    threading.Timer(6.0, down.clear).start()
    source = HTTPSource(hls.url, stall_timeout_s=8, policy=ReconnectPolicy(initial_backoff_s=0.3, max_backoff_s=1.0))
    items, audio_after_gap = [], 0
    t0 = time.monotonic()
    gen = source.blocks(SR)
    try:
        for item in gen:
            if isinstance(item, np.ndarray):
                if any(isinstance(i, SourceGap) for i in items):
                    audio_after_gap += item.size
                    if audio_after_gap >= 2 * SR:
                        break
            else:
                items.append(item)
            assert time.monotonic() - t0 < 30, items
    finally:
        gen.close()
        source.close()
    reconnecting = [i for i in items if isinstance(i, SourceStatus) and i.state == "reconnecting"]
    assert reconnecting and "HTTP 503" in reconnecting[0].detail, items
    gap = next(i for i in items if isinstance(i, SourceGap))
    assert 0.5 < gap.duration_s < 10
    assert items[items.index(gap) + 1].state == "playing"


def test_hls_whose_segments_are_gone_fails_with_the_reason(radio, segments):
    url = radio.static("/dead/index.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                                           b"#EXTINF:2.0,\nseg000.ts\n#EXTINF:2.0,\nseg001.ts\n#EXT-X-ENDLIST\n",
                       content_type="application/vnd.apple.mpegurl")
    source = HTTPSource(url, stall_timeout_s=5)
    t = time.monotonic()
    with pytest.raises(SourceError, match=r"seg00\d\.ts: HTTP 404"):
        list(source.blocks(SR))
    assert time.monotonic() - t < 10
