"""Read a TFLite flatbuffer into plain, typed Python structures (no TensorFlow needed).

The ``tflite`` package only provides the generated flatbuffer accessors for the TFLite schema;
this module turns them into frozen dataclasses (tensors with their constant data, operators with
their decoded options) that model importers can pattern-match without touching the flatbuffer
API.  Constant weights stored as float16 or as affine-quantised integers are dequantised to
float32 by :meth:`TFLiteGraph.constant`, including weights that reach an operator through a
``DEQUANTIZE`` node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tflite

from facegate.errors import FacegateError

Padding = Literal["SAME", "VALID"]

# TFLite TensorType code -> (name, numpy dtype); only the numeric types a vision model uses.
_TENSOR_TYPES: Mapping[int, tuple[str, np.dtype[Any]]] = {
    tflite.TensorType.FLOAT32: ("FLOAT32", np.dtype("<f4")),
    tflite.TensorType.FLOAT16: ("FLOAT16", np.dtype("<f2")),
    tflite.TensorType.INT32: ("INT32", np.dtype("<i4")),
    tflite.TensorType.UINT8: ("UINT8", np.dtype("u1")),
    tflite.TensorType.INT64: ("INT64", np.dtype("<i8")),
    tflite.TensorType.INT16: ("INT16", np.dtype("<i2")),
    tflite.TensorType.INT8: ("INT8", np.dtype("i1")),
    tflite.TensorType.FLOAT64: ("FLOAT64", np.dtype("<f8")),
}
_OPCODE_NAMES: Mapping[int, str] = {
    value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")
}
_ACTIVATION_NAMES: Mapping[int, str] = {
    value: name
    for name, value in vars(tflite.ActivationFunctionType).items()
    if not name.startswith("_")
}
_PADDING_NAMES: Mapping[int, Padding] = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}


@dataclass(frozen=True)
class Quantization:
    """Affine quantisation of a tensor: ``real = scale * (q - zero_point)`` along ``axis``."""

    scales: np.ndarray
    zero_points: np.ndarray
    axis: int


@dataclass(frozen=True)
class Tensor:
    """One tensor of the graph; ``data`` holds the raw stored values of a constant tensor."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None
    quantization: Quantization | None

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class ConvOptions:
    """Options of CONV_2D and DEPTHWISE_CONV_2D (``depth_multiplier`` is 1 for CONV_2D)."""

    padding: Padding
    stride: tuple[int, int]
    dilation: tuple[int, int]
    activation: str
    depth_multiplier: int = 1


@dataclass(frozen=True)
class PoolOptions:
    """Options of AVERAGE_POOL_2D and MAX_POOL_2D."""

    padding: Padding
    stride: tuple[int, int]
    kernel: tuple[int, int]
    activation: str


@dataclass(frozen=True)
class ActivationOptions:
    """Options of element-wise ops and FULLY_CONNECTED: the fused activation only."""

    activation: str


@dataclass(frozen=True)
class ReshapeOptions:
    """Options of RESHAPE (the new shape may instead come as a second input tensor)."""

    new_shape: tuple[int, ...]


OperatorOptions = ConvOptions | PoolOptions | ActivationOptions | ReshapeOptions | None


@dataclass(frozen=True)
class Operator:
    """One operator; ``inputs`` uses -1 for an omitted optional input, as TFLite does."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: OperatorOptions


@dataclass(frozen=True)
class TFLiteGraph:
    """The first subgraph of a TFLite model, with lookups an importer needs."""

    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str
    _producers: dict[int, Operator] = field(default_factory=dict, repr=False, compare=False)
    _consumers: dict[int, list[Operator]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for op in self.operators:
            for out in op.outputs:
                self._producers[out] = op
            for inp in op.inputs:
                if inp >= 0:
                    self._consumers.setdefault(inp, []).append(op)

    def producer(self, tensor: int) -> Operator | None:
        """The operator that writes ``tensor`` (None for graph inputs and constants)."""
        return self._producers.get(tensor)

    def consumers(self, tensor: int) -> list[Operator]:
        """The operators that read ``tensor``, in execution order."""
        return list(self._consumers.get(tensor, []))

    def opcode_counts(self) -> dict[str, int]:
        """How many operators of each kind the graph has."""
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.opcode] = counts.get(op.opcode, 0) + 1
        return counts

    def is_constant(self, tensor: int) -> bool:
        """Whether ``tensor`` is a stored constant, possibly behind a DEQUANTIZE node."""
        if self.tensors[tensor].is_constant:
            return True
        op = self.producer(tensor)
        return op is not None and op.opcode == "DEQUANTIZE" and self.is_constant(op.inputs[0])

    def constant(self, tensor: int) -> np.ndarray:
        """A constant tensor's values as float32, dequantised (float16 or affine int)."""
        stored = self.tensors[tensor]
        if stored.data is None:
            op = self.producer(tensor)
            if op is None or op.opcode != "DEQUANTIZE":
                raise FacegateError(f"tensor {stored.name!r} is not a constant")
            return self.constant(op.inputs[0])
        return dequantize(stored)


def dequantize(tensor: Tensor) -> np.ndarray:
    """Float32 values of a constant tensor, applying its (per-tensor or per-axis) quantisation."""
    if tensor.data is None:
        raise FacegateError(f"tensor {tensor.name!r} has no stored data")
    values = tensor.data.astype(np.float32)
    quant = tensor.quantization
    if tensor.dtype in ("FLOAT32", "FLOAT16", "FLOAT64") or quant is None:
        return values
    # Broadcast per-axis scales over the quantised dimension only.
    shape = [1] * values.ndim
    if quant.scales.size > 1:
        shape[quant.axis] = quant.scales.size
    scales = quant.scales.astype(np.float32).reshape(shape)
    zeros = quant.zero_points.astype(np.float32).reshape(shape)
    return np.asarray((values - zeros) * scales, dtype=np.float32)


def read_tflite(path: Path) -> TFLiteGraph:
    """Read a ``.tflite`` file (see :func:`parse_tflite`)."""
    return parse_tflite(Path(path).read_bytes())


def parse_tflite(data: bytes) -> TFLiteGraph:
    """Decode a TFLite flatbuffer's first subgraph into a :class:`TFLiteGraph`."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FacegateError("not a TFLite flatbuffer (file identifier TFL3 missing)")
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise FacegateError("TFLite model has no subgraph")
    graph = model.Subgraphs(0)
    opcodes = [_opcode_name(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    tensors = tuple(
        _read_tensor(model, graph.Tensors(i), i, data) for i in range(graph.TensorsLength())
    )
    operators = tuple(
        _read_operator(graph.Operators(i), i, opcodes) for i in range(graph.OperatorsLength())
    )
    description = model.Description()
    return TFLiteGraph(
        tensors=tensors,
        operators=operators,
        inputs=tuple(int(i) for i in graph.InputsAsNumpy()),
        outputs=tuple(int(i) for i in graph.OutputsAsNumpy()),
        description=description.decode() if description else "",
    )


def _opcode_name(code: Any) -> str:
    # Codes above 127 live in BuiltinCode; older files only fill the deprecated int8 field.
    value = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    if value == tflite.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        return f"CUSTOM:{custom.decode() if custom else '?'}"
    return _OPCODE_NAMES.get(value, f"UNKNOWN_{value}")


def _read_tensor(model: Any, tensor: Any, index: int, data: bytes) -> Tensor:
    type_name, dtype = _TENSOR_TYPES.get(tensor.Type(), (f"TYPE_{tensor.Type()}", np.dtype("u1")))
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    raw = _buffer_bytes(model.Buffers(tensor.Buffer()), data)
    values = None
    if raw is not None and type_name in {name for name, _ in _TENSOR_TYPES.values()}:
        values = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return Tensor(
        index=index,
        name=tensor.Name().decode(),
        shape=shape,
        dtype=type_name,
        data=values,
        quantization=_read_quantization(tensor.Quantization()),
    )


def _buffer_bytes(buffer: Any, data: bytes) -> bytes | None:
    # Models over 2 GB keep weights after the flatbuffer and point at them by offset/size.
    if buffer.Offset() > 1:
        return data[buffer.Offset() : buffer.Offset() + buffer.Size()]
    if buffer.DataLength() == 0:
        return None
    return bytes(buffer.DataAsNumpy().tobytes())


def _read_quantization(quant: Any) -> Quantization | None:
    if quant is None or quant.ScaleLength() == 0:
        return None
    zero_points = (
        quant.ZeroPointAsNumpy() if quant.ZeroPointLength() else np.zeros(quant.ScaleLength())
    )
    return Quantization(
        scales=np.asarray(quant.ScaleAsNumpy(), dtype=np.float32),
        zero_points=np.asarray(zero_points, dtype=np.int64),
        axis=int(quant.QuantizedDimension()),
    )


def _read_operator(op: Any, index: int, opcodes: list[str]) -> Operator:
    opcode = opcodes[op.OpcodeIndex()]
    inputs = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
    outputs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
    return Operator(index, opcode, inputs, outputs, _read_options(opcode, op.BuiltinOptions()))


def _read_options(opcode: str, table: Any) -> OperatorOptions:
    if table is None:
        return None
    if opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        depthwise = opcode == "DEPTHWISE_CONV_2D"
        conv = tflite.DepthwiseConv2DOptions() if depthwise else tflite.Conv2DOptions()
        conv.Init(table.Bytes, table.Pos)
        return ConvOptions(
            padding=_PADDING_NAMES[conv.Padding()],
            stride=(int(conv.StrideH()), int(conv.StrideW())),
            dilation=(int(conv.DilationHFactor()), int(conv.DilationWFactor())),
            activation=_ACTIVATION_NAMES[conv.FusedActivationFunction()],
            depth_multiplier=int(conv.DepthMultiplier()) if depthwise else 1,
        )
    if opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        pool = tflite.Pool2DOptions()
        pool.Init(table.Bytes, table.Pos)
        return PoolOptions(
            padding=_PADDING_NAMES[pool.Padding()],
            stride=(int(pool.StrideH()), int(pool.StrideW())),
            kernel=(int(pool.FilterHeight()), int(pool.FilterWidth())),
            activation=_ACTIVATION_NAMES[pool.FusedActivationFunction()],
        )
    elementwise = {
        "ADD": tflite.AddOptions,
        "SUB": tflite.SubOptions,
        "MUL": tflite.MulOptions,
        "DIV": tflite.DivOptions,
        "FULLY_CONNECTED": tflite.FullyConnectedOptions,
        "CONCATENATION": tflite.ConcatenationOptions,
    }
    if opcode in elementwise:
        options = elementwise[opcode]()
        options.Init(table.Bytes, table.Pos)
        return ActivationOptions(_ACTIVATION_NAMES[options.FusedActivationFunction()])
    if opcode == "RESHAPE":
        reshape = tflite.ReshapeOptions()
        reshape.Init(table.Bytes, table.Pos)
        shape = reshape.NewShapeAsNumpy() if reshape.NewShapeLength() else []
        return ReshapeOptions(tuple(int(d) for d in shape))
    return None
