"""Train the musicnn model's heads: genre on labelled audio, content on music, speech and other sounds.

The pipeline (:func:`train`, CLI :func:`main`, wired as ``genrestream train``):

1. the backbone: the shipped musicnn model's (cut out of it), or musicnn's
   checkpoint from the PyPI wheel (``--backbone wheel``), or a file;
2. the genre clips: the 58 GTZAN clips of the shared data, or a user's folder
   (``--audio-dir``: GTZAN, FMA or one-folder-per-label layout); the content
   clips: music, speech and other from the shared data (and synthetic noises),
   or a user's folder of ``music/``, ``speech/``, ``other/`` (``--content-dir``);
3. every clip's windows embedded by the backbone as serving computes them
   (:mod:`training.embeddings`, cached);
4. each head's L2 strength and temperature chosen by grouped cross-validation
   (:func:`training.heads.train_head`: GTZAN blocks of ten tracks, FMA tracks,
   files; or a given split), then fitted on every window;
5. ``genre_head.keras``, ``content_head.keras``, ``backbone.onnx``,
   ``verify_windows.npy`` (real windows for the export's check) and
   ``report.json`` written to the output folder, for ``genrestream export``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

from stream.frontends.logmel import LogMelFrontend, snap_hop
from training.audio import content_clips, gtzan_clips, list_audio, synthetic_other_clips
from training.embeddings import DEFAULT_HOP_LENGTH, Embedder, cache_dir, embed_clips, stack
from training.heads import HeadConfig, train_head

MODEL_NAME = "musicnn-msd"
MODEL_VERSION = "1"
CONTENT_LABELS = ["music", "speech", "other"]
DEFAULT_OUT_DIR = Path("artifacts")


def default_backbone() -> str:
    """The shipped musicnn model if it is installed (no TensorFlow conversion needed), else ``"wheel"``."""
    from stream.model import shipped_model_path

    path = shipped_model_path(MODEL_NAME)
    return str(path) if path.is_file() else "wheel"


def _errors(items, result, clip_index: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """The clips the out-of-fold probabilities (mean over a clip's windows) get wrong."""
    out = []
    for k in np.unique(clip_index):
        p = result.oof_probabilities[clip_index == k].mean(axis=0)
        if not np.all(np.isfinite(p)):
            continue  # a training clip of a given split
        truth = items[k].clip.label
        guess = labels[int(np.argmax(p))]
        if guess != truth:
            out.append({"clip": items[k].clip.path.name, "label": truth, "predicted": guess,
                        "p": round(float(np.max(p)), 3)})
    return out


def _split_folds(clips_windows: np.ndarray, items, split_file: Path):
    """One fold from a file listing the validation clips (one file name or relative path per line)."""
    names = {line.strip() for line in split_file.read_text().splitlines() if line.strip() and not line.startswith("#")}
    val_clips = [k for k, it in enumerate(items) if it.clip.path.name in names or str(it.clip.path) in names
                 or any(str(it.clip.path).endswith("/" + n) for n in names)]
    if not val_clips:
        raise ValueError(f"--split {split_file}: none of its {len(names)} names is a training clip")
    val = np.isin(clips_windows, val_clips)
    rows = np.arange(len(clips_windows))
    return [(rows[~val], rows[val])]


def train(
    out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
    backbone: str | None = None,
    audio_dir: str | os.PathLike | None = None,
    layout: str = "gtzan",
    tracks_csv: str | os.PathLike | None = None,
    content_dir: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    hop_length: int = DEFAULT_HOP_LENGTH,
    hop_s: float = 1.0,
    config: HeadConfig = HeadConfig(),
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Train both heads and write a training run.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created).
    backbone : str or None
        ``"wheel"``, a path, or None for :func:`default_backbone`.
    audio_dir : path-like or None
        Genre clips (default: the shared GTZAN clips).
    layout : {"gtzan", "fma", "folders"}
        Layout of ``audio_dir`` (:func:`training.audio.list_audio`).
    tracks_csv : path-like or None
        FMA layout: the tracks table.
    content_dir : path-like or None
        Content clips in ``music/``, ``speech/`` (and ``other/``) folders
        (default: the shared data's, with synthetic noises as "other").
    split : path-like or None
        A file naming the genre validation clips (one per line): one given
        split instead of the grouped cross-validation.
    hop_length : int
        Samples between training windows (16 kHz; snapped to 256).
    hop_s : float
        The serving hop recorded in the model.
    config : HeadConfig
    cache : path-like or None
        Embedding cache folder.
    progress : bool

    Returns
    -------
    dict
        The report (also ``out_dir/report.json``).

    Raises
    ------
    FileNotFoundError, ValueError
        For missing data, unknown layouts, clips without audio; the message
        names the input.
    """
    from export.musicnn_model import backbone_path

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = backbone or default_backbone()
    backbone_file = backbone_path(source)
    shutil.copyfile(backbone_file, out_dir / "backbone.onnx")
    embedder = Embedder(out_dir / "backbone.onnx")
    hop_length = snap_hop(hop_length)

    genre_clips = list_audio(audio_dir, layout, tracks_csv) if audio_dir else gtzan_clips()
    if content_dir:
        content = list_audio(content_dir, "folders")
        unknown = sorted({c.label for c in content} - set(CONTENT_LABELS))
        if unknown:
            raise ValueError(f"--content-dir {content_dir}: folders {unknown} are not among {CONTENT_LABELS}")
    else:
        content = content_clips() + synthetic_other_clips(cache_dir(cache).parent / "synthetic")
    content_labels = [label for label in CONTENT_LABELS if any(c.label == label for c in content)]
    if not {"music", "speech"} <= set(content_labels):
        raise ValueError("content clips: need both music and speech")

    t0 = time.perf_counter()
    genre_items = embed_clips(genre_clips, embedder, hop_length, cache, progress, desc="genre clips")
    content_items = embed_clips(content, embedder, hop_length, cache, progress, desc="content clips")
    embed_s = time.perf_counter() - t0

    genre_labels = sorted({c.label for c in genre_clips})
    if not audio_dir:
        from training.data import GTZAN_GENRES

        genre_labels = list(GTZAN_GENRES)
    t0 = time.perf_counter()
    X, y, groups, clip_index = stack(genre_items, genre_labels)
    folds = _split_folds(clip_index, genre_items, Path(split)) if split else None
    genre = train_head(X, y, groups, clip_index, genre_labels, config, name="genre", progress=progress, folds=folds)
    genre.validation["errors"] = _errors(genre_items, genre, clip_index, genre_labels)
    genre.validation["grouping"] = ("given split" if split else
                                    {"gtzan": "blocks of 10 consecutive track numbers per genre", "fma": "tracks",
                                     "folders": "files"}[layout if audio_dir else "gtzan"])
    Xc, yc, gc, cc = stack(content_items, content_labels)
    content_result = train_head(Xc, yc, gc, cc, content_labels, config, name="content", progress=progress)
    content_result.validation["errors"] = _errors(content_items, content_result, cc, content_labels)
    content_result.validation["grouping"] = "files"
    heads_s = time.perf_counter() - t0

    from export.musicnn_model import verify_windows_from

    one_per_label = list({c.label: c.path for c in [*genre_clips, *content]}.values())
    np.save(out_dir / "verify_windows.npy", verify_windows_from(one_per_label, per_file=6))
    genre.model.save(out_dir / "genre_head.keras")
    content_result.model.save(out_dir / "content_head.keras")
    report = {
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "genre_labels": genre_labels,
        "content_labels": content_labels,
        "tag_labels": _tag_labels(out_dir / "backbone.onnx", source),
        "frontend": LogMelFrontend().params(),
        "hop_s": float(hop_s),
        "training_hop_length": hop_length,
        "backbone": {"source": "wheel" if source == "wheel" else Path(source).name,
                     "sha256": embedder.sha256},
        "data": {
            "genre": {"source": str(audio_dir) if audio_dir else "shared: audio/gtzan-parity + audio/gtzan-extra",
                      "layout": layout if audio_dir else "gtzan", "clips": len(genre_items), "windows": int(len(y)),
                      "clips_per_label": dict(Counter(c.label for c in genre_clips))},
            "content": {"source": str(content_dir) if content_dir else
                        "shared: audio/musicspeech, audio/speech/ljspeech, audio/free, GTZAN clips; synthetic noises",
                        "clips": len(content_items), "windows": int(len(yc)),
                        "clips_per_label": dict(Counter(c.label for c in content))},
        },
        "validation": {"genre": genre.validation, "content": content_result.validation},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
        "versions": _versions(),
        "timing_s": {"embeddings": round(embed_s, 1), "heads": round(heads_s, 1),
                     "total": round(time.perf_counter() - started, 1)},
    }
    report["summary"] = summary_of(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _tag_labels(backbone_file: Path, source: str) -> list[str]:
    """The 50 MSD tags, in output order: from the shipped model's metadata when it is the source, else the wheel."""
    import onnxruntime as ort

    for candidate in (source, backbone_file):
        try:
            session = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - "wheel" is not a file
            continue
        meta = session.get_modelmeta().custom_metadata_map
        if "heads" in meta:
            return list(json.loads(meta["heads"])["tags"]["labels"])
    from export.musicnn import load_checkpoint

    return list(load_checkpoint("MSD_musicnn").labels)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "onnxruntime", "onnxruntime-gpu", "librosa", "av"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return versions


def summary_of(report: dict) -> dict:
    """The short training summary recorded in the model's metadata."""
    genre, content = report["validation"]["genre"], report["validation"]["content"]
    return {
        "genre": {k: genre["calibrated"][k] for k in ("clip_accuracy", "window_accuracy", "log_loss", "ece",
                                                        "per_label_recall")}
                 | {"grouping": genre["grouping"], "clips": report["data"]["genre"]["clips"],
                    "temperature": genre["temperature"], "l2": genre["l2"]},
        "content": {k: content["calibrated"][k] for k in ("clip_accuracy", "window_accuracy", "per_label_recall")}
                   | {"grouping": "files", "clips": report["data"]["content"]["clips"]},
        "data": {"genre": report["data"]["genre"]["source"], "content": report["data"]["content"]["source"]},
        "backbone": report["backbone"],
        "versions": {k: v for k, v in report["versions"].items() if k in ("tensorflow", "keras", "numpy", "onnxruntime")},
    }


def format_summary(report: dict) -> str:
    """Human-readable summary of a run."""
    lines = []
    for head in ("genre", "content"):
        v = report["validation"][head]
        c = v["calibrated"]
        lines.append(
            f"{head}: {c['clips']} clips, {c['windows']} windows, validation by {v['grouping']} ({v['scheme']}): "
            f"clip accuracy {c['clip_accuracy']:.3f}, window accuracy {c['window_accuracy']:.3f}, "
            f"log-loss {c['log_loss']:.3f}, ECE {c['ece']:.3f} (L2 {v['l2']:g}, temperature {v['temperature']:.2f})")
        lines.append("  recall: " + ", ".join(f"{k} {r:.2f}" for k, r in c["per_label_recall"].items()))
        if v.get("errors"):
            lines.append("  wrong clips: " + ", ".join(f"{e['clip']} ({e['label']}→{e['predicted']})" for e in v["errors"]))
    t = report["timing_s"]
    lines.append(f"time: embeddings {t['embeddings']:.0f} s, heads {t['heads']:.0f} s, total {t['total']:.0f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genrestream train",
        description="Train the musicnn model's genre and content heads on audio (the default model). "
                    "`genrestream train --model gtzan-mlp --help` for the 57-feature model.")
    parser.add_argument("--model", default=MODEL_NAME, help=f"which model to train (default {MODEL_NAME})")
    parser.add_argument("--audio-dir", type=Path, default=None,
                        help="genre clips (default: the shared GTZAN clips)")
    parser.add_argument("--layout", choices=("gtzan", "fma", "folders"), default="gtzan",
                        help="layout of --audio-dir: gtzan (<genre>.<NNNNN>.<ext>), fma (<track_id>.mp3 + tracks.csv), "
                             "folders (one folder per label); default gtzan")
    parser.add_argument("--tracks-csv", type=Path, default=None, help="FMA layout: tracks.csv giving each genre_top")
    parser.add_argument("--content-dir", type=Path, default=None,
                        help="content clips in music/, speech/ (and other/) folders (default: the shared data's)")
    parser.add_argument("--split", type=Path, default=None,
                        help="validate on the genre clips this file names (one per line) instead of grouped k-fold")
    parser.add_argument("--backbone", default=None,
                        help="'wheel' (musicnn's checkpoint from PyPI, converted with tf2onnx), an ONNX file, or a "
                             "genrestream musicnn model (default: the shipped one, else 'wheel')")
    parser.add_argument("--folds", type=int, default=HeadConfig.n_folds, help="folds of the cross-validation (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hop-s", type=float, default=1.0, help="serving hop recorded in the model (default 1.0)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default ./artifacts)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="embedding cache (default $GENRESTREAM_CACHE/embeddings or ~/.cache/genrestream/embeddings)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = HeadConfig(n_folds=args.folds, seed=args.seed)
    try:
        report = train(args.out_dir, args.backbone, args.audio_dir, args.layout, args.tracks_csv, args.content_dir,
                       args.split, hop_s=args.hop_s, config=config, cache=args.cache, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"genrestream train: {exc}", file=sys.stderr)
        return 2
    print(format_summary(report))
    print(f"run written to {args.out_dir}; next: genrestream export --model-dir {args.out_dir}")
    return 0
