"""ONNX export tidying on a small synthetic network (random weights; the real model is tested
in tests/integration/test_mobilefacenet_equivalence.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from trainer.onnx_export import export_embedder


class _TinyEmbedder(nn.Module):
    """TF-style SAME stride-2 conv (asymmetric pad), PReLU, global conv to 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2)
        self.act = nn.PReLU(16)
        self.head = nn.Conv2d(16, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(F.pad(x / 255.0, (0, 1, 0, 1))))
        out: torch.Tensor = self.head(x).flatten(1)
        return out


def _run(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(["embedding"], {"input": images})[0]
    return result


def test_pads_are_folded_into_convs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _TinyEmbedder().eval()
    path = export_embedder(model, tmp_path / "tiny.onnx", 16, 8)
    graph = onnx.load(str(path)).graph
    assert "Pad" not in {node.op_type for node in graph.node}
    conv = next(node for node in graph.node if node.op_type == "Conv")
    assert next(list(a.ints) for a in conv.attribute if a.name == "pads") == [0, 0, 1, 1]
    dims = graph.output[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("batch", 8)
    images = np.random.default_rng(0).uniform(0, 255, (3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(_run(path, images), expected, atol=1e-5)


def test_per_face_loop_keeps_the_contract(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _TinyEmbedder().eval()
    path = export_embedder(model, tmp_path / "looped.onnx", 16, 8, per_face_loop=True)
    proto = onnx.load(str(path))
    assert [node.op_type for node in proto.graph.node] == ["Scan"]
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["embedding"]
    images = np.random.default_rng(1).uniform(0, 255, (5, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    for batch in (images[:1], images):
        np.testing.assert_allclose(_run(path, batch), expected[: len(batch)], atol=1e-5)
