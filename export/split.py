"""Split a musicnn model in two: a frame stage run once per log-mel frame, and a window stage.

musicnn's timbral front end (Pons & Serra 2019; the two ``Conv`` nodes of 204
filters, kernels 7 x 38 and 7 x 67 over time x mel, then ReLU, batch
normalisation and a max over frequency) is about 70 % of a window's cost
(ONNX Runtime's profiler, one thread: 25 of 35 ms) and convolves along time
with a context of only 3 frames each side. Consecutive windows of a stream
share 187 - 63 = 124 of their 187 frames (hop 1.008 s), so most of that work
is done three times. The split makes it once per frame:

``<stem>.frames.onnx``
    input ``logmel`` float32 ``[batch, frames, 96]`` (any number of frames)
    → ``timbral`` float32 ``[batch, frames, 408]``: the two branches' outputs
    per frame, with the same zero padding in time as inside a window.
``<stem>.windows.onnx``
    inputs ``logmel`` ``[batch, 187, 96]`` and ``timbral`` ``[batch, 187, 408]``
    → every output of the whole model (the temporal branches, the mid end,
    pooling, the back end and the heads).

``windows(x, frames(x))`` is the whole model, node for node; the runtime
(:class:`stream.framestage.FrameStageRunner`) computes ``timbral`` for a
window's frames 3 to 183 from the frames computed for earlier windows (the
same values: each depends only on 7 frames that lie inside both windows) and
only the 6 edge frames and the new ones afresh: exact, as
:func:`split_model` checks against the whole model before it returns.

Both stages also pool before they normalise (:func:`pool_before_affine`):
every ``Conv → Relu → BatchNormalization → MaxPool over all of frequency``
chain (the two timbral and the three temporal branches) takes its maximum
over frequency straight after the convolution, and applies the ReLU and the
batch normalisation to one value per channel and frame instead of to every
frequency (59, 30 or 96 of them). The batch normalisation is a per-channel
affine map, so the maximum of its outputs is its output of the maximum, or of
the minimum where its scale is negative (the convolution's filters are negated
for those channels, and the result negated back). Same values, 35 % less CPU
in the window stage.

Both files carry ``whole_sha256``, the sha256 of the whole model they came
from: :class:`stream.model.GenreModel` uses them only beside that very file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from stream.framestage import FRAME_OUTPUT, stage_paths

TOLERANCE = 1e-4
"""Largest accepted |split - whole| of any output value on the check windows."""


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _spectrogram_tensor(graph, input_name: str) -> str:
    """The tensor the front end's convolutions read: the input after its reshapes and batch normalisation."""
    users = _consumers(graph)
    name = input_name
    while len(users.get(name, [])) == 1 and users[name][0].op_type in ("Unsqueeze", "Reshape", "BatchNormalization"):
        name = users[name][0].output[0]
    return name


def _kernel_shape(graph, inits: dict[str, np.ndarray], name: str) -> tuple[int, ...] | None:
    """Shape of a Conv's weight: an initializer, or one through a DequantizeLinear (a quantized model)."""
    if name in inits:
        return tuple(inits[name].shape)
    for node in graph.node:
        if name in node.output and node.op_type == "DequantizeLinear" and node.input[0] in inits:
            return tuple(inits[node.input[0]].shape)
    return None


def _timbral_branches(graph, inits: dict[str, np.ndarray], spectrogram: str) -> list[tuple[str, list, list]]:
    """The front end's branches with a timbral convolution (kernel longer than 1 in time and in mel).

    Returns ``(output, nodes, convs)`` per branch, in the order of the Concat that joins the front end's
    branches: ``output`` is the branch's [batch, channels, frames] tensor (a Squeeze's), ``nodes`` every node
    it needs given the spectrogram (quantize/dequantize pairs of a QDQ model included).
    """
    users = _consumers(graph)
    producer = {out: node for node in graph.node for out in node.output}
    # the Concat that joins the branches: the first one reached from the spectrogram
    frontier, seen, concat = [spectrogram], set(), None
    while frontier and concat is None:
        name = frontier.pop(0)
        for node in users.get(name, []):
            if node.op_type == "Concat" and all(producer.get(i) is not None and producer[i].op_type == "Squeeze"
                                                for i in node.input):
                concat = node
                break
            if id(node) not in seen:
                seen.add(id(node))
                frontier.extend(node.output)
    if concat is None:
        return []
    branches = []
    for output in concat.input:
        nodes = _needed(graph, [output], {spectrogram})
        convs = [n for n in nodes if n.op_type == "Conv"]
        shapes = [_kernel_shape(graph, inits, c.input[1]) for c in convs]
        if len(convs) == 1 and shapes[0] is not None and len(shapes[0]) == 4 and shapes[0][2] > 1 and shapes[0][3] > 1:
            branches.append((output, nodes, convs))
    return branches


def _context_frames(graph, inits, branches) -> int:
    contexts = set()
    for _, _, convs in branches:
        conv = convs[0]
        attrs = {a.name: a for a in conv.attribute}
        pads = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
        k = int(_kernel_shape(graph, inits, conv.input[1])[2])
        if pads[0] != pads[2] or pads[0] != (k - 1) // 2 or k % 2 == 0:
            raise ValueError(f"split: {conv.name} is not a centred 'same' convolution in time (kernel {k}, pads {pads})")
        contexts.add(pads[0])
    return max(contexts)


def _needed(graph, outputs: Sequence[str], given: set[str]) -> list:
    """The nodes needed for ``outputs`` when the tensors in ``given`` are inputs, in graph order."""
    producer = {out: node for node in graph.node for out in node.output}
    keep: set[int] = set()
    todo = list(outputs)
    while todo:
        name = todo.pop()
        if name in given or name not in producer:
            continue
        node = producer[name]
        if id(node) in keep:
            continue
        keep.add(id(node))
        todo.extend(node.input)
    return [node for node in graph.node if id(node) in keep]


def pool_before_affine(model) -> int:
    """Take the maximum over frequency before the ReLU and batch normalisation that precede it (in place).

    musicnn's branches end in ``Conv → Relu → BatchNormalization → MaxPool``
    with a pool spanning the whole frequency axis (``tf.layers.max_pooling2d``
    of the full width, Pons & Serra 2019). With ``a`` the normalisation's
    per-channel scale, ``max_f(a * relu(c_f) + b)`` is ``a * relu(max_f c_f) + b``
    for ``a >= 0`` and ``a * relu(min_f c_f) + b`` for ``a < 0``, and
    ``min_f c_f = -max_f(-c_f)``. So the chain becomes ``Conv' → ReduceMax over
    frequency → Mul(s) → Relu → BatchNormalization``, where ``Conv'`` has the
    filters and bias of the channels with ``a < 0`` negated (exact in floating
    point) and ``s`` is -1 for those channels, +1 for the others. A chain whose
    weights are not plain initializers (a quantized convolution) takes
    ``ReduceMax`` and ``ReduceMin`` of the ReLU's output instead and picks per
    channel (``Where``).

    Parameters
    ----------
    model : onnx.ModelProto
        Rewritten in place; opset 13 to 17 (``ReduceMax`` with an ``axes`` attribute).

    Returns
    -------
    int
        The number of chains rewritten (0: nothing matched).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    users = _consumers(graph)
    widths = _last_dims(model)  # once: a rewrite leaves the other chains' shapes as they are

    def only(tensor: str, op_type: str):
        node = producer.get(tensor)
        ok = node is not None and node.op_type == op_type and len(users.get(node.output[0], [])) == 1
        return node if ok else None

    def attribute(node, name, default=None):
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    rewritten = 0
    for pool in [n for n in graph.node if n.op_type == "MaxPool"]:
        kernel = list(attribute(pool, "kernel_shape", []))
        if (len(kernel) != 2 or kernel[0] != 1 or list(attribute(pool, "strides", kernel)) != kernel
                or any(attribute(pool, "pads", [])) or attribute(pool, "auto_pad", b"NOTSET") != b"NOTSET"):
            continue
        bn = only(pool.input[0], "BatchNormalization")
        relu = only(bn.input[0], "Relu") if bn is not None else None
        if bn is None or not all(i in inits for i in bn.input[1:5]):
            continue
        if widths.get(pool.input[0]) != kernel[1]:  # the pool must span the whole frequency axis
            continue
        gamma, var = (numpy_helper.to_array(inits[i]) for i in (bn.input[1], bn.input[4]))
        negative = (gamma / np.sqrt(var + attribute(bn, "epsilon", 1e-5))) < 0
        conv = only(relu.input[0], "Conv") if relu is not None else None
        weights = [] if conv is None else [i for i in conv.input[1:] if i]
        name = pool.output[0]
        new = []
        if conv is not None and all(i in inits and len(users[i]) == 1 for i in weights):
            if negative.any():
                sign = np.where(negative, -1.0, 1.0).astype(np.float32)
                for i, tensor in enumerate(weights):
                    value = numpy_helper.to_array(inits[tensor])
                    flip = sign.reshape((-1,) + (1,) * (value.ndim - 1)) if i == 0 else sign
                    inits[tensor].CopyFrom(numpy_helper.from_array((value * flip).astype(value.dtype), tensor))
            new.append(helper.make_node("ReduceMax", [conv.output[0]], [name + "__fmax"], axes=[3], keepdims=1,
                                        name=name + "__fmax"))
            head = name + "__fmax"
            if negative.any():
                graph.initializer.append(numpy_helper.from_array(sign.reshape(1, -1, 1, 1), name + "__sign"))
                new.append(helper.make_node("Mul", [head, name + "__sign"], [name + "__signed"], name=name + "__signed"))
                head = name + "__signed"
            relu.input[0] = head
            anchor_node = relu
        else:  # pick the max or the min of the normalisation's input, per channel
            source = bn.input[0]
            new.append(helper.make_node("ReduceMax", [source], [name + "__fmax"], axes=[3], keepdims=1,
                                        name=name + "__fmax"))
            head = name + "__fmax"
            if negative.any():
                graph.initializer.append(numpy_helper.from_array(negative.reshape(1, -1, 1, 1), name + "__negative"))
                new.append(helper.make_node("ReduceMin", [source], [name + "__fmin"], axes=[3], keepdims=1,
                                            name=name + "__fmin"))
                new.append(helper.make_node("Where", [name + "__negative", name + "__fmin", head], [name + "__pick"],
                                            name=name + "__pick"))
                head = name + "__pick"
            bn.input[0] = head
            anchor_node = bn
        bn.output[0] = name  # the normalisation now gives what the pool gave
        position = list(graph.node).index(anchor_node)
        for offset, node in enumerate(new):
            graph.node.insert(position + offset, node)
        graph.node.remove(pool)
        rewritten += 1
    return rewritten


def _last_dims(model) -> dict[str, int]:
    """The static size of the last axis of every tensor ONNX shape inference can size, by name."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    sizes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value"):
            sizes[value.name] = int(dims[-1].dim_value)
    return sizes


def split_model(model_path: str | Path, check_windows: np.ndarray) -> dict:
    """Write ``<stem>.frames.onnx`` and ``<stem>.windows.onnx`` beside a musicnn model.

    Parameters
    ----------
    model_path : str or Path
        A genrestream musicnn model (input ``logmel`` [batch, 187, 96]).
    check_windows : np.ndarray [shape=(n, 187, 96), dtype=float32]
        Real log-mel windows: the split is written only if, on them, the two
        stages reproduce every output of the whole model within
        :data:`TOLERANCE`, and the frame stage run on a longer stretch of
        frames gives, for the frames away from its edges, what it gives inside
        each window (the reuse the runtime relies on).

    Returns
    -------
    dict
        ``frames``, ``windows`` (the paths), ``context_frames``,
        ``timbral_channels``, ``max_abs_diff``, ``max_abs_diff_reuse``, ``pooled_before_affine``
        (chains rewritten by :func:`pool_before_affine`, per stage).

    Raises
    ------
    ValueError
        If the model has no timbral chain of the expected form, or the split
        does not reproduce it.
    """
    import onnx
    from onnx import helper, numpy_helper
    import onnxruntime as ort

    from export import atomic_output

    model_path = Path(model_path)
    whole_bytes = model_path.read_bytes()
    whole = onnx.load_from_string(whole_bytes)
    graph = whole.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    input_name = graph.input[0].name
    conv_input = _spectrogram_tensor(graph, input_name)
    branches = _timbral_branches(graph, inits, conv_input)
    if not branches:
        raise ValueError(f"split: {model_path} has no timbral convolution (kernel longer than 1 in time and mel)")
    context = _context_frames(graph, inits, branches)
    channels = [int(_kernel_shape(graph, inits, convs[0].input[1])[0]) for _, _, convs in branches]
    squeezed = [output for output, _, _ in branches]  # each [batch, channels, frames]

    # -- the frame stage: logmel [B, T, 96] → unsqueeze to NCHW [B, 1, T, 96] → the nodes up to the conv input
    prelude = _needed(graph, [conv_input], {input_name})
    stage_nodes = []
    nchw = "frames_nchw"
    stage_nodes.append(helper.make_node("Unsqueeze", [input_name, "frames_axis1"], [nchw], name="frames_unsqueeze"))
    rename = {}
    for node in prelude:  # the whole model's input reshapes hard-code 187 frames: NCHW comes from the Unsqueeze
        if node.op_type in ("Unsqueeze", "Reshape"):
            source = node.input[0]
            rename[node.output[0]] = nchw if source == input_name else rename.get(source, source)
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(rename.get(i, i) for i in node.input)
        stage_nodes.append(copy)
    branch_nodes = {id(n) for _, nodes, _ in branches for n in nodes}
    for node in graph.node:  # in graph order: a topological order
        if id(node) in branch_nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.input[:]
            copy.input.extend(rename.get(i, i) for i in node.input)
            stage_nodes.append(copy)
    stage_nodes.append(helper.make_node("Concat", squeezed, ["frames_concat"], axis=1, name="frames_concat"))
    stage_nodes.append(helper.make_node("Transpose", ["frames_concat"], [FRAME_OUTPUT], perm=[0, 2, 1],
                                        name="frames_transpose"))
    used = {i for node in stage_nodes for i in node.input}
    stage_inits = [i for i in graph.initializer if i.name in used]
    stage_inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "frames_axis1"))
    n_channels = sum(channels)
    frames_graph = helper.make_graph(
        stage_nodes, "frames", [helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, ["batch", "frames", 96])],
        [helper.make_tensor_value_info(FRAME_OUTPUT, onnx.TensorProto.FLOAT, ["batch", "frames", n_channels])],
        stage_inits,
    )
    frames_model = helper.make_model(frames_graph, opset_imports=whole.opset_import, producer_name="genrestream")

    # -- the window stage: the timbral outputs become an input, sliced back into the branches
    slices, offset = [], 0
    window_nodes = [helper.make_node("Transpose", [FRAME_OUTPUT], ["timbral_nct"], perm=[0, 2, 1], name="timbral_nct")]
    extra_inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "timbral_axes")]
    for name, n in zip(squeezed, channels):
        extra_inits += [numpy_helper.from_array(np.array([offset], dtype=np.int64), f"{name}__start"),
                        numpy_helper.from_array(np.array([offset + n], dtype=np.int64), f"{name}__end")]
        slices.append(helper.make_node("Slice", ["timbral_nct", f"{name}__start", f"{name}__end", "timbral_axes"],
                                       [name], name=f"{name}__slice"))
        offset += n
    outputs = [o.name for o in graph.output]
    rest = _needed(graph, outputs, set(squeezed) | {input_name})
    window_nodes += slices + [node for node in rest]
    used = {i for node in window_nodes for i in node.input}
    window_inits = [i for i in graph.initializer if i.name in used] + extra_inits
    window_frames = int(graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    windows_graph = helper.make_graph(
        window_nodes, "windows",
        [graph.input[0], helper.make_tensor_value_info(FRAME_OUTPUT, onnx.TensorProto.FLOAT,
                                                       ["batch", window_frames, n_channels])],
        list(graph.output), window_inits,
    )
    windows_model = helper.make_model(windows_graph, opset_imports=whole.opset_import, producer_name="genrestream")
    pooled = {"frames": pool_before_affine(frames_model), "windows": pool_before_affine(windows_model)}
    sha = hashlib.sha256(whole_bytes).hexdigest()
    for m, stage in ((frames_model, "frames"), (windows_model, "windows")):
        m.ir_version = whole.ir_version
        for key, value in (("whole_sha256", sha), ("stage", stage), ("context_frames", str(context)),
                           ("timbral_channels", str(n_channels))):
            entry = m.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(m)

    # -- check: the split against the whole, and reuse across windows
    options = ort.SessionOptions()
    options.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    s_whole = ort.InferenceSession(whole_bytes, options, providers=cpu)
    s_frames = ort.InferenceSession(frames_model.SerializeToString(), options, providers=cpu)
    s_windows = ort.InferenceSession(windows_model.SerializeToString(), options, providers=cpu)
    x = np.ascontiguousarray(check_windows, dtype=np.float32)
    if x.ndim != 3 or x.shape[1:] != (window_frames, 96) or len(x) < 2:
        raise ValueError(f"check_windows: expected shape (n >= 2, {window_frames}, 96), got {x.shape}")
    expected = s_whole.run(outputs, {input_name: x})
    timbral = s_frames.run([FRAME_OUTPUT], {input_name: x})[0]
    got = s_windows.run(outputs, {input_name: x, FRAME_OUTPUT: timbral})
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, got))
    # frames of a longer stretch, away from its edges, equal the frames inside a window away from its edges
    stretch = np.concatenate([x[0], x[1]])[None]
    long = s_frames.run([FRAME_OUTPUT], {input_name: stretch})[0][0]
    reuse_diff = float(np.max(np.abs(long[context:window_frames - context] - timbral[0, context:-context])))
    if max_diff > TOLERANCE or reuse_diff > TOLERANCE:
        raise ValueError(f"split: {model_path}: the stages differ from the whole model by {max_diff:.2e} "
                         f"(reuse {reuse_diff:.2e}), more than {TOLERANCE}")
    frames_path, windows_path = stage_paths(model_path)
    for m, path in ((frames_model, frames_path), (windows_model, windows_path)):
        with atomic_output(path) as tmp:
            Path(tmp).write_bytes(m.SerializeToString())
    return {"frames": str(frames_path), "windows": str(windows_path), "context_frames": context,
            "timbral_channels": n_channels, "max_abs_diff": max_diff, "max_abs_diff_reuse": reuse_diff,
            "pooled_before_affine": pooled}
