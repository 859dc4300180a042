"""Heads on a pretrained embedding: L2-regularised softmax regression in Keras, validated and calibrated.

A head is ``Standardize → Dense (logits) → softmax`` on the backbone's
embedding of one window (musicnn's 200-d penultimate layer), trained with
Adam on the softmax cross-entropy plus an L2 penalty on the weights, class-
balanced. Validation is grouped (:func:`training.splits.group_kfold`: GTZAN's
blocks of tracks, or clips), never by window: the windows of one clip are
near copies of each other.

Calibration. A softmax regression on few, well-separated clips is
overconfident: its top probability is near 1 whatever the window, so the
smoother's "unknown" would never fire. The L2 strength is chosen by the
grouped cross-validation's log-loss (out-of-fold, pooled), then a
temperature ``T`` (Guo et al., "On Calibration of Modern Neural Networks",
ICML 2017) is fitted to the pooled out-of-fold logits by log-loss; the
exported head divides its logits by ``T`` (folded into the weights).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from training.splits import group_kfold

EMBEDDING_NAME = "embedding"


@dataclass(frozen=True)
class HeadConfig:
    """Settings of a head's training (all recorded in the report).

    Attributes
    ----------
    l2_grid : tuple of float
        L2 strengths tried by the grouped cross-validation (per weight, added
        to the mean cross-entropy).
    steps : int
        Full-batch Adam steps per fit.
    learning_rate : float
    n_folds : int
        Folds of the grouped cross-validation.
    seed : int
    balance : bool
        Weight classes by the inverse of their number of windows.
    """

    l2_grid: tuple[float, ...] = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    steps: int = 400
    learning_rate: float = 0.02
    n_folds: int = 5
    seed: int = 0
    balance: bool = True


@dataclass
class HeadResult:
    """A trained head and how it validated.

    Attributes
    ----------
    model : keras.Model
        ``embedding`` (batch, d) → ``probabilities`` (batch, n_classes), temperature applied.
    labels : list of str
    l2 : float
        The chosen L2 strength.
    temperature : float
        Divides the logits (fitted on the out-of-fold logits).
    validation : dict
        See :func:`summarise`.
    oof_probabilities : np.ndarray [shape=(n_windows, n_classes)]
        The pooled out-of-fold probabilities (chosen L2, temperature applied);
        NaN for windows no fold validates on (a given split).
    """

    model: object
    labels: list[str]
    l2: float
    temperature: float
    validation: dict = field(default_factory=dict)
    oof_probabilities: np.ndarray | None = None


def build_head(n_features: int, n_classes: int, mean: np.ndarray, std: np.ndarray, name: str = "head"):
    """``Standardize → Dense "logits" → Softmax "probabilities"`` on an input named ``embedding``.

    Parameters
    ----------
    n_features, n_classes : int
    mean, std : np.ndarray [shape=(n_features,)]
        Standardisation of the training windows.
    name : str
        Keras model name.

    Returns
    -------
    keras.Model
    """
    import keras

    from training.model import Standardize

    inputs = keras.Input(shape=(n_features,), dtype="float32", name=EMBEDDING_NAME)
    standardize = Standardize(name="standardize")
    logits = keras.layers.Dense(n_classes, name="logits")(standardize(inputs))
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(inputs, probabilities, name=name)
    standardize.set_statistics(mean, std)
    return model


def fit_head(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float, config: HeadConfig = HeadConfig(),
             name: str = "head"):
    """Fit one head on embeddings.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d), dtype=float32]
        Window embeddings.
    y : np.ndarray [shape=(n,), dtype=int]
        Class of each window, in ``[0, n_classes)``.
    n_classes : int
    l2 : float >= 0
        L2 penalty on the Dense kernel.
    config : HeadConfig
    name : str

    Returns
    -------
    keras.Model
        Softmax output; see :func:`build_head`.

    Notes
    -----
    Full-batch Adam (Kingma & Ba 2015) for ``config.steps`` steps on the
    class-weighted mean cross-entropy of the logits; seeded and deterministic.
    """
    import keras
    import tensorflow as tf

    from training.model import feature_statistics
    from training.train import set_determinism

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    set_determinism(config.seed)
    mean, std = feature_statistics(X)
    model = build_head(X.shape[1], n_classes, mean, std, name=name)
    dense = model.get_layer("logits")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if config.balance:
        class_weight = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, np.count_nonzero(counts)), 0.0)
    else:
        class_weight = np.ones(n_classes)
    weights = tf.constant(class_weight[y] / class_weight[y].mean(), dtype=tf.float32)
    X_t, Y_t = tf.constant(X), tf.one_hot(tf.constant(y), n_classes)
    standardize = model.get_layer("standardize")
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(dense.trainable_variables)
    l2_t = tf.constant(float(l2), tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = dense(standardize(X_t))
            ce = tf.nn.softmax_cross_entropy_with_logits(Y_t, logits)
            loss = tf.reduce_mean(ce * weights) + l2_t * tf.reduce_sum(tf.square(dense.kernel))
        grads = tape.gradient(loss, dense.trainable_variables)
        optimizer.apply_gradients(zip(grads, dense.trainable_variables))
        return loss

    for _ in range(int(config.steps)):
        step()
    return model


def head_logits(model, X: np.ndarray) -> np.ndarray:
    """The pre-softmax logits of a head (before any temperature), float64 [shape=(n, n_classes)]."""
    import keras

    to_logits = keras.Model(model.inputs[0], model.get_layer("logits").output)
    return np.asarray(to_logits(np.asarray(X, dtype=np.float32), training=False), dtype=np.float64)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (probabilities clipped at 1e-12)."""
    p = np.clip(probabilities[np.arange(len(y)), y], 1e-12, 1.0)
    return float(-np.mean(np.log(p)))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the log-loss of ``softmax(logits / T)`` (golden-section search on log T in [1/8, 32])."""
    lo, hi = np.log(1 / 8), np.log(32.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = log_loss(softmax(logits, np.exp(a)), y), log_loss(softmax(logits, np.exp(b)), y)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = log_loss(softmax(logits, np.exp(a)), y)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = log_loss(softmax(logits, np.exp(b)), y)
    return float(np.exp((lo + hi) / 2))


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE of the top class: the |accuracy - confidence| of equal-width confidence bins, weighted by size."""
    top = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (top > lo) & (top <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - top[inside].mean())
    return float(total)


def summarise(probabilities: np.ndarray, y: np.ndarray, clip_index: np.ndarray, labels: Sequence[str]) -> dict:
    """Window- and clip-level figures of out-of-fold probabilities.

    Parameters
    ----------
    probabilities : np.ndarray [shape=(n_windows, n_classes)]
    y : np.ndarray [shape=(n_windows,), dtype=int]
    clip_index : np.ndarray [shape=(n_windows,), dtype=int]
        The clip each window comes from; a clip's probabilities are the mean
        of its windows'.
    labels : sequence of str

    Returns
    -------
    dict
        ``window_accuracy``, ``clip_accuracy``, ``clips``, ``windows``,
        ``per_label_recall`` (clips), ``confusion_matrix`` (clips; rows true,
        columns predicted), ``log_loss`` (windows), ``ece`` (windows),
        ``median_top_probability`` and ``share_top_below_0_4`` (windows).
    """
    n = len(labels)
    clips = np.unique(clip_index)
    clip_p = np.stack([probabilities[clip_index == c].mean(axis=0) for c in clips])
    clip_y = np.array([y[clip_index == c][0] for c in clips])
    clip_pred = clip_p.argmax(axis=1)
    confusion = np.zeros((n, n), dtype=int)
    for t, p in zip(clip_y, clip_pred):
        confusion[t, p] += 1
    recall = {
        labels[k]: round(float(confusion[k, k] / confusion[k].sum()), 4) for k in range(n) if confusion[k].sum()
    }
    top = probabilities.max(axis=1)
    return {
        "window_accuracy": round(float(np.mean(probabilities.argmax(axis=1) == y)), 4),
        "clip_accuracy": round(float(np.mean(clip_pred == clip_y)), 4),
        "clips": int(len(clips)),
        "windows": int(len(y)),
        "per_label_recall": recall,
        "confusion_matrix": confusion.tolist(),
        "log_loss": round(log_loss(probabilities, y), 4),
        "ece": round(expected_calibration_error(probabilities, y), 4),
        "median_top_probability": round(float(np.median(top)), 4),
        "share_top_below_0_4": round(float(np.mean(top < 0.4)), 4),
    }


def train_head(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    clip_index: np.ndarray,
    labels: Sequence[str],
    config: HeadConfig = HeadConfig(),
    name: str = "head",
    progress: bool = True,
    folds: list | None = None,
) -> HeadResult:
    """Choose the L2 strength and the temperature by grouped cross-validation, then fit on every window.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d), dtype=float32]
        Window embeddings.
    y : np.ndarray [shape=(n,), dtype=int]
        Class of each window.
    groups : np.ndarray [shape=(n,)]
        Validation group of each window (GTZAN block, clip...).
    clip_index : np.ndarray [shape=(n,), dtype=int]
        Clip of each window (for clip-level figures).
    labels : sequence of str
        Class names, by index.
    config : HeadConfig
    name : str
        Keras model name (and progress label).
    progress : bool
        A tqdm bar over the fits.
    folds : list of (train_index, val_index) or None
        A given split instead of ``group_kfold(groups, y, config.n_folds, config.seed)``.

    Returns
    -------
    HeadResult
        ``validation`` holds, for the chosen L2 and temperature, the
        :func:`summarise` figures of the pooled out-of-fold probabilities
        (``calibrated``) and of the same before calibration (``uncalibrated``),
        the log-loss of every L2 tried, the folds and groups.

    Raises
    ------
    ValueError
        If there are fewer than two groups, or a class has no window.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    missing = [labels[k] for k in range(len(labels)) if not np.any(y == k)]
    if missing:
        raise ValueError(f"{name}: no training window of {missing}")
    scheme = "given split" if folds is not None else f"grouped {config.n_folds}-fold"
    folds = folds if folds is not None else group_kfold(groups, y, config.n_folds, config.seed)
    n_classes = len(labels)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(config.l2_grid) * len(folds) + 1, desc=f"{name} heads", unit="fit", file=sys.stderr)
    tried: dict[float, tuple[float, np.ndarray]] = {}
    held = np.zeros(len(y), dtype=bool)  # windows some fold validates on (all of them, unless a split was given)
    for _, val_index in folds:
        held[val_index] = True
    for l2 in config.l2_grid:
        oof = np.zeros((len(y), n_classes))
        for train_index, val_index in folds:
            model = fit_head(X[train_index], y[train_index], n_classes, l2, config, name=name)
            oof[val_index] = head_logits(model, X[val_index])
            if bar is not None:
                bar.update(1)
        tried[l2] = (log_loss(softmax(oof[held]), y[held]), oof)
    best_l2 = min(tried, key=lambda k: tried[k][0])
    oof_logits = tried[best_l2][1]
    temperature = fit_temperature(oof_logits[held], y[held])
    final = fit_head(X, y, n_classes, best_l2, config, name=name)
    dense = final.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / temperature, bias / temperature])  # the exported head is calibrated
    if bar is not None:
        bar.update(1)
        bar.close()
    validation = {
        "scheme": scheme,
        "n_folds": len(folds),
        "groups": int(len(np.unique(groups))),
        "l2_log_loss": {format(k, "g"): round(v[0], 4) for k, v in tried.items()},
        "l2": best_l2,
        "temperature": round(temperature, 4),
        "calibrated": summarise(softmax(oof_logits[held], temperature), y[held], clip_index[held], labels),
        "uncalibrated": summarise(softmax(oof_logits[held]), y[held], clip_index[held], labels),
        "config": asdict(config),
    }
    oof = softmax(oof_logits, temperature)
    oof[~held] = np.nan
    return HeadResult(final, list(labels), best_l2, temperature, validation, oof)
