"""The pieces of live sources on their own: ICY metadata, playlists, backoff, the boundary hint, the mic hand-over."""

from __future__ import annotations

import queue
import random
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from stream.sources.icy import IcyDemuxer, decode_metadata_text, parse_stream_title
from stream.sources.radio import ReconnectPolicy
from stream.sources.playlist import looks_like_playlist, parse_m3u, parse_playlist, parse_pls
from stream.smoothing import GenreSmoother, SmootherConfig
from stream.sources import MicrophoneSource, MonoResampler, SourceError, SourceGap, open_source
from tests.conftest import FREE_AUDIO, needs_shared
from tests.live_servers import icy_block


# -- ICY ----------------------------------------------------------------------------

def test_stream_title_utf8_latin1_and_quotes():
    assert parse_stream_title("StreamTitle='Björk – Jóga';StreamUrl='';".encode("utf-8")) == "Björk – Jóga"
    # Not valid UTF-8: SHOUTcast v1 and Icecast's default MP3 charset send Latin-1.
    assert parse_stream_title("StreamTitle='Café Ñandú';".encode("latin-1")) == "Café Ñandú"
    assert parse_stream_title(b"StreamTitle='Guns N' Roses';StreamUrl='http://x';\0\0\0") == "Guns N' Roses"
    assert parse_stream_title(b"StreamTitle='Rock';n'Roll';") == "Rock';n'Roll"
    assert parse_stream_title(b"StreamTitle='';") == ""
    assert parse_stream_title(b"StreamUrl='x';") is None
    assert decode_metadata_text(b"abc\0\0") == "abc"


def test_icy_demuxer_cuts_metadata_at_any_split():
    rng = np.random.default_rng(1)
    audio = rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    metaint = 1000
    wire = bytearray()
    titles = iter(["One", "Twö", None, "Three"])
    for i in range(0, len(audio), metaint):
        wire += audio[i : i + metaint]
        if i + metaint <= len(audio):
            title = next(titles, None)
            wire += icy_block(title) if title else b"\0"
    for chunk in (1, 7, 999, 1000, 1001, 4096, len(wire)):
        demuxer = IcyDemuxer(metaint)
        out, blocks = bytearray(), []
        for j in range(0, len(wire), chunk):
            a, b = demuxer.feed(bytes(wire[j : j + chunk]))
            out += a
            blocks += b
        assert bytes(out) == audio, chunk
        assert [parse_stream_title(b) for b in blocks] == ["One", "Twö", "Three"], chunk
        assert demuxer.audio_bytes == len(audio)


def test_icy_demuxer_without_metaint_passes_everything():
    assert IcyDemuxer(0).feed(b"\x01abc") == (b"\x01abc", [])


# -- playlists -----------------------------------------------------------------------

def test_pls_and_m3u_parsing():
    pls = ("[playlist]\nNumberOfEntries=3\nFile3=http://c.example/3\nFile1=http://a.example/live\nTitle1=A\n"
           "File2=relative.mp3\n")
    assert parse_pls(pls, "http://base.example/dir/list.pls") == [
        "http://a.example/live", "http://base.example/dir/relative.mp3", "http://c.example/3"]
    m3u = "#EXTM3U\n#EXTINF:-1,Station\nhttp://a.example/live\n\n  # comment\nbackup.aac\n"
    assert parse_m3u(m3u, "http://base.example/x.m3u") == ["http://a.example/live", "http://base.example/backup.aac"]
    assert parse_playlist(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg1.ts\n", "http://h/x.m3u8") == ("hls", [])
    assert parse_playlist(pls.encode(), "http://h/x.pls")[0] == "pls"
    assert parse_playlist("\ufeffhttp://h/é.mp3\n".encode("utf-8"), "http://h/x.m3u") == ("m3u", ["http://h/é.mp3"])


def test_playlist_detection_prefers_the_media_type_then_the_body():
    assert looks_like_playlist("http://h/live", "audio/x-scpls", b"")
    assert looks_like_playlist("http://h/live", "application/vnd.apple.mpegurl", b"#EXTM3U")
    assert not looks_like_playlist("http://h/live.m3u", "audio/mpeg", b"\xff\xfb\x90")  # audio wins
    assert looks_like_playlist("http://h/x", "application/octet-stream", b"[playlist]\nFile1=...")
    assert looks_like_playlist("http://h/x.m3u", "text/plain", b"http://h/live\n")
    assert not looks_like_playlist("http://h/x", "", b"OggS\x00\x02")


# -- reconnect policy --------------------------------------------------------------------

def test_backoff_doubles_to_a_bound_with_full_jitter():
    policy = ReconnectPolicy(initial_backoff_s=0.5, max_backoff_s=30.0)
    assert [policy.backoff_cap_s(k) for k in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.backoff_cap_s(10_000) == 30.0  # no overflow after days of failures
    rng = random.Random(7)
    waits = [policy.backoff_s(6, rng) for _ in range(2000)]
    assert 0.0 <= min(waits) and max(waits) <= 16.0
    assert 6.0 < float(np.mean(waits)) < 10.0  # uniform on [0, 16]: mean 8
    with pytest.raises(ValueError):
        ReconnectPolicy(max_backoff_s=0)


def test_open_source_passes_the_settings():
    source = open_source("http://radio.example/live", stall_timeout_s=4.0, max_backoff_s=8.0, max_reconnects=3,
                         reconnect_at_start=True)
    assert source.stall_timeout_s == 4.0 and not source.is_file
    assert source.policy == ReconnectPolicy(max_backoff_s=8.0, max_reconnects=3, reconnect_at_start=True)
    assert open_source("clip.ogg", loop=True).loop and open_source("clip.ogg").is_file
    assert open_source("mic:3", stall_timeout_s=2.0).device == 3


# -- the smoother's boundary hint ----------------------------------------------------------

def _first_change_time(hint_at: float | None) -> float:
    labels = ["jazz", "rock"]
    s = GenreSmoother(labels, SmootherConfig(average_windows=1, switch_margin=0.1, min_dwell_s=3, window_s=10))
    for t in range(10, 20):
        s.update([0.9, 0.1], float(t))
    assert s.genre == "jazz"
    if hint_at is not None:
        s.hint_boundary(hint_at)
    for t in range(20, 40):
        step = s.update([0.1, 0.9], float(t))
        if step.change is not None:
            assert (step.change.previous, step.change.genre) == ("jazz", "rock")
            return float(t)
    raise AssertionError("no change")


def test_a_title_change_shortens_the_dwell_but_never_changes_by_itself():
    assert _first_change_time(None) == 23.0  # challenger from 20 s, dwell 3 s
    assert _first_change_time(19.0) == 21.0  # near a new title: a third of the dwell
    assert _first_change_time(2.0) == 23.0  # an old hint is no hint
    labels = ["jazz", "rock"]
    s = GenreSmoother(labels, SmootherConfig(average_windows=1, min_dwell_s=3, window_s=10))
    for t in range(10, 20):
        s.update([0.9, 0.1], float(t))
    s.hint_boundary(19.5)
    steps = [s.update([0.85, 0.15], float(t)) for t in range(20, 30)]  # same genre after the title
    assert all(st.change is None and st.genre == "jazz" for st in steps)


# -- microphone hand-over with real audio blocks ------------------------------------------

def _real_stereo_48k(seconds: float) -> np.ndarray:
    import av

    with av.open(str(FREE_AUDIO / "jazz_kevin_macleod_vibe_ace.ogg")) as container:
        resampler = av.AudioResampler(format="flt", layout="stereo", rate=48000)
        parts = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1, 2))
            if sum(p.shape[0] for p in parts) >= seconds * 48000:
                break
    return np.concatenate(parts)[: int(seconds * 48000)]  # (frames, channels), like PortAudio's indata


@needs_shared
def test_microphone_callback_hands_real_audio_over_without_blocking():
    """PortAudio's side (a thread calling ``callback``) and the reader run at once, as with a device."""
    pcm = _real_stereo_48k(6.0)
    source = MicrophoneSource("mic:test", device=None, stall_timeout_s=1.0)
    source.native_rate, source.channels = 48000, 2
    block = 4800
    flags = SimpleNamespace(input_overflow=False)
    durations = []

    def portaudio() -> None:
        for i in range(0, pcm.shape[0], block):
            indata = pcm[i : i + block].copy()
            t = time.perf_counter()
            source.callback(indata, indata.shape[0], None, flags)
            durations.append(time.perf_counter() - t)
            indata[:] = 0  # PortAudio reuses its buffer: the source must have copied it
            time.sleep(0.01)

    feeder = threading.Thread(target=portaudio)
    feeder.start()
    got = np.concatenate(list(source.consume(22050)))  # ends after 1 s without input
    feeder.join()
    expected = MonoResampler(48000, 22050)(pcm.T)
    assert got.dtype == np.float32 and got.ndim == 1
    n = min(got.size, expected.size)
    assert n > 5.9 * 22050
    np.testing.assert_allclose(got[:n], expected[:n], atol=1e-5)
    assert source.stats.seconds_decoded == pytest.approx(6.0)
    assert source.stats.overflows == 0
    assert max(durations) < 0.01, "the audio callback must not wait"


def test_microphone_overflows_are_counted_and_the_callback_never_waits():
    source = MicrophoneSource("mic:test", queue_blocks=4)
    indata = np.zeros((480, 1), dtype=np.float32)
    t = time.perf_counter()
    for _ in range(10):
        source.callback(indata, 480, None, SimpleNamespace(input_overflow=False))
    assert time.perf_counter() - t < 0.05
    assert source.stats.overflows == 6  # the queue held 4
    source.callback(indata, 480, None, SimpleNamespace(input_overflow=True))
    assert source.stats.overflows == 8  # PortAudio's overflow flag, and the queue still full
    assert source._queue.qsize() == 4
    with pytest.raises(queue.Empty):
        for _ in range(5):
            source._queue.get_nowait()


# -- files: --loop ---------------------------------------------------------------------------

@needs_shared
def test_a_looping_file_continues_without_a_seam_and_can_be_closed():
    import av

    path = FREE_AUDIO / "jazz_solo_trumpet_loop.ogg"  # 5.3 s
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].sample_rate
        pcm = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    source = open_source(str(path), loop=True)
    got, n = [], 0
    for block in source.blocks(SR := 22050):
        got.append(block)
        n += block.size
        if n >= 12 * SR:
            source.close()
    y = np.concatenate(got)
    expected = MonoResampler(rate, SR)(np.concatenate([pcm, pcm, pcm], axis=1))
    assert y.size >= 12 * SR and source.loops >= 2
    np.testing.assert_allclose(y[: 12 * SR], expected[: 12 * SR], atol=1e-5)  # as if the file were 3x longer
    assert source.stats.seconds_decoded >= 12.0


def test_icy_demuxer_reports_where_each_title_was():
    demuxer = IcyDemuxer(4)
    audio, blocks = demuxer.feed_at(b"abcd" + icy_block("one") + b"efgh\x00ijkl" + icy_block("two") + b"mn")
    assert audio == b"abcdefghijklmn"
    assert [(pos, parse_stream_title(b)) for pos, b in blocks] == [(4, "one"), (12, "two")]


class _FakeSoundDevice:
    """Stands in for the sounddevice module: a device whose PortAudio thread calls back with real audio.

    The first opened stream stops calling back after ``hang_after`` blocks (a hung or unplugged device);
    later ones run on.
    """

    class PortAudioError(Exception):
        pass

    def __init__(self, pcm: np.ndarray, hang_after: int) -> None:
        self.pcm, self.hang_after, self.opened = pcm, hang_after, 0

    def query_devices(self, device=None, kind=None):
        if device == "missing":
            raise ValueError("No input device matching 'missing'")
        return {"name": "Fake Mic", "default_samplerate": 48000.0, "max_input_channels": 2}

    def InputStream(self, **kw):  # noqa: N802 - sounddevice's name
        fake = self
        fake.opened += 1
        limit = fake.hang_after if fake.opened == 1 else None

        class Stream:
            def __enter__(self):
                self.stop = threading.Event()
                self.thread = threading.Thread(target=self.run, daemon=True)
                self.thread.start()
                return self

            def run(self):
                block, i, n = kw["blocksize"], 0, 0
                while not self.stop.is_set() and (limit is None or n < limit):
                    indata = fake.pcm[i : i + block]
                    if indata.shape[0] < block:
                        i = 0
                        continue
                    kw["callback"](indata, block, None, SimpleNamespace(input_overflow=False))
                    i, n = i + block, n + 1
                    time.sleep(0.002)

            def __exit__(self, *exc):
                self.stop.set()
                self.thread.join()

        return Stream()


@needs_shared
def test_a_hung_microphone_is_reopened_and_the_gap_reported(monkeypatch):
    import sys

    fake = _FakeSoundDevice(_real_stereo_48k(3.0), hang_after=20)  # 20 blocks of 0.1 s, then silence
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    source = open_source("mic:Fake", stall_timeout_s=0.5, max_backoff_s=0.2)
    items, after_gap = [], 0
    t0 = time.monotonic()
    for item in source.blocks(22050):
        if isinstance(item, np.ndarray):
            if any(isinstance(i, SourceGap) for i in items):
                after_gap += item.size
                if after_gap >= 22050:
                    source.close()
        else:
            items.append(item)
        assert time.monotonic() - t0 < 20, items
    kinds = [(type(i).__name__, getattr(i, "state", "")) for i in items]
    assert kinds[:3] == [("SourceStatus", "reconnecting"), ("SourceGap", ""), ("SourceStatus", "playing")], kinds
    assert "stalled: no input for 0.5 s" in items[0].detail
    assert items[1].duration_s >= 0.5
    assert fake.opened == 2 and source.stats.reconnects == 1 and source.stats.seconds_decoded > 3.0
    assert (source.native_rate, source.channels) == (48000, 2)

    with pytest.raises(SourceError, match="unknown input device 'missing'"):
        list(open_source("mic:missing").blocks(22050))
