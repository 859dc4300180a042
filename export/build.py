"""Train and export in one step: regenerates the shipped ``stream/models/gtzan_mlp.onnx``.

``python -m export.build`` with no options trains the default configuration on
``features_10_sec.csv`` (seed 0), exports it to ``stream/models/gtzan_mlp.onnx``
and writes ``stream/models/gtzan_mlp.report.json``. Training is deterministic,
so a rerun reproduces the shipped weights (same TensorFlow build and CPU).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from export.onnx_export import (
    DEFAULT_ONNX_PATH,
    DEFAULT_OPSET,
    export_model,
    format_export,
    verification_rows,
)


def train_and_export(
    onnx_path: str | Path = DEFAULT_ONNX_PATH,
    opset: int = DEFAULT_OPSET,
    **train_kwargs,
) -> tuple[dict, dict]:
    """Run :func:`training.train.train`, then :func:`export.onnx_export.export_model`.

    Parameters
    ----------
    onnx_path : str or path-like
        Destination of the ONNX file (default: the shipped model); the report
        goes beside it as ``<stem>.report.json``.
    opset : int
        ONNX opset.
    **train_kwargs
        Passed to :func:`training.train.train` (``table_path``, ``out_dir``,
        ``epochs``, ``seed``, ``audio_dir``, ``layout``, ...).

    Returns
    -------
    report : dict
        The training report.
    info : dict
        The export facts (:func:`export.onnx_export.export_model`), verified
        against TensorFlow on every training row.
    """
    from training.train import train

    model, report = train(**train_kwargs)
    info = export_model(model, report, onnx_path, verification_rows(report), opset=opset)
    return report, info


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.build``: the options of ``genrestream train`` plus ``--onnx`` and ``--opset``.

    Returns
    -------
    status : int
        0 on success, 2 on bad input, 1 if the export failed verification.
    """
    from export.onnx_export import ExportVerificationError
    from training.train import build_parser, train_options

    parser = build_parser()
    parser.prog = "python -m export.build"
    parser.description = "Train (see genrestream train) and export the result to ONNX in one step."
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX_PATH, help="ONNX file to write (default: the shipped model)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = parser.parse_args(argv)
    try:
        _, info = train_and_export(onnx_path=args.onnx, opset=args.opset, **train_options(args))
    except ExportVerificationError as error:
        print(f"export: verification failed: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"export: error: {error}", file=sys.stderr)
        return 2
    print(format_export(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
