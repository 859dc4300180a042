"""int8 static quantization of the musicnn model's timbral convolutions (ONNX Runtime, QDQ).

Nearly all of musicnn's cost on a CPU is its two "timbral" front-end
convolutions (204 filters each, kernels 7 x 38 and 7 x 67 over log-mel frames x
mel bands). :func:`quantize_musicnn` quantizes those two Conv nodes, and the Relu
that follows each, with ONNX Runtime's static quantization: QDQ format,
per-channel signed int8 weights, unsigned int8 activations calibrated by
min/max over real log-mel windows (what ONNX Runtime recommends for x86 CPUs
with VNNI). ONNX Runtime's CPU provider fuses each DequantizeLinear → Conv →
QuantizeLinear into one QLinearConv. Everything else stays float32:
quantizing the other convolutions too (the temporal ones read one input
channel) made the whole model slower than float32 on the machine it was
measured on.

The quantized file keeps the source's ``metadata_props`` (so
:class:`stream.model.GenreModel` serves it unchanged) and adds a
``quantization`` entry (JSON) saying what was quantized and how.

Needs the ``train`` extra (onnx); uses ``onnxruntime.quantization``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

INPUT_SHAPE = (187, 96)
"""Shape of one log-mel window (frames, mel bands): :class:`stream.frontends.logmel.LogMelFrontend`."""

MIN_CALIBRATION_WINDOWS = 16
"""Fewest calibration windows accepted; a few clips' worth (about 100 windows) is better."""


def timbral_convs(model) -> list[str]:
    """Names of musicnn's timbral Conv nodes in an ONNX model.

    musicnn's front end applies timbral filters (more than one mel band wide)
    and temporal filters (one band wide, ``kernel_shape[1] == 1``) to the same
    log-mel tensor; the timbral ones are the Conv nodes that read the same data
    input as a temporal one and span more than one band.

    Parameters
    ----------
    model : onnx.ModelProto

    Returns
    -------
    list of str
        In graph order; empty if the graph has no such structure.
    """
    convs = [n for n in model.graph.node if n.op_type == "Conv"]

    def kernel(node):
        for a in node.attribute:
            if a.name == "kernel_shape":
                return list(a.ints)
        return []

    temporal_inputs = {n.input[0] for n in convs if len(kernel(n)) == 2 and kernel(n)[1] == 1}
    return [n.name for n in convs if n.input[0] in temporal_inputs and len(kernel(n)) == 2 and kernel(n)[1] > 1]


def _following_relus(model, conv_names: Sequence[str]) -> list[str]:
    """The Relu node that is the only consumer of each named Conv's output, where there is one."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    relus = []
    for node in model.graph.node:
        if node.name in conv_names:
            after = consumers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type == "Relu":
                relus.append(after[0].name)
    return relus


def _check_windows(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1:] != INPUT_SHAPE:
        raise ValueError(
            f"{name}: expected log-mel windows of shape (n, {INPUT_SHAPE[0]}, {INPUT_SHAPE[1]}), got {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected floating-point log-mel windows, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def _session(model_path: str | os.PathLike, optimized_path: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _outputs(session, x: np.ndarray, input_name: str, batch: int = 16) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    parts = [session.run(names, {input_name: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(names)}


def quantize_musicnn(
    src_onnx: str | os.PathLike,
    dst_onnx: str | os.PathLike,
    calibration_windows: np.ndarray,
    *,
    check_windows: np.ndarray | None = None,
    nodes: Sequence[str] | None = None,
) -> dict:
    """Write an int8 copy of a musicnn model whose timbral convolutions run as QLinearConv.

    Static post-training quantization with :func:`onnxruntime.quantization.quantize_static`
    (ONNX Runtime, "Quantize ONNX models":
    https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
    QDQ format, per-channel symmetric int8 weights, asymmetric uint8
    activations whose ranges are the min/max over ``calibration_windows``,
    and a QuantizeLinear/DequantizeLinear pair dedicated to each consumer, so
    that nodes left in float32 read the float32 tensor. The model is first
    passed through :func:`onnxruntime.quantization.shape_inference.quant_pre_process`.

    Parameters
    ----------
    src_onnx : str or path-like
        A genrestream musicnn model (input ``logmel`` [batch, 187, 96] float32),
        e.g. ``stream/models/musicnn_msd.onnx``.
    dst_onnx : str or path-like
        Where to write the quantized model; written only when every step
        succeeded.
    calibration_windows : np.ndarray [shape=(n, 187, 96), dtype=float32]
        Real log-mel windows (``GenreModel(...).frontend.window_input(y)`` of
        music audio), at least :data:`MIN_CALIBRATION_WINDOWS`. Keep the clips
        you evaluate on out of them.
    check_windows : np.ndarray [shape=(m, 187, 96)] or None
        Windows on which to compare the quantized model with ``src_onnx``;
        None for the calibration windows (an optimistic check).
    nodes : sequence of str or None
        Conv nodes to quantize; None for the timbral convolutions
        (:func:`timbral_convs`). The Relu following each is quantized with it
        (ONNX Runtime then folds it into the output's range).

    Returns
    -------
    report : dict
        ``nodes`` (the nodes quantized), ``settings``, ``onnxruntime``
        (version), ``calibration_windows`` and ``check_windows`` (counts),
        ``qlinearconv_nodes`` (how many QLinearConv ONNX Runtime's CPU provider
        runs after its fusions; 0 means the int8 kernels are not used here),
        and, over the check windows, per output ``max_abs_diff`` and
        ``mean_abs_diff``, plus ``top1_agreement`` (genre, ``probabilities``)
        and ``content_agreement`` (argmax of ``content``) when the model has
        those outputs.

    Raises
    ------
    FileNotFoundError
        If ``src_onnx`` does not exist.
    ValueError
        If the windows are not of shape (n, 187, 96), not floating point or
        not finite, there are fewer than :data:`MIN_CALIBRATION_WINDOWS`
        calibration windows, the model has no input ``logmel``, or a node to
        quantize is missing or not a Conv (or none was found).
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src_onnx, dst_onnx = Path(src_onnx), Path(dst_onnx)
    if not src_onnx.is_file():
        raise FileNotFoundError(f"src_onnx: no such file {src_onnx}")
    calib = _check_windows(calibration_windows, "calibration_windows")
    if len(calib) < MIN_CALIBRATION_WINDOWS:
        raise ValueError(
            f"calibration_windows: {len(calib)} windows; "
            f"at least {MIN_CALIBRATION_WINDOWS} are needed for stable ranges"
        )
    check = calib if check_windows is None else _check_windows(check_windows, "check_windows")

    model = onnx.load(str(src_onnx))
    input_names = [i.name for i in model.graph.input]
    if input_names != ["logmel"]:
        raise ValueError(f"src_onnx: {src_onnx} has inputs {input_names}; expected the musicnn model's ['logmel']")
    convs = list(nodes) if nodes is not None else timbral_convs(model)
    by_name = {n.name: n for n in model.graph.node}
    if not convs:
        raise ValueError(f"src_onnx: {src_onnx} has no timbral Conv nodes (musicnn's front end); name them with nodes=")
    wrong = [n for n in convs if n not in by_name or by_name[n].op_type != "Conv"]
    if wrong:
        raise ValueError(f"nodes: {wrong} are not Conv nodes of {src_onnx}")
    to_quantize = convs + _following_relus(model, convs)

    # onnx.compose.merge_models can list an opset domain twice; the quantizer wants one ai.onnx entry.
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        versions[domain] = max(versions.get(domain, 0), opset.version)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())

    class _Windows(CalibrationDataReader):
        """One window per call (the percentile/entropy calibrators need equal batches; min/max does not care)."""

        def __init__(self, x: np.ndarray) -> None:
            self.x, self.i = x, 0

        def get_next(self):
            if self.i >= len(self.x):
                return None
            self.i += 1
            return {"logmel": self.x[self.i - 1:self.i]}

        def rewind(self) -> None:
            self.i = 0

    settings = {
        "method": "onnxruntime.quantization.quantize_static",
        "quant_format": "QDQ",
        "per_channel": True,
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "calibrate_method": "MinMax",
        "extra_options": {"DedicatedQDQPair": True},
    }
    with tempfile.TemporaryDirectory(prefix="genrestream-quant-") as tmp:
        fixed, pre, out = Path(tmp, "fixed.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, str(fixed))
        # symbolic shape inference needs sympy; the musicnn graph's shapes are static but for the batch
        quant_pre_process(str(fixed), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), _Windows(calib),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=to_quantize, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"DedicatedQDQPair": True},
        )
        quantized = onnx.load(str(out))
        meta = {p.key: p.value for p in quantized.metadata_props}
        for prop in model.metadata_props:
            if prop.key not in meta:
                quantized.metadata_props.add(key=prop.key, value=prop.value)
        record = {"nodes": to_quantize, "calibration_windows": len(calib), **settings,
                  "onnxruntime": ort.__version__}
        kept = [p for p in quantized.metadata_props if p.key != "quantization"]  # re-quantizing: replace the record
        del quantized.metadata_props[:]
        quantized.metadata_props.extend(kept)
        quantized.metadata_props.add(key="quantization", value=json.dumps(record))
        onnx.save(quantized, str(out))

        optimized = Path(tmp, "optimized.onnx")
        int8_session = _session(out, str(optimized))
        qlinearconv = sum(n.op_type == "QLinearConv" for n in onnx.load(str(optimized)).graph.node)
        ref = _outputs(_session(src_onnx), check, "logmel")
        got = _outputs(int8_session, check, "logmel")
        dst_onnx.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(dst_onnx))

    report = {
        "nodes": to_quantize,
        "settings": settings,
        "onnxruntime": ort.__version__,
        "calibration_windows": len(calib),
        "check_windows": len(check),
        "qlinearconv_nodes": int(qlinearconv),
        "max_abs_diff": {k: float(np.abs(ref[k] - got[k]).max()) for k in ref},
        "mean_abs_diff": {k: float(np.abs(ref[k] - got[k]).mean()) for k in ref},
    }
    if "probabilities" in ref:
        report["top1_agreement"] = float((ref["probabilities"].argmax(1) == got["probabilities"].argmax(1)).mean())
    if "content" in ref:
        report["content_agreement"] = float((ref["content"].argmax(1) == got["content"].argmax(1)).mean())
    return report


def windows_of(files: Sequence[str | os.PathLike], hop_s: float = 3.008) -> np.ndarray:
    """Log-mel windows of audio files (decoded as serving decodes them), one every ``hop_s`` seconds.

    Returns
    -------
    np.ndarray [shape=(n, 187, 96), dtype=float32]
    """
    from stream.frontends import logmel
    from training.embeddings import decode

    hop_length = logmel.snap_hop(int(round(hop_s * logmel.SAMPLE_RATE)))
    parts = [logmel.patches(y, hop_length)[0] for y in (decode(f) for f in files) if y.size >= logmel.WINDOW_LENGTH]
    if not parts:
        raise ValueError("files: no decodable audio of one window (3.008 s) or more")
    return np.concatenate(parts).astype(np.float32)


INT8_VERSION_SUFFIX = "-int8"
"""Appended to the source model's ``model_version``: events name the file that classified them."""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.quantize``: the int8 musicnn model, calibrated and checked on the shared GTZAN clips.

    Calibration: the windows of ``audio/gtzan-parity`` (every 3.008 s); check: those of
    ``audio/gtzan-extra`` (other tracks). Writes ``--out`` with ``model_version`` + ``-int8``, its
    report (``.report.json``) and its frame and window stages (:func:`export.split.split_model`).
    """
    import argparse

    import onnx

    from export.split import split_model
    from stream.model import resolve_model
    from training.data import shared_dir

    parser = argparse.ArgumentParser(prog="python -m export.quantize", description=main.__doc__.splitlines()[0])
    parser.add_argument("--model", default="musicnn-msd", help="the float32 musicnn model (name or ONNX path)")
    parser.add_argument("--out", default="musicnn_msd_int8.onnx", help="where to write the int8 model")
    args = parser.parse_args(argv)
    src = resolve_model(args.model)
    shared = shared_dir()
    calibration = windows_of(sorted((shared / "audio" / "gtzan-parity").glob("*.*")))
    check = windows_of(sorted((shared / "audio" / "gtzan-extra").glob("*.*")))
    out = Path(args.out)
    report = quantize_musicnn(src, out, calibration, check_windows=check)
    model = onnx.load(str(out))
    for prop in model.metadata_props:
        if prop.key == "model_version" and not prop.value.endswith(INT8_VERSION_SUFFIX):
            prop.value += INT8_VERSION_SUFFIX
    onnx.save(model, str(out))
    report["split"] = {k: v for k, v in split_model(out, check[:16]).items() if k not in ("frames", "windows")}
    out.with_name(out.name[: -len(".onnx")] + ".report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
