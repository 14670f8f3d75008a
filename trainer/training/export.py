"""A trained backbone as a FaceGate model folder: model.pt, card.json, then model.onnx.

:func:`save_trained_model` writes the PyTorch state dict and a card like the production model
folders'; :func:`export_trained` exports ONNX with the embedder contract (dynamic batch axis),
checks ONNX Runtime against PyTorch on real aligned faces (cosine >= 0.999 at batch 1 and at
the full batch) and completes the card, so that ``Embedder(model_dir).load()`` serves it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from torch import nn

from facegate.errors import FacegateError
from trainer.model_build import cosines
from trainer.models.mobilefacenet import INPUT_MEAN, INPUT_STD, MobileFaceNet
from trainer.models.templates import ARCFACE_112_TEMPLATE
from trainer.onnx_export import ONNX_OPSET, export_embedder
from trainer.sources import sha256_of
from trainer.training.backbones import Backbone
from trainer.training.iresnet import INPUT_SIZE, iresnet18, iresnet_tiny

MIN_COSINE = 0.999


def network_for(name: str) -> nn.Module:
    """An untrained module of the architecture a card names."""
    builders: dict[str, Callable[[], nn.Module]] = {
        "mobilefacenet": MobileFaceNet,
        "iresnet18": iresnet18,
        "iresnet-tiny": iresnet_tiny,
    }
    if name not in builders:
        raise FacegateError(f"unknown architecture {name!r}; known: {sorted(builders)}")
    return builders[name]()


def save_trained_model(
    backbone: Backbone,
    output_dir: Path,
    manifest_version: str,
    training: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``model.pt`` and ``card.json`` (ONNX fields come with :func:`export_trained`)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in backbone.module.state_dict().items()}
    torch.save(state, output_dir / "model.pt")
    dim = backbone.embedding_dim
    card: dict[str, Any] = {
        "name": backbone.name,
        "embedding_dim": dim,
        "input_size": INPUT_SIZE,
        "input": "input: float32 NCHW RGB 0..255, normalised inside the model",
        "output": f"embedding: float32 (N, {dim}), not L2-normalised",
        "normalisation": {"mean_rgb": [INPUT_MEAN] * 3, "scale": 1.0 / INPUT_STD},
        "template": [[round(float(v), 4) for v in point] for point in ARCFACE_112_TEMPLATE],
        "alignment": f"similarity transform to the ArcFace {INPUT_SIZE} px template",
        "source": backbone.source(manifest_version),
        "licence": backbone.licence(manifest_version),
        "data_manifest": manifest_version,
        "onnx_per_face_loop": backbone.per_face_loop,
        "training": dict(training),
    }
    if backbone.base_card is not None:
        card["base_model"] = {
            k: backbone.base_card.get(k) for k in ("name", "source", "onnx_sha256", "licence")
        }
    _write_card(output_dir, card)
    return card


def _write_card(model_dir: Path, card: Mapping[str, Any]) -> None:
    (model_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def export_trained(
    model_dir: Path, faces: Sequence[npt.NDArray[np.uint8]] | None = None
) -> dict[str, Any]:
    """Export ``model_dir/model.pt`` to ``model.onnx``, check it on ``faces``, update the card.

    ``faces`` are aligned RGB crops (H, W, 3) of the card's input size; at least two.
    :func:`trainer.training.train` already exports with faces of its dataset, so without
    ``faces`` an export that is intact (ONNX file matching the card's checked checksum) is
    returned as it is; anything else needs faces to check against.
    """
    card: dict[str, Any] = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    if faces is None:
        if _checked_export(model_dir, card):
            return card
        raise FacegateError(
            f"{model_dir}: no checked ONNX export; pass aligned face crops to check one"
        )
    if len(faces) < 2:
        raise FacegateError("the ONNX check needs at least two aligned face crops")
    module = network_for(str(card["name"]))
    module.load_state_dict(
        torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
    )
    module.eval()
    dim, size = int(card["embedding_dim"]), int(card["input_size"])
    onnx_path = export_embedder(
        module,
        model_dir / "model.onnx",
        size,
        dim,
        per_face_loop=bool(card.get("onnx_per_face_loop", False)),
    )
    batch = np.stack(faces).astype(np.float32).transpose(0, 3, 1, 2).copy()
    card["onnx_check"] = check_onnx(module, onnx_path, batch)
    card["onnx_sha256"] = sha256_of(onnx_path)
    card["onnx_opset"] = ONNX_OPSET
    _write_card(model_dir, card)
    return card


def _checked_export(model_dir: Path, card: Mapping[str, Any]) -> bool:
    onnx_path = model_dir / "model.onnx"
    return (
        "onnx_check" in card
        and onnx_path.is_file()
        and card.get("onnx_sha256") == sha256_of(onnx_path)
    )


def check_onnx(module: nn.Module, onnx_path: Path, batch: np.ndarray) -> dict[str, float]:
    """ONNX Runtime against PyTorch at batch 1 and the whole batch; raise below MIN_COSINE."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(batch)).numpy()
    one = session.run(["embedding"], {"input": batch[:1]})[0]
    whole = session.run(["embedding"], {"input": batch})[0]
    if whole.shape != expected.shape:
        raise FacegateError(
            f"{onnx_path}: ONNX output shape {whole.shape}, expected {expected.shape}"
        )
    cosine = float(min(np.min(cosines(expected, whole)), np.min(cosines(expected[:1], one))))
    max_diff = float(np.abs(expected - whole).max())
    if cosine < MIN_COSINE:
        raise FacegateError(
            f"{onnx_path}: ONNX disagrees with PyTorch on real faces (min cosine {cosine:.6f})"
        )
    return {
        "faces": float(len(batch)),
        "max_abs_diff_vs_pytorch": max_diff,
        "min_cosine_vs_pytorch": cosine,
    }
