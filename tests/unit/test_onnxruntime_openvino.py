"""The environment ends with onnxruntime-openvino intact and its OpenVINO provider usable."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def test_plain_onnxruntime_is_not_installed() -> None:
    # Both distributions write onnxruntime/; plain onnxruntime would silently replace OpenVINO's.
    names = {dist.metadata["Name"].lower() for dist in metadata.distributions()}
    assert "onnxruntime-openvino" in names
    assert "onnxruntime" not in names


def test_openvino_provider_runs_a_model(tmp_path: Path) -> None:
    assert "OpenVINOExecutionProvider" in ort.get_available_providers()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.arange(8, dtype=np.float32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # onnx writes a newer IR than this onnxruntime reads by default
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(
        str(path), providers=["OpenVINOExecutionProvider", "CPUExecutionProvider"]
    )
    # A missing device silently falls back to CPU: check the provider really in use.
    assert session.get_providers()[0] == "OpenVINOExecutionProvider"
    x = np.ones((3, 4), dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ np.arange(8, dtype=np.float32).reshape(4, 2))
