"""Where a musicnn window's time goes: the whole model against its split stages, node by node.

Usage (from the repository)::

    .venv/bin/python benchmarks/model_stages.py                  # both shipped musicnn models, cpu 0
    .venv/bin/python benchmarks/model_stages.py --core 1 --batches 1,2,8 --repeats 60
    .venv/bin/python benchmarks/model_stages.py --old-stages REV  # also the stages of a git revision

For each shipped musicnn model (``musicnn-msd``, ``musicnn-msd-int8``), on one pinned core with one
ONNX Runtime thread (as the engine's inference workers run it), in one process:

- the whole model on one window (the plain one-patch-per-hop way): CPU-ms per window;
- the split model as the engine runs it for a window that follows its stream's previous one
  (:class:`stream.framestage.FrameStageRunner`): the frame stage on the hop's 63 frames plus 6 of
  context, then the window stage; CPU-ms per window and the ratio to the whole model;
- both at batches of ``--batches`` windows (CPU-ms per window, and the RSS the process reaches: ONNX
  Runtime's arena keeps what its largest batch needed);
- ONNX Runtime's profiler on the stages at batch 1: the nodes that take the time;
- the memory one inference worker's sessions keep (RSS of a fresh process after loading the stages,
  and after running them at each batch size: ONNX Runtime's arena keeps what its largest batch needed).

``--old-stages REV`` adds the frame and window stages of a git revision (say, before a change to
``export/split.py``) for the same comparison in the same process. A calibration (a fixed FFT workload)
before and after says how fast the core was: on a shared virtual machine the same work takes up to
twice the CPU time at some moments than at others, so compare within one run.

Inputs are real log-mel windows of ``../shared/audio/free`` (``GENRESTREAM_SHARED``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GENRESTREAM_DEVICE", "cpu")

import numpy as np  # noqa: E402

HOP_FRAMES = 63  # the default hop, 1.008 s
CONTEXT = 3  # the timbral convolutions' context each side (stream.framestage)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def session(path_or_bytes, profile: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def cpu_ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1000


def calibrate_ms() -> float:
    x = np.random.default_rng(0).standard_normal((431, 2048)).astype(np.float32)
    start = time.process_time()
    for _ in range(30):
        np.abs(np.fft.rfft(x, axis=1))
    return (time.process_time() - start) * 1000


def real_windows(n: int) -> np.ndarray:
    from stream.model import GenreModel
    from stream.sources import AVSource

    shared = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared"))
    files = sorted((shared / "audio" / "free").glob("*.ogg"))
    if not files:
        sys.exit(f"no audio in {shared / 'audio' / 'free'} (set GENRESTREAM_SHARED)")
    frontend = GenreModel("musicnn-msd", frame_stage=False).frontend
    out = []
    for f in files:
        y = np.concatenate([b for b in AVSource(str(f)).blocks(16000) if isinstance(b, np.ndarray)])
        for start in range(0, len(y) - 48128, 48128 * 3):
            out.append(frontend.window_input(y[start:start + 48128]))
            if len(out) == n:
                return np.stack(out).astype(np.float32)
    return np.stack(out).astype(np.float32)


def node_profile(frames_path, windows_path, x: np.ndarray, runs: int = 30) -> list[tuple[str, str, float]]:
    """(stage, node, ms per window) of the top nodes, ONNX Runtime's profiler, batch 1."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage, path in (("frames", frames_path), ("windows", windows_path)):
            s = session(path, profile=os.path.join(tmp, stage))
            timbral = session(frames_path).run(None, {"logmel": x[:1]})[0]
            feeds = ({"logmel": x[:1, -(HOP_FRAMES + 2 * CONTEXT):]} if stage == "frames"
                     else {"logmel": x[:1], "timbral": timbral})
            for _ in range(runs):
                s.run(None, feeds)
            totals: collections.Counter = collections.Counter()
            for event in json.load(open(s.end_profiling())):
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    totals[(event["args"].get("op_name", "?"), event["name"][: -len("_kernel_time")])] += event["dur"]
            rows += [(stage, f"{op} {name}", us / runs / 1000) for (op, name), us in totals.items()]
    return rows


def measure(label: str, whole_path, frames_path, windows_path, x: np.ndarray, batches, repeats: int) -> dict:
    whole = session(whole_path)
    frames, windows = session(frames_path), session(windows_path)
    outputs = [o.name for o in windows.get_outputs()]
    tail = HOP_FRAMES + 2 * CONTEXT
    result = {"label": label, "batches": {}}
    for b in batches:
        xb = x[:b]
        timbral = frames.run(None, {"logmel": xb})[0]
        n = max(5, repeats // b)
        w = cpu_ms(lambda: whole.run(None, {"logmel": xb}), n) / b
        f = cpu_ms(lambda: frames.run(None, {"logmel": np.ascontiguousarray(xb[:, -tail:])}), n) / b
        s = cpu_ms(lambda: windows.run(outputs, {"logmel": xb, "timbral": timbral}), n) / b
        result["batches"][b] = {"whole_ms": w, "frames_ms": f, "windows_ms": s, "split_ms": f + s}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--batches", default="1,2,8")
    p.add_argument("--repeats", type=int, default=40, help="calls timed per figure at batch 1")
    p.add_argument("--models", default="musicnn-msd,musicnn-msd-int8")
    p.add_argument("--old-stages", metavar="REV", help="also the stages a git revision shipped")
    p.add_argument("--json", type=Path)
    p.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    if args.memory_probe:
        return memory_probe(*args.memory_probe)
    from stream.framestage import stage_paths
    from stream.model import shipped_model_path

    batches = [int(b) for b in args.batches.split(",")]
    x = real_windows(max(batches))
    cal0 = calibrate_ms()
    print(f"# musicnn stages, one thread on cpu {args.core}; calibration {cal0:.0f} CPU-ms; "
          f"{len(x)} real log-mel windows; git {git_rev()}")
    results, temp = [], tempfile.TemporaryDirectory()
    for name in args.models.split(","):
        whole = shipped_model_path(name)
        frames, windows = stage_paths(whole)
        runs = [(name, frames, windows)]
        if args.old_stages:
            old = []
            for path in (frames, windows):
                data = subprocess.run(["git", "show", f"{args.old_stages}:{path.relative_to(REPO)}"], cwd=REPO,
                                      capture_output=True, check=True).stdout
                target = Path(temp.name, f"{args.old_stages}-{path.name}")
                target.write_bytes(data)
                old.append(target)
            runs.insert(0, (f"{name} @ {args.old_stages}", *old))
        for label, f, w in runs:
            results.append(measure(label, whole, f, w, x, batches, args.repeats))
    cal1 = calibrate_ms()
    print(f"calibration after: {cal1:.0f} CPU-ms\n")
    print("| model (split as) | batch | whole model, CPU-ms per window | frame stage (69 frames) | window stage | "
          "split, CPU-ms per window | whole / split |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for b, m in r["batches"].items():
            print(f"| {r['label']} | {b} | {m['whole_ms']:.2f} | {m['frames_ms']:.2f} | {m['windows_ms']:.2f} | "
                  f"{m['split_ms']:.2f} | ×{m['whole_ms'] / m['split_ms']:.2f} |")
    for name in args.models.split(","):
        frames, windows = stage_paths(shipped_model_path(name))
        rows = node_profile(frames, windows, x)
        total = sum(ms for _, _, ms in rows)
        print(f"\n{name}: ONNX Runtime's profiler, batch 1, {total:.2f} ms of kernels per window; the top nodes:")
        for stage, node, ms in sorted(rows, key=lambda r: -r[2])[:12]:
            print(f"  {stage:8s} {node:60s} {ms:6.2f} ms  {100 * ms / total:4.1f} %")
    memory = {}
    print("\nmemory of one inference worker's split sessions (fresh process per row): RSS after loading → after "
          "20 runs at the batch")
    for name in args.models.split(","):
        for b in batches:
            out = subprocess.run([sys.executable, __file__, "--core", str(args.core), "--memory-probe", name, str(b)],
                                 capture_output=True, text=True, check=True).stdout
            memory[f"{name}@{b}"] = probe = json.loads(out.strip().splitlines()[-1])
            print(f"  {name:18s} batch {b}: +{probe['loaded_mib']:.0f} MiB → +{probe['ran_mib']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"calibration_ms": [cal0, cal1], "results": results, "memory": memory}, indent=1))
    return 0


def memory_probe(name: str, batch: str) -> int:
    """Print the RSS growth (MiB) of loading a model's stages and of running them at a batch size (JSON)."""
    from stream.framestage import stage_paths
    from stream.model import shipped_model_path

    base = rss_mib()
    frames_path, windows_path = stage_paths(shipped_model_path(name))
    frames, windows = session(frames_path), session(windows_path)
    outputs = [o.name for o in windows.get_outputs()]
    loaded = rss_mib()
    x = np.random.default_rng(0).random((int(batch), 187, 96)).astype(np.float32)
    timbral = frames.run(None, {"logmel": x})[0]
    for _ in range(20):
        frames.run(None, {"logmel": x[:, -(HOP_FRAMES + 2 * CONTEXT):]})
        windows.run(outputs, {"logmel": x, "timbral": timbral})
    print(json.dumps({"loaded_mib": loaded - base, "ran_mib": rss_mib() - base}))
    return 0


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
