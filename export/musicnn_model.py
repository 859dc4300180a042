"""The musicnn model: backbone and trained heads composed into one ONNX file, with the metadata serving reads.

The ONNX contract (what :class:`stream.model.GenreModel` expects of it):

- input ``"logmel"``: float32 ``[batch, 187, 96]``, the windows of
  :class:`stream.frontends.logmel.LogMelFrontend`;
- outputs ``"probabilities"`` ``[batch, 10]`` (the genre head, softmax over the
  GTZAN genres), ``"content"`` ``[batch, 3]`` (music, speech, other),
  ``"tags"`` ``[batch, 50]`` (musicnn's MSD tags, independent sigmoids) and
  ``"embedding"`` ``[batch, 200]`` (the backbone's penultimate layer, kept so
  that ``genrestream train`` can train new heads on the shipped model alone);
- ``metadata_props``: :data:`stream.model.REQUIRED_METADATA` (labels, heads,
  input_name, frontend with every parameter, sample_rate, window_s, hop_s,
  licences, training_summary), plus silence_rms.

The backbone comes from musicnn's own checkpoint (:mod:`export.musicnn`:
the PyPI wheel, converted with tf2onnx) or is cut out of an existing
genrestream musicnn model (:func:`backbone_path`). The heads are Keras models
(:mod:`training.heads`) converted with tf2onnx and joined to the backbone with
:func:`onnx.compose.merge_models`. The file is written only after ONNX Runtime
reproduces "backbone in ONNX Runtime, then the heads in TensorFlow" on real
windows within :data:`TOLERANCE`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

from stream.frontends.logmel import LogMelFrontend
from stream.model import REQUIRED_METADATA

MODEL_NAME = "musicnn-msd"
MODEL_VERSION = "1"
INPUT_NAME = "logmel"
GENRE_OUTPUT, CONTENT_OUTPUT, TAGS_OUTPUT, EMBEDDING_OUTPUT = "probabilities", "content", "tags", "embedding"
HEAD_INPUT = "head_embedding"
DEFAULT_OPSET = 17
TOLERANCE = 1e-5
"""Largest accepted |composed model - (backbone, then Keras heads)| of a probability."""

DEFAULT_HOP_S = 1.0
"""The model's default hop (the frontend snaps it to 63 frames, 1.008 s)."""

SILENCE_RMS = 1e-3
"""Window RMS below which a window is silence: -60 dBFS."""

LICENCES = [
    {
        "what": "musicnn MSD_musicnn backbone weights (J. Pons and X. Serra, ISMIR 2019 LBD; Music Technology Group, "
                "Universitat Pompeu Fabra), read from the PyPI wheel musicnn==0.1.0",
        "licence": "the wheel's LICENSE.md: ISC, copyright MTG-UPF 2019; MTG's models page lists its pretrained "
                   "models under CC BY-NC-SA 4.0 (non-commercial)",
        "source": "https://pypi.org/project/musicnn/0.1.0/",
    },
    {
        "what": "genre head: trained on 58 GTZAN clips (Tzanetakis & Cook 2002)",
        "licence": "GTZAN: research use",
        "source": "../shared/audio/gtzan-parity, ../shared/audio/gtzan-extra",
    },
    {
        "what": "content head: GTZAN music/speech (Tzanetakis; research use), LJ Speech (public domain), free clips "
                "(licences in ../shared/audio/free/CATALOGUE.csv), GTZAN clips, synthetic noises",
        "licence": "research use (GTZAN collections); the free clips' own licences",
        "source": "../shared/audio",
    },
    {"what": "genrestream code", "licence": "MIT", "source": "this repository"},
]
"""What the musicnn model is made of, recorded as metadata ``licences``."""


class ExportVerificationError(RuntimeError):
    """The composed model's outputs differ from the parts' by more than the tolerance."""


def backbone_path(source: str | os.PathLike = "wheel", cache: str | os.PathLike | None = None) -> Path:
    """An ONNX backbone (input ``logmel``; outputs ``tags``, ``embedding``) from a source.

    Parameters
    ----------
    source : "wheel" or path-like
        ``"wheel"``: musicnn's MSD checkpoint from the PyPI wheel, converted
        with tf2onnx (:func:`export.musicnn.backbone_to_onnx`; cached). A path:
        a backbone ONNX file, or a genrestream musicnn model, whose backbone
        is cut out (:func:`onnx.utils.extract_model`, cached).
    cache : path-like or None
        Cache folder (default ``$GENRESTREAM_CACHE`` or ``~/.cache/genrestream``).

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        If ``source`` is a path that does not exist.
    ValueError
        If the file has no ``logmel`` input or lacks the backbone's outputs.
    """
    import onnx

    from export import musicnn

    folder = musicnn.resolve_cache_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    if str(source) == "wheel":
        wheel = musicnn.fetch_wheel(folder)
        out = folder / f"msd_musicnn-backbone-{musicnn.sha256_file(wheel)[:12]}.onnx"
        if not out.is_file():
            musicnn.backbone_to_onnx(out, "MSD_musicnn", wheel=wheel)
        return out
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"backbone: no such file {path}")
    model = onnx.load(str(path), load_external_data=False)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or not {TAGS_OUTPUT, EMBEDDING_OUTPUT} <= set(outputs):
        raise ValueError(f"backbone: {path} has inputs {inputs} and outputs {outputs}; expected input {INPUT_NAME!r} "
                         f"and outputs {TAGS_OUTPUT!r}, {EMBEDDING_OUTPUT!r}")
    if set(outputs) == {TAGS_OUTPUT, EMBEDDING_OUTPUT}:
        return path
    out = folder / f"backbone-of-{musicnn.sha256_file(path)[:12]}.onnx"
    if not out.is_file():
        tmp = out.with_suffix(".tmp.onnx")
        onnx.utils.extract_model(str(path), str(tmp), [INPUT_NAME], [TAGS_OUTPUT, EMBEDDING_OUTPUT])
        os.replace(tmp, out)
    return out


def heads_to_onnx(genre_head, content_head, opset: int = DEFAULT_OPSET):
    """Convert the two Keras heads into one ONNX graph.

    Parameters
    ----------
    genre_head, content_head : keras.Model
        :func:`training.heads.build_head` models (input ``(batch, 200)``).
    opset : int

    Returns
    -------
    onnx.ModelProto
        Input :data:`HEAD_INPUT` ``[batch, 200]``; outputs :data:`GENRE_OUTPUT`
        and :data:`CONTENT_OUTPUT`.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    from export.onnx_export import _strip_scope_prefix

    n = int(genre_head.input_shape[-1])
    signature = [tf.TensorSpec([None, n], tf.float32, name=HEAD_INPUT)]

    @tf.function(input_signature=signature)
    def heads(head_embedding):
        return {GENRE_OUTPUT: genre_head(head_embedding, training=False),
                CONTENT_OUTPUT: content_head(head_embedding, training=False)}

    proto, _ = tf2onnx.convert.from_function(heads, input_signature=signature, opset=opset)
    for model in (genre_head, content_head):
        _strip_scope_prefix(proto.graph, model.name)
    outputs = sorted(proto.graph.output, key=lambda o: [GENRE_OUTPUT, CONTENT_OUTPUT].index(o.name))
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    proto.graph.doc_string = f"tf2onnx {tf2onnx.__version__} conversion of the genre and content heads"
    onnx.checker.check_model(proto)
    return proto


def compose(backbone_file: str | os.PathLike, heads_proto):
    """Backbone and heads as one model: ``logmel`` → probabilities, content, tags, embedding.

    Returns
    -------
    onnx.ModelProto
    """
    import onnx
    from onnx import compose as onnx_compose

    backbone = onnx.load(str(backbone_file))
    # Both graphs must share an opset and IR version for merge_models.
    if backbone.opset_import[0].version != heads_proto.opset_import[0].version:
        heads_proto = onnx.version_converter.convert_version(heads_proto, backbone.opset_import[0].version)
    heads_proto.ir_version = backbone.ir_version
    merged = onnx_compose.merge_models(
        backbone, heads_proto, io_map=[(EMBEDDING_OUTPUT, HEAD_INPUT)],
        outputs=[TAGS_OUTPUT, f"heads/{GENRE_OUTPUT}", f"heads/{CONTENT_OUTPUT}"], prefix2="heads/",
    )
    graph = merged.graph
    # merge_models prefixed the heads' outputs; give them back their contract names.
    renames = {f"heads/{GENRE_OUTPUT}": GENRE_OUTPUT, f"heads/{CONTENT_OUTPUT}": CONTENT_OUTPUT}
    for node in graph.node:
        node.output[:] = [renames.get(x, x) for x in node.output]
        node.input[:] = [renames.get(x, x) for x in node.input]
    for value in graph.output:
        value.name = renames.get(value.name, value.name)
    embedding = next(o for o in backbone.graph.output if o.name == EMBEDDING_OUTPUT)
    graph.output.append(embedding)
    order = [GENRE_OUTPUT, CONTENT_OUTPUT, TAGS_OUTPUT, EMBEDDING_OUTPUT]
    outputs = sorted(graph.output, key=lambda o: order.index(o.name))
    del graph.output[:]
    graph.output.extend(outputs)
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.name = MODEL_NAME
    onnx.checker.check_model(merged)
    return merged


def build_metadata(report: dict) -> dict[str, str]:
    """The ``metadata_props`` of the musicnn model, from a heads training report (:mod:`training.musicnn_train`).

    Raises
    ------
    ValueError
        If the report's frontend differs from :class:`stream.frontends.logmel.LogMelFrontend`.
    """
    frontend = LogMelFrontend()
    if report["frontend"] != frontend.params():
        raise ValueError("report: the heads were trained on another log-mel frontend than this checkout's: retrain")
    summary = report["summary"]
    metadata = {
        "model_name": report["model_name"],
        "model_version": report["model_version"],
        "labels": json.dumps(report["genre_labels"]),
        "heads": json.dumps({
            "genre": {"output": GENRE_OUTPUT, "labels": report["genre_labels"]},
            "content": {"output": CONTENT_OUTPUT, "labels": report["content_labels"]},
            "tags": {"output": TAGS_OUTPUT, "labels": report["tag_labels"]},
        }),
        "input_name": INPUT_NAME,
        "frontend": json.dumps(frontend.params(), separators=(",", ":")),
        "sample_rate": str(frontend.sample_rate),
        "window_s": str(frontend.window_s),
        "hop_s": str(float(report.get("hop_s", DEFAULT_HOP_S))),
        "licences": json.dumps(LICENCES),
        "silence_rms": format(SILENCE_RMS, "g"),
        "training_summary": json.dumps(summary, separators=(",", ":"), sort_keys=True),
    }
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    assert not missing, f"build_metadata forgot {missing}"
    return metadata


def export_model(
    run_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    verify_windows: np.ndarray,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
) -> dict:
    """Compose, attach metadata, verify, then write the model and its report beside it.

    Parameters
    ----------
    run_dir : path-like
        A heads training run (:func:`training.musicnn_train.train`): its
        ``report.json``, ``genre_head.keras``, ``content_head.keras`` and
        ``backbone.onnx``.
    out_path : path-like
        Destination ``.onnx``; replaced only if verification passes.
    verify_windows : np.ndarray [shape=(n, 187, 96), dtype=float32]
        Real log-mel windows to compare on.
    opset : int
    tolerance : float

    Returns
    -------
    dict
        ``path``, ``bytes``, ``sha256``, ``max_abs_diff`` (per output),
        ``verified_windows``, ``batch_sizes_checked``, ``nodes``, ``versions``,
        ``split`` (the frame and window stages written beside it, :func:`export.split.split_model`),
        ``seconds``.

    Raises
    ------
    FileNotFoundError
        If the run folder lacks a file.
    ValueError
        If ``verify_windows`` is empty or of the wrong shape.
    ExportVerificationError
        If an output differs by more than ``tolerance``; ``out_path`` is left untouched.
    """
    import keras
    import onnx
    import onnxruntime as ort
    import tf2onnx

    from export.onnx_export import set_metadata
    from training.model import Standardize  # noqa: F401 - registers the layer for keras.models.load_model

    started = time.perf_counter()
    run_dir = Path(run_dir)
    for name in ("report.json", "genre_head.keras", "content_head.keras", "backbone.onnx"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir}: no {name}; run `genrestream train` first")
    windows = np.ascontiguousarray(verify_windows, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[1:] != (187, 96) or len(windows) == 0:
        raise ValueError(f"verify_windows: expected shape (n>0, 187, 96), got {windows.shape}")
    report = json.loads((run_dir / "report.json").read_text())
    genre_head = keras.models.load_model(run_dir / "genre_head.keras")
    content_head = keras.models.load_model(run_dir / "content_head.keras")
    proto = compose(run_dir / "backbone.onnx", heads_to_onnx(genre_head, content_head, opset))
    metadata = build_metadata(report)
    set_metadata(proto, metadata, doc_string=(
        f"genrestream {MODEL_NAME} v{MODEL_VERSION}: musicnn (MSD) backbone with genre, content and tag heads; "
        f"input 'logmel' float32 [batch, 187, 96] ({LogMelFrontend.name}); outputs 'probabilities' [batch, 10], "
        f"'content' [batch, 3], 'tags' [batch, 50], 'embedding' [batch, 200]."
    ))

    from export import atomic_output

    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        onnx.save_model(proto, tmp)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        composed = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        backbone = ort.InferenceSession(str(run_dir / "backbone.onnx"), options, providers=["CPUExecutionProvider"])
        parts = dict(zip(["tags", "embedding"], backbone.run(["tags", "embedding"], {INPUT_NAME: windows})))
        expected = {
            TAGS_OUTPUT: parts["tags"],
            EMBEDDING_OUTPUT: parts["embedding"],
            GENRE_OUTPUT: np.asarray(genre_head(parts["embedding"], training=False)),
            CONTENT_OUTPUT: np.asarray(content_head(parts["embedding"], training=False)),
        }
        names = [o.name for o in composed.get_outputs()]
        diffs: dict[str, float] = {}
        batch_sizes = sorted({1, min(7, len(windows)), len(windows)})
        for n in batch_sizes:
            got = dict(zip(names, composed.run(names, {INPUT_NAME: windows[:n]})))
            for key, value in expected.items():
                diffs[key] = max(diffs.get(key, 0.0), float(np.max(np.abs(got[key] - value[:n]))))
        worst = max(diffs[GENRE_OUTPUT], diffs[CONTENT_OUTPUT], diffs[TAGS_OUTPUT])
        if not worst <= tolerance:
            raise ExportVerificationError(
                f"the composed model differs from its parts by {worst:.3g} > {tolerance:g} on {len(windows)} windows "
                f"({diffs}); {out_path} not written")
    from export.split import split_model

    split = split_model(out_path, windows)  # the frame and window stages beside it (stream.framestage)
    data = out_path.read_bytes()
    info = {
        "path": str(out_path.resolve()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": opset,
        "nodes": len(proto.graph.node),
        "max_abs_diff": {k: float(v) for k, v in diffs.items()},
        "tolerance": tolerance,
        "verified_windows": int(len(windows)),
        "batch_sizes_checked": batch_sizes,
        "versions": {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "split": {"frames": Path(split["frames"]).name, "windows": Path(split["windows"]).name,
                  "context_frames": split["context_frames"], "max_abs_diff": split["max_abs_diff"]},
        "seconds": round(time.perf_counter() - started, 2),
    }
    shipped = dict(report)
    shipped["export"] = {k: v for k, v in info.items() if k != "path"}
    shipped["export"]["file"] = out_path.name
    out_path.with_name(out_path.stem + ".report.json").write_text(json.dumps(shipped, indent=2) + "\n")
    return info


def verify_windows_from(files: Sequence[str | os.PathLike], per_file: int = 8) -> np.ndarray:
    """Real log-mel windows for the export's check: up to ``per_file`` windows of each file (decoded as serving does)."""
    from stream.frontends import logmel
    from training.embeddings import decode

    parts = []
    for f in files:
        y = decode(f)
        if y.size:
            x, _ = logmel.patches(y, 2 * logmel.WINDOW_LENGTH // logmel.HOP_LENGTH * logmel.HOP_LENGTH)
            parts.append(x[:per_file])
    if not parts:
        raise ValueError("verify_windows_from: no decodable audio among the files")
    return np.concatenate(parts)


def format_export(info: dict) -> str:
    """Human-readable lines about an export."""
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in info["max_abs_diff"].items())
    return (f"exported {info['path']} ({info['bytes']} bytes, {info['nodes']} nodes, opset {info['opset']})\n"
            f"  composed model vs backbone + Keras heads on {info['verified_windows']} windows: max |diff| {diffs}; "
            f"tolerance {info['tolerance']:g}\n  sha256 {info['sha256']}\n"
            f"  frame stage {info['split']['frames']} + window stage {info['split']['windows']}: "
            f"max |diff| against the whole model {info['split']['max_abs_diff']:.2g}")


def main(argv: Sequence[str] | None = None) -> int:
    """``genrestream export`` for a musicnn run: compose, verify, write (default ``./musicnn_msd.onnx``).

    Returns
    -------
    status : int
        0 on success; 2 on missing or bad input; 1 if verification failed (nothing written).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="genrestream export",
        description="Compose a musicnn training run (genrestream train) into one ONNX model with its metadata, "
                    "verified against its parts on real windows.")
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts"),
                        help="training output folder (default ./artifacts)")
    parser.add_argument("--out", type=Path, default=None,
                        help="ONNX file to write (default: ./musicnn_msd.onnx in the working directory)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    out = args.out or Path.cwd() / "musicnn_msd.onnx"
    try:
        windows_file = args.model_dir / "verify_windows.npy"
        if not windows_file.is_file():
            raise FileNotFoundError(f"{args.model_dir}: no verify_windows.npy; run `genrestream train` first")
        info = export_model(args.model_dir, out, np.load(windows_file), args.opset, args.tolerance)
    except ExportVerificationError as error:
        print(f"genrestream export: verification failed: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"genrestream export: error: {error}", file=sys.stderr)
        return 2
    print(format_export(info))
    return 0
