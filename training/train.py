"""Train the genre classifier: honest cross-validation, then the final fit on every row.

The pipeline (:func:`train`, CLI :func:`main`, wired as ``genrestream train``):

1. load a feature table (Kaggle GTZAN layout, default ``features_10_sec.csv``
   from the shared data) or compute one from an audio folder;
2. cross-validate by track and by blocks of 10 consecutive tracks
   (:mod:`training.splits`): accuracy, per-genre recall and confusion matrix of
   the pooled out-of-fold predictions, plus each fold's accuracy;
3. fit the shipped model on all rows with the same settings and epochs;
4. save ``model.keras`` and ``report.json`` in the output folder and print a summary.

Training is seeded and deterministic (:func:`keras.utils.set_random_seed`,
:func:`tf.config.experimental.enable_op_determinism`, a NumPy generator for the
batch order): rerunning gives the same weights.

The training loop is a small ``tf.function`` running a whole epoch in one call
rather than ``Model.fit``: on this model ``fit``'s per-epoch overhead is about
three times the cost of the arithmetic, and cross-validation runs 11 fits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: no INFO spam

import numpy as np

from stream.frontends.gtzan import FEATURE_NAMES, FRONTEND_NAME, FRONTEND_VERSION, SAMPLE_RATE
from training.data import (
    FeatureTable,
    features_from_audio_dir,
    gtzan_table_path,
    load_feature_table,
    shared_dir,
)
from training.splits import group_kfold, make_groups

DEFAULT_OUT_DIR = Path("artifacts")
"""Default output folder of :func:`train` (relative to the current directory)."""

SCHEME_DESCRIPTIONS = {
    "track": "k-fold by track: every window of a track on the same side",
    "block": "k-fold by blocks of consecutive track numbers per genre (track_number // block_size): "
    "whole blocks on one side, so an artist's run of tracks is rarely split",
}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all recorded in the report).

    Attributes
    ----------
    epochs : int
        Passes over the training rows, the same for every fold and the final fit.
    batch_size : int
    learning_rate : float
        Adam step size.
    hidden : tuple of int
        Hidden layer widths.
    dropout : float
        Dropout rate after each hidden layer.
    label_smoothing : float
        Cross-entropy label smoothing.
    seed : int
        Seed of weights, dropout, batch order and folds.
    n_folds : int
        Folds of each cross-validation (0 skips validation).
    block_size : int
        Tracks per block of the block split.
    """

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.3
    label_smoothing: float = 0.1
    seed: int = 0
    n_folds: int = 5
    block_size: int = 10


DEFAULT_CONFIG = TrainConfig()


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras and make TensorFlow ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def fit_model(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    config: TrainConfig = DEFAULT_CONFIG,
    progress: bool = True,
    desc: str = "train",
):
    """Build and train one model on raw features.

    Parameters
    ----------
    X : np.ndarray [shape=(n, 57), dtype=float32]
        Raw features (the model standardises with the mean and standard
        deviation of these rows).
    y : np.ndarray [shape=(n,), dtype=int]
        Class indices in ``[0, n_classes)``.
    n_classes : int
    config : TrainConfig
    progress : bool
        Show a tqdm bar over epochs with the mean training loss.
    desc : str
        Label of the progress bar.

    Returns
    -------
    model : keras.Model
        See :func:`training.model.build_model`.
    history : dict
        ``{"loss": [mean training loss per epoch]}``.

    Notes
    -----
    Adam (Kingma & Ba 2015) on softmax cross-entropy of the logits; batches are
    a fresh permutation each epoch from ``numpy.random.default_rng(seed)``. The
    seed is reset before building, so a fit does not depend on earlier fits.
    """
    import keras
    import tensorflow as tf

    from training.model import build_model, feature_statistics, logits_model

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    set_determinism(config.seed)
    mean, std = feature_statistics(X)
    model = build_model(n_classes, mean, std, hidden=config.hidden, dropout=config.dropout)
    to_logits = logits_model(model)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)

    X_t = tf.constant(X)
    Y_t = tf.one_hot(tf.constant(y), n_classes)
    n = X.shape[0]
    batch = int(config.batch_size)
    n_batches = (n + batch - 1) // batch

    @tf.function
    def run_epoch(order):
        total = tf.constant(0.0)
        for b in tf.range(n_batches):
            index = order[b * batch : (b + 1) * batch]
            xb = tf.gather(X_t, index)
            yb = tf.gather(Y_t, index)
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, to_logits(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            total += loss
        return total / tf.cast(n_batches, tf.float32)

    rng = np.random.default_rng(config.seed)
    epochs = range(int(config.epochs))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc=desc, unit="epoch", leave=False, file=sys.stderr)
        epochs = bar
    losses: list[float] = []
    for _ in epochs:
        losses.append(float(run_epoch(tf.constant(rng.permutation(n), dtype=tf.int32))))
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar is not None:
        bar.close()
    return model, {"loss": losses}


def predict_proba(model, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities of raw feature rows.

    Returns
    -------
    probabilities : np.ndarray [shape=(n, n_classes), dtype=float32]
    """
    X = np.asarray(X, dtype=np.float32)
    out = [np.asarray(model(X[i : i + batch_size], training=False)) for i in range(0, len(X), batch_size)]
    return np.concatenate(out, axis=0) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def classification_summary(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> dict:
    """Accuracy, per-class recall and confusion matrix.

    Parameters
    ----------
    y_true, y_pred : np.ndarray [shape=(n,), dtype=int]
    labels : sequence of str
        Class names, in class-index order.

    Returns
    -------
    summary : dict
        ``accuracy`` (float), ``rows`` (int), ``per_genre_recall`` ({label:
        float or None when the class has no rows}), ``confusion_matrix``
        (list of lists of int, rows = true class, columns = predicted, in
        ``labels`` order).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    recall = {
        label: (round(float(confusion[i, i] / support[i]), 4) if support[i] else None)
        for i, label in enumerate(labels)
    }
    return {
        "accuracy": round(float(np.mean(y_true == y_pred)), 4) if len(y_true) else None,
        "rows": int(len(y_true)),
        "per_genre_recall": recall,
        "confusion_matrix": confusion.tolist(),
    }


def track_votes(
    probabilities: np.ndarray, track_ids: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-track decision: the class of the mean of its windows' probabilities.

    Returns
    -------
    y_true, y_pred : np.ndarray [shape=(n_tracks,), dtype=int64]
    """
    tracks, inverse = np.unique(track_ids, return_inverse=True)
    sums = np.zeros((len(tracks), probabilities.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, probabilities)
    first = np.zeros(len(tracks), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    return y[first].astype(np.int64), sums.argmax(axis=1).astype(np.int64)


def cross_validate(
    table: FeatureTable,
    scheme: str,
    config: TrainConfig = DEFAULT_CONFIG,
    progress: bool = True,
) -> dict:
    """k-fold cross-validation with groups ``scheme`` ("track" or "block").

    Parameters
    ----------
    table : FeatureTable
    scheme : {"track", "block"}
        See :mod:`training.splits`.
    config : TrainConfig
        ``n_folds`` folds (fewer if there are fewer groups), ``seed`` for the folds.
    progress : bool

    Returns
    -------
    result : dict
        ``scheme``, ``description``, ``n_folds``, ``groups`` (number of groups),
        the pooled out-of-fold :func:`classification_summary` keys
        (``accuracy``, ``per_genre_recall``, ``confusion_matrix``, ``rows``),
        ``fold_accuracy`` (list), ``fold_accuracy_std``, and
        ``track_vote_accuracy`` (the decision of the mean probability over each
        held-out track's windows, the way serving smooths a stream).
    """
    groups = make_groups(table, scheme, config.block_size)
    folds = group_kfold(groups, table.y, config.n_folds, config.seed)
    probabilities = np.zeros((len(table), len(table.labels)), dtype=np.float32)
    fold_accuracy = []
    for k, (train_index, val_index) in enumerate(folds):
        model, _ = fit_model(
            table.X[train_index],
            table.y[train_index],
            len(table.labels),
            config,
            progress=progress,
            desc=f"{scheme} fold {k + 1}/{len(folds)}",
        )
        probabilities[val_index] = predict_proba(model, table.X[val_index])
        fold_accuracy.append(float(np.mean(probabilities[val_index].argmax(axis=1) == table.y[val_index])))
        del model
    y_pred = probabilities.argmax(axis=1)
    result = {
        "scheme": scheme,
        "description": SCHEME_DESCRIPTIONS[scheme],
        "n_folds": len(folds),
        "groups": int(len(np.unique(groups))),
    }
    result.update(classification_summary(table.y, y_pred, table.labels))
    result["fold_accuracy"] = [round(a, 4) for a in fold_accuracy]
    result["fold_accuracy_std"] = round(float(np.std(fold_accuracy)), 4)
    vote_true, vote_pred = track_votes(probabilities, table.track_ids, table.y)
    result["track_vote_accuracy"] = round(float(np.mean(vote_true == vote_pred)), 4)
    if scheme == "block":
        result["block_size"] = config.block_size
    return result


GTZAN_HELDOUT: tuple[str, dict[str, str]] = ("parity_rows.csv", {"table": "features_10_sec.csv"})
"""Rows of GTZAN tracks ``genre.00000`` (absent from the training tables), 10 s windows: a small unseen test set."""


def evaluate_table(
    model,
    train_table: FeatureTable,
    path: str | os.PathLike[str],
    where: dict[str, str] | None = None,
) -> dict:
    """Score a trained model on a feature table it was not trained on.

    Parameters
    ----------
    model : keras.Model
    train_table : FeatureTable
        The training rows (for the class list and a check that no test track
        was trained on).
    path : str or path-like
        Test table (Kaggle layout); its labels must be among the training labels.
    where : dict of str to str, optional
        Row filter (see :func:`training.data.load_feature_table`).

    Returns
    -------
    result : dict
        ``path``, ``name``, ``where``, ``tracks``, ``overlapping_tracks``
        (test tracks also in the training table; 0 for an honest test), the
        :func:`classification_summary` keys and ``track_vote_accuracy``.
    """
    path = Path(path)
    test = load_feature_table(path, labels=train_table.labels, where=where)
    probabilities = predict_proba(model, test.X)
    result = {"path": _display_path(path), "name": path.name, "where": dict(where or {})}
    result["tracks"] = int(len(np.unique(test.track_ids)))
    result["overlapping_tracks"] = int(len(set(test.track_ids) & set(train_table.track_ids)))
    result.update(classification_summary(test.y, probabilities.argmax(axis=1), train_table.labels))
    vote_true, vote_pred = track_votes(probabilities, test.track_ids, test.y)
    result["track_vote_accuracy"] = round(float(np.mean(vote_true == vote_pred)), 4)
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _display_path(path: Path) -> str:
    """``path`` relative to the shared data folder (``$GENRESTREAM_SHARED/...``) when inside it."""
    path = Path(path).resolve()
    try:
        return f"${{GENRESTREAM_SHARED}}/{path.relative_to(shared_dir()).as_posix()}"
    except ValueError:
        return str(path)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that determine the trained weights and features."""
    import keras
    import librosa
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "librosa": librosa.__version__,
    }


def training_summary(report: dict) -> dict:
    """The compact part of a report recorded as ONNX metadata ``training_summary``.

    Returns
    -------
    summary : dict
        Table name, digest and size, epochs, seed and the other settings,
        validation accuracy by track and by blocks, the test-table accuracy
        (if any), library versions. No
        absolute paths or timings, so a rerun gives the same summary.
    """
    validation = report.get("validation", {})
    return {
        "table": report["data"]["name"],
        "table_sha256": report["data"].get("sha256"),
        "rows": report["data"]["rows"],
        "tracks": report["data"]["tracks"],
        "epochs": report["config"]["epochs"],
        "seed": report["config"]["seed"],
        "config": report["config"],
        "validation_accuracy": {
            scheme: {
                "accuracy": result["accuracy"],
                "fold_accuracy_std": result["fold_accuracy_std"],
                "track_vote_accuracy": result["track_vote_accuracy"],
                "n_folds": result["n_folds"],
            }
            for scheme, result in validation.items()
        },
        **(
            {
                "test": {
                    "table": report["test"]["name"],
                    "where": report["test"]["where"],
                    "rows": report["test"]["rows"],
                    "tracks": report["test"]["tracks"],
                    "accuracy": report["test"]["accuracy"],
                    "track_vote_accuracy": report["test"]["track_vote_accuracy"],
                }
            }
            if "test" in report
            else {}
        ),
        "versions": report["versions"],
    }


def train(
    table_path: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = DEFAULT_OUT_DIR,
    epochs: int = DEFAULT_CONFIG.epochs,
    seed: int = 0,
    audio_dir: str | os.PathLike[str] | None = None,
    layout: str = "gtzan",
    *,
    batch_size: int = DEFAULT_CONFIG.batch_size,
    learning_rate: float = DEFAULT_CONFIG.learning_rate,
    hidden: Sequence[int] = DEFAULT_CONFIG.hidden,
    dropout: float = DEFAULT_CONFIG.dropout,
    label_smoothing: float = DEFAULT_CONFIG.label_smoothing,
    n_folds: int = DEFAULT_CONFIG.n_folds,
    block_size: int = DEFAULT_CONFIG.block_size,
    window_s: float | None = None,
    hop_s: float = 1.0,
    max_duration_s: float | None = None,
    tracks_csv: str | os.PathLike[str] | None = None,
    n_jobs: int = 1,
    test_table: str | os.PathLike[str] | None = "auto",
    test_where: dict[str, str] | None = None,
    report_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    verbose: bool = True,
):
    """Cross-validate, fit the final model on all rows, save it and its report.

    Parameters
    ----------
    table_path : str or path-like or None
        Feature table in the Kaggle GTZAN layout. ``None`` and no
        ``audio_dir``: ``<shared>/data/gtzan/features_10_sec.csv``.
    out_dir : str or path-like
        Output folder (created): ``model.keras``, ``report.json``, and
        ``features.csv`` when training from audio.
    epochs : int > 0
        Epochs of every fit (folds and final).
    seed : int
        Seed of everything random (weights, dropout, batch order, folds).
    audio_dir : str or path-like or None
        Compute the table from this audio folder instead
        (:func:`training.data.features_from_audio_dir`, ``window_s`` windows).
    layout : {"gtzan", "fma"}
        Layout of ``audio_dir``.
    batch_size, learning_rate, hidden, dropout, label_smoothing :
        See :class:`TrainConfig`.
    n_folds : int >= 0
        Folds of each cross-validation; 0 skips validation (final fit only).
    block_size : int > 0
        Tracks per block of the block split.
    window_s : float or None
        Window length in seconds of a row: from ``audio_dir`` windows (default
        10.0), or read from a table's ``length`` column (``None``).
    hop_s : float > 0
        Serving hop in seconds recorded for the exported model (default 1.0).
    max_duration_s : float or None
        Audio: use at most the first ``max_duration_s`` seconds of each file.
    tracks_csv : str or path-like or None
        FMA layout: the genre table (see :func:`training.data.features_from_audio_dir`).
    n_jobs : int
        Processes computing features from audio.
    test_table : str or path-like or None or "auto"
        A feature table of rows never trained on, scored with the final model
        (report section ``test``). ``"auto"``: when training on the default
        GTZAN table, its held-out tracks ``genre.00000`` (the 10 s rows of
        ``parity_rows.csv``, :data:`GTZAN_HELDOUT`) if present; otherwise none.
        ``None``: no test.
    test_where : dict of str to str, optional
        Row filter of ``test_table`` (see :func:`training.data.load_feature_table`).
    report_path : str or path-like or None
        Where to write the JSON report; default ``out_dir/report.json``.
    progress : bool
        Progress bars (feature extraction, epochs) on stderr.
    verbose : bool
        Print the summary to stdout.

    Returns
    -------
    model : keras.Model
        The final model, fitted on every row: raw features ``(batch, 57)``
        float32 in, softmax probabilities ``(batch, n_classes)`` out.
    report : dict
        JSON-serialisable: ``model_name``, ``model_version``, ``labels``,
        ``feature_names``, ``feature_frontend``(``_version``), ``sample_rate``,
        ``window_s``, ``hop_s``, ``data``, ``config``, ``validation``
        ({"track": ..., "block": ...} from :func:`cross_validate`), ``final``,
        ``test`` (when a test table is used), ``versions``, ``summary``
        (:func:`training_summary`), ``files``, ``timing_s``.

    Raises
    ------
    FileNotFoundError, ValueError
        From loading the table or the audio (bad paths, missing columns, ...).
    """
    from training.model import MODEL_NAME, MODEL_VERSION

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if epochs < 1:
        raise ValueError(f"epochs: expected a positive integer, got {epochs}")

    if audio_dir is not None:
        window_s = 10.0 if window_s is None else float(window_s)
        features_csv = out_dir / "features.csv"
        table = features_from_audio_dir(
            audio_dir,
            layout=layout,
            window_s=window_s,
            max_duration_s=max_duration_s,
            tracks_csv=tracks_csv,
            n_jobs=n_jobs,
            progress=progress,
            out_csv=features_csv,
        )
        data = {
            "source": "audio",
            "audio_dir": str(Path(audio_dir).resolve()),
            "layout": layout,
            "path": str(features_csv.resolve()),
            "name": f"{Path(audio_dir).resolve().name} ({layout} layout, {window_s:g} s windows)",
            "sha256": _sha256(features_csv),
        }
    else:
        path = Path(table_path) if table_path is not None else gtzan_table_path("features_10_sec.csv")
        table = load_feature_table(path)
        if test_table == "auto" and table_path is None and gtzan_table_path(GTZAN_HELDOUT[0]).is_file():
            test_table, test_where = gtzan_table_path(GTZAN_HELDOUT[0]), dict(GTZAN_HELDOUT[1])
        if window_s is None:
            window_s = _window_from_lengths(path)
        data = {"source": "table", "path": _display_path(path), "name": path.name, "sha256": _sha256(path)}
    data.update(
        {
            "rows": len(table),
            "tracks": int(len(np.unique(table.track_ids))),
            "rows_per_genre": {label: int(np.sum(table.y == k)) for k, label in enumerate(table.labels)},
        }
    )
    extracted = time.perf_counter()

    config = TrainConfig(
        epochs=int(epochs),
        batch_size=int(batch_size),
        learning_rate=float(learning_rate),
        hidden=tuple(int(h) for h in hidden),
        dropout=float(dropout),
        label_smoothing=float(label_smoothing),
        seed=int(seed),
        n_folds=int(n_folds),
        block_size=int(block_size),
    )
    validation: dict[str, dict] = {}
    if config.n_folds > 0:
        for scheme in ("track", "block"):
            try:
                validation[scheme] = cross_validate(table, scheme, config, progress=progress)
            except ValueError as error:  # e.g. a single group: nothing to hold out
                validation[scheme] = {"scheme": scheme, "skipped": str(error)}
    validated = time.perf_counter()

    model, history = fit_model(table.X, table.y, len(table.labels), config, progress=progress, desc="final fit")
    train_summary = classification_summary(table.y, predict_proba(model, table.X).argmax(axis=1), table.labels)
    test = None
    if test_table is not None and test_table != "auto":
        test = evaluate_table(model, table, test_table, test_where)
    fitted = time.perf_counter()

    model_path = out_dir / "model.keras"
    model.save(model_path)
    report_path = Path(report_path) if report_path is not None else out_dir / "report.json"

    report = {
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "labels": list(table.labels),
        "feature_names": list(FEATURE_NAMES),
        "feature_frontend": FRONTEND_NAME,
        "feature_frontend_version": FRONTEND_VERSION,
        "sample_rate": SAMPLE_RATE,
        "window_s": float(window_s),
        "hop_s": float(hop_s),
        "data": data,
        "config": {**asdict(config), "hidden": list(config.hidden)},
        "validation": validation,
        "final": {
            "rows": len(table),
            "epochs": config.epochs,
            "final_loss": round(history["loss"][-1], 5),
            "train_accuracy": train_summary["accuracy"],
            "parameters": int(model.count_params()),
        },
        **({"test": test} if test is not None else {}),
        "versions": library_versions(),
        "files": {"model": str(model_path.resolve()), "report": str(report_path.resolve())},
        "timing_s": {
            "data": round(extracted - started, 2),
            "validation": round(validated - extracted, 2),
            "final_fit": round(fitted - validated, 2),
        },
    }
    report["summary"] = training_summary(report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["timing_s"]["total"] = round(time.perf_counter() - started, 2)
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if verbose:
        print(format_summary(report))
    return model, report


def _window_from_lengths(path: Path) -> float:
    """Window length in seconds from a table's ``length`` column (median samples / 22050), else 10.0."""
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        lengths = []
        for row in csv.DictReader(handle):
            try:
                lengths.append(float(row.get("length") or "nan"))
            except ValueError:
                continue
    lengths = [v for v in lengths if np.isfinite(v) and v > 0]
    if not lengths:
        return 10.0
    return round(float(np.median(lengths)) / SAMPLE_RATE, 1)


def format_summary(report: dict) -> str:
    """A few human-readable lines: data, validation accuracy per scheme with per-genre recall, output files."""
    data = report["data"]
    lines = [
        f"{report['model_name']} v{report['model_version']}: {data['rows']} rows, {data['tracks']} tracks "
        f"from {data['name']}; {report['config']['epochs']} epochs, seed {report['config']['seed']}",
    ]
    for scheme, result in report["validation"].items():
        if "skipped" in result:
            lines.append(f"  validation by {scheme}: skipped ({result['skipped']})")
            continue
        recall = ", ".join(
            f"{label} {value:.2f}" if value is not None else f"{label} -"
            for label, value in result["per_genre_recall"].items()
        )
        lines.append(
            f"  validation by {scheme} ({result['n_folds']} folds): accuracy {result['accuracy']:.3f} "
            f"(fold std {result['fold_accuracy_std']:.3f}), per-track vote {result['track_vote_accuracy']:.3f}"
        )
        lines.append(f"    recall: {recall}")
    lines.append(
        f"  final fit on all rows: train accuracy {report['final']['train_accuracy']:.3f}, "
        f"{report['final']['parameters']} parameters"
    )
    if "test" in report:
        test = report["test"]
        where = ", ".join(f"{k}={v}" for k, v in test["where"].items())
        lines.append(
            f"  test on {test['name']}{f' ({where})' if where else ''}, {test['rows']} rows of {test['tracks']} "
            f"unseen tracks: accuracy {test['accuracy']:.3f}, per-track vote {test['track_vote_accuracy']:.3f}"
        )
    lines.append(f"  model: {report['files']['model']}")
    lines.append(f"  report: {report['files']['report']}")
    if "total" in report.get("timing_s", {}):
        lines.append(f"  time: {report['timing_s']['total']:.1f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``genrestream train`` (see :func:`main`)."""
    parser = argparse.ArgumentParser(
        prog="genrestream train",
        description="Train the genre classifier (cross-validated by track and by blocks of 10 tracks, "
        "then fitted on every row) and save model.keras and report.json.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--table", type=Path, default=None,
        help="feature table in the Kaggle GTZAN layout (default: $GENRESTREAM_SHARED/data/gtzan/features_10_sec.csv)",
    )
    source.add_argument(
        "--audio-dir", type=Path, default=None,
        help="compute the features from this audio folder instead (one sub-folder per genre, or FMA)",
    )
    parser.add_argument("--layout", choices=("gtzan", "fma"), default="gtzan", help="layout of --audio-dir (default: gtzan)")
    parser.add_argument("--tracks-csv", type=Path, default=None, help="FMA layout: tracks.csv giving each track's genre_top")
    parser.add_argument("--epochs", type=int, default=DEFAULT_CONFIG.epochs, help=f"epochs (default: {DEFAULT_CONFIG.epochs})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: ./artifacts)")
    parser.add_argument("--report", type=Path, default=None, help="report JSON path (default: OUT_DIR/report.json)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_CONFIG.batch_size)
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_CONFIG.learning_rate)
    parser.add_argument("--dropout", type=float, default=DEFAULT_CONFIG.dropout)
    parser.add_argument("--label-smoothing", type=float, default=DEFAULT_CONFIG.label_smoothing)
    parser.add_argument(
        "--folds", type=int, default=DEFAULT_CONFIG.n_folds,
        help=f"folds of each cross-validation, 0 to skip validation (default: {DEFAULT_CONFIG.n_folds})",
    )
    parser.add_argument("--block-size", type=int, default=DEFAULT_CONFIG.block_size, help="tracks per block (default: 10)")
    parser.add_argument("--window-s", type=float, default=None, help="window length in seconds (audio; default 10)")
    parser.add_argument("--hop-s", type=float, default=1.0, help="serving hop recorded for the model (default: 1.0)")
    parser.add_argument("--max-duration-s", type=float, default=None,
                        help="audio: use at most the first seconds of each file (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="processes computing features from audio (default: 1)")
    parser.add_argument(
        "--test-table", type=Path, default=None,
        help="feature table of unseen rows to score the final model on (default: with the default GTZAN table, "
        "its held-out tracks genre.00000 from parity_rows.csv; else none)",
    )
    parser.add_argument(
        "--test-where", action="append", default=[], metavar="COLUMN=VALUE",
        help="keep only --test-table rows whose COLUMN equals VALUE (repeatable)",
    )
    parser.add_argument("--no-test", action="store_true", help="score no test table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def test_options(args: argparse.Namespace) -> dict:
    """``test_table`` and ``test_where`` arguments of :func:`train` from parsed options."""
    where = {}
    for item in args.test_where:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise ValueError(f"--test-where: expected COLUMN=VALUE, got {item!r}")
        where[column] = value
    if args.no_test:
        return {"test_table": None, "test_where": None}
    return {"test_table": args.test_table if args.test_table is not None else "auto", "test_where": where or None}


def train_options(args) -> dict:
    """Keyword arguments of :func:`train` from parsed command-line options (shared with export.build)."""
    return dict(
        **test_options(args),
        table_path=args.table,
        out_dir=args.out_dir,
        epochs=args.epochs,
        seed=args.seed,
        audio_dir=args.audio_dir,
        layout=args.layout,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        dropout=args.dropout,
        label_smoothing=args.label_smoothing,
        n_folds=args.folds,
        block_size=args.block_size,
        window_s=args.window_s,
        hop_s=args.hop_s,
        max_duration_s=args.max_duration_s,
        tracks_csv=args.tracks_csv,
        n_jobs=args.jobs,
        report_path=args.report,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``genrestream train``: parse ``argv`` (default ``sys.argv[1:]``), run :func:`train`, return 0.

    Errors in the input (missing table, bad columns, empty audio folder) are
    printed to stderr and give exit status 2.
    """
    args = build_parser().parse_args(argv)
    try:
        train(**train_options(args))
    except (FileNotFoundError, ValueError) as error:
        print(f"genrestream train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
