"""The microphone path through a real (virtual) sound device.

A private PulseAudio server (Debian's pulseaudio, started by the test with its
own runtime folder) gets a null sink; ``paplay`` plays a ../shared clip into
it, and its monitor is recorded by sounddevice through PortAudio's ALSA
backend and the ALSA ``pulse`` plugin (libasound2-plugins): the device is
``pulse``. Without those packages the test is skipped; the callback
hand-over itself is also tested with real audio blocks, without a device, in
tests/test_live_units.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import FREE_AUDIO, REPO, genrestream_cmd, needs_shared
from tests.live_servers import stand_in_model

PULSEAUDIO, PACTL, PAPLAY = (shutil.which(n) for n in ("pulseaudio", "pactl", "paplay"))
ALSA_PULSE = any(Path(d, "libasound_module_pcm_pulse.so").exists()
                 for d in ("/usr/lib/x86_64-linux-gnu/alsa-lib", "/usr/lib/aarch64-linux-gnu/alsa-lib",
                           "/usr/lib/alsa-lib", "/usr/lib64/alsa-lib"))

pytestmark = [
    needs_shared,
    pytest.mark.skipif(not (PULSEAUDIO and PACTL and PAPLAY and ALSA_PULSE),
                       reason="needs pulseaudio, pulseaudio-utils and libasound2-plugins (scripts/setup.sh test)"),
]

MUSIC = FREE_AUDIO / "metal_el_senator_armygeddon.ogg"


@pytest.fixture
def pulse():
    """A private PulseAudio with a null sink ``gs_null``; yields the environment its clients need."""
    folder = Path(tempfile.mkdtemp(prefix="gs-pulse-"))  # short: unix socket paths are limited
    env = dict(os.environ, XDG_RUNTIME_DIR=str(folder / "run"), HOME=str(folder / "home"),
               PULSE_SERVER=f"unix:{folder / 'run' / 'pulse' / 'native'}")
    for sub in ("run", "home"):
        (folder / sub).mkdir(mode=0o700)
    proc = subprocess.Popen(
        [PULSEAUDIO, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes",
         "-L", "module-native-protocol-unix", "-L", "module-null-sink sink_name=gs_null rate=44100",
         "--log-target=stderr", "--log-level=error"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while subprocess.run([PACTL, "info"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pulseaudio did not start: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield env
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


RECORD = """
import sys, numpy as np
from stream.sources import open_source, SourceStatus
source = open_source(sys.argv[1], stall_timeout_s=5)
got, n = [], 0
for item in source.blocks(22050):
    if isinstance(item, np.ndarray):
        got.append(item); n += item.size
        if n >= 2.0 * 22050:
            break
source.close()
y = np.concatenate(got)[int(0.5 * 22050):]
print(f"{float(np.sqrt(np.mean(y ** 2))):.6f} {source.native_rate} {source.channels} {source.stats.seconds_decoded:.2f}")
"""


def _record_rms(env: dict) -> tuple[float, int, int, float]:
    out = subprocess.run([sys.executable, "-c", RECORD, "mic:pulse"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rms, rate, channels, decoded = out.stdout.split()
    return float(rms), int(rate), int(channels), float(decoded)


def test_microphone_records_a_virtual_device(pulse, tmp_path):
    listing = subprocess.run(genrestream_cmd("devices"), env=pulse, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "pulse" in listing.stdout and "44100 Hz" in listing.stdout, listing

    quiet, rate, channels, decoded = _record_rms(pulse)  # nothing plays into the sink: silence
    assert quiet < 1e-4 and rate == 44100 and channels == 2 and decoded >= 2.0
    player = subprocess.Popen([PAPLAY, "--device=gs_null", str(MUSIC)], env=pulse)
    run = None
    try:
        loud, *_ = _record_rms(pulse)
        assert loud > 0.02, "the monitor of the null sink did not carry the music"

        # The whole path: `genrestream run mic:pulse` classifies what is being played.
        run = subprocess.Popen(
            genrestream_cmd("run", "mic:pulse", "--jsonl", "--no-server", "--hop-s", "5",
                            "--model", str(stand_in_model(tmp_path / "m.onnx"))),
            env=pulse, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        events = []
        deadline = time.monotonic() + 50
        for line in run.stdout:
            events.append(json.loads(line))
            if sum(e["type"] == "prediction" for e in events) >= 2 or time.monotonic() > deadline:
                break
        run.send_signal(signal.SIGINT)
        rest, stderr = run.communicate(timeout=30)
        events += [json.loads(line) for line in rest.splitlines()]
    finally:
        player.kill()
        player.wait()
        if run is not None and run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr
    states = [e["state"] for e in events if e["type"] == "status"]
    assert states[:2] == ["connecting", "playing"] and states[-1] == "ended", states
    predictions = [e for e in events if e["type"] == "prediction"]
    assert [p["stream_time_s"] for p in predictions[:2]] == [10.0, 15.0]
    assert not any(p.get("silent") for p in predictions[:2]), "the recorded music was classified as silence"
    final = [e for e in events if e["type"] == "status"][-1]["stats"]
    assert final["seconds_decoded"] >= 15.0 and final["overflows"] >= 0
    assert "recording 'pulse' at 44100 Hz, 2 channel(s)" in stderr
