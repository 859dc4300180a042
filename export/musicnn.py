"""musicnn (Pons & Serra 2019) as an ONNX backbone: from the PyPI wheel's TF 1 checkpoint to ONNX.

musicnn is a musically motivated CNN for music audio tagging (J. Pons and X. Serra,
"musicnn: pre-trained convolutional neural networks for music audio tagging",
ISMIR 2019 late-breaking demo; Music Technology Group, Universitat Pompeu Fabra).
Its pretrained models ship inside the PyPI wheel ``musicnn==0.1.0`` as TensorFlow 1.12
checkpoints. The package itself cannot be installed or imported here (it pins
``numpy<1.17`` and uses ``tf.compat.v1.layers``, gone with Keras 3), so this module only
reads files out of the wheel:

1. :func:`fetch_wheel`: ``python -m pip download --no-deps musicnn==0.1.0`` into a cache,
   verified against :data:`WHEEL_SHA256`.
2. :func:`read_checkpoint`: the ``.meta`` training graph is not importable as a whole
   (``import_meta_graph`` fails on a ``FusedBatchNormGrad`` node's ``_output_shapes``), so
   only the inference sub-graph of the outputs is kept
   (``tf.compat.v1.graph_util.extract_sub_graph``), the checkpoint's 64 variables are bound
   as constants, and the ``is_training`` placeholder is folded to ``False`` (the batch-norm
   and dropout conditionals lose their training branch).
3. :func:`backbone_to_onnx`: tf2onnx converts the frozen graph; the ONNX model has input
   ``"logmel"`` float32 ``[batch, 187, 96]`` and outputs ``"tags"`` ``[batch, 50]``
   (sigmoid probabilities over :attr:`MusicnnCheckpoint.labels`) and ``"embedding"``
   ``[batch, 200]`` (the penultimate layer: batch-normalised ReLU of the 200-unit dense
   layer, musicnn's ``penultimate`` feature).
4. :func:`check_parity`: ONNX Runtime against TensorFlow (:func:`tf_predict`, the
   checkpoint's graph with ``is_training`` fed ``False``, as ``musicnn.extractor`` runs it).

The front end is serving's (:mod:`stream.frontends.logmel`, which reproduces musicnn's
``extractor.batch_data`` on a frame grid without centring, and computes the log
compression in float32: musicnn casts the mel power to float16 first, which under
NumPy 2 overflows to ``inf`` for loud frames and gives NaN tags).

Licence: the wheel's ``LICENSE.md`` is ISC (copyright MTG-UPF 2019, code by Jordi Pons);
MTG's models page lists the pretrained models under CC BY-NC-SA 4.0 (non-commercial).
:attr:`MusicnnCheckpoint.licence` carries the wheel's text.

Needs the ``train`` extra (TensorFlow, tf2onnx, onnx) for everything but the front end
and :func:`ort_predict`. Serving never imports this module.

Command line: ``python -m export.musicnn --out PATH`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

MUSICNN_VERSION = "0.1.0"
WHEEL_NAME = f"musicnn-{MUSICNN_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
"""sha256 of :data:`WHEEL_NAME` (as listed by https://pypi.org/simple/musicnn/)."""

CACHE_ENV = "GENRESTREAM_CACHE"
"""Environment variable naming the download cache (default ``~/.cache/genrestream``)."""

MODELS = ("MSD_musicnn", "MTT_musicnn")
"""The musicnn checkpoints of the wheel this module converts (trained on the Million Song
Dataset's and MagnaTagATune's top-50 tags). The wheel's ``*_vgg`` baselines have other
tensor names and are not supported."""

SAMPLE_RATE = 16000
"""Hz, musicnn's ``configuration.SR``."""
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
N_FRAMES = 187
"""Frames per patch: ``librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1``
(187 × 256 / 16000 = 2.99 s)."""
PATCH_S = N_FRAMES * HOP_LENGTH / SAMPLE_RATE

INPUT_NAME = "logmel"
TAGS_NAME = "tags"
EMBEDDING_NAME = "embedding"
BATCH_DIM = "batch"
N_EMBEDDING = 200
DEFAULT_OPSET = 17

TOLERANCE = 1e-4
"""Largest accepted |ONNX Runtime - TensorFlow| of a tag probability."""
EMBEDDING_TOLERANCE = 1e-3
"""Largest accepted |ONNX Runtime - TensorFlow| of an embedding value (values up to about 10)."""

PARITY_BATCH_SIZES = (1, 7, 64)

# Tensor names in the checkpoint's graph (musicnn.extractor builds them under name_scope "model").
TF_INPUT = "model/Placeholder:0"
TF_IS_TRAINING = "model/Placeholder_2:0"
TF_OUTPUTS = {
    "tags": "model/Sigmoid:0",  # [N, 50] sigmoid(logits)
    "logits": "model/dense_1/BiasAdd:0",  # [N, 50]
    "embedding": "model/batch_normalization_10/batchnorm/add_1:0",  # [N, 200] musicnn's "penultimate"
    "mean_pool": "model/moments/Squeeze:0",  # [N, 753, 1] mean over time of the mid-end features
    "max_pool": "model/Max:0",  # [N, 753, 1] max over time
}

_LABEL_LISTS = {"MSD": "MSD_LABELS", "MTT": "MTT_LABELS"}
_FRONTEND_CONSTANTS = {"SR": SAMPLE_RATE, "FFT_HOP": HOP_LENGTH, "FFT_SIZE": N_FFT, "N_MELS": N_MELS}
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


class WheelError(RuntimeError):
    """The musicnn wheel could not be downloaded, or is not the pinned file."""


class ParityError(RuntimeError):
    """ONNX Runtime's outputs differ from TensorFlow's by more than the tolerance."""


# ---------------------------------------------------------------------------------------------
# The wheel


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The download cache: ``cache_dir``, else ``$GENRESTREAM_CACHE``, else ``~/.cache/genrestream``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genrestream"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_wheel(path: str | os.PathLike[str], sha256: str = WHEEL_SHA256) -> Path:
    """Check that ``path`` is the pinned musicnn wheel.

    Parameters
    ----------
    path : str or path-like
    sha256 : str
        Expected hex digest (default :data:`WHEEL_SHA256`).

    Returns
    -------
    path : Path

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    WheelError
        If its sha256 differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"musicnn wheel: {path}: no such file")
    actual = sha256_file(path)
    if actual != sha256:
        raise WheelError(f"musicnn wheel {path}: sha256 {actual}, expected {sha256} (a different or damaged file)")
    return path


def fetch_wheel(cache_dir: str | os.PathLike[str] | None = None, timeout_s: float = 600.0) -> Path:
    """The musicnn 0.1.0 wheel, downloaded once with pip into a cache and verified.

    Runs ``python -m pip download --no-deps --only-binary=:all: musicnn==0.1.0`` (this
    interpreter's pip, so its index configuration and ``PIP_*`` variables apply) into a
    temporary folder of the cache, checks the sha256 and only then moves the wheel into
    place. A cached wheel is reused if its sha256 matches, downloaded again otherwise.

    Parameters
    ----------
    cache_dir : str or path-like or None
        Where to keep the wheel (see :func:`resolve_cache_dir`: ``$GENRESTREAM_CACHE``, else
        ``~/.cache/genrestream``).
    timeout_s : float
        Seconds before the pip process is abandoned.

    Returns
    -------
    wheel : Path
        ``<cache>/musicnn-0.1.0-py3-none-any.whl`` (29.3 MB).

    Raises
    ------
    WheelError
        If pip fails (no network, no such package on the index; pip's last lines are in
        the message) or the downloaded file is not the pinned one.
    """
    cache = resolve_cache_dir(cache_dir)
    wheel = cache / WHEEL_NAME
    if wheel.is_file():
        try:
            return verify_wheel(wheel)
        except WheelError:
            wheel.unlink()  # damaged or replaced: download again
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".musicnn-download-", dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "30",
               f"musicnn=={MUSICNN_VERSION}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            raise WheelError(f"pip download musicnn=={MUSICNN_VERSION}: no answer in {timeout_s:g} s") from error
        if proc.returncode != 0:
            tail = "\n  ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
            raise WheelError(
                f"pip download musicnn=={MUSICNN_VERSION} failed (exit {proc.returncode}; no network or no "
                f"package index?):\n  {tail}"
            )
        downloaded = Path(tmp) / WHEEL_NAME
        if not downloaded.is_file():
            got = sorted(p.name for p in Path(tmp).iterdir())
            raise WheelError(f"pip download musicnn=={MUSICNN_VERSION} gave {got}, expected {WHEEL_NAME}")
        verify_wheel(downloaded)
        os.replace(downloaded, wheel)
    return wheel


# ---------------------------------------------------------------------------------------------
# The checkpoint


@dataclass(frozen=True)
class MusicnnCheckpoint:
    """A musicnn checkpoint read out of the wheel (:func:`read_checkpoint`).

    Attributes
    ----------
    name : str
        ``"MSD_musicnn"`` or ``"MTT_musicnn"``.
    graph_def : tf.compat.v1.GraphDef
        The frozen inference graph: input :data:`TF_INPUT` float32 ``[N, 187, 96]``,
        outputs :attr:`outputs`; variables are constants, ``is_training`` is folded to
        ``False`` (no placeholder, no Switch/Merge, no dropout left).
    reference_graph_def : tf.compat.v1.GraphDef
        The checkpoint's sub-graph as musicnn runs it: the same variables bound as
        constants, the conditionals and the boolean placeholder :data:`TF_IS_TRAINING` kept.
    input : str
        Tensor name of the log-mel patches.
    is_training : str
        Tensor name of the boolean placeholder of ``reference_graph_def``.
    outputs : dict of str to str
        ``tags`` ``[N, 50]`` (sigmoid), ``logits`` ``[N, 50]``, ``embedding`` ``[N, 200]``,
        ``mean_pool`` and ``max_pool`` ``[N, 753, 1]``: tensor names in both graphs.
    labels : tuple of str
        The 50 tags, in output order (``MSD_LABELS`` / ``MTT_LABELS`` of the wheel's
        ``musicnn/configuration.py``).
    licence : str
        The wheel's ``LICENSE.md`` (ISC).
    n_variables : int
        Variables bound from the checkpoint (64).
    wheel_sha256 : str
    """

    name: str
    graph_def: object = field(repr=False)
    reference_graph_def: object = field(repr=False)
    input: str
    is_training: str
    outputs: dict
    labels: tuple
    licence: str = field(repr=False)
    n_variables: int
    wheel_sha256: str


def _labels_from_configuration(source: str, name: str) -> tuple[str, ...]:
    """The tag list of ``name`` from musicnn's configuration.py, read with ``ast`` (not imported)."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError):
                pass  # not a literal (the module has none, but a later release might)
    for key, expected in _FRONTEND_CONSTANTS.items():
        if values.get(key) != expected:
            raise ValueError(f"musicnn configuration.py: {key} = {values.get(key)!r}, this module assumes {expected}")
    labels = values.get(_LABEL_LISTS[name.split("_")[0]])
    if not isinstance(labels, list) or not all(isinstance(t, str) for t in labels):
        raise ValueError(f"musicnn configuration.py: no tag list {_LABEL_LISTS[name.split('_')[0]]}")
    return tuple(labels)


def _split_input(name: str) -> tuple[str, int]:
    """``"^a"`` → ``("a", -1)`` (control), ``"a:1"`` → ``("a", 1)``, ``"a"`` → ``("a", 0)``."""
    if name.startswith("^"):
        return name[1:], -1
    node, _, port = name.partition(":")
    return node, int(port) if port else 0


def _topological(nodes) -> list:
    """The nodes of a GraphDef (no cycles) ordered so that every input comes first."""
    by_name = {n.name: n for n in nodes}
    order, state = [], {}
    for root in by_name:
        stack = [(root, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name):
                continue
            state[name] = 1
            stack.append((name, True))
            for inp in by_name[name].input:
                src = _split_input(inp)[0]
                if src in by_name and not state.get(src):
                    stack.append((src, False))
    return order


def _clean_attrs(node) -> None:
    # Shapes recorded by TF 1.12 (wrong once Switch becomes Identity) and colocation
    # constraints naming variables that are no longer variables.
    for key in ("_output_shapes", "_class"):
        if key in node.attr:
            del node.attr[key]


def _fold_is_training(graph_def, placeholder: str, outputs: Sequence[str], value: bool = False):
    """Replace the boolean placeholder by ``value`` and remove the branches it disables.

    TF 1 ``tf.cond`` builds ``Switch`` (routes its input to output 1 if the predicate is
    true, to output 0 if false) and ``Merge`` (forwards whichever input is alive) nodes.
    With a constant predicate, each Switch becomes an Identity of its input on the live
    port, the other port is dead, a node with a dead input is dead, and each Merge
    becomes an Identity of its one live input. Control inputs (which only put constants
    into a conditional's frame) are dropped. Finally the graph is pruned to ``outputs``.
    """
    import tensorflow as tf

    ph_node = _split_input(placeholder)[0]
    const_pred = {f"{ph_node}:0"}  # tensors known to equal `value`
    dead_ports: set[str] = set()  # "node:port" outputs that carry no value
    dead_nodes: set[str] = set()  # nodes none of whose outputs carries a value
    alias: dict[str, str] = {}  # "switch:live_port" -> "switch:0"
    new = tf.compat.v1.GraphDef()
    new.versions.CopyFrom(graph_def.versions)
    new.library.CopyFrom(graph_def.library)

    def key(inp: str) -> str:
        node, port = _split_input(inp)
        return f"{node}:{port}"

    def is_dead(inp: str) -> bool:
        return _split_input(inp)[0] in dead_nodes or key(inp) in dead_ports

    for node in _topological(graph_def.node):
        if node.name == ph_node:
            if node.op != "Placeholder" or node.attr["dtype"].type != tf.bool.as_datatype_enum:
                raise ValueError(f"{placeholder}: expected a bool Placeholder, found {node.op}")
            const = new.node.add()
            const.name, const.op = node.name, "Const"
            const.attr["dtype"].type = tf.bool.as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=tf.bool))
            continue
        data = [i for i in node.input if not i.startswith("^")]
        controls = [i for i in node.input if i.startswith("^")]
        if any(is_dead(c) for c in controls) or (node.op != "Merge" and any(is_dead(i) for i in data)):
            dead_nodes.add(node.name)
            continue
        out = new.node.add()
        out.CopyFrom(node)
        _clean_attrs(out)
        del out.input[:]
        if node.op == "Switch" and key(data[1]) in const_pred:
            live = 1 if value else 0
            out.op = "Identity"
            out.input.append(alias.get(key(data[0]), data[0]))
            alias[f"{node.name}:{live}"] = f"{node.name}:0"
            dead_ports.add(f"{node.name}:{1 - live}")
            if key(data[0]) in const_pred:
                const_pred.add(f"{node.name}:0")
        elif node.op == "Merge":
            live = [i for i in data if not is_dead(i)]
            if len(live) != 1:
                raise ValueError(f"{node.name}: Merge with {len(live)} live inputs after folding {placeholder}")
            out.op = "Identity"
            del out.attr["N"]
            out.input.append(alias.get(key(live[0]), live[0]))
            dead_ports.add(f"{node.name}:1")  # value_index
        else:
            out.input.extend(alias.get(key(i), i) for i in data)
            if node.op == "Identity" and key(data[0]) in const_pred:
                const_pred.add(f"{node.name}:0")

    _skip_identities(new, keep={_split_input(o)[0] for o in outputs})
    pruned = tf.compat.v1.graph_util.extract_sub_graph(new, [_split_input(o)[0] for o in outputs])
    left = [n.name for n in pruned.node
            if n.op in ("Switch", "Merge", "RandomUniform", "Placeholder") and n.name != TF_INPUT.split(":")[0]]
    if left or ph_node in {n.name for n in pruned.node}:
        raise ValueError(f"folding {placeholder} left control-flow or training nodes: {left[:5]}")
    return pruned


def _skip_identities(graph_def, keep: set[str]) -> None:
    """Point every consumer of an ``Identity`` node (not in ``keep``) at the Identity's input.

    After folding, a weight reaches its consumer through ``<var>/read`` and the Identity
    that was a Switch; consuming the ``Const`` directly gives the ONNX initializers the
    variables' names (``batch_normalization_8/moving_variance``).
    """
    forward = {n.name: n.input[0] for n in graph_def.node
               if n.op == "Identity" and n.name not in keep and not n.input[0].startswith("^")}

    def resolve(inp: str) -> str:
        seen = 0
        while _split_input(inp)[1] == 0 and _split_input(inp)[0] in forward and seen < len(forward):
            inp, seen = forward[_split_input(inp)[0]], seen + 1
        return inp

    for node in graph_def.node:
        node.input[:] = [resolve(i) for i in node.input]


def _bind_variables(graph_def, reader) -> tuple[object, int]:
    """A copy of ``graph_def`` with every ``VariableV2`` node a ``Const`` of its checkpoint value."""
    import tensorflow as tf

    saved = reader.get_variable_to_shape_map()
    bound = tf.compat.v1.GraphDef()
    bound.CopyFrom(graph_def)
    n = 0
    for node in bound.node:
        _clean_attrs(node)
        if node.op not in ("VariableV2", "Variable", "VarHandleOp"):
            continue
        if node.name not in saved:
            raise ValueError(f"variable {node.name!r} of the graph is not in the checkpoint")
        value = reader.get_tensor(node.name)
        dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
        shape = [d.size for d in node.attr["shape"].shape.dim]
        if value.dtype != dtype.as_numpy_dtype or list(value.shape) != shape:
            raise ValueError(f"variable {node.name!r}: checkpoint has {value.dtype} {value.shape}, "
                             f"graph expects {dtype.name} {shape}")
        node.op = "Const"
        for attr in list(node.attr):
            del node.attr[attr]
        node.attr["dtype"].type = dtype.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        n += 1
    return bound, n


def read_checkpoint(wheel: str | os.PathLike[str], name: str = "MSD_musicnn") -> MusicnnCheckpoint:
    """Read a musicnn checkpoint out of the wheel as a frozen inference graph.

    The checkpoint files (``musicnn/<name>/.meta``, ``.index``, ``.data-00000-of-00001``)
    are extracted to a temporary folder and read by their prefix ``<folder>/`` (the
    ``checkpoint`` file names the author's machine and is not used). The ``.meta`` is parsed
    as a ``MetaGraphDef`` but not imported; the sub-graph of :data:`TF_OUTPUTS` is kept.

    Parameters
    ----------
    wheel : str or path-like
        The musicnn 0.1.0 wheel (:func:`fetch_wheel`); its sha256 is checked.
    name : str
        One of :data:`MODELS`.

    Returns
    -------
    checkpoint : MusicnnCheckpoint

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`MODELS`, or the wheel's graph, variables or
        configuration are not what this module expects.
    WheelError
        If the wheel is not the pinned file.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    from export import quiet_tensorflow

    quiet_tensorflow()

    if name not in MODELS:
        raise ValueError(f"name: {name!r} is not one of {MODELS}")
    wheel = verify_wheel(wheel)
    with zipfile.ZipFile(wheel) as zf:
        configuration = zf.read("musicnn/configuration.py").decode("utf-8")
        licence = zf.read(f"musicnn-{MUSICNN_VERSION}.dist-info/LICENSE.md").decode("utf-8")
        with tempfile.TemporaryDirectory(prefix="musicnn-") as tmp:
            for suffix in (".meta", ".index", ".data-00000-of-00001"):
                with zf.open(f"musicnn/{name}/{suffix}") as src, open(Path(tmp) / suffix, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            meta = meta_graph_pb2.MetaGraphDef()
            meta.ParseFromString((Path(tmp) / ".meta").read_bytes())
            # By prefix: the files are named ".index" etc., so the prefix is the folder + "/".
            reader = tf.compat.v1.train.NewCheckpointReader(tmp + os.sep)
            wanted = [TF_INPUT, TF_IS_TRAINING, *TF_OUTPUTS.values()]
            nodes = {n.name for n in meta.graph_def.node}
            missing = [t for t in wanted if _split_input(t)[0] not in nodes]
            if missing:
                raise ValueError(f"{name}: tensors {missing} not in the checkpoint's graph")
            sub = tf.compat.v1.graph_util.extract_sub_graph(
                meta.graph_def, [_split_input(t)[0] for t in TF_OUTPUTS.values()])
            reference, n_variables = _bind_variables(sub, reader)
    labels = _labels_from_configuration(configuration, name)
    frozen = _fold_is_training(reference, TF_IS_TRAINING, list(TF_OUTPUTS.values()), value=False)
    return MusicnnCheckpoint(
        name=name,
        graph_def=frozen,
        reference_graph_def=reference,
        input=TF_INPUT,
        is_training=TF_IS_TRAINING,
        outputs=dict(TF_OUTPUTS),
        labels=labels,
        licence=licence,
        n_variables=n_variables,
        wheel_sha256=WHEEL_SHA256,
    )


# ---------------------------------------------------------------------------------------------
# Front end


def patches_from_file(path: str | os.PathLike[str], hop_frames: int = N_FRAMES) -> np.ndarray:
    """The backbone's input windows of an audio file, as serving computes them.

    The file is decoded by serving's source (:func:`training.embeddings.decode`: PyAV,
    channel mean, soxr HQ to 16 kHz) and cut by serving's frontend
    (:func:`stream.frontends.logmel.patches`), ``hop_frames`` frames apart (default 187:
    no overlap, as musicnn's own default).

    Returns
    -------
    patches : np.ndarray [shape=(n_patches, 187, 96), dtype=float32]
    """
    from stream.frontends import logmel
    from training.embeddings import decode

    x, _ = logmel.patches(decode(path), int(hop_frames) * logmel.HOP_LENGTH)
    return x


def _check_patches(patches: np.ndarray) -> np.ndarray:
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    if patches.ndim != 3 or patches.shape[1:] != (N_FRAMES, N_MELS) or patches.shape[0] == 0:
        raise ValueError(f"patches: expected shape (n >= 1, {N_FRAMES}, {N_MELS}), got {patches.shape}")
    return patches


# ---------------------------------------------------------------------------------------------
# TensorFlow (the reference) and ONNX Runtime

_TF_SESSIONS: dict = {}


def _tf_session(checkpoint: MusicnnCheckpoint, graph: str, threads: int | None):
    key = (id(checkpoint), graph, threads)
    if key not in _TF_SESSIONS:
        import tensorflow as tf

        g = tf.Graph()
        with g.as_default():
            graph_def = checkpoint.reference_graph_def if graph == "reference" else checkpoint.graph_def
            if any(node.op.startswith("Random") and not (node.attr["seed"].i or node.attr["seed2"].i)
                   for node in graph_def.node):
                # The reference graph keeps dropout's RandomUniform (used only when is_training is True);
                # TensorFlow refuses to run unseeded random ops once op determinism is on (training
                # turns it on), so give them a seed: it changes nothing when is_training is False.
                seeded = type(graph_def)()
                seeded.CopyFrom(graph_def)
                for node in seeded.node:
                    if node.op.startswith("Random") and not (node.attr["seed"].i or node.attr["seed2"].i):
                        node.attr["seed"].i, node.attr["seed2"].i = 1, 1
                graph_def = seeded
            tf.compat.v1.import_graph_def(graph_def, name="")
        config = tf.compat.v1.ConfigProto()
        if threads is not None:
            config.intra_op_parallelism_threads = threads
            config.inter_op_parallelism_threads = threads
        _TF_SESSIONS[key] = (checkpoint, tf.compat.v1.Session(graph=g, config=config))
    return _TF_SESSIONS[key][1]


_CHECKPOINTS: dict = {}


def load_checkpoint(name: str = "MSD_musicnn", wheel: str | os.PathLike[str] | None = None) -> MusicnnCheckpoint:
    """:func:`read_checkpoint` of ``wheel`` (default :func:`fetch_wheel`), cached per process."""
    wheel = Path(wheel) if wheel is not None else fetch_wheel()
    key = (str(wheel.resolve()), name)
    if key not in _CHECKPOINTS:
        _CHECKPOINTS[key] = read_checkpoint(wheel, name)
    return _CHECKPOINTS[key]



def tf_predict(
    patches: np.ndarray,
    checkpoint: MusicnnCheckpoint | str = "MSD_musicnn",
    *,
    graph: str = "reference",
    is_training: bool = False,
    batch_size: int = 64,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Run the checkpoint's TensorFlow graph on patches (the reference; "the naive way").

    Parameters
    ----------
    patches : np.ndarray [shape=(n, 187, 96)]
        Log-mel patches (:func:`logmel_patches`).
    checkpoint : MusicnnCheckpoint or str
        A checkpoint, or a name of :data:`MODELS` (:func:`load_checkpoint`).
    graph : {"reference", "frozen"}
        ``"reference"``: the checkpoint's graph with ``is_training`` fed, as musicnn runs
        it; ``"frozen"``: :attr:`MusicnnCheckpoint.graph_def` (``is_training`` folded).
    is_training : bool
        Fed to the reference graph (must be ``False`` for inference: ``True`` normalises
        with batch statistics and drops units at random).
    batch_size : int
        Patches per ``Session.run`` (the first layers of a patch take about 9 MB; with
        ``is_training=True`` the batch statistics are those of each run's patches).
    threads : int or None
        TensorFlow intra- and inter-op threads (default TensorFlow's choice).

    Returns
    -------
    outputs : dict of str to np.ndarray
        The keys of :data:`TF_OUTPUTS`: ``tags`` ``[n, 50]``, ``logits`` ``[n, 50]``,
        ``embedding`` ``[n, 200]``, ``mean_pool``, ``max_pool`` ``[n, 753, 1]``; float32.
    """
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint(checkpoint)
    if graph not in ("reference", "frozen"):
        raise ValueError(f"graph: expected 'reference' or 'frozen', got {graph!r}")
    if graph == "frozen" and is_training:
        raise ValueError("is_training: the frozen graph is inference only")
    patches = _check_patches(patches)
    session = _tf_session(checkpoint, graph, threads)
    names = list(checkpoint.outputs)
    fetches = [checkpoint.outputs[k] for k in names]
    step = int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(patches), step):
        feed = {checkpoint.input: patches[start:start + step]}
        if graph == "reference":
            feed[checkpoint.is_training] = bool(is_training)
        parts.append(session.run(fetches, feed_dict=feed))
    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(names)}


def ort_session(onnx_path: str | os.PathLike[str], threads: int | None = None):
    """A CPU ONNX Runtime session; ``threads`` sets intra-op threads (inter-op is 1)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def ort_predict(session_or_path, patches: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run the ONNX backbone (a session or a path) on patches, ``batch_size`` patches per call.

    Returns
    -------
    outputs : dict of str to np.ndarray
        ``tags`` ``[n, 50]`` and ``embedding`` ``[n, 200]``, float32.
    """
    patches = _check_patches(patches)
    session = session_or_path if hasattr(session_or_path, "run") else ort_session(session_or_path)
    names = [o.name for o in session.get_outputs()]
    step = int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    parts = [session.run(names, {INPUT_NAME: patches[s:s + step]}) for s in range(0, len(patches), step)]
    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(names)}


# ---------------------------------------------------------------------------------------------
# Conversion


def _clean_name(name: str) -> str:
    """``model/batch_normalization_3/cond/FusedBatchNorm_1:0`` → ``batch_normalization_3/FusedBatchNorm_1``."""
    return name.removeprefix("model/").removesuffix(":0").replace("/cond/", "/")


def _clean_onnx_names(graph) -> None:
    """Strip TensorFlow's ``model/`` scope, ``/cond/`` and ``:0`` from node, value and initializer names.

    Node names and value names are two namespaces; each is renamed only if the clean
    names stay unique within it (else it is left alone).
    """
    keep = {v.name for v in [*graph.input, *graph.output]}
    values = {i.name for i in graph.initializer}
    for node in graph.node:
        values.update(node.input)
        values.update(node.output)
    values = {v for v in values if v} - keep
    value_map = {v: _clean_name(v) for v in values}
    if len(set(value_map.values()) | keep) == len(value_map) + len(keep):
        for init in graph.initializer:
            init.name = value_map.get(init.name, init.name)
        for value in graph.value_info:
            value.name = value_map.get(value.name, value.name)
        for node in graph.node:
            node.input[:] = [value_map.get(i, i) for i in node.input]
            node.output[:] = [value_map.get(o, o) for o in node.output]
    node_map = {n.name: _clean_name(n.name) for n in graph.node}
    if len(set(node_map.values())) == len(node_map):
        for node in graph.node:
            node.name = node_map[node.name]


def checkpoint_to_onnx(checkpoint: MusicnnCheckpoint, opset: int = DEFAULT_OPSET):
    """Convert a checkpoint's frozen graph to an ONNX ModelProto.

    Parameters
    ----------
    checkpoint : MusicnnCheckpoint
    opset : int
        ONNX opset (13 and 17 tested).

    Returns
    -------
    model : onnx.ModelProto
        Input ``"logmel"`` float32 ``[batch, 187, 96]``; outputs ``"tags"`` float32
        ``[batch, 50]`` and ``"embedding"`` float32 ``[batch, 200]``; ``batch`` symbolic.
    """
    import onnx
    import tf2onnx

    outputs = {checkpoint.outputs["tags"]: TAGS_NAME, checkpoint.outputs["embedding"]: EMBEDDING_NAME}
    model, _ = tf2onnx.convert.from_graph_def(
        checkpoint.graph_def,
        name=checkpoint.name,
        input_names=[checkpoint.input],
        output_names=list(outputs),
        opset=opset,
        tensors_to_rename={checkpoint.input: INPUT_NAME, **outputs},
    )
    graph = model.graph
    inputs = [i.name for i in graph.input]
    names = [o.name for o in graph.output]
    if inputs != [INPUT_NAME] or names != [TAGS_NAME, EMBEDDING_NAME]:
        raise RuntimeError(f"tf2onnx produced inputs {inputs} and outputs {names}, expected "
                           f"[{INPUT_NAME!r}] and [{TAGS_NAME!r}, {EMBEDDING_NAME!r}]")
    expected = {INPUT_NAME: [N_FRAMES, N_MELS], TAGS_NAME: [len(checkpoint.labels)], EMBEDDING_NAME: [N_EMBEDDING]}
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        dims.add().dim_param = BATCH_DIM
        for size in expected[value.name]:
            dims.add().dim_value = size
    _clean_onnx_names(graph)
    graph.name = checkpoint.name
    graph.doc_string = (
        f"musicnn {checkpoint.name} (Pons & Serra 2019, MTG-UPF) from the PyPI wheel musicnn=={MUSICNN_VERSION} "
        f"(sha256 {checkpoint.wheel_sha256}), converted with tf2onnx {tf2onnx.__version__}. Input 'logmel' "
        f"[batch, {N_FRAMES}, {N_MELS}]: log10(10000 * mel power + 1) at {SAMPLE_RATE} Hz, n_fft {N_FFT}, "
        f"hop_length {HOP_LENGTH}. Outputs 'tags' (sigmoid) and 'embedding' (penultimate layer). Code ISC; "
        "models CC BY-NC-SA 4.0 (MTG)."
    )
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model)
    return model


def backbone_to_onnx(
    out_path: str | os.PathLike[str],
    name: str = "MSD_musicnn",
    opset: int = DEFAULT_OPSET,
    *,
    wheel: str | os.PathLike[str] | None = None,
    verify_patches: np.ndarray | None = None,
    tolerance: float = TOLERANCE,
) -> Path:
    """Write the musicnn backbone as ONNX (see :func:`checkpoint_to_onnx` for its contract).

    Parameters
    ----------
    out_path : str or path-like
        Destination ``.onnx``; written atomically (a temporary file, then renamed).
    name : str
        One of :data:`MODELS`.
    opset : int
    wheel : str or path-like or None
        The musicnn wheel (default :func:`fetch_wheel`).
    verify_patches : np.ndarray [shape=(n, 187, 96)] or None
        If given, the file is moved into place only if :func:`check_parity` on these
        patches is within ``tolerance`` (tags) and :data:`EMBEDDING_TOLERANCE`.
    tolerance : float

    Returns
    -------
    out_path : Path

    Raises
    ------
    ParityError
        If verification fails (``out_path`` is left untouched).
    """
    checkpoint = load_checkpoint(name, wheel)
    return write_backbone(out_path, checkpoint, opset, verify_patches=verify_patches, tolerance=tolerance)[0]


def write_backbone(
    out_path: str | os.PathLike[str],
    checkpoint: MusicnnCheckpoint,
    opset: int = DEFAULT_OPSET,
    verify_patches: np.ndarray | None = None,
    tolerance: float = TOLERANCE,
) -> tuple[Path, dict | None]:
    """:func:`backbone_to_onnx` of a checkpoint already read; also returns the parity figures.

    Returns
    -------
    out_path : Path
    parity : dict or None
        :func:`check_parity` of ``verify_patches`` (``None`` without them).
    """
    import onnx

    from export import atomic_output

    model = checkpoint_to_onnx(checkpoint, opset)
    out_path = Path(out_path)
    parity = None
    with atomic_output(out_path) as tmp:
        onnx.save_model(model, tmp)
        if verify_patches is not None:
            parity = check_parity(tmp, verify_patches, checkpoint)
            if not (parity["tags"] <= tolerance and parity["embedding"] <= EMBEDDING_TOLERANCE
                    and parity["ort_finite"] and parity["tf_finite"]):
                raise ParityError(
                    f"ONNX Runtime vs TensorFlow on {parity['n_patches']} patches: tags differ by "
                    f"{parity['tags']:.3g} (tolerance {tolerance:g}), embedding by {parity['embedding']:.3g} "
                    f"(tolerance {EMBEDDING_TOLERANCE:g}), finite: TF {parity['tf_finite']}, ORT "
                    f"{parity['ort_finite']}; {out_path} not written"
                )
    return out_path, parity


def check_parity(
    onnx_path: str | os.PathLike[str],
    patches: np.ndarray,
    checkpoint: MusicnnCheckpoint | str = "MSD_musicnn",
    batch_sizes: Iterable[int] = PARITY_BATCH_SIZES,
) -> dict:
    """Largest |ONNX Runtime - TensorFlow| of the tags and the embedding on real patches.

    TensorFlow runs the reference graph (:func:`tf_predict`, ``is_training`` fed ``False``)
    once; ONNX Runtime runs every patch at each batch size (the last batch may be shorter).

    Parameters
    ----------
    onnx_path : str or path-like
    patches : np.ndarray [shape=(n, 187, 96)]
    checkpoint : MusicnnCheckpoint or str
    batch_sizes : iterable of int

    Returns
    -------
    parity : dict
        ``tags``, ``embedding``: max abs differences over every batch size; ``by_batch``:
        ``{batch_size: {"tags": d, "embedding": d}}``; ``n_patches``; ``tf_finite``,
        ``ort_finite``: whether every output was finite.
    """
    patches = _check_patches(patches)
    reference = tf_predict(patches, checkpoint)
    session = ort_session(onnx_path)
    by_batch, finite = {}, True
    for b in batch_sizes:
        got = ort_predict(session, patches, batch_size=int(b))
        finite &= all(bool(np.all(np.isfinite(v))) for v in got.values())
        by_batch[int(b)] = {
            k: float(np.max(np.abs(got[k].astype(np.float64) - reference[k]))) for k in (TAGS_NAME, EMBEDDING_NAME)
        }
    return {
        "tags": max(v[TAGS_NAME] for v in by_batch.values()),
        "embedding": max(v[EMBEDDING_NAME] for v in by_batch.values()),
        "by_batch": by_batch,
        "n_patches": len(patches),
        "tf_finite": bool(all(np.all(np.isfinite(reference[k])) for k in (TAGS_NAME, EMBEDDING_NAME))),
        "ort_finite": bool(finite),
    }


def top_tags(tags: np.ndarray, labels: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` tags of highest mean probability over patches.

    Parameters
    ----------
    tags : np.ndarray [shape=(n, n_tags) or (n_tags,)]
        Probabilities.
    labels : sequence of str [length n_tags]

    Returns
    -------
    top : list of (tag, probability)
    """
    mean = np.asarray(tags, dtype=np.float64).reshape(-1, len(labels)).mean(axis=0)
    order = np.argsort(-mean, kind="stable")[:k]
    return [(labels[i], float(mean[i])) for i in order]


# ---------------------------------------------------------------------------------------------
# Timing (single thread, in a clean subprocess)


def _time_calls(run, patches: np.ndarray, batch_size: int, min_s: float, min_calls: int) -> dict:
    n = len(patches)
    pool = np.concatenate([patches] * (batch_size // n + 2))  # every batch full, the patches in turn
    batches = [np.ascontiguousarray(pool[s:s + batch_size]) for s in range(0, n, batch_size)]
    run(batches[0])  # warm-up
    cpu, wall = [], []
    start = time.perf_counter()
    i = 0
    while i < min_calls or time.perf_counter() - start < min_s:
        c0, w0 = time.process_time(), time.perf_counter()
        run(batches[i % len(batches)])
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        i += 1
    return {"cpu_ms_per_patch": 1000 * float(np.median(cpu)) / batch_size,
            "wall_ms_per_patch": 1000 * float(np.median(wall)) / batch_size, "calls": i}


def _ort_run(session, input_name: str, patches: np.ndarray):
    return session.run(None, {input_name: patches})


def time_backbone(
    models: Mapping[str, str | os.PathLike[str]],
    patches: np.ndarray,
    batch_sizes: Sequence[int] = (1, 16, 64),
    tf_checkpoint: MusicnnCheckpoint | str | None = None,
    min_s: float = 2.0,
    min_calls: int = 3,
) -> dict:
    """Milliseconds per patch, one thread, in this process (use :func:`time_in_subprocess`).

    Parameters
    ----------
    models : mapping of str to path
        Label → ONNX file, each run by ONNX Runtime with one intra-op thread.
    patches : np.ndarray [shape=(n, 187, 96)]
    batch_sizes : sequence of int
    tf_checkpoint : MusicnnCheckpoint or str or None
        Also time TensorFlow's reference graph (one intra- and inter-op thread).
    min_s, min_calls :
        Each batch size runs for at least ``min_s`` seconds and ``min_calls`` calls
        after one warm-up call.

    Returns
    -------
    timing : dict
        ``{label: {batch_size: {"cpu_ms_per_patch", "wall_ms_per_patch", "calls"}}}``
        (TensorFlow as ``"tensorflow"``); medians over calls; CPU time is the process's.
    """
    patches = _check_patches(patches)
    out: dict = {}
    for label, path in models.items():
        session = ort_session(path, threads=1)
        run = functools.partial(_ort_run, session, session.get_inputs()[0].name)
        out[label] = {b: _time_calls(run, patches, b, min_s, min_calls) for b in batch_sizes}
    if tf_checkpoint is not None:
        ck = load_checkpoint(tf_checkpoint) if isinstance(tf_checkpoint, str) else tf_checkpoint
        run = functools.partial(tf_predict, checkpoint=ck, threads=1)
        out["tensorflow"] = {b: _time_calls(run, patches, b, min_s, min(min_calls, 2)) for b in batch_sizes}
    return out


def time_in_subprocess(
    models: Mapping[str, str | os.PathLike[str]],
    patches: np.ndarray,
    batch_sizes: Sequence[int] = (1, 16, 64),
    tf_name: str | None = None,
    wheel: str | os.PathLike[str] | None = None,
    min_s: float = 2.0,
) -> dict:
    """:func:`time_backbone` in a fresh interpreter with every thread pool at one thread.

    ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
    ``TF_NUM_INTRAOP_THREADS`` (...) are set to 1 in the child's environment before any
    library loads, so neither this process nor a thread pool created earlier interferes.

    Parameters
    ----------
    tf_name : str or None
        Also time TensorFlow on this checkpoint of :data:`MODELS`.
    wheel : path or None
        The wheel for ``tf_name`` (default :func:`fetch_wheel`).

    Returns
    -------
    timing : dict
        As :func:`time_backbone` (batch sizes as ints).
    """
    with tempfile.TemporaryDirectory(prefix="musicnn-timing-") as tmp:
        npy = Path(tmp) / "patches.npy"
        np.save(npy, _check_patches(patches))
        spec = {"models": {k: str(v) for k, v in models.items()}, "patches": str(npy),
                "batch_sizes": [int(b) for b in batch_sizes], "tf_name": tf_name,
                "wheel": str(wheel) if wheel is not None else None, "min_s": min_s}
        env = {**os.environ, **{k: "1" for k in _THREAD_ENV}, "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run([sys.executable, "-m", "export.musicnn", "--timing-spec", json.dumps(spec)],
                              check=False, capture_output=True, text=True, env=env,
                              cwd=str(Path(__file__).resolve().parents[1]))
        if proc.returncode != 0:
            raise RuntimeError(f"timing subprocess failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {label: {int(b): v for b, v in per.items()} for label, per in result.items()}


def _timing_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    patches = np.load(spec["patches"])
    ck = load_checkpoint(spec["tf_name"], spec["wheel"]) if spec["tf_name"] else None
    result = time_backbone(spec["models"], patches, spec["batch_sizes"], ck, min_s=spec["min_s"])
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# Quantisation (measured, not shipped)


def quantised_variants(onnx_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """float16 and int8 (dynamic) copies of the backbone, for measurement.

    - ``float16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with
      float32 inputs and outputs kept (``keep_io_types=True``);
    - ``int8_dynamic``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
      activations quantised at run time; ``MatMul``, ``Conv`` …);

    Returns
    -------
    paths : dict of str to Path
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(onnx_path).stem
    paths = {"float16": out_dir / f"{stem}.fp16.onnx", "int8_dynamic": out_dir / f"{stem}.int8.onnx"}
    fp16 = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save_model(fp16, paths["float16"])
    quantize_dynamic(str(onnx_path), str(paths["int8_dynamic"]), weight_type=QuantType.QInt8)
    return paths


def accuracy_against(reference: Mapping[str, np.ndarray], onnx_path, patches: np.ndarray, labels) -> dict:
    """How a variant's outputs differ from the float32 reference outputs on the same patches.

    Returns
    -------
    diff : dict
        ``tags_max``, ``tags_mean`` (abs difference), ``embedding_max``,
        ``embedding_cosine_min`` (per patch), ``top1_agreement`` and ``top5_overlap``
        (per patch, fraction of the reference's top 5 in the variant's top 5).
    """
    got = ort_predict(onnx_path, patches, batch_size=64)
    t_ref, t = np.asarray(reference[TAGS_NAME], np.float64), got[TAGS_NAME].astype(np.float64)
    e_ref, e = np.asarray(reference[EMBEDDING_NAME], np.float64), got[EMBEDDING_NAME].astype(np.float64)
    cos = np.sum(e_ref * e, axis=1) / (np.linalg.norm(e_ref, axis=1) * np.linalg.norm(e, axis=1) + 1e-12)
    top5_ref, top5 = np.argsort(-t_ref, axis=1)[:, :5], np.argsort(-t, axis=1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5_ref, top5)])
    return {
        "tags_max": float(np.max(np.abs(t - t_ref))),
        "tags_mean": float(np.mean(np.abs(t - t_ref))),
        "embedding_max": float(np.max(np.abs(e - e_ref))),
        "embedding_cosine_min": float(np.min(cos)),
        "top1_agreement": float(np.mean(np.argmax(t, 1) == np.argmax(t_ref, 1))),
        "top5_overlap": float(overlap),
        "finite": bool(np.all(np.isfinite(t)) and np.all(np.isfinite(e))),
    }


# ---------------------------------------------------------------------------------------------
# Command line


def default_clips() -> list[Path]:
    """Real music to verify on: the ten ``gtzan-parity`` clips and the ``free`` music clips."""
    from training.data import shared_dir

    shared = shared_dir() / "audio"
    clips = sorted((shared / "gtzan-parity").glob("*.wav"))
    catalogue = shared / "free" / "CATALOGUE.csv"
    if catalogue.is_file():
        import csv

        with open(catalogue, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        clips += [shared / "free" / r["file"] for r in rows if r.get("kind") == "music"]
    return [c for c in clips if c.is_file()]


def onnx_summary(onnx_path: str | os.PathLike[str]) -> dict:
    """``bytes``, ``sha256``, ``nodes``, ``ops`` (count by op type), ``opset``, input and output shapes."""
    import collections

    import onnx

    model = onnx.load(str(onnx_path))
    def shape(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    data = Path(onnx_path).read_bytes()
    return {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "nodes": len(model.graph.node),
        "ops": dict(collections.Counter(n.op_type for n in model.graph.node).most_common()),
        "opset": int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))),
        "inputs": {v.name: shape(v) for v in model.graph.input},
        "outputs": {v.name: shape(v) for v in model.graph.output},
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.musicnn",
        description="Convert a pretrained musicnn checkpoint (PyPI wheel musicnn==0.1.0) to an ONNX backbone "
        "(input 'logmel' [batch, 187, 96], outputs 'tags' and 'embedding'), verify it against TensorFlow on real "
        "audio and time it on one thread.",
    )
    parser.add_argument("--out", type=Path, help="ONNX file to write")
    parser.add_argument("--name", default="MSD_musicnn", choices=MODELS, help="checkpoint (default: MSD_musicnn)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"where the wheel is kept (default ${CACHE_ENV} or ~/.cache/genrestream)")
    parser.add_argument("--audio", type=Path, nargs="*", default=None,
                        help="audio files to verify on (default: shared gtzan-parity and free music clips)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest accepted tag difference (default {TOLERANCE:g})")
    parser.add_argument("--no-timing", action="store_true", help="skip the single-thread timing")
    parser.add_argument("--quantisation", action="store_true",
                        help="also measure float16 and int8-dynamic copies (written beside --out; not shipped)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--timing-spec", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.musicnn --out PATH``: convert, verify on real audio, time.

    Returns
    -------
    status : int
        0 on success; 1 if parity fails (nothing written); 2 on bad input or if the wheel
        cannot be fetched.
    """
    args = build_parser().parse_args(argv)
    if args.timing_spec is not None:
        return _timing_main(args.timing_spec)
    if args.out is None:
        print("python -m export.musicnn: error: --out PATH is required", file=sys.stderr)
        return 2
    try:
        wheel = fetch_wheel(args.cache_dir)
    except WheelError as error:
        print(f"export.musicnn: {error}", file=sys.stderr)
        return 2
    clips = args.audio if args.audio is not None else default_clips()
    if not clips:
        print("export.musicnn: no audio to verify on (give --audio or set GENRESTREAM_SHARED)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    checkpoint = load_checkpoint(args.name, wheel)
    by_clip = {}
    for clip in clips:
        try:
            by_clip[Path(clip).name] = patches_from_file(clip)
        except (ValueError, FileNotFoundError) as error:
            print(f"export.musicnn: skipping {clip}: {error}", file=sys.stderr)
    patches = np.concatenate(list(by_clip.values()))
    try:
        _, parity = write_backbone(args.out, checkpoint, args.opset, verify_patches=patches, tolerance=args.tolerance)
    except ParityError as error:
        print(f"export.musicnn: verification failed: {error}", file=sys.stderr)
        return 1
    summary = onnx_summary(args.out)
    print(f"wrote {args.out} ({summary['bytes'] / 1e6:.2f} MB, {summary['nodes']} nodes, opset {summary['opset']}, "
          f"sha256 {summary['sha256']}) in {time.perf_counter() - started:.1f} s")
    print(f"  from {WHEEL_NAME} sha256 {WHEEL_SHA256}; {checkpoint.n_variables} variables; "
          f"inputs {summary['inputs']}, outputs {summary['outputs']}")
    print(f"  ops: {summary['ops']}")
    print(f"parity ONNX Runtime vs TensorFlow on {parity['n_patches']} patches of {len(by_clip)} clips: "
          f"max |diff| tags {parity['tags']:.3g}, embedding {parity['embedding']:.3g} "
          f"(tolerances {args.tolerance:g}, {EMBEDDING_TOLERANCE:g}); by batch "
          + ", ".join(f"{b}: {v['tags']:.2g}/{v['embedding']:.2g}" for b, v in parity["by_batch"].items())
          + f"; finite: TF {parity['tf_finite']}, ORT {parity['ort_finite']}")
    session = ort_session(args.out)
    top = {}
    for clip, clip_patches in by_clip.items():
        top[clip] = top_tags(ort_predict(session, clip_patches)[TAGS_NAME], checkpoint.labels, 3)
        print(f"  {clip:48s} " + ", ".join(f"{t} {p:.2f}" for t, p in top[clip]))
    report = {"onnx": summary, "parity": parity, "top_tags": top, "wheel_sha256": WHEEL_SHA256,
              "labels": list(checkpoint.labels)}
    variants = {"float32": args.out}
    if args.quantisation:
        variants.update(quantised_variants(args.out, Path(args.out).parent))
        reference = ort_predict(session, patches, batch_size=64)
        report["quantisation"] = {}
        for label, path in variants.items():
            if label == "float32":
                continue
            acc = accuracy_against(reference, path, patches, checkpoint.labels)
            acc["bytes"] = Path(path).stat().st_size
            report["quantisation"][label] = acc
            print(f"  {label}: {acc['bytes'] / 1e6:.2f} MB; vs float32 tags max {acc['tags_max']:.3g} "
                  f"mean {acc['tags_mean']:.3g}, embedding cosine min {acc['embedding_cosine_min']:.4f}, "
                  f"top-1 agreement {acc['top1_agreement']:.3f}, top-5 overlap {acc['top5_overlap']:.3f}")
    if not args.no_timing:
        timing_patches = patches[:64] if len(patches) >= 64 else patches
        timing = time_in_subprocess(variants, timing_patches, tf_name=args.name, wheel=wheel)
        report["timing"] = timing
        print("ms per patch, one thread (CPU time, median over calls; wall in brackets):")
        for label, per in timing.items():
            print(f"  {label:14s} " + "  ".join(
                f"batch {b}: {v['cpu_ms_per_patch']:.1f} ({v['wall_ms_per_patch']:.1f})" for b, v in per.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
