"""Steps every embedder build shares: reuse an intact build, check ONNX against PyTorch, write
the card."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch

from facegate.errors import FacegateError
from facegate.paths import models_dir
from trainer.sources import RegistryPackage, fetch, sha256_of

log = logging.getLogger(__name__)


def intact_card(out_dir: Path, archive_sha256: str) -> dict[str, Any] | None:
    """The existing card if it describes this archive and the files on disk still match it."""
    card_path, onnx_path = out_dir / "card.json", out_dir / "model.onnx"
    if not (card_path.is_file() and onnx_path.is_file() and (out_dir / "model.pt").is_file()):
        return None
    card: dict[str, Any] = json.loads(card_path.read_text(encoding="utf-8"))
    if card.get("archive_sha256") != archive_sha256:
        return None
    return card if card.get("onnx_sha256") == sha256_of(onnx_path) else None


def existing_build(
    name: str, package: RegistryPackage, out_dir: Path | None
) -> tuple[Path, str, dict[str, Any] | None]:
    """Where model ``name`` is built, the checksum of the package it is built from, and its
    card when the build there is intact (then there is nothing to do)."""
    out_dir = Path(out_dir) if out_dir is not None else models_dir() / name
    # The pinned checksum is what fetch() enforces, so an intact build needs no download.
    archive_sha256 = package.sha256 or sha256_of(fetch(package))
    existing = intact_card(out_dir, archive_sha256)
    if existing is not None:
        log.info("%s is up to date in %s", name, out_dir)
    return out_dir, archive_sha256, existing


def write_card(out_dir: Path, card: dict[str, Any], package: RegistryPackage) -> dict[str, Any]:
    """Write a build's card, last: its presence marks a complete build."""
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    log.info("built %s from %s into %s", card["name"], package.label, out_dir)
    return card


def smooth_random_images(
    count: int, size: int, blocks: int, seed: int = 0
) -> npt.NDArray[np.float32]:
    """Blocky random RGB images: activations nearer a photo's range than white noise gives."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(count, 3, blocks, blocks)).astype(np.float32)
    return np.repeat(np.repeat(coarse, size // blocks, axis=2), size // blocks, axis=3)


def cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Row-wise cosine similarity of two (N, D) arrays."""
    dots = (a.astype(np.float64) * b).sum(axis=1)
    return np.asarray(dots / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def verify_onnx(
    model: torch.nn.Module,
    onnx_path: Path,
    images: npt.NDArray[np.float32],
    embedding_dim: int,
    max_abs_diff: float,
    min_cosine: float,
) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch at batch 1 and the rest; raise if they disagree."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images)).numpy()
    got = np.concatenate(
        [session.run(["embedding"], {"input": batch})[0] for batch in (images[:1], images[1:])]
    )
    if got.shape != (len(images), embedding_dim):
        raise FacegateError(f"{onnx_path}: ONNX output shape {got.shape}")
    max_diff = float(np.abs(expected - got).max())
    cosine = float(np.min(cosines(expected, got)))
    if max_diff > max_abs_diff or cosine < min_cosine:
        raise FacegateError(
            f"{onnx_path}: ONNX disagrees with PyTorch (max diff {max_diff}, cosine {cosine:.6f})"
        )
    return {"max_abs_diff_vs_pytorch": max_diff, "min_cosine_vs_pytorch": cosine}
