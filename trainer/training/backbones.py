"""The networks training can start from: iResNet from scratch, or the production MobileFaceNet.

A :class:`Backbone` carries what the trained model's card needs: its name, embedding size,
licence and source, and whether ONNX export should loop over the batch (MobileFaceNet is
memory-bound, see :func:`trainer.onnx_export.loop_over_batch`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from facegate.errors import FacegateError
from facegate.paths import models_dir
from trainer.models.mobilefacenet import EMBEDDING_DIM, MobileFaceNet
from trainer.training.iresnet import iresnet18, iresnet_tiny
from trainer.training.settings import Architecture

FINETUNE_BASE = "mobilefacenet"


@dataclass
class Backbone:
    """A network to train and how its trained model is described."""

    module: nn.Module
    name: str
    embedding_dim: int
    pretrained: bool
    per_face_loop: bool
    base_card: dict[str, object] | None = None

    def licence(self, manifest_version: str) -> str:
        """A fine-tune inherits its base model's licence; a model from scratch is ours."""
        if self.base_card is not None:
            return str(self.base_card.get("licence", ""))
        return f"trained by FaceGate on dataset manifest {manifest_version}"

    def source(self, manifest_version: str) -> str:
        """Where the weights come from."""
        if self.base_card is not None:
            base = self.base_card.get("source", "unknown")
            return f"facegate-train:finetune of {self.name} ({base}) on {manifest_version}"
        return f"facegate-train:{self.name} on {manifest_version}"


def build_backbone(
    architecture: Architecture, base_model_dir: Path | None = None, dropout: float = 0.0
) -> Backbone:
    """The network for ``architecture`` (fine-tunes load ``base_model_dir/model.pt``)."""
    if architecture == "iresnet18":
        return Backbone(iresnet18(dropout=dropout), "iresnet18", 512, False, False)
    if architecture == "iresnet-tiny":
        return Backbone(iresnet_tiny(dropout=dropout), "iresnet-tiny", 64, False, False)
    base = base_model_dir or models_dir() / FINETUNE_BASE
    weights, card_path = base / "model.pt", base / "card.json"
    if not weights.is_file() or not card_path.is_file():
        raise FacegateError(
            f"fine-tuning needs a built {FINETUNE_BASE} in {base} (model.pt, card.json); "
            "run `facegate models build --only mobilefacenet`"
        )
    model = MobileFaceNet()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    card = json.loads(card_path.read_text(encoding="utf-8"))
    return Backbone(model, FINETUNE_BASE, EMBEDDING_DIM, True, True, card)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    inner = getattr(module, "module", None)
    return inner if isinstance(inner, nn.Module) else module
