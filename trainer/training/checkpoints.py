"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the backbone and head weights, optimizer and gradient-scaler state, the
epoch and optimizer step, the random generators' states, the class list, the dataset manifest
version and the MLflow run id.  It lives in the models bucket at
``checkpoints/<run_name>/last.pt`` (or under a local folder) and is read back with
``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from minio import Minio

from facegate.object_store import get_bytes, put_bytes
from trainer.datasets.materialize import write_atomic

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoints"


@dataclass
class Checkpoint:
    """The state of a run after ``step`` optimizer steps."""

    step: int
    epoch: int
    model: dict[str, Any]
    head: dict[str, Any]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    manifest_version: str
    architecture: str
    classes: list[str]
    mlflow_run_id: str | None = None

    def to_bytes(self) -> bytes:
        """Serialised with ``torch.save``."""
        buffer = io.BytesIO()
        torch.save(asdict(self), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Read a checkpoint (tensors and plain containers only)."""
        fields = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(**fields)


def capture_rng() -> dict[str, Any]:
    """The states of torch's CPU and CUDA generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put the generators back as :func:`capture_rng` found them."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_key(run_name: str) -> str:
    """The object key of a run's latest checkpoint."""
    return f"{CHECKPOINT_PREFIX}/{run_name}/last.pt"


class CheckpointStore(Protocol):
    """Where a run's latest checkpoint is kept."""

    def load(self, run_name: str) -> Checkpoint | None:
        """The run's latest checkpoint, or None."""
        ...

    def save(self, run_name: str, checkpoint: Checkpoint) -> str:
        """Replace the run's latest checkpoint; return where it went."""
        ...


class S3CheckpointStore:
    """Checkpoints in an object-store bucket (the models bucket)."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def load(self, run_name: str) -> Checkpoint | None:
        data = get_bytes(self.client, self.bucket, checkpoint_key(run_name))
        return Checkpoint.from_bytes(data) if data is not None else None

    def save(self, run_name: str, checkpoint: Checkpoint) -> str:
        key = checkpoint_key(run_name)
        put_bytes(self.client, self.bucket, key, checkpoint.to_bytes(), "application/octet-stream")
        return f"s3://{self.bucket}/{key}"


class LocalCheckpointStore:
    """Checkpoints in a local folder (same layout as in the bucket)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def load(self, run_name: str) -> Checkpoint | None:
        path = self.root / checkpoint_key(run_name)
        return Checkpoint.from_bytes(path.read_bytes()) if path.is_file() else None

    def save(self, run_name: str, checkpoint: Checkpoint) -> str:
        path = self.root / checkpoint_key(run_name)
        write_atomic(path, checkpoint.to_bytes())
        return str(path)
