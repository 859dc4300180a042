"""Each log-mel frame through musicnn's timbral front end once, however many windows hold it.

A model split by ``genrestream export`` (:mod:`export.split`) comes as two
ONNX files beside the whole one: a *frame stage* (``logmel`` [batch, frames,
96] → ``timbral`` [batch, frames, 408], the timbral convolutions with their
3 frames of context each side) and a *window stage* (``logmel`` and
``timbral`` of one window → every head). The whole model recomputes the frame
stage on all 187 frames of every window, though a window shares 124 of them
with the previous one at the default hop of 63 frames.

:class:`FrameStageRunner` keeps, per stream, the frame-stage output of its
last window. For the next window (ending exactly one hop later, a shift of
``h`` frames) it reuses frames ``c .. 187 - c - h`` (``c`` = 3, the context)
from there, and runs the frame stage only on

- the window's last ``h + 2c`` frames, which give its new frames and its
  right edge (zero-padded, as inside the whole model), and
- its first ``2c`` frames, which give its left edge.

A frame away from a window's edges depends only on the 7 frames around it,
which are the same in both windows, so the reused values are the ones the
whole model computes: the result equals the whole model's up to float
rounding (:func:`export.split.split_model` checks it at export; the tests
compare decisions over real audio). The first window of a stream, and any
window that does not follow the previous one by one hop (after a gap, a
reset, a changed hop), is computed in full.

Cost (one core, ``benchmarks/streams.py``): the frame stage runs on 75 frames
of a window instead of 187; state: 187 x 408 float32 (305 kB) per stream.
"""

from __future__ import annotations

import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

FRAME_OUTPUT = "timbral"
"""The frame stage's output and the window stage's second input."""

FRAMES_SUFFIX = ".frames.onnx"
WINDOWS_SUFFIX = ".windows.onnx"


def stage_paths(model_path) -> tuple[Path, Path]:
    """The frame-stage and window-stage files that belong beside a model file (``x.onnx`` → ``x.frames.onnx``,
    ``x.windows.onnx``)."""
    model_path = Path(model_path)
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.name
    return model_path.with_name(stem + FRAMES_SUFFIX), model_path.with_name(stem + WINDOWS_SUFFIX)


@dataclass
class _Cached:
    end_sample: int
    timbral: np.ndarray  # [window_frames, channels], float32


class FrameStageRunner:
    """Runs a split model over windows of many streams, each frame's front end once.

    Parameters
    ----------
    frames_session, windows_session : onnxruntime.InferenceSession
        The two stages (:mod:`export.split`).
    input_name : str
        The log-mel input of both stages (``"logmel"``).
    output_names : sequence of str
        The window stage's outputs to return, in order.
    frame_hop_length : int
        Samples per log-mel frame (256): turns a hop in samples into frames.

    Raises
    ------
    ValueError
        If the stages' metadata do not give the context, or the stages'
        inputs and outputs are not as :mod:`export.split` writes them.
    """

    def __init__(self, frames_session, windows_session, input_name: str, output_names: Sequence[str],
                 frame_hop_length: int) -> None:
        meta = frames_session.get_modelmeta().custom_metadata_map
        try:
            self.context = int(meta["context_frames"])
            self.channels = int(meta["timbral_channels"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"frame stage: metadata context_frames and timbral_channels expected ({exc})") from exc
        inputs = {i.name: i for i in windows_session.get_inputs()}
        if set(inputs) != {input_name, FRAME_OUTPUT}:
            raise ValueError(f"window stage: inputs {sorted(inputs)}, expected {input_name!r} and {FRAME_OUTPUT!r}")
        self.window_frames = int(inputs[input_name].shape[1])
        self.frames_session = frames_session
        self.windows_session = windows_session
        self.input_name = input_name
        self.output_names = list(output_names)
        self.frame_hop_length = int(frame_hop_length)
        self._cache: dict[Hashable, _Cached] = {}
        self._forget: list[Hashable] = []
        self._lock = threading.Lock()
        self.frames_computed = 0  # frame-stage frames run, for the benchmark's accounting
        self.frames_reused = 0

    @property
    def nbytes_per_stream(self) -> int:
        """Bytes of state a stream keeps here (its last window's frame-stage output)."""
        return self.window_frames * self.channels * 4

    def forget(self, key: Hashable) -> None:
        """Drop a stream's state (thread-safe; done before the next :meth:`run`)."""
        with self._lock:
            self._forget.append(key)

    def _frames(self, x: np.ndarray) -> np.ndarray:
        self.frames_computed += x.shape[0] * x.shape[1]
        return self.frames_session.run([FRAME_OUTPUT], {self.input_name: x})[0]

    def run(self, x: np.ndarray, keys: Sequence[Hashable | None], end_samples: Sequence[int | None]
            ) -> list[np.ndarray]:
        """The window stage's outputs for a batch of windows.

        Parameters
        ----------
        x : np.ndarray [shape=(batch, window_frames, n_mels), dtype=float32]
            Log-mel windows.
        keys : sequence of hashable or None, length batch
            The stream of each window (None: no reuse, no state kept). At most
            one window per stream in a batch is reused from the cache; a
            second one of the same stream is computed in full.
        end_samples : sequence of int or None, length batch
            The sample at which each window ends, in its stream's frame grid.

        Returns
        -------
        list of np.ndarray
            One per output name, each [batch, ...].
        """
        with self._lock:
            for key in self._forget:
                self._cache.pop(key, None)
            self._forget.clear()
        W, c = self.window_frames, self.context
        timbral = np.empty((x.shape[0], W, self.channels), dtype=np.float32)
        reuse: list[tuple[int, int, _Cached]] = []  # (row, shift in frames, cached)
        full: list[int] = []
        seen: set = set()
        for row, (key, end) in enumerate(zip(keys, end_samples)):
            cached = self._cache.get(key) if key is not None and key not in seen else None
            shift = None
            if cached is not None and end is not None:
                step = end - cached.end_sample
                if step > 0 and step % self.frame_hop_length == 0 and step // self.frame_hop_length <= W - 2 * c - 1:
                    shift = step // self.frame_hop_length
            if shift is None:
                full.append(row)
            else:
                reuse.append((row, shift, cached))
            if key is not None:
                seen.add(key)
        if full:
            timbral[full] = self._frames(x[full])
        by_shift: dict[int, list[tuple[int, _Cached]]] = {}
        for row, shift, cached in reuse:
            by_shift.setdefault(shift, []).append((row, cached))
        for shift, rows in by_shift.items():
            index = [row for row, _ in rows]
            tail = self._frames(np.ascontiguousarray(x[index, W - shift - 2 * c:]))  # [n, shift + 2c, C]
            head = self._frames(np.ascontiguousarray(x[index, : 2 * c]))  # [n, 2c, C]
            for i, (row, cached) in enumerate(rows):
                out = timbral[row]
                out[:c] = head[i, :c]
                out[c: W - c - shift] = cached.timbral[c + shift: W - c]
                out[W - c - shift:] = tail[i, c:]
                self.frames_reused += W - 2 * c - shift
        outputs = self.windows_session.run(self.output_names, {self.input_name: x, FRAME_OUTPUT: timbral})
        for row, (key, end) in enumerate(zip(keys, end_samples)):
            if key is None or end is None:
                continue
            entry = self._cache.get(key)
            if entry is None:
                self._cache[key] = _Cached(int(end), timbral[row].copy())
            else:  # the buffer is the stream's for good: no allocation per window
                entry.end_sample = int(end)
                entry.timbral[...] = timbral[row]
        return outputs
