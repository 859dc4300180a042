"""Export of trained models to the ONNX files that ``stream/`` serves.

- :mod:`export.musicnn`: musicnn's TF 1 checkpoint (PyPI wheel) → ONNX backbone (tf2onnx).
- :mod:`export.musicnn_model`: backbone + trained Keras heads → the musicnn model, metadata, verification.
- :mod:`export.onnx_export`: the 57-feature MLP, Keras 3 → ONNX (tf2onnx), metadata, verification.
- :mod:`export.cli`: ``genrestream export``, for either model; :mod:`export.build`: the MLP, train then export.

Needs the ``train`` extra (TensorFlow, tf2onnx, onnx). Serving never imports this package.
"""

import logging

# tf2onnx narrates every conversion at INFO; genrestream's CLI logs at INFO.
logging.getLogger("tf2onnx").setLevel(logging.WARNING)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's Python-side deprecation notices (TF 1 graph APIs used on purpose) out of the output."""
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
