"""HTTP radio on loopback: formats, ICY titles, redirects, HTTPS, playlists, drops, stalls and bad input.

Every server here is real (sockets on 127.0.0.1, started and killed by the
tests); the audio is ../shared/audio/free encoded by the ffmpeg CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stream.sources.radio import HTTPSource, ReconnectPolicy
from stream.sources import SourceError, SourceGap, SourceMetadata, SourceStatus
from tests.conftest import FREE_AUDIO, REPO, free_port, genrestream_cmd, needs_shared
from tests.live_servers import FFMPEG, EngineRun, RadioServer, Stream, encode, stand_in_model

pytestmark = [needs_shared, pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg CLI is needed to make test streams "
                                                                       "(scripts/setup.sh test installs Debian's ffmpeg)")]

CLIP = FREE_AUDIO / "jazz_kevin_macleod_vibe_ace.ogg"  # 45 s, 44.1 kHz stereo; the first 24 s are used
SR = 22050
MEDIA_S = 24.0


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, tuple[bytes, float, str]]:
    """{name: (bytes, bytes per second, content type)} of the clip's first 24 s in radio formats."""
    folder = tmp_path_factory.mktemp("media")
    out = {}
    for name, args, ctype in (
        ("mp3", ("-c:a", "libmp3lame", "-b:a", "128k", "-ar", "44100", "-f", "mp3"), "audio/mpeg"),
        ("aac", ("-c:a", "aac", "-b:a", "96k", "-f", "adts"), "audio/aac"),
        ("vorbis", ("-c:a", "libvorbis", "-b:a", "112k", "-f", "ogg"), "application/ogg"),
        ("opus", ("-c:a", "libopus", "-b:a", "96k", "-f", "ogg"), "audio/ogg"),
    ):
        path = encode(CLIP, folder / f"clip.{name}", "-t", str(MEDIA_S), *args)
        data = path.read_bytes()
        out[name] = (data, len(data) / MEDIA_S, ctype)
    return out


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return stand_in_model(tmp_path_factory.mktemp("model") / "stand_in.onnx")


@pytest.fixture
def radio():
    server = RadioServer()
    yield server
    server.close()


def take(source: HTTPSource, seconds_of_audio: float, timeout_s: float = 30.0) -> tuple[np.ndarray, list]:
    """Run ``source.blocks`` until it gave ``seconds_of_audio``; return (audio, the other items)."""
    audio, items = [], []
    n = 0
    deadline = time.monotonic() + timeout_s
    gen = source.blocks(SR)
    try:
        for item in gen:
            if isinstance(item, np.ndarray):
                audio.append(item)
                n += item.size
                if n >= seconds_of_audio * SR:
                    break
            else:
                items.append(item)
            assert time.monotonic() < deadline, f"timed out; got {n / SR:.1f} s and {items}"
    finally:
        gen.close()
        source.close()
    return (np.concatenate(audio) if audio else np.zeros(0, np.float32)), items


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def own_threads() -> int:
    """Threads of this process, but the test servers'."""
    return sum(1 for t in threading.enumerate() if not t.name.startswith("radio-"))


# -- formats and titles ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt, codec, icy_status, encoding", [
    ("mp3", "mp3", False, "utf-8"),
    ("aac", "aac", True, "latin-1"),  # SHOUTcast v1: "ICY 200 OK" and Latin-1 titles
    ("vorbis", "vorbis", False, "utf-8"),
    ("opus", "opus", False, "utf-8"),
])
def test_radio_formats_decode_and_icy_titles_arrive(radio, media, fmt, codec, icy_status, encoding):
    data, rate, ctype = media[fmt]
    titles = ["Première - Ça va", "Zweite Nummer • Ü" if encoding == "utf-8" else "Zweite Nummer Ü"]
    url = radio.stream("/live", Stream(data, rate, content_type=ctype, metaint=4096, icy_status=icy_status,
                                       title_at=lambda t: titles[0] if t < 0.5 else titles[1],
                                       title_encoding=encoding, speed=4.0))
    source = HTTPSource(url, stall_timeout_s=5)
    audio, items = take(source, 10.0)
    playing = [i for i in items if isinstance(i, SourceStatus)]
    assert playing and playing[0].state == "playing" and codec in playing[0].detail, playing
    assert [i.title for i in items if isinstance(i, SourceMetadata)] == titles
    assert source.stats.title == titles[1]
    assert float(np.sqrt(np.mean(audio**2))) > 0.01, "decoded audio is silent"
    assert audio.dtype == np.float32 and np.all(np.isfinite(audio))
    assert source.stats.bytes_read > 10 * rate * 0.7
    assert source.stats.seconds_decoded >= 10.0
    assert radio.requests[0][1].get("icy-metadata") == "1"


def test_redirects_and_playlists_resolve_to_the_stream(radio, media):
    data, rate, ctype = media["mp3"]
    live = radio.stream("/stream/live.mp3", Stream(data, rate, ctype, speed=4.0))
    radio.redirect("/hop2", "/stream/live.mp3", status=301)
    radio.redirect("/hop1", radio.url("/hop2", host="localhost"), status=302)
    radio.static("/station.pls", (f"[playlist]\nNumberOfEntries=3\nFile1={radio.url('/gone.mp3')}\n"
                                  f"File2=http://127.0.0.1:{free_port()}/refused\nFile3=/hop1\n").encode(),
                 content_type="audio/x-scpls")
    radio.static("/station.m3u", b"#EXTM3U\n#EXTINF:-1,Loopback FM\n/station.pls\n", content_type="text/plain")
    for path in ("/hop1", "/station.pls", "/station.m3u"):
        source = HTTPSource(radio.url(path), stall_timeout_s=5)
        audio, items = take(source, 3.0)
        assert audio.size >= 3 * SR, path
        status = items[0]
        assert status.state == "playing" and "/stream/live.mp3" in status.detail, (path, status)
    assert radio.connections["/gone.mp3"] == 2  # the dead entry was tried, then the next
    assert live.endswith("/stream/live.mp3")


def test_https_with_a_trusted_certificate(tmp_path, media):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not installed (scripts/setup.sh test installs it)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server = RadioServer(tls=server_tls)
    try:
        data, rate, ctype = media["mp3"]
        url = server.stream("/live.mp3", Stream(data, rate, ctype, metaint=8192, title_at=lambda t: "Secure",
                                                speed=4.0))
        assert url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        audio, items = take(HTTPSource(url, stall_timeout_s=5, ssl_context=trusted), 3.0)
        assert audio.size >= 3 * SR and SourceMetadata("Secure") in items
        # Not trusted: a clear reason, no retry of a first connection.
        with pytest.raises(SourceError, match="certificate"):
            take(HTTPSource(url, stall_timeout_s=5), 1.0)
    finally:
        server.close()


# -- drops, stalls, closing -----------------------------------------------------------------

def test_a_drop_reconnects_reports_the_gap_and_classifies_again(radio, media, model_path):
    """Titles on events and a "metadata" event; a drop; the gap; predictions again from fresh audio."""
    data, rate, ctype = media["mp3"]
    # 2 s of burst and 3 s at 3x real time: 11 s of audio per connection, one 10 s window (hop 8 s).
    url = radio.stream("/live.mp3", Stream(data, rate, ctype, metaint=8192, speed=3.0, drop_after_s=3.0,
                                           title_at=lambda t: "Kevin MacLeod – Vibe Ace"))
    run = EngineRun(model_path, {"radio": HTTPSource(url, stall_timeout_s=5)}, hop_s=8.0)
    try:
        def classified_after_gap(r: EngineRun) -> bool:
            gaps = [e for e in r.snapshot("radio", "status") if "gap_s" in e]
            return bool(gaps) and any(p["stream_time_s"] > gaps[0]["gap_start_s"]
                                      for p in r.snapshot("radio", "prediction"))

        run.wait_for(classified_after_gap, 50, "predictions after a reconnect")
    finally:
        run.stop()
    events = run.snapshot("radio")
    statuses = [e for e in events if e["type"] == "status"]
    states = [e["state"] for e in statuses]
    assert states[:2] == ["connecting", "playing"], states
    i_reconnect = states.index("reconnecting")
    assert "end of stream" in statuses[i_reconnect]["detail"]
    gap = next(e for e in statuses if "gap_s" in e)
    assert 0 <= gap["gap_s"] < 5 and "gap of" in gap["detail"]
    after = statuses[statuses.index(gap) + 1]
    assert after["state"] == "playing" and "reconnected after a gap" in after["detail"], after
    assert after["stats"]["reconnects"] >= 1 and after["stats"]["last_error"].startswith("end of stream")
    assert after["stats"]["title"] == "Kevin MacLeod – Vibe Ace"
    metadata = [e for e in events if e["type"] == "metadata"]
    assert [m["title"] for m in metadata] == ["Kevin MacLeod – Vibe Ace"], "one title, announced once"
    predictions = [e for e in events if e["type"] == "prediction"]
    before = [p for p in predictions if p["stream_time_s"] <= gap["gap_start_s"] + 1e-6]
    resumed = [p for p in predictions if p["stream_time_s"] > gap["gap_start_s"] + 1e-6]
    assert [p["stream_time_s"] for p in before] == [10.0]
    gap_end = gap["gap_start_s"] + gap["gap_s"]
    assert gap["gap_start_s"] == pytest.approx(11.0, abs=0.5)  # the audio of the first connection
    # Stream time moved on by the gap; the first window after it holds only new audio; smoothing restarted.
    assert resumed[0]["stream_time_s"] == pytest.approx(gap_end + 10.0, abs=0.01)
    assert resumed[0]["smoothed"] == "unknown"
    assert all(p["title"] == "Kevin MacLeod – Vibe Ace" for p in predictions)


def test_a_stall_is_detected_and_reconnected(radio, media):
    data, rate, ctype = media["mp3"]
    url = radio.stream("/live.mp3", Stream(data, rate, ctype, speed=2.0, stall_after_s=1.5))
    source = HTTPSource(url, stall_timeout_s=1.5)
    t0 = time.monotonic()
    items: list = []
    gen = source.blocks(SR)
    try:
        for item in gen:
            if not isinstance(item, np.ndarray):
                items.append(item)
            if sum(isinstance(i, SourceGap) for i in items) >= 1 and isinstance(item, np.ndarray):
                break
            assert time.monotonic() - t0 < 20, items
    finally:
        gen.close()
        source.close()
    reconnecting = next(i for i in items if isinstance(i, SourceStatus) and i.state == "reconnecting")
    assert "stalled" in reconnecting.detail and "1.5 s" in reconnecting.detail
    gap = next(i for i in items if isinstance(i, SourceGap))
    assert gap.duration_s >= 1.5 and "stalled" in gap.detail
    assert radio.connections["/live.mp3"] >= 2


def test_close_unblocks_a_stalled_read_and_a_backoff_wait_and_leaks_nothing(radio, media):
    data, rate, ctype = media["mp3"]
    url = radio.stream("/live.mp3", Stream(data, rate, ctype, stall_after_s=0.5))
    threads, fds = own_threads(), open_fds()
    for policy in (ReconnectPolicy(), ReconnectPolicy(initial_backoff_s=60, max_backoff_s=60)):
        source = HTTPSource(url, stall_timeout_s=60 if policy.max_backoff_s < 60 else 0.3, policy=policy)
        seen: list = []
        reader = threading.Thread(target=lambda: seen.extend(i for i in source.blocks(SR)
                                                             if not isinstance(i, np.ndarray)))
        reader.start()
        time.sleep(2.0)  # stalled in a read (first policy) or waiting 0-60 s to reconnect (second)
        t = time.monotonic()
        source.close()
        reader.join(5)
        assert not reader.is_alive() and time.monotonic() - t < 1.0, "close() must unblock the source"
    assert any(isinstance(i, SourceStatus) and i.state == "reconnecting" for i in seen)
    assert own_threads() == threads, "a thread leaked"
    radio.close()  # the server's side of the stalled connections
    assert open_fds() <= fds, "a socket leaked"


def test_gives_up_after_max_reconnects_and_can_wait_for_a_station_at_start(radio, media):
    data, rate, ctype = media["mp3"]
    state = {"up": True}
    stream = Stream(data, rate, ctype, speed=4.0, drop_after_s=1.0)

    def flaky(conn, request):
        if state["up"]:
            state["up"] = False
            radio._stream(conn, request, stream)
        else:
            radio._head(conn, 503, "text/plain", {"Content-Length": "0"})

    radio.routes["/flaky"] = flaky
    source = HTTPSource(radio.url("/flaky"), policy=ReconnectPolicy(initial_backoff_s=0.05, max_reconnects=2))
    with pytest.raises(SourceError, match=r"gave up after 2 reconnect attempts: HTTP 503"):
        take(source, 1000.0)
    assert source.stats.reconnects == 2 and radio.connections["/flaky"] == 3

    # A station that is not up yet: by default the first failure is final ...
    with pytest.raises(SourceError, match="404"):
        take(HTTPSource(radio.url("/later.mp3")), 1.0)
    # ... unless told to wait for it; then no gap is reported (nothing was lost).
    source = HTTPSource(radio.url("/later.mp3"), policy=ReconnectPolicy(initial_backoff_s=0.2, max_backoff_s=0.4,
                                                                         reconnect_at_start=True))
    threading.Timer(1.5, lambda: radio.stream("/later.mp3", Stream(data, rate, ctype, speed=4.0))).start()
    audio, items = take(source, 2.0)
    assert audio.size >= 2 * SR
    assert any(isinstance(i, SourceStatus) and i.state == "reconnecting" and "404" in i.detail for i in items)
    assert not any(isinstance(i, SourceGap) for i in items)


# -- bad input, end to end ---------------------------------------------------------------

def _wav_with_unknown_codec() -> bytes:
    pcm = (np.random.default_rng(0).normal(size=44100) * 1000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 0x7777, 1, 44100, 88200, 2, 16)  # a format tag no decoder knows
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _bad_routes(radio: RadioServer) -> dict[str, str]:
    """Every kind of bad input on ``radio``: {url: what its failure reason must say}."""
    radio.stream("/garbage.mp3", Stream(b"", 16000, "audio/mpeg", garbage=True, speed=50.0))
    radio.routes["/stalls.mp3"] = lambda conn, req: (radio._head(conn, 200, "audio/mpeg", {}), radio._stop.wait(8))
    radio.redirect("/loop-b", "/loop-a")
    return {
        radio.static("/page", b"<!DOCTYPE html><html><body>Listen live!</body></html>", content_type="text/html"):
            "not audio",
        radio.static("/sneaky-page.mp3", b"<!doctype html><html>" + b"x" * 600,
                     content_type="application/octet-stream"): "HTML page",
        radio.url("/gone.mp3"): "HTTP 404",
        radio.static("/broken.mp3", b"oops", content_type="text/plain", status=500): "HTTP 500",
        radio.url("/garbage.mp3"): "not audio",
        radio.raw("/not-http", b"SSH-2.0-OpenSSH_9.2\r\n" + b"\x00" * 300): "not an HTTP response",
        radio.url("/stalls.mp3"): "stalled",
        radio.static("/unknown-codec.wav", _wav_with_unknown_codec(), content_type="audio/wav"): "unsupported codec",
        radio.static("/nowhere.pls", (f"[playlist]\nFile1={radio.url('/gone.mp3')}\n"
                                      f"File2=http://127.0.0.1:{free_port()}/x\n").encode(),
                     content_type="audio/x-scpls"): "no playable entry",
        radio.static("/self.m3u", b"#EXTM3U\nself.m3u\n", content_type="audio/x-mpegurl"): "refers back to itself",
        radio.static("/empty.m3u", b"#EXTM3U\n", content_type="audio/x-mpegurl"): "no entries",
        radio.redirect("/loop-a", "/loop-b"): "redirect loop",
        radio.static("/silence.mp3", b"", content_type="audio/mpeg"): "not audio",
    }


def test_bad_inputs_fail_with_their_reason_and_leak_nothing(radio):
    bad = _bad_routes(radio)
    threads, fds = own_threads(), open_fds()
    for url, reason in bad.items():
        source = HTTPSource(url, stall_timeout_s=1.0)
        with pytest.raises(SourceError, match=reason) as info:
            take(source, 1.0)
        assert info.value.source == url and source.stats.last_error == info.value.reason
    assert own_threads() == threads, "a thread leaked"
    radio.close()  # and with it the server's ends of the connections
    assert open_fds() <= fds, "a socket or file leaked"


def test_bad_inputs_fail_with_their_reason_and_the_good_stream_carries_on(radio, media, model_path):
    data, rate, ctype = media["mp3"]
    good = radio.static("/good.mp3", data[: int(rate * 20)], content_type="audio/mpeg")  # 20 s, then the end
    bad = _bad_routes(radio)
    cmd = genrestream_cmd("run", good, *bad, "--no-server", "--jsonl", "--model", str(model_path), "--hop-s", "5",
                          "--stall-timeout-s", "2")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    final = {e["source"]: e for e in events if e["type"] == "status"}
    assert final[good]["state"] == "ended", final[good]
    good_id = final[good]["stream"]
    assert [e["stream_time_s"] for e in events if e["type"] == "prediction" and e["stream"] == good_id] == [
        10.0, 15.0, 20.0]
    for url, reason in bad.items():
        status = final[url]
        assert status["state"] == "failed", (url, status)
        assert url in status["detail"] and reason in status["detail"], (reason, status["detail"])
        assert status["stats"]["last_error"]
        assert any(url in line and "failed" in line for line in proc.stderr.splitlines()), url
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 90
