"""Export of trained Keras models to the ONNX file that ``stream/`` serves.

- :mod:`export.onnx_export`: Keras 3 → ONNX (tf2onnx), metadata, verification, ``genrestream export``.
- :mod:`export.build`: train then export in one step (regenerates the shipped model).

Needs the ``train`` extra (TensorFlow, tf2onnx, onnx). Serving never imports this package.
"""
