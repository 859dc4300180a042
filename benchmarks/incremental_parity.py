"""Parity of the incremental features with the batch feature function, and what the model makes of it.

For every audio file of ``../shared`` (``audio/free/*.ogg``, ``audio/gtzan-parity/*.wav``),
decoded and resampled as the engine does (channel mean, then ``soxr`` HQ to 22050 Hz),
the windows the engine classifies (10 s, ending every hop) are computed twice:
with :func:`stream.frontends.gtzan.gtzan_features` on each window (batch), and with
:class:`stream.frontends.gtzan_incremental.IncrementalFeatures` fed the whole file in blocks.

Reported:

* per feature, the relative difference ``|inc - batch| / |batch|`` (median, p95,
  max over windows), and the difference in units of the feature's standard
  deviation over the training table ``features_10_sec.csv`` (what a standardising
  model sees; the relative difference of a mean close to zero says nothing);
* the tempo: share of windows with the same BPM, and the differences otherwise;
* if the shipped model ``stream/models/gtzan_mlp.onnx`` exists: its probabilities
  with batch and with incremental features on the same windows (max and mean
  absolute difference, argmax agreement), and its accuracy on the windows of the
  ten GTZAN parity clips (labels from the file names) with each.

Usage::

    .venv/bin/python benchmarks/incremental_parity.py [--hop-s 1.0] [--stride 1]
        [--cache DIR] [--json OUT] [--exact-chroma] [--workers N] [--model PATH]

``--cache DIR`` keeps the batch features (about a second of CPU per window)
between runs. The first run compiles the numba kernels (a few seconds, cached).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.frontends.gtzan import FEATURE_NAMES, SAMPLE_RATE, gtzan_features  # noqa: E402
from stream.frontends.gtzan_incremental import IncrementalFeatures  # noqa: E402

SHARED = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared")).resolve()
WINDOW = 220500


def load(path: Path) -> np.ndarray:
    """Mono float32 at 22050 Hz: channel mean, then soxr HQ (as ``librosa.load(sr=22050)``)."""
    import soundfile
    import soxr

    y, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = soxr.resample(y, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(y, dtype=np.float32)


def audio_files() -> list[Path]:
    return sorted((SHARED / "audio" / "gtzan-parity").glob("*.wav")) + sorted((SHARED / "audio" / "free").glob("*.ogg"))


def _batch_one(args: tuple[str, list[int], str | None]) -> tuple[str, np.ndarray]:
    path, ends, cache = args
    cache_file = Path(cache) / f"batch_{Path(path).name}.npz" if cache else None
    if cache_file is not None and cache_file.exists():
        data = np.load(cache_file)
        have = {int(e): row for e, row in zip(data["ends"], data["F"])}
        if all(e in have for e in ends):
            return path, np.array([have[e] for e in ends]).reshape(len(ends), len(FEATURE_NAMES))
        have_ends = [int(e) for e in data["ends"]]
        have_rows = list(data["F"])
    else:
        have, have_ends, have_rows = {}, [], []
    y = load(Path(path))
    missing = [e for e in ends if e not in have]
    for e in missing:
        have[e] = gtzan_features(y[e - WINDOW : e])
        have_ends.append(e)
        have_rows.append(have[e])
    if cache_file is not None and missing:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, ends=np.array(have_ends), F=np.array(have_rows))
    return path, np.array([have[e] for e in ends]).reshape(len(ends), len(FEATURE_NAMES))


def incremental(y: np.ndarray, hop_s: float, exact_chroma: bool, block: int = 22050) -> list[tuple[int, np.ndarray]]:
    inc = IncrementalFeatures(hop_s=hop_s, exact_chroma=exact_chroma)
    out = []
    for pos in range(0, len(y), block):
        out.extend(inc.push(y[pos : pos + block]))
    return out


def table_std() -> np.ndarray | None:
    path = SHARED / "data" / "gtzan" / "features_10_sec.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    X = np.array([[float(r[c]) for c in FEATURE_NAMES] for r in rows])
    return X.std(axis=0)


def summarise(inc: np.ndarray, bat: np.ndarray, std: np.ndarray | None) -> dict:
    rel = np.abs(inc - bat) / np.maximum(np.abs(bat), 1e-12)
    out = {}
    for i, name in enumerate(FEATURE_NAMES):
        r = rel[:, i]
        entry = {
            "rel_median": float(np.median(r)),
            "rel_p95": float(np.percentile(r, 95)),
            "rel_max": float(r.max()),
        }
        if std is not None:
            z = np.abs(inc[:, i] - bat[:, i]) / std[i]
            entry.update(z_median=float(np.median(z)), z_p95=float(np.percentile(z, 95)), z_max=float(z.max()))
        out[name] = entry
    return out


def model_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hop-s", type=float, default=1.0, help="hop between windows, seconds (engine default 1.0)")
    ap.add_argument("--stride", type=int, default=1, help="compare every n-th window (batch costs ~1 s per window)")
    ap.add_argument("--cache", default=None, help="folder to keep batch features in between runs")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--exact-chroma", action="store_true", help="IncrementalFeatures(exact_chroma=True)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the batch features")
    ap.add_argument("--model", default=str(REPO / "stream" / "models" / "gtzan_mlp.onnx"))
    ap.add_argument("--files", nargs="*", default=None, help="audio files (default: all of ../shared/audio)")
    ap.add_argument(
        "--jitter",
        type=int,
        default=0,
        help="also compare batch with batch on the same windows moved by this many samples "
        "(the model's own sensitivity to where a window starts; 256 = the largest grid offset)",
    )
    args = ap.parse_args(argv)

    files = [Path(f) for f in args.files] if args.files else audio_files()
    if not files:
        print(f"no audio under {SHARED}/audio (set GENRESTREAM_SHARED)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    inc_rows: dict[str, tuple[list[int], np.ndarray]] = {}
    for path in files:
        y = load(path)
        out = incremental(y, args.hop_s, args.exact_chroma)[:: args.stride]
        if out:
            inc_rows[str(path)] = ([e for e, _ in out], np.array([f for _, f in out]))
    t_inc = time.perf_counter() - t0
    jobs = [(p, ends, args.cache) for p, (ends, _) in inc_rows.items()]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max(1, args.workers)) as ex:
        bat_rows = dict(ex.map(_batch_one, jobs))
    t_bat = time.perf_counter() - t0

    jit_rows = None
    if args.jitter:
        jobs = []
        for p, (ends, _) in inc_rows.items():
            n = len(load(Path(p)))
            jobs.append((p, [e + args.jitter if e + args.jitter <= n else e - args.jitter for e in ends], args.cache))
        with ProcessPoolExecutor(max(1, args.workers)) as ex:
            jit_rows = dict(ex.map(_batch_one, jobs))
    names = list(inc_rows)
    inc = np.concatenate([inc_rows[p][1] for p in names])
    bat = np.concatenate([bat_rows[p] for p in names])
    which = np.concatenate([[p] * len(inc_rows[p][0]) for p in names])
    std = table_std()
    result: dict = {
        "hop_s": args.hop_s,
        "exact_chroma": args.exact_chroma,
        "windows": int(inc.shape[0]),
        "files": len(names),
        "seconds": {"incremental": round(t_inc, 1), "batch": round(t_bat, 1)},
        "features": summarise(inc, bat, std),
    }
    same_tempo = np.isclose(inc[:, 16], bat[:, 16])
    result["tempo"] = {
        "agreement": float(same_tempo.mean()),
        "abs_diff_bpm_when_different": sorted(np.round(np.abs(inc[~same_tempo, 16] - bat[~same_tempo, 16]), 2).tolist()),
    }

    model_path = Path(args.model)
    if model_path.exists():
        sess = model_session(model_path)
        p_inc = sess.run(["probabilities"], {"features": inc.astype(np.float32)})[0]
        p_bat = sess.run(["probabilities"], {"features": bat.astype(np.float32)})[0]
        d = np.abs(p_inc - p_bat)
        labels = json.loads(sess.get_modelmeta().custom_metadata_map.get("labels", "[]")) or None
        model = {
            "path": str(model_path),
            "prob_max_abs_diff": float(d.max()),
            "prob_mean_abs_diff": float(d.mean()),
            "prob_p95_of_window_max_abs_diff": float(np.percentile(d.max(axis=1), 95)),
            "argmax_agreement": float((p_inc.argmax(1) == p_bat.argmax(1)).mean()),
        }
        parity = np.array(["gtzan-parity" in p for p in which])
        if parity.any() and labels:
            truth = np.array([labels.index(Path(p).name.split(".")[0]) for p in which[parity]])
            model["gtzan_parity_windows"] = int(parity.sum())
            model["gtzan_parity_accuracy_batch"] = float((p_bat[parity].argmax(1) == truth).mean())
            model["gtzan_parity_accuracy_incremental"] = float((p_inc[parity].argmax(1) == truth).mean())
        per_file = {}
        for p in names:
            sel = which == p
            per_file[Path(p).name] = {
                "windows": int(sel.sum()),
                "argmax_agreement": float((p_inc[sel].argmax(1) == p_bat[sel].argmax(1)).mean()),
                "prob_max_abs_diff": float(d[sel].max()),
            }
        model["per_file"] = per_file
        result["model"] = model
    else:
        result["model"] = None
    if jit_rows is not None:
        jit = np.concatenate([jit_rows[p] for p in names])
        result["batch_vs_batch_moved"] = {
            "samples": args.jitter,
            "features": summarise(jit, bat, std),
            "tempo_agreement": float(np.isclose(jit[:, 16], bat[:, 16]).mean()),
        }
        if model_path.exists():
            p_jit = sess.run(["probabilities"], {"features": jit.astype(np.float32)})[0]
            dj = np.abs(p_jit - p_bat)
            result["batch_vs_batch_moved"]["model"] = {
                "prob_max_abs_diff": float(dj.max()),
                "prob_mean_abs_diff": float(dj.mean()),
                "prob_p95_of_window_max_abs_diff": float(np.percentile(dj.max(axis=1), 95)),
                "argmax_agreement": float((p_jit.argmax(1) == p_bat.argmax(1)).mean()),
            }

    # ---- print
    print(f"{result['windows']} windows of {result['files']} files, hop {args.hop_s} s"
          f"{', exact chroma' if args.exact_chroma else ''}"
          f" (incremental {t_inc:.1f} s wall, batch {t_bat:.1f} s wall)")
    head = f"{'feature':24s} {'rel med':>9s} {'rel p95':>9s} {'rel max':>9s}"
    if std is not None:
        head += f" {'z med':>9s} {'z p95':>9s} {'z max':>9s}"
    print(head)
    for name, e in result["features"].items():
        line = f"{name:24s} {e['rel_median']:9.2e} {e['rel_p95']:9.2e} {e['rel_max']:9.2e}"
        if std is not None:
            line += f" {e['z_median']:9.2e} {e['z_p95']:9.2e} {e['z_max']:9.2e}"
        print(line)
    print(f"tempo: same BPM in {100 * result['tempo']['agreement']:.1f} % of windows")
    m = result["model"]
    if m:
        print(f"model {m['path']}: probabilities max |diff| {m['prob_max_abs_diff']:.4f}, "
              f"mean {m['prob_mean_abs_diff']:.5f}, p95 of per-window max {m['prob_p95_of_window_max_abs_diff']:.4f}, "
              f"argmax agreement {100 * m['argmax_agreement']:.1f} %")
        if "gtzan_parity_accuracy_batch" in m:
            print(f"GTZAN parity clips ({m['gtzan_parity_windows']} windows): accuracy batch "
                  f"{100 * m['gtzan_parity_accuracy_batch']:.1f} %, incremental "
                  f"{100 * m['gtzan_parity_accuracy_incremental']:.1f} %")
    else:
        print(f"model {model_path} not found: feature-level parity only")
    j = result.get("batch_vs_batch_moved")
    if j:
        zs = [e["z_p95"] for e in j["features"].values() if "z_p95" in e]
        print(f"baseline, batch vs batch on windows moved by {j['samples']} samples: tempo same in "
              f"{100 * j['tempo_agreement']:.1f} %" + (f", largest feature z p95 {max(zs):.3f}" if zs else ""))
        if "model" in j:
            jm = j["model"]
            print(f"  model: probabilities max |diff| {jm['prob_max_abs_diff']:.4f}, mean {jm['prob_mean_abs_diff']:.5f}, "
                  f"p95 of per-window max {jm['prob_p95_of_window_max_abs_diff']:.4f}, "
                  f"argmax agreement {100 * jm['argmax_agreement']:.1f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
