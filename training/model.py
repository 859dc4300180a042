"""The Keras model: standardisation inside the model, then a small MLP.

The model takes RAW features (the 57 of :data:`stream.frontends.gtzan.FEATURE_NAMES`,
float32) and returns softmax probabilities, so the exported ONNX needs nothing
from training at serving time. Standardisation is a :class:`Standardize` layer
holding the training mean and standard deviation as (non-trainable) weights,
rather than ``keras.layers.Normalization``: Keras 3 keeps an adapted
Normalization's statistics as eager tensors, which ``tf2onnx`` turns into
extra graph inputs instead of constants.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from stream.frontends.gtzan import FEATURE_NAMES

MODEL_NAME = "gtzan-mlp"
"""``model_name`` recorded in the ONNX metadata."""

MODEL_VERSION = "1"
"""``model_version`` recorded in the ONNX metadata; bump when the architecture or training changes."""

STD_FLOOR = 1e-12
"""Smallest standard deviation used to divide by (constant features stay finite)."""


@keras.saving.register_keras_serializable(package="genrestream")
class Standardize(keras.layers.Layer):
    """``(x - mean) / std`` per feature, with ``mean`` and ``std`` stored as weights.

    Parameters
    ----------
    **kwargs
        Passed to :class:`keras.layers.Layer` (e.g. ``name``).

    Notes
    -----
    Build the layer (call it once, or :meth:`build`) and then set the
    statistics with :meth:`set_statistics`; they are saved with the model
    (``model.save("model.keras")``) and exported as ONNX constants.
    """

    def build(self, input_shape):
        n = int(input_shape[-1])
        self.mean = self.add_weight(name="mean", shape=(n,), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(n,), initializer="ones", trainable=False)

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Set the per-feature mean and standard deviation (shape ``(n_features,)``, raw units)."""
        mean = np.asarray(mean, dtype=np.float64)
        std = np.maximum(np.asarray(std, dtype=np.float64), STD_FLOOR)
        self.mean.assign(mean.astype("float32"))
        self.std.assign(std.astype("float32"))

    def call(self, inputs):
        return (inputs - self.mean) / self.std


def feature_statistics(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of a feature matrix.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
        Raw features.

    Returns
    -------
    mean, std : np.ndarray [shape=(d,), dtype=float64]
        Computed in float64 (``np.mean``, ``np.std`` with ``ddof=0``).
    """
    X = np.asarray(X, dtype=np.float64)
    return X.mean(axis=0), X.std(axis=0)


def build_model(
    n_classes: int,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.3,
    n_features: int = len(FEATURE_NAMES),
) -> keras.Model:
    """The classifier: Standardize → (Dense relu → Dropout) per hidden layer → Dense → softmax.

    Parameters
    ----------
    n_classes : int >= 2
        Number of genres.
    mean, std : np.ndarray [shape=(n_features,)] or None
        Standardisation statistics of the training rows (raw units), e.g. from
        :func:`feature_statistics`; ``None`` leaves 0 and 1.
    hidden : sequence of int
        Widths of the hidden ReLU layers.
    dropout : float in [0, 1)
        Dropout rate after each hidden layer (training only).
    n_features : int
        Input width (57).

    Returns
    -------
    model : keras.Model
        Input ``"features"`` ``(batch, n_features)`` float32; output
        ``(batch, n_classes)`` softmax probabilities (layer ``"probabilities"``),
        computed from the layer ``"logits"``. Weights are initialised from
        Keras's global seed (:func:`keras.utils.set_random_seed`).
    """
    inputs = keras.Input(shape=(n_features,), dtype="float32", name="features")
    standardize = Standardize(name="standardize")
    x = standardize(inputs)
    for k, width in enumerate(hidden):
        x = keras.layers.Dense(int(width), activation="relu", name=f"dense_{k}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{k}")(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(inputs, probabilities, name=MODEL_NAME.replace("-", "_"))
    if mean is not None and std is not None:
        standardize.set_statistics(mean, std)
    return model


def logits_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers that outputs the pre-softmax ``"logits"`` layer."""
    return keras.Model(model.inputs[0], model.get_layer("logits").output)
