"""A real Icecast 2 server, killed and restarted mid-stream, with a second stream beside it.

Debian's icecast2 runs on a free loopback port with a config written to a
temporary folder; ffmpeg is the station's source client (a ../shared clip,
looped, MP3 at 128 kbit/s, in real time); titles are set through Icecast's
admin API as a station's automation does. ``genrestream run`` (the real
console script) plays the mount and, beside it, a file with ``--realtime
--loop`` standing in for a second station.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import FREE_AUDIO, REPO, genrestream_cmd, needs_shared
from tests.live_servers import FFMPEG, ICECAST, Icecast, stand_in_model

pytestmark = [
    needs_shared,
    pytest.mark.skipif(ICECAST is None, reason="icecast2 not installed (scripts/setup.sh test installs it)"),
    pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg CLI is the source client (scripts/setup.sh test installs it)"),
]

STATION = FREE_AUDIO / "jazz_kevin_macleod_vibe_ace.ogg"
SECOND = FREE_AUDIO / "jazz_solo_trumpet_loop.ogg"  # 5.3 s, looped
HOP_S = 5.0


class Events:
    """The CLI's JSON lines, with the time (monotonic) each arrived."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.items: list[tuple[float, dict]] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.items.append((time.monotonic(), json.loads(line)))

    def of(self, stream: str, kind: str | None = None) -> list[tuple[float, dict]]:
        return [(t, e) for t, e in list(self.items) if e["stream"] == stream and (kind is None or e["type"] == kind)]

    def wait(self, predicate, timeout_s: float, what: str, proc: subprocess.Popen):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = predicate(self)
            if found:
                return found
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        statuses = [(e["stream"], e["state"], e["detail"]) for _, e in self.items if e["type"] == "status"]
        raise AssertionError(f"timed out waiting for {what}; statuses: {statuses}")


def test_icecast_killed_and_restarted_mid_stream(tmp_path):
    ice = Icecast()
    feeder = proc = None
    try:
        ice.start()
        feeder = ice.source_client(STATION)
        deadline = time.monotonic() + 30
        while not ice.mount_ready():
            if time.monotonic() > deadline or feeder.poll() is not None:
                feeder.kill()
                raise AssertionError(f"the source client did not reach icecast: {feeder.stderr.read()[-2000:]!r}; "
                                     f"icecast's log: {ice.error_log()[-2000:]}")
            time.sleep(0.2)
        ice.set_title("Première partie")
        url = f"http://127.0.0.1:{ice.port}/live.mp3"
        proc = subprocess.Popen(
            genrestream_cmd("run", url, str(SECOND), "--name", "radio", "--name", "loop", "--realtime", "--loop",
                            "--jsonl", "--no-server", "--hop-s", str(HOP_S), "--stall-timeout-s", "5",
                            "--max-backoff-s", "2", "--model", str(stand_in_model(tmp_path / "m.onnx"))),
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        events = Events(proc)
        events.wait(lambda ev: ev.of("radio", "prediction") and ev.of("loop", "prediction"), 60,
                    "first predictions of both streams", proc)
        ice.set_title("Deuxième partie, été")
        events.wait(lambda ev: any(e["title"] == "Deuxième partie, été" for _, e in ev.of("radio", "metadata")), 20,
                    "the new title", proc)

        # The server dies (and with it the source client's connection), and comes back 3 s later.
        killed_at = time.monotonic()
        ice.kill()
        feeder.wait(timeout=20)
        time.sleep(max(0.0, killed_at + 3.0 - time.monotonic()))
        ice.start()
        feeder = ice.source_client(STATION)
        while not ice.mount_ready():
            assert time.monotonic() < killed_at + 40, "icecast did not come back"
            time.sleep(0.05)
        back_at = time.monotonic()
        ice.set_title("Après la coupure")

        def resumed(ev: Events):
            gaps = [e for _, e in ev.of("radio", "status") if "gap_s" in e]
            if not gaps:
                return None
            after = [e for _, e in ev.of("radio", "prediction") if e["stream_time_s"] > gaps[0]["gap_start_s"]]
            titles = [e["title"] for _, e in ev.of("radio", "metadata")]
            return (gaps[0], after) if after and "Après la coupure" in titles else None

        gap, after = events.wait(resumed, 60, "predictions after the reconnect", proc)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        stderr = proc.stderr.read()
    finally:
        for p in (proc, feeder):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        ice.close()
    assert rc == 0, stderr
    assert "Traceback" not in stderr

    # -- the Icecast stream: drop, reconnecting, gap, playing, classified again -----------------------
    radio_status = [(t, e) for t, e in events.of("radio", "status")]
    states = [e["state"] for _, e in radio_status]
    assert states[:2] == ["connecting", "playing"] and states[-1] == "ended", states
    first_drop = states.index("reconnecting")
    assert all(s in ("reconnecting", "playing") for s in states[first_drop:-1]), states
    reconnected_t, reconnected = next((t, e) for t, e in radio_status if e["state"] == "playing" and t > back_at)
    assert "reconnected after a gap" in reconnected["detail"]
    seconds_to_reconnect = reconnected_t - back_at
    print(f"\nreconnect: playing again {seconds_to_reconnect:.2f} s after icecast was back "
          f"(outage {back_at - killed_at:.1f} s, reported gap {gap['gap_s']:.1f} s)")
    assert seconds_to_reconnect < 2.0 + 5.0  # at most one backoff wait (<= 2 s) and a connection
    assert gap["gap_s"] >= 3.0 and gap["gap_s"] < back_at - killed_at + 10.0
    assert reconnected["stats"]["reconnects"] >= 1 and reconnected["stats"]["last_error"]
    gap_end = gap["gap_start_s"] + gap["gap_s"]
    assert after[0]["stream_time_s"] == pytest.approx(gap_end + 10.0, abs=0.01)
    assert after[0]["smoothed"] == "unknown"  # the smoother restarted after the gap
    titles = [e["title"] for _, e in events.of("radio", "metadata")]
    assert titles[:2] == ["Première partie", "Deuxième partie, été"] and titles[-1] == "Après la coupure", titles
    assert after[-1]["title"] == "Après la coupure" or after[0]["title"] in titles

    # -- the second stream: undisturbed throughout ---------------------------------------------------
    loop_status = [e["state"] for _, e in events.of("loop", "status")]
    assert loop_status == ["connecting", "playing", "ended"], loop_status
    loop_predictions = events.of("loop", "prediction")
    times = [e["stream_time_s"] for _, e in loop_predictions]
    assert times == [10.0 + HOP_S * i for i in range(len(times))], times
    during = [t for t, _ in loop_predictions if killed_at - HOP_S <= t <= back_at + 10]
    assert len(during) >= 2, "the second stream went quiet while icecast was down"
    arrivals = [t for t, _ in loop_predictions]
    assert max(b - a for a, b in zip(arrivals, arrivals[1:])) < 3 * HOP_S, "the second stream stalled"
    # --realtime: the file is played at playback speed, never ahead of the clock (a 5.3 s file gave
    # windows for as long as the test ran).
    started = next(t for t, e in events.of("loop", "status") if e["state"] == "playing")
    assert all(t - started >= e["stream_time_s"] - 1.0 for t, e in loop_predictions)
    assert times[-1] >= 15.0  # the 5.3 s file looped at least three times (how far depends on the test's pace)
