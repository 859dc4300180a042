"""Decisions of the fast paths against the plain one-patch-per-hop way, through the real engine on real audio.

Usage (from the repository)::

    .venv/bin/python benchmarks/frame_stage_parity.py            # every clip of ../shared/audio/free

Compares, on the same streams (every music, speech and nature clip of ``audio/free``, all at
once through one engine, read as fast as possible):

- ``musicnn-msd`` with its frame stage (each frame's timbral front end once, ``stream/framestage.py``)
  against the whole model on every window (``frame_stage=False``): the plain way;
- ``musicnn-msd-int8`` (frame stage) against the plain float model.

For each: windows compared, largest |difference| of a genre probability, top genre of the window the
same, smoothed state the same, every stream's genre_change sequence (state and onset) the same, and
the frame-stage frames computed against reused, with the CPU seconds of each run (one process, so the
ratio is the measure; the machine may be busy).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("GENRESTREAM_DEVICE", "cpu")


def run(model, files) -> tuple[list[dict], float]:
    from stream.engine import Engine
    from stream.publishers import CollectingPublisher
    from stream.sources import AVSource

    collector = CollectingPublisher()
    engine = Engine(model, [collector])
    for i, f in enumerate(files):
        engine.add(AVSource(str(f)), f"s{i:02d}")
    cpu = time.process_time()
    asyncio.run(engine.run())
    return collector.events, time.process_time() - cpu


def compare(a: list[dict], b: list[dict], labels) -> dict:
    pa = {(e["stream"], e["stream_time_s"]): e for e in a if e["type"] == "prediction"}
    pb = {(e["stream"], e["stream_time_s"]): e for e in b if e["type"] == "prediction"}
    keys = sorted(set(pa) & set(pb))
    changes = lambda evs, s: [(e["genre"], e["onset_s"]) for e in evs if e["type"] == "genre_change" and e["stream"] == s]
    streams = sorted({k[0] for k in keys})
    return {
        "windows": len(keys), "only_one_side": len(set(pa) ^ set(pb)),
        "max_abs_diff_probability": max(abs(pa[k]["probabilities"][g] - pb[k]["probabilities"][g])
                                        for k in keys for g in labels),
        "top1_agreement": sum(pa[k]["genre"] == pb[k]["genre"] for k in keys) / len(keys),
        "smoothed_agreement": sum(pa[k]["smoothed"] == pb[k]["smoothed"] for k in keys) / len(keys),
        "genre_changes": [sum(len(changes(a, s)) for s in streams), sum(len(changes(b, s)) for s in streams)],
        "streams_with_identical_changes": f"{sum(changes(a, s) == changes(b, s) for s in streams)}/{len(streams)}",
    }


def main() -> int:
    from stream.model import GenreModel

    shared = Path(os.environ.get("GENRESTREAM_SHARED", HERE.parent.parent / "shared"))
    files = sorted(p for p in (shared / "audio" / "free").iterdir() if p.suffix.lower() in (".ogg", ".mp3", ".flac",
                                                                                           ".wav", ".m4a", ".opus"))
    if not files:
        print(f"no clips in {shared / 'audio' / 'free'} (set GENRESTREAM_SHARED)")
        return 2
    plain = GenreModel("musicnn-msd", frame_stage=False)
    staged = GenreModel("musicnn-msd")
    int8 = GenreModel("musicnn-msd-int8")
    reference, cpu_plain = run(plain, files)
    out = {"clips": len(files), "cpu_s": {"plain": round(cpu_plain, 2)}}
    for name, model in (("musicnn-msd frame stage", staged), ("musicnn-msd-int8 frame stage", int8)):
        got, cpu = run(model, files)
        r = compare(got, reference, plain.labels)
        r["frames_computed"], r["frames_reused"] = model.stages.frames_computed, model.stages.frames_reused
        r["cpu_s"], r["cpu_vs_plain"] = round(cpu, 2), round(cpu / cpu_plain, 3)
        out[name] = r
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
