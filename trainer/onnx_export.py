"""Export embedders to ONNX under FaceGate's contract, and tidy what the exporter leaves behind.

Contract: input ``input`` float32 NCHW RGB 0..255, output ``embedding`` float32 (N, D), a dynamic
``batch`` axis, opset 17, TorchScript exporter (``dynamo=False``: no onnxscript needed).

Tidying: TensorFlow-style ``SAME`` padding needs ``F.pad`` before stride-2 convs; the exporter
writes each as a ``Pad`` node whose pads come from a small Slice/Transpose/Cast subgraph it
cannot constant-fold.  ONNX ``Conv`` takes asymmetric pads itself, so those pads are folded into
the convs: fewer nodes, and ONNX Runtime's blocked (NCHWc) CPU layout is no longer broken by a
``Pad`` that it would run in plain NCHW with layout conversions around it.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from facegate.errors import FacegateError

ONNX_OPSET = 17
FLOAT = onnx.TensorProto.FLOAT


def export_embedder(
    model: torch.nn.Module,
    path: Path,
    input_size: int,
    embedding_dim: int,
    *,
    per_face_loop: bool = False,
) -> Path:
    """Export ``model`` (eval mode) to ``path`` with the embedder contract, then tidy the graph.

    ``per_face_loop`` wraps the network in an ONNX ``Scan`` over the batch (see
    :func:`loop_over_batch`), for networks whose per-face cost grows with the batch size.
    """
    example = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # The exporter cannot fold F.pad's reversed Slice; fold_pads_into_convs does it below.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["input"],
            output_names=["embedding"],
            dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    fold_pads_into_convs(proto)
    _declare_output_shape(proto, embedding_dim)
    if per_face_loop:
        proto = loop_over_batch(proto, input_size, embedding_dim)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def fold_pads_into_convs(proto: onnx.ModelProto) -> int:
    """Merge constant zero ``Pad`` nodes into the ``Conv`` they feed; returns how many."""
    graph = proto.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = 0
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        users = consumers.get(pad.output[0], [])
        if len(users) != 1 or users[0].op_type != "Conv" or not _zero_constant_mode(pad, graph):
            continue
        pads = _constant_value(graph, pad.input[1]).astype(np.int64).tolist()
        # ONNX Pad lists all begins then all ends over N, C, H, W; Conv pads cover H, W only.
        if len(pads) != 8 or pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:
            continue
        conv = users[0]
        conv_pads = _conv_pads(conv)
        merged = [conv_pads[0] + pads[2], conv_pads[1] + pads[3]]
        merged += [conv_pads[2] + pads[6], conv_pads[3] + pads[7]]
        _set_conv_pads(conv, merged)
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    _remove_dead_nodes(graph)
    return folded


def _zero_constant_mode(pad: onnx.NodeProto, graph: onnx.GraphProto) -> bool:
    mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
    if mode != "constant":
        return False
    if len(pad.input) > 2 and pad.input[2]:
        return bool(np.all(_constant_value(graph, pad.input[2]) == 0))
    return True


def _conv_pads(conv: onnx.NodeProto) -> list[int]:
    for attr in conv.attribute:
        if attr.name == "auto_pad" and attr.s not in (b"", b"NOTSET"):
            raise FacegateError(f"{conv.name}: auto_pad conv after Pad is not supported")
    return next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])


def _set_conv_pads(conv: onnx.NodeProto, pads: list[int]) -> None:
    kept = [a for a in conv.attribute if a.name != "pads"]
    del conv.attribute[:]
    conv.attribute.extend([*kept, helper.make_attribute("pads", pads)])


def _constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray:
    """Evaluate a tensor that depends only on initializers and Constant nodes."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    producers = {out: node for node in graph.node for out in node.output}
    needed: list[onnx.NodeProto] = []
    pending = [name]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node in needed:
            continue
        if any(i in {g.name for g in graph.input} for i in node.input):
            raise FacegateError(f"{name} depends on a graph input; not a constant")
        needed.append(node)
        pending.extend(i for i in node.input if i)
    order = [n for n in graph.node if n in needed]
    inits = [i for i in graph.initializer if any(i.name in n.input for n in order)]
    sub = helper.make_graph(order, "constant", [], [helper.make_empty_tensor_value_info(name)])
    sub.initializer.extend(inits)
    model = helper.make_model(sub, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    outputs: list[Any] = list(ReferenceEvaluator(model).run(None, {}))
    return np.asarray(outputs[0])


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _declare_output_shape(proto: onnx.ModelProto, embedding_dim: int) -> None:
    # The exporter can label the feature axis with the batch name; state (batch, D) plainly.
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    dims[0].dim_param = "batch"
    dims[1].Clear()
    dims[1].dim_value = embedding_dim


def loop_over_batch(proto: onnx.ModelProto, input_size: int, embedding_dim: int) -> onnx.ModelProto:
    """The same embedder with its graph run once per face by a ``Scan`` over the batch axis.

    Why: a network built of depthwise and 1x1 convs is memory-bound, and a batch multiplies
    every activation (MobileFaceNet: 1.6 MB per face at 56x56x128) past the per-core L2 cache,
    so the whole batch in one pass costs more per face than one face at a time.  The loop keeps
    the batch axis of the contract while each face's activations stay cache-sized; it also
    gives OpenVINO a static 1-face shape to compile.  Initializers move into the loop body so
    ONNX Runtime still sees the weights as constants and keeps its CPU layout optimisations.
    """
    inner = proto.graph
    face_in, face_out = "face", "face_embedding"
    nodes = [copy.deepcopy(node) for node in inner.node]
    for node in nodes:
        node.input[:] = [face_in if name == "input" else name for name in node.input]
        node.output[:] = [face_out if name == "embedding" else name for name in node.output]
    axes = numpy_helper.from_array(np.array([0], np.int64), "batch_axis")
    body = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["one_face", "batch_axis"], [face_in]),
            *nodes,
            helper.make_node("Squeeze", [face_out, "batch_axis"], ["one_embedding"]),
        ],
        "one_face",
        [helper.make_tensor_value_info("one_face", FLOAT, [3, input_size, input_size])],
        [helper.make_tensor_value_info("one_embedding", FLOAT, [embedding_dim])],
        initializer=[*inner.initializer, axes],
    )
    scan = helper.make_node("Scan", ["input"], ["embedding"], num_scan_inputs=1, body=body)
    outer = helper.make_graph(
        [scan],
        inner.name or "embedder",
        [copy.deepcopy(inner.input[0])],
        [copy.deepcopy(inner.output[0])],
    )
    looped = helper.make_model(
        outer, opset_imports=list(proto.opset_import), ir_version=proto.ir_version
    )
    looped.producer_name = proto.producer_name
    looped.producer_version = proto.producer_version
    return looped
