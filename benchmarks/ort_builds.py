"""The split musicnn model on the CPU under whichever ONNX Runtime build runs this script.

Usage: run it with two interpreters, one with ``onnxruntime-gpu`` (genrestream's dependency on
x86_64 Linux) and one with the CPU-only ``onnxruntime`` wheel of the same version, and compare::

    .venv/bin/python benchmarks/ort_builds.py --core 1
    python3 -m venv /tmp/ortcpu && /tmp/ortcpu/bin/pip install numpy "onnxruntime==$(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')"
    /tmp/ortcpu/bin/python benchmarks/ort_builds.py --core 1

Needs only numpy and onnxruntime (it reads the stage files from ``stream/models/``, importing nothing of
genrestream): on a machine without a GPU, onnxruntime-gpu falls back to its CPU provider, which must be
as fast as the CPU-only build's. Prints CPU-ms per window (the frame stage on a hop's 69 frames, then the
window stage, one thread) and a calibration (a fixed FFT workload) to tell a slower moment of the core.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODELS = Path(__file__).resolve().parents[1] / "stream" / "models"


def session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cpu_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--model", default="musicnn_msd", help="stem of the stage files in stream/models/")
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    rng = np.random.default_rng(0)
    x = np.log10(1 + 10000 * rng.random((1, 187, 96)).astype(np.float32) ** 3).astype(np.float32)
    frames, windows = session(MODELS / f"{args.model}.frames.onnx"), session(MODELS / f"{args.model}.windows.onnx")
    outputs = [o.name for o in windows.get_outputs()]
    timbral = frames.run(None, {"logmel": x})[0]
    noise = rng.standard_normal((431, 2048)).astype(np.float32)
    calibration = cpu_ms(lambda: np.abs(np.fft.rfft(noise, axis=1)), 10)
    split = cpu_ms(lambda: (frames.run(None, {"logmel": x[:, -69:]}), windows.run(outputs, {"logmel": x, "timbral": timbral})),
                   args.repeats)
    print(f"onnxruntime {ort.__version__} ({ort.get_device()} build; providers {ort.get_available_providers()}), "
          f"CPUExecutionProvider: {split:.2f} CPU-ms per window of {args.model}; calibration {calibration:.2f} CPU-ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
