"""Our ONNX rebuild of dlib's face recognition ResNet against the original dlib library.

dlib (``dlib-bin``, a development dependency) runs its own pipeline on LFW photos: HOG detector,
5-point shape predictor, ``compute_face_descriptor``. Our ONNX model, run with ONNX Runtime, gets
the very same face chip (``dlib.get_face_chip(img, shape, 150, 0.25)``, which is what
``compute_face_descriptor`` embeds) and must agree on every face.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import torch

from trainer.build_dlib import (
    CHIP_PADDING,
    RESNET_FILE,
    SHAPE_PREDICTOR_5_FILE,
    build_dlib_embedder,
    extract_dlib_file,
)
from trainer.derive_dlib_template import centre_most, sample_lfw_images
from trainer.model_build import cosines
from trainer.models.dlib_resnet import DlibResNet
from trainer.models.templates import DLIB_150_TEMPLATE
from trainer.sources import sha256_of

pytestmark = pytest.mark.integration

dlib = pytest.importorskip("dlib", reason="dlib-bin (development dependency) is the reference")

SAMPLE_SIZE = 20
# dlib and ONNX Runtime agreed to 1e-7 (cosine) on 219 LFW faces; 0.9999 leaves room for BLAS.
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def built_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The embedder built into a fresh models folder; downloads come from FACEGATE_HOME's cache."""
    out_dir = tmp_path_factory.mktemp("models") / "dlib_resnet_v1"
    return out_dir, build_dlib_embedder(out_dir)


@pytest.fixture(scope="module")
def faces(lfw_dir: Path) -> list[tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.float64]]]:
    """(photo, dlib's 150 px chip, dlib's own descriptor) for the sampled LFW photos."""
    import cv2

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(extract_dlib_file(SHAPE_PREDICTOR_5_FILE)))
    recogniser = dlib.face_recognition_model_v1(str(extract_dlib_file(RESNET_FILE)))
    found = []
    for path in sample_lfw_images(lfw_dir, SAMPLE_SIZE, seed=1):
        bgr = cv2.imread(str(path))
        assert bgr is not None, f"unreadable LFW image {path}"
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        detections = list(detector(rgb, 1))
        if not detections:
            continue
        centres = np.array([[d.center().x, d.center().y] for d in detections], np.float32)
        shape = predictor(rgb, detections[centre_most(centres, rgb.shape[1], rgb.shape[0])])
        descriptor = np.array(recogniser.compute_face_descriptor(rgb, shape))
        chip = np.asarray(dlib.get_face_chip(rgb, shape, 150, CHIP_PADDING))
        found.append((path.name, chip, descriptor))
    assert len(found) >= SAMPLE_SIZE - 2, "dlib's detector missed more LFW faces than expected"
    return found


def _chips_nchw(faces: list[tuple[str, Any, Any]]) -> npt.NDArray[np.float32]:
    return np.stack([chip for _, chip, _ in faces]).transpose(0, 3, 1, 2).astype(np.float32)


def _session(onnx_path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def test_onnx_matches_dlib_on_every_face(
    built_model: tuple[Path, dict[str, Any]], faces: list[tuple[str, Any, Any]]
) -> None:
    out_dir, _ = built_model
    session = _session(out_dir / "model.onnx")
    ours = session.run(["embedding"], {"input": _chips_nchw(faces)})[0]
    reference = np.stack([descriptor for _, _, descriptor in faces])
    similarity = cosines(ours, reference)
    for (name, _, _), cosine in zip(faces, similarity, strict=True):
        assert cosine >= MIN_COSINE, f"{name}: cosine {cosine:.6f} with dlib"
    # The same scale too: a wrong input normalisation would show in the norms first.
    np.testing.assert_allclose(
        np.linalg.norm(ours, axis=1), np.linalg.norm(reference, axis=1), rtol=1e-3
    )


def test_batch_axis_is_dynamic(
    built_model: tuple[Path, dict[str, Any]], faces: list[tuple[str, Any, Any]]
) -> None:
    out_dir, _ = built_model
    session = _session(out_dir / "model.onnx")
    chips = _chips_nchw(faces)
    batched = session.run(["embedding"], {"input": chips})[0]
    one_by_one = np.concatenate([session.run(["embedding"], {"input": c[None]})[0] for c in chips])
    assert batched.shape == (len(chips), 128)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_pytorch_state_dict_matches_onnx(
    built_model: tuple[Path, dict[str, Any]], faces: list[tuple[str, Any, Any]]
) -> None:
    out_dir, _ = built_model
    model = DlibResNet()
    model.load_state_dict(torch.load(out_dir / "model.pt", weights_only=True))
    chips = _chips_nchw(faces)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(chips)).numpy()
    got = _session(out_dir / "model.onnx").run(["embedding"], {"input": chips})[0]
    assert float(np.abs(expected - got).max()) < 1e-4
    assert float(cosines(expected, got).min()) > 0.99999


def test_card_describes_the_build_and_rebuild_is_a_no_op(
    built_model: tuple[Path, dict[str, Any]],
) -> None:
    out_dir, card = built_model
    assert json.loads((out_dir / "card.json").read_text()) == card
    assert card["licence"] == "CC0-1.0"
    assert (card["embedding_dim"], card["input_size"]) == (128, 150)
    np.testing.assert_allclose(card["template"], DLIB_150_TEMPLATE, atol=1e-4)
    assert card["onnx_sha256"] == sha256_of(out_dir / "model.onnx")
    assert card["onnx_check"]["max_abs_diff_vs_pytorch"] < 1e-4
    before = (out_dir / "model.onnx").stat().st_mtime_ns
    assert build_dlib_embedder(out_dir) == card
    assert (out_dir / "model.onnx").stat().st_mtime_ns == before
