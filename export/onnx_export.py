"""Keras 3 → ONNX, with the metadata serving reads, verified against TensorFlow.

The ONNX contract (what ``stream/model.py`` expects):

- input ``"features"``: float32 ``[batch, 57]``, ``batch`` a symbolic (dynamic)
  dimension, RAW features in :data:`stream.frontends.gtzan.FEATURE_NAMES` order
  (standardisation is inside the model);
- output ``"probabilities"``: float32 ``[batch, n_classes]`` softmax, and
  output ``"logits"``: float32 ``[batch, n_classes]``, the pre-softmax scores;
- ``metadata_props`` (all strings; :data:`stream.model.REQUIRED_METADATA`):
  ``labels`` (JSON list), ``heads`` (JSON: the genre head's output and
  labels), ``input_name``, ``frontend`` (JSON: name, version and every
  parameter of :class:`stream.frontends.gtzan.GtzanFrontend`),
  ``sample_rate``, ``window_s``, ``hop_s``, ``model_name``,
  ``model_version``, ``licences`` (JSON), ``training_summary`` (JSON),
  ``silence_rms``.

Conversion uses :func:`tf2onnx.convert.from_function` on a ``tf.function``
with an explicit input signature (``tf2onnx.convert.from_keras`` does not
support Keras 3). The file is written only after ONNX Runtime reproduces
TensorFlow's probabilities on real feature rows to within ``1e-5``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

from stream.frontends.gtzan import FEATURE_NAMES, FRONTEND_NAME, FRONTEND_VERSION, SAMPLE_RATE, GtzanFrontend
from stream.model import REQUIRED_METADATA
from training.data import REPO_ROOT, features_from_audio_dir, load_feature_table, shared_dir

DEFAULT_ONNX_PATH = REPO_ROOT / "stream" / "models" / "gtzan_mlp.onnx"
"""The shipped model file (package data of ``stream``)."""

DEFAULT_OPSET = 17
"""ONNX opset of the export (onnxruntime >= 1.14 runs it)."""

TOLERANCE = 1e-5
"""Largest accepted |ONNX Runtime - TensorFlow| difference of a probability."""

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
LOGITS_NAME = "logits"
BATCH_DIM = "batch"

LICENCES = [
    {"what": "genrestream code", "licence": "MIT", "source": "this repository"},
    {"what": "training data: GTZAN feature tables (Tzanetakis & Cook 2002; Kaggle layout)",
     "licence": "research use (GTZAN)", "source": "../shared/data/gtzan"},
]
"""What the 57-feature model is made of, recorded as metadata ``licences``."""



class ExportVerificationError(RuntimeError):
    """ONNX Runtime's outputs differ from TensorFlow's by more than the tolerance."""


def report_path_for(onnx_path: str | os.PathLike[str]) -> Path:
    """The training report shipped beside a model: ``gtzan_mlp.onnx`` → ``gtzan_mlp.report.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".report.json")


def build_metadata(report: dict, silence_rms: float | None = None) -> dict[str, str]:
    """The ``metadata_props`` of the exported model, from a training report.

    Parameters
    ----------
    report : dict
        As returned (and saved) by :func:`training.train.train`.
    silence_rms : float or None
        RMS (of samples in [-1, 1]) below which a window is quieter than
        anything the model was trained on; omitted when ``None``.

    Returns
    -------
    metadata : dict of str to str
        The keys of :data:`stream.model.REQUIRED_METADATA` (plus
        ``silence_rms``); lists, objects and the training summary as JSON.

    Raises
    ------
    ValueError
        If the report's feature names or frontend differ from
        :mod:`stream.frontends.gtzan` (a model trained on other features must not be
        served with this frontend).
    """
    from training.train import training_summary

    if list(report["feature_names"]) != list(FEATURE_NAMES):
        raise ValueError("report: feature_names differ from stream.frontends.gtzan.FEATURE_NAMES")
    if report["feature_frontend"] != FRONTEND_NAME or str(report["feature_frontend_version"]) != FRONTEND_VERSION:
        raise ValueError(
            f"report: trained with frontend {report['feature_frontend']} v{report['feature_frontend_version']}, "
            f"this checkout computes {FRONTEND_NAME} v{FRONTEND_VERSION}: retrain"
        )
    summary = report.get("summary") or training_summary(report)
    frontend = GtzanFrontend(float(report["window_s"]))
    metadata = {
        "labels": json.dumps(list(report["labels"])),
        "heads": json.dumps({"genre": {"output": OUTPUT_NAME, "labels": list(report["labels"])}}),
        "input_name": INPUT_NAME,
        "frontend": json.dumps(frontend.params(), separators=(",", ":")),
        "sample_rate": str(int(report.get("sample_rate", SAMPLE_RATE))),
        "window_s": str(float(report["window_s"])),
        "hop_s": str(float(report["hop_s"])),
        "licences": json.dumps(LICENCES),
        "model_name": str(report["model_name"]),
        "model_version": str(report["model_version"]),
        "training_summary": json.dumps(summary, separators=(",", ":"), sort_keys=True),
    }
    if silence_rms is not None:
        metadata["silence_rms"] = format(float(silence_rms), ".6g")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    assert not missing, f"build_metadata forgot {missing}"
    return metadata


def silence_rms_from_table(X: np.ndarray, factor: float = 0.5) -> float:
    """Half the quietest training window's mean frame RMS (column ``rms_mean``).

    Parameters
    ----------
    X : np.ndarray [shape=(n, 57)]
        Raw training features.
    factor : float
        Fraction of the minimum.

    Returns
    -------
    silence_rms : float
        For ``features_10_sec.csv``: 0.5 × 0.00125 ≈ 6.3e-4 (about -64 dBFS).
    """
    return float(factor * np.min(np.asarray(X, dtype=np.float64)[:, FEATURE_NAMES.index("rms_mean")]))


def keras_to_onnx(keras_model, opset: int = DEFAULT_OPSET):
    """Convert a trained Keras 3 model to an ONNX ModelProto (no metadata yet).

    Parameters
    ----------
    keras_model : keras.Model
        From :func:`training.model.build_model` (input ``(batch, 57)`` float32,
        a ``"logits"`` layer, softmax output).
    opset : int
        Target ONNX opset.

    Returns
    -------
    model : onnx.ModelProto
        Input ``"features"`` ``[batch, 57]``; outputs ``"probabilities"`` and
        ``"logits"`` ``[batch, n_classes]``; float32; the batch dimension named
        ``"batch"``; IR version the lowest that supports ``opset``.

    Notes
    -----
    ``tf2onnx.convert.from_function`` freezes the model's variables into
    initializers; the output names are the keys of the returned dict.
    """
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    n_features = int(keras_model.input_shape[-1])
    two_outputs = keras.Model(
        keras_model.inputs[0],
        [keras_model.output, keras_model.get_layer(LOGITS_NAME).output],
        name=str(keras_model.name),
    )
    signature = [tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def serve(features):
        probabilities, logits = two_outputs(features, training=False)
        return {OUTPUT_NAME: probabilities, LOGITS_NAME: logits}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)

    graph = model_proto.graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [INPUT_NAME] or sorted(outputs) != sorted([OUTPUT_NAME, LOGITS_NAME]):
        raise RuntimeError(f"tf2onnx produced inputs {inputs} and outputs {outputs}, expected "
                           f"[{INPUT_NAME!r}] and [{OUTPUT_NAME!r}, {LOGITS_NAME!r}]")
    # Output order: probabilities first (what a caller taking output 0 wants).
    if outputs[0] != OUTPUT_NAME:
        ordered = sorted(graph.output, key=lambda o: o.name != OUTPUT_NAME)
        del graph.output[:]
        graph.output.extend(ordered)
    # tf2onnx names each dynamic dimension "unk__N": the batch is called "batch" in the contract.
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    _strip_scope_prefix(graph, two_outputs.name)
    model_proto.ir_version = onnx.helper.find_min_ir_version_for(list(model_proto.opset_import))
    graph.name = str(keras_model.name)
    # tf2onnx records the traced function's name, which has a per-process counter in it.
    graph.doc_string = f"tf2onnx {tf2onnx.__version__} conversion of Keras model {keras_model.name}"
    onnx.checker.check_model(model_proto)
    return model_proto


def _strip_scope_prefix(graph, scope: str) -> None:
    """Drop the ``<scope>_<k>/`` prefix TensorFlow puts on every node and weight name.

    The suffix ``k`` counts models built in the process, so without this the
    same weights exported from another process would give different bytes.
    Names are left alone if stripping would make two of them equal.
    """
    import re

    pattern = re.compile(rf"(^|/){re.escape(scope)}(?:_\d+)?/")
    keep = {v.name for v in [*graph.input, *graph.output]}
    names = {i.name for i in graph.initializer} | {n.name for n in graph.node}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    names -= keep
    mapping = {name: pattern.sub(r"\1", name) for name in names if name}
    if len(set(mapping.values()) | keep) != len(mapping) + len(keep):
        return
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in graph.node:
        node.name = mapping.get(node.name, node.name)
        node.input[:] = [mapping.get(x, x) for x in node.input]
        node.output[:] = [mapping.get(x, x) for x in node.output]
    for value in graph.value_info:
        value.name = mapping.get(value.name, value.name)


def set_metadata(model_proto, metadata: dict[str, str], doc_string: str | None = None) -> None:
    """Replace ``model_proto.metadata_props`` with ``metadata`` (keys in sorted order)."""
    del model_proto.metadata_props[:]
    for key in sorted(metadata):
        entry = model_proto.metadata_props.add()
        entry.key = str(key)
        entry.value = str(metadata[key])
    if doc_string is not None:
        model_proto.doc_string = doc_string


def read_metadata(onnx_path: str | os.PathLike[str]) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, read with ONNX Runtime (as serving does)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def onnx_predict(onnx_path: str | os.PathLike[str], X: np.ndarray, output: str = OUTPUT_NAME) -> np.ndarray:
    """Run an exported model with ONNX Runtime (CPU) on raw feature rows.

    Returns
    -------
    values : np.ndarray [shape=(n, n_classes), dtype=float32]
        The output named ``output``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run([output], {INPUT_NAME: np.ascontiguousarray(X, dtype=np.float32)})[0]


def verify_onnx_matches_keras(keras_model, onnx_path: str | os.PathLike[str], X: np.ndarray) -> float:
    """Largest difference between ONNX Runtime's and TensorFlow's probabilities.

    Parameters
    ----------
    keras_model : keras.Model
        The model that was exported.
    onnx_path : str or path-like
        The exported file.
    X : np.ndarray [shape=(n, 57)]
        Raw feature rows (real ones: a table's rows, not random numbers, whose
        scale differs by orders of magnitude between columns).

    Returns
    -------
    max_abs_diff : float
        ``max |p_onnx - p_keras|`` over rows and classes (CPUExecutionProvider
        against ``keras_model(X, training=False)``).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    expected = np.asarray(keras_model(X, training=False), dtype=np.float64)
    actual = onnx_predict(onnx_path, X).astype(np.float64)
    if actual.shape != expected.shape:
        raise ExportVerificationError(f"ONNX output shape {actual.shape} != Keras output shape {expected.shape}")
    return float(np.max(np.abs(actual - expected))) if X.shape[0] else 0.0


def _logits_diff(keras_model, onnx_path: Path, X: np.ndarray) -> float:
    from training.model import logits_model

    X = np.ascontiguousarray(X, dtype=np.float32)
    expected = np.asarray(logits_model(keras_model)(X, training=False), dtype=np.float64)
    return float(np.max(np.abs(onnx_predict(onnx_path, X, LOGITS_NAME) - expected)))


def export_model(
    keras_model,
    report: dict,
    out_path: str | os.PathLike[str] = DEFAULT_ONNX_PATH,
    X_verify: np.ndarray | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
    silence_rms: float | None = None,
    write_report: bool = True,
) -> dict:
    """Convert, attach metadata, verify against TensorFlow, then write the ONNX file.

    Parameters
    ----------
    keras_model : keras.Model
    report : dict
        The training report (:func:`training.train.train`).
    out_path : str or path-like
        Destination ``.onnx``; replaced only if verification passes.
    X_verify : np.ndarray [shape=(n, 57)]
        Real raw feature rows to compare ONNX Runtime with TensorFlow on.
    opset : int
    tolerance : float
        Largest accepted probability difference (default 1e-5).
    silence_rms : float or None
        Recorded as metadata ``silence_rms`` (default: from ``X_verify``,
        :func:`silence_rms_from_table`).
    write_report : bool
        Also write the report, with an ``export`` section added, beside the
        model (:func:`report_path_for`).

    Returns
    -------
    info : dict
        ``path``, ``bytes``, ``sha256``, ``opset``, ``ir_version``,
        ``max_abs_diff`` (probabilities), ``max_abs_diff_logits``,
        ``verified_rows``, ``batch_sizes_checked``, ``versions`` (tf2onnx,
        onnx, onnxruntime), ``seconds``.

    Raises
    ------
    ValueError
        If ``X_verify`` is missing or empty, or the report does not match
        :mod:`stream.frontends.gtzan`.
    ExportVerificationError
        If the difference exceeds ``tolerance`` or the batch dimension is not
        dynamic; ``out_path`` is then left untouched.
    """
    import onnx
    import onnxruntime as ort
    import tf2onnx

    started = time.perf_counter()
    if X_verify is None or len(X_verify) == 0:
        raise ValueError("export_model: X_verify (real feature rows) is required to verify the export")
    X_verify = np.ascontiguousarray(X_verify, dtype=np.float32)
    if silence_rms is None:
        silence_rms = silence_rms_from_table(X_verify)
    metadata = build_metadata(report, silence_rms=silence_rms)
    model_proto = keras_to_onnx(keras_model, opset=opset)
    set_metadata(
        model_proto,
        metadata,
        doc_string=(
            f"genrestream {metadata['model_name']} v{metadata['model_version']}: input 'features' float32 "
            f"[batch, {len(FEATURE_NAMES)}] raw {FRONTEND_NAME} v{FRONTEND_VERSION} features of a "
            f"{metadata['window_s']} s window at {metadata['sample_rate']} Hz; output 'probabilities' "
            f"float32 [batch, {len(report['labels'])}] over metadata 'labels'."
        ),
    )

    from export import atomic_output

    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        onnx.save_model(model_proto, tmp)
        max_abs_diff = verify_onnx_matches_keras(keras_model, tmp, X_verify)
        logits_diff = _logits_diff(keras_model, tmp, X_verify)
        if not max_abs_diff <= tolerance:
            raise ExportVerificationError(
                f"ONNX Runtime and TensorFlow probabilities differ by {max_abs_diff:.3g} > {tolerance:g} "
                f"on {len(X_verify)} rows; {out_path} not written"
            )
        batch_sizes = sorted({1, min(7, len(X_verify)), len(X_verify)})
        for n in batch_sizes:
            p = onnx_predict(tmp, X_verify[:n])
            if p.shape != (n, len(report["labels"])) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-5):
                raise ExportVerificationError(f"batch of {n}: output shape {p.shape} or row sums wrong")

    data = out_path.read_bytes()
    info = {
        "path": str(out_path.resolve()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": opset,
        "ir_version": int(model_proto.ir_version),
        "max_abs_diff": max_abs_diff,
        "max_abs_diff_logits": logits_diff,
        "tolerance": tolerance,
        "verified_rows": int(len(X_verify)),
        "batch_sizes_checked": batch_sizes,
        "silence_rms": float(metadata["silence_rms"]),
        "versions": {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "seconds": round(time.perf_counter() - started, 2),
    }
    if write_report:
        shipped = {k: v for k, v in report.items() if k != "files"}  # "files": paths on the training machine
        shipped["export"] = {k: v for k, v in info.items() if k != "path"}
        shipped["export"]["file"] = out_path.name
        report_path_for(out_path).write_text(json.dumps(shipped, indent=2) + "\n", encoding="utf-8")
    return info


def load_trained(
    model_dir: str | os.PathLike[str] | None = None,
    keras_path: str | os.PathLike[str] | None = None,
    report_path: str | os.PathLike[str] | None = None,
):
    """Load a model saved by :func:`training.train.train` and its report.

    Parameters
    ----------
    model_dir : str or path-like or None
        Training output folder holding ``model.keras`` and ``report.json``.
    keras_path : str or path-like or None
        A ``.keras`` file instead (its report: ``report_path``, else
        ``report.json`` in the same folder).
    report_path : str or path-like or None

    Returns
    -------
    model : keras.Model
    report : dict

    Raises
    ------
    FileNotFoundError
        If the model or report file does not exist.
    """
    import keras

    import training.model  # noqa: F401  (registers the Standardize layer for deserialisation)

    if keras_path is None:
        if model_dir is None:
            raise ValueError("load_trained: give model_dir or keras_path")
        keras_path = Path(model_dir) / "model.keras"
    keras_path = Path(keras_path)
    report_path = Path(report_path) if report_path is not None else keras_path.parent / "report.json"
    for path in (keras_path, report_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (train first: genrestream train --out-dir ...)")
    model = keras.saving.load_model(keras_path)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return model, report


def verification_rows(report: dict, table_path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Real feature rows to verify an export on: ``table_path``, else the training table of ``report``.

    Returns
    -------
    X : np.ndarray [shape=(n, 57), dtype=float32]

    Raises
    ------
    FileNotFoundError
        If the table cannot be found (give ``table_path``).
    """
    if table_path is None:
        recorded = str(report["data"]["path"])
        prefix = "${GENRESTREAM_SHARED}/"
        table_path = shared_dir() / recorded[len(prefix):] if recorded.startswith(prefix) else Path(recorded)
    return load_feature_table(table_path).X


def export(
    model_dir: str | os.PathLike[str] | None = "artifacts",
    out_path: str | os.PathLike[str] = DEFAULT_ONNX_PATH,
    keras_path: str | os.PathLike[str] | None = None,
    report_path: str | os.PathLike[str] | None = None,
    table_path: str | os.PathLike[str] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
) -> dict:
    """Export a saved training run (:func:`load_trained`) and verify it on real rows.

    Parameters
    ----------
    model_dir, keras_path, report_path :
        See :func:`load_trained`.
    out_path : str or path-like
        Destination (default: the shipped ``stream/models/gtzan_mlp.onnx``); the
        report is written beside it as ``<stem>.report.json``.
    table_path : str or path-like or None
        Feature table whose rows verify the export; default the training table.
    audio_dir : str or path-like or None
        Or compute verification rows from this GTZAN-layout audio folder.
    opset, tolerance :
        See :func:`export_model`.

    Returns
    -------
    info : dict
        See :func:`export_model`.
    """
    model, report = load_trained(model_dir, keras_path, report_path)
    if audio_dir is not None:
        X = features_from_audio_dir(audio_dir, window_s=float(report["window_s"]), progress=False).X
    else:
        X = verification_rows(report, table_path)
    return export_model(model, report, out_path, X, opset=opset, tolerance=tolerance)


def format_export(info: dict) -> str:
    """One line per fact of an export, for the CLI."""
    return (
        f"exported {info['path']} ({info['bytes']} bytes, opset {info['opset']}, IR {info['ir_version']})\n"
        f"  ONNX Runtime vs TensorFlow on {info['verified_rows']} rows: max |diff| "
        f"{info['max_abs_diff']:.3g} (probabilities), {info['max_abs_diff_logits']:.3g} (logits); "
        f"tolerance {info['tolerance']:g}\n"
        f"  sha256 {info['sha256']}"
    )


def build_parser() -> argparse.ArgumentParser:
    """Options of ``genrestream export`` (see :func:`main`)."""
    parser = argparse.ArgumentParser(
        prog="genrestream export",
        description="Export a trained model (genrestream train) to ONNX with its metadata, "
        "verified against TensorFlow on real feature rows.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-dir", type=Path, default=Path("artifacts"),
                        help="training output folder with model.keras and report.json (default: ./artifacts)")
    source.add_argument("--keras", type=Path, default=None, help="a .keras file instead of --model-dir")
    parser.add_argument("--report", type=Path, default=None,
                        help="training report JSON (default: report.json beside the model)")
    parser.add_argument("--out", type=Path, default=None,
                        help="ONNX file to write (default: ./gtzan_mlp.onnx in the working directory; "
                             "python -m export.build regenerates the shipped model)")
    rows = parser.add_mutually_exclusive_group()
    rows.add_argument("--table", type=Path, default=None,
                      help="feature table to verify on (default: the training table of the report)")
    rows.add_argument("--audio-dir", type=Path, default=None, help="or an audio folder (GTZAN layout) to verify on")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest accepted ONNX-vs-TensorFlow difference (default: {TOLERANCE:g})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``genrestream export``: parse ``argv`` (default ``sys.argv[1:]``), run :func:`export`.

    Returns
    -------
    status : int
        0 on success; 2 on missing or bad input; 1 if verification failed
        (nothing written).
    """
    args = build_parser().parse_args(argv)
    try:
        info = export(
            model_dir=None if args.keras is not None else args.model_dir,
            out_path=args.out or Path.cwd() / DEFAULT_ONNX_PATH.name,
            keras_path=args.keras,
            report_path=args.report,
            table_path=args.table,
            audio_dir=args.audio_dir,
            opset=args.opset,
            tolerance=args.tolerance,
        )
    except ExportVerificationError as error:
        print(f"genrestream export: verification failed: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"genrestream export: error: {error}", file=sys.stderr)
        return 2
    print(format_export(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
