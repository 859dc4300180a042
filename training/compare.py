"""The two models side by side on the same clips and the same folds: genre by blocks, and speech.

``python -m training.compare`` (needs the train extra and the shared data):

- **Genre.** The 58 GTZAN clips of the shared data, split into the same 5
  folds by blocks of 10 track numbers (GTZAN's artist runs on one side). The
  musicnn heads train on the other folds' clips (:func:`training.heads.train_head`
  with those folds). The 57-feature MLP trains on every row of
  ``features_10_sec.csv`` except the tracks of the held-out blocks (about
  95 % of GTZAN: far more data than the heads get), and classifies the held-out
  clips' 10 s windows computed by serving's own extractor. Both are scored per
  window and per clip (the mean of its windows).
- **Speech.** Every speech and music clip of the shared data through each
  model: the share of speech clips whose windows are mostly called speech (the
  57-feature model has no such answer: it always names a genre).

The 48 ``gtzan-extra`` clips came resampled to 16 kHz; the MLP's features
are defined at 22050 Hz, so it hears them without their top octave, which its
training rows (from the 22050 Hz originals) had. Both figures are given:
all 58 clips and the ten 22050 Hz ``genre.00000`` clips alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training.audio import gtzan_clips
from training.data import GTZAN_GENRES, gtzan_table_path, load_feature_table
from training.heads import HeadConfig, summarise, train_head
from training.splits import group_kfold


def clip_folds(clips, n_folds: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Fold of every clip (grouped by its block, stratified by genre): the split both models use."""
    labels = np.array([GTZAN_GENRES.index(c.label) for c in clips])
    groups = np.array([c.group for c in clips])
    fold = np.empty(len(clips), dtype=np.int64)
    for k, (_, val) in enumerate(group_kfold(groups, labels, n_folds, seed)):
        fold[val] = k
    return fold


def mlp_windows(clips, hop_s: float = 1.0) -> list[np.ndarray]:
    """The 57 features of every 10 s window (hop ``hop_s``) of each clip, by serving's incremental extractor."""
    from stream.frontends.gtzan import SAMPLE_RATE, GtzanFrontend
    from training.embeddings import decode

    frontend = GtzanFrontend(10.0)
    out = []
    for clip in clips:
        y = decode(clip.path, SAMPLE_RATE)
        windows = frontend.extractor(int(round(hop_s * SAMPLE_RATE))).push(y)
        out.append(np.stack([x for _, x in windows]) if windows else frontend.window_input(y)[None])
    return out


def compare_genre(embedder, hop_length: int, progress: bool = False) -> dict:
    """Both models' out-of-fold genre figures on the shared GTZAN clips (see the module docstring)."""
    from training.embeddings import embed_clips, stack
    from training.train import DEFAULT_CONFIG, fit_model, predict_proba

    clips = gtzan_clips()
    fold_of_clip = clip_folds(clips)
    labels = list(GTZAN_GENRES)

    items = embed_clips(clips, embedder, hop_length, progress=progress, desc="genre clips")
    X, y, groups, clip_index = stack(items, labels)
    folds = [(np.flatnonzero(fold_of_clip[clip_index] != k), np.flatnonzero(fold_of_clip[clip_index] == k))
             for k in range(fold_of_clip.max() + 1)]
    heads = train_head(X, y, groups, clip_index, labels, HeadConfig(), name="genre", progress=progress, folds=folds)
    new = {"all": summarise(heads.oof_probabilities, y, clip_index, labels)}
    parity = np.isin(clip_index, [k for k, c in enumerate(clips) if c.track == 0])
    new["genre.00000"] = summarise(heads.oof_probabilities[parity], y[parity], clip_index[parity], labels)

    table = load_feature_table(gtzan_table_path("features_10_sec.csv"), labels=GTZAN_GENRES)
    block_of_row = np.array([f"{t.split('.')[0]}/{(n // 10) * 10:05d}" for t, n in zip(table.track_ids, table.track_numbers)])
    windows = mlp_windows(clips)
    old_p = [None] * len(clips)
    for k in range(fold_of_clip.max() + 1):
        held_blocks = {clips[i].group.split("-")[0] for i in np.flatnonzero(fold_of_clip == k)}
        keep = ~np.isin(block_of_row, list(held_blocks))
        model, _ = fit_model(table.X[keep], table.y[keep], len(labels), DEFAULT_CONFIG, progress=progress,
                             desc=f"mlp fold {k + 1}")
        for i in np.flatnonzero(fold_of_clip == k):
            old_p[i] = predict_proba(model, windows[i].astype(np.float32))
    P = np.concatenate(old_p)
    oy = np.concatenate([np.full(len(p), labels.index(c.label)) for p, c in zip(old_p, clips)])
    oc = np.concatenate([np.full(len(p), i) for i, p in enumerate(old_p)])
    old = {"all": summarise(P, oy, oc, labels)}
    op = np.isin(oc, [k for k, c in enumerate(clips) if c.track == 0])
    old["genre.00000"] = summarise(P[op], oy[op], oc[op], labels)
    return {
        "clips": len(clips), "folds": int(fold_of_clip.max() + 1),
        "grouping": "blocks of 10 consecutive track numbers per genre",
        "musicnn": new, "gtzan_mlp": old,
        "gtzan_mlp_training_rows_per_fold": "features_10_sec.csv minus the held-out blocks' tracks",
    }


def compare_content(embedder, hop_length: int, progress: bool = False) -> dict:
    """Speech against music: out-of-fold (by clip) for the content head; the 57-feature model cannot say speech."""
    from training.audio import content_clips, synthetic_other_clips
    from training.embeddings import cache_dir, embed_clips, stack

    clips = content_clips() + synthetic_other_clips(cache_dir().parent / "synthetic")
    labels = [label for label in ("music", "speech", "other") if any(c.label == label for c in clips)]
    items = embed_clips(clips, embedder, hop_length, progress=progress, desc="content clips")
    X, y, groups, clip_index = stack(items, labels)
    head = train_head(X, y, groups, clip_index, labels, HeadConfig(), name="content", progress=progress)
    figures = summarise(head.oof_probabilities, y, clip_index, labels)
    by_clip = {}
    for k in np.unique(clip_index):
        p = head.oof_probabilities[clip_index == k]
        by_clip[items[k].clip.path.name] = {"label": items[k].clip.label,
                                           "speech_window_share": round(float(np.mean(p.argmax(axis=1) == labels.index("speech"))), 3)}
    speech_clips = [v for v in by_clip.values() if v["label"] == "speech"]
    music_clips = [v for v in by_clip.values() if v["label"] == "music"]
    return {
        "musicnn": figures,
        "speech_clips_called_speech": sum(v["speech_window_share"] > 0.5 for v in speech_clips),
        "speech_clips": len(speech_clips),
        "music_clips_called_speech": sum(v["speech_window_share"] > 0.5 for v in music_clips),
        "music_clips": len(music_clips),
        "music_windows_called_speech": round(float(np.mean(
            head.oof_probabilities[np.isin(clip_index, [k for k, it in enumerate(items) if it.clip.label == "music"])]
            .argmax(axis=1) == labels.index("speech"))), 4),
        "gtzan_mlp": "no speech answer: every window gets one of the ten genres",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=None, help="as `genrestream train --backbone` (default: the shipped model)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    from export.musicnn_model import backbone_path
    from training.embeddings import DEFAULT_HOP_LENGTH, Embedder
    from training.musicnn_train import default_backbone

    embedder = Embedder(backbone_path(args.backbone or default_backbone()))
    result = {"genre": compare_genre(embedder, DEFAULT_HOP_LENGTH, args.progress),
              "content": compare_content(embedder, DEFAULT_HOP_LENGTH, args.progress)}
    print(format_comparison(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def format_comparison(result: dict) -> str:
    g = result["genre"]
    lines = [f"genre, {g['clips']} GTZAN clips, {g['folds']} folds by {g['grouping']}:",
             f"{'':22}{'musicnn-msd':>24}{'gtzan-mlp':>24}",
             f"{'':22}{'clip':>12}{'window':>12}{'clip':>12}{'window':>12}"]
    for subset in ("all", "genre.00000"):
        n, o = g["musicnn"][subset], g["gtzan_mlp"][subset]
        lines.append(f"{subset + ' accuracy':22}{n['clip_accuracy']:>12.3f}{n['window_accuracy']:>12.3f}"
                     f"{o['clip_accuracy']:>12.3f}{o['window_accuracy']:>12.3f}")
    lines.append("recall per genre (clips, all): " + ", ".join(
        f"{k} {g['musicnn']['all']['per_label_recall'].get(k, 0):.2f}/{g['gtzan_mlp']['all']['per_label_recall'].get(k, 0):.2f}"
        for k in GTZAN_GENRES) + "  (musicnn/mlp)")
    for name in ("musicnn", "gtzan_mlp"):
        lines.append(f"confusion ({name}, clips; rows true, columns predicted, {', '.join(GTZAN_GENRES)}):")
        lines.extend("  " + " ".join(f"{v:2d}" for v in row) for row in g[name]["all"]["confusion_matrix"])
    c = result["content"]
    lines.append(f"speech: {c['speech_clips_called_speech']}/{c['speech_clips']} speech clips called speech, "
                 f"{c['music_clips_called_speech']}/{c['music_clips']} music clips called speech, "
                 f"{c['music_windows_called_speech']:.2%} of music windows (musicnn content head, out of fold by clip); "
                 f"gtzan-mlp: {c['gtzan_mlp']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
