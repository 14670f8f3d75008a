"""The TFLite reader and the MobileFaceNet mapping, on the real MobileFaceNet.tflite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facegate.errors import FacegateError
from trainer.importers.mobilefacenet_tflite import extract_conv_layers
from trainer.importers.tflite_graph import (
    ConvOptions,
    Quantization,
    ReshapeOptions,
    Tensor,
    TFLiteGraph,
    dequantize,
    parse_tflite,
    read_tflite,
)
from trainer.models.mobilefacenet import MobileFaceNet, load_mobilefacenet, tf_same_padding


@pytest.fixture(scope="module")
def tflite_path() -> Path:
    from trainer.build_mobilefacenet import mobilefacenet_tflite_path

    try:
        return mobilefacenet_tflite_path()
    except FacegateError as exc:  # no cached archive and no registry access
        pytest.skip(f"MobileFaceNet.tflite unavailable: {exc}")


@pytest.fixture(scope="module")
def graph(tflite_path: Path) -> TFLiteGraph:
    return read_tflite(tflite_path)


def test_operator_inventory(graph: TFLiteGraph) -> None:
    # What TOCO made of MobileFaceNet: folded batch norms, PReLU spelled out as 5 ops.
    assert graph.opcode_counts() == {
        "CONV_2D": 35,
        "DEPTHWISE_CONV_2D": 17,
        "RELU": 33,
        "ABS": 33,
        "SUB": 33,
        "MUL": 33,
        "ADD": 45,
        "RESHAPE": 1,
    }
    assert graph.description == "TOCO Converted."


def test_input_output_shapes(graph: TFLiteGraph) -> None:
    (inp,), (out,) = graph.inputs, graph.outputs
    assert graph.tensors[inp].name == "input"
    assert graph.tensors[inp].shape == (2, 112, 112, 3)  # fixed batch of 2, NHWC
    assert graph.tensors[inp].dtype == "FLOAT32"
    assert graph.tensors[out].name == "embeddings"
    assert graph.tensors[out].shape == (2, 192)
    last = graph.operators[-1]
    assert last.opcode == "RESHAPE" and isinstance(last.options, ReshapeOptions)
    assert last.options.new_shape == (2, 192)


def test_conv_options_and_weights(graph: TFLiteGraph) -> None:
    first = graph.operators[0]
    assert first.opcode == "CONV_2D" and first.inputs[0] == graph.inputs[0]
    assert first.options == ConvOptions("SAME", (2, 2), (1, 1), "NONE", 1)
    kernel = graph.constant(first.inputs[1])
    assert kernel.dtype == np.float32 and kernel.shape == (64, 3, 3, 3)  # OHWI
    gdc = [op for op in graph.operators if op.opcode == "DEPTHWISE_CONV_2D"][-1]
    assert isinstance(gdc.options, ConvOptions) and gdc.options.padding == "VALID"
    assert graph.tensors[gdc.inputs[1]].shape == (1, 7, 7, 512)
    assert graph.producer(first.outputs[0]) is first
    assert {op.opcode for op in graph.consumers(first.outputs[0])} == {"RELU", "ABS", "SUB"}
    with pytest.raises(FacegateError):
        graph.constant(graph.inputs[0])


def test_conv_layers_explain_every_operator(graph: TFLiteGraph) -> None:
    layers = extract_conv_layers(graph)
    assert len(layers) == 52
    assert sum(layer.prelu_slope is not None for layer in layers) == 33
    assert sum(layer.skip_from is not None for layer in layers) == 12
    assert layers[-1].weight.shape == (192, 512, 1, 1)
    assert layers[-1].name.endswith("LinearConv1x1/BatchNorm/FusedBatchNorm")


def test_loaded_module_matches_graph(tflite_path: Path) -> None:
    model = load_mobilefacenet(tflite_path)
    with torch.no_grad():
        out = model(torch.full((3, 3, 112, 112), 127.5))
    assert out.shape == (3, 192)
    assert len(model.conv_units()) == 52


def test_tf_same_padding() -> None:
    assert tf_same_padding(112, 3, 2) == (0, 1)  # TF pads only after for even sizes
    assert tf_same_padding(56, 3, 1) == (1, 1)
    assert tf_same_padding(7, 7, 1) == (3, 3)
    assert tf_same_padding(7, 1, 1) == (0, 0)


def test_mismatched_module_is_refused(graph: TFLiteGraph) -> None:
    from trainer.importers.mobilefacenet_tflite import load_weights

    with pytest.raises(FacegateError, match="does not match the module"):
        load_weights(MobileFaceNet(embedding_dim=128), graph)


def test_dequantize_per_axis_int8() -> None:
    # Synthetic tensor (the real model is float32): int8 weights with one scale per channel.
    quant = Quantization(np.array([0.5, 2.0], np.float32), np.array([0, 1]), axis=0)
    tensor = Tensor(0, "w", (2, 2), "INT8", np.array([[2, -4], [3, 1]], np.int8), quant)
    np.testing.assert_allclose(dequantize(tensor), [[1.0, -2.0], [4.0, 0.0]])
    half = Tensor(1, "h", (2,), "FLOAT16", np.array([1.5, -2.0], np.float16), None)
    assert dequantize(half).dtype == np.float32


def test_rejects_non_tflite_bytes() -> None:
    with pytest.raises(FacegateError, match="TFL3"):
        parse_tflite(b"\x00" * 64)
