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


def atomic_output(out_path):
    """A context manager giving a temporary path beside ``out_path``; on a clean exit it becomes ``out_path``.

    The file is made world-readable (``mkstemp`` creates 0600; a shipped model is read by
    others) and renamed into place atomically; if the block raises (a failed
    verification), ``out_path`` is left untouched and the temporary file removed.

    Examples
    --------
    >>> with atomic_output("model.onnx") as tmp:  # doctest: +SKIP
    ...     onnx.save_model(proto, tmp)
    ...     verify(tmp)
    """
    import contextlib
    import os
    import tempfile
    from pathlib import Path

    @contextlib.contextmanager
    def manager():
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(suffix=out.suffix or ".tmp", dir=out.parent, prefix=f".{out.stem}.")
        os.close(handle)
        tmp = Path(name)
        try:
            yield tmp
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()

    return manager()
