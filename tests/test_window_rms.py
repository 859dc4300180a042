"""WindowRMS (the silence measure of every frontend) against the RMS computed directly, whatever the blocks."""

from __future__ import annotations

import numpy as np
import pytest

from stream.frontends.windowing import WindowRMS
from tests.conftest import FREE_AUDIO, needs_shared


def _blocks(x: np.ndarray, sizes: list[int]):
    pos = 0
    for size in sizes:
        yield x[pos:pos + size]
        pos += size
    yield x[pos:]


@pytest.mark.parametrize("sizes", [[16000] * 9, [1, 255, 256, 257, 4000, 1], list(range(1, 700, 37)), [48128, 16128]])
def test_rms_equals_the_windows_own(sizes):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(200_000) * np.linspace(0.01, 1.0, 200_000)).astype(np.float32)
    window = 48128
    rms = WindowRMS(window)
    seen = 0
    for block in _blocks(x, sizes * 20):
        rms.push(block)
        seen += block.shape[0]
        # the window ending at the latest sample, and one ending on the grid a little earlier
        for end in (seen, seen - seen % 256 - 512):
            if end < 1:
                continue
            expected = float(np.sqrt(np.mean(np.square(x[max(0, end - window):end], dtype=np.float64))))
            got = rms.rms(end)
            start = max(0, end - window)
            if start % 256 == 0:  # exact when the window starts on the grid
                assert got == pytest.approx(expected, rel=1e-6), (end, got, expected)
            else:  # else the window starts on the grid point before its start (up to 255 samples more)
                wider = float(np.sqrt(np.sum(np.square(x[start - start % 256:end], dtype=np.float64)) / (end - start + start % 256)))
                assert got == pytest.approx(wider, rel=1e-6), (end, got, wider)
        if seen >= x.shape[0]:
            break


@needs_shared
def test_rms_of_real_audio_in_blocks_of_any_size():
    from stream.sources import AVSource

    y = np.concatenate([b for b in AVSource(str(FREE_AUDIO / "nature_robin_whistle.ogg")).blocks(16000)
                        if isinstance(b, np.ndarray)])
    one, many = WindowRMS(48128), WindowRMS(48128)
    one.push(y)
    for block in _blocks(y, [511, 13, 16128, 3] * 100):
        many.push(block)
    assert many.rms(len(y)) == pytest.approx(one.rms(len(y)), rel=1e-9)
    assert one.rms(len(y)) == pytest.approx(float(np.sqrt(np.mean(np.square(y[-48128:], dtype=np.float64)))), rel=1e-6)
