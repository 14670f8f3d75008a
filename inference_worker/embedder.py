"""The embedder: an ONNX Runtime session (OpenVINO execution provider) with a clear lifecycle.

``load`` opens the session and checks which provider it really got (OpenVINO falls back to the
CPU provider silently when a device is missing: the fallback is logged as a warning and counted
in ``facegate_embedder_provider_fallback_total``); ``preprocess`` stacks aligned crops into a
batch; ``predict`` runs the network; ``postprocess`` L2-normalises the embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facegate.errors import FacegateError
from inference_worker.metrics import EMBEDDER_FALLBACKS, EMBEDDER_PROVIDER

log = logging.getLogger(__name__)

OPENVINO = "OpenVINOExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ModelCard:
    """What card.json says about a built embedder."""

    name: str
    embedding_dim: int
    input_size: tuple[int, int]
    template: npt.NDArray[np.float32]
    licence: str
    source: str
    onnx_sha256: str

    @property
    def template_name(self) -> str:
        """A short name of the alignment template (what face crops are tagged with).

        Derived from the template's landmark positions and crop size, not from the model's
        name: a fine-tuned model that keeps its base's alignment reads the same crops.
        """
        points = ",".join(f"{v:.2f}" for v in np.asarray(self.template).ravel())
        digest = hashlib.sha1(f"{self.input_size}:{points}".encode()).hexdigest()[:8]
        return f"align{self.input_size[0]}-{digest}"

    @classmethod
    def read(cls, model_dir: Path) -> ModelCard:
        path = model_dir / "card.json"
        if not path.is_file():
            raise FacegateError(f"no model card at {path}; run `make models`")
        card = json.loads(path.read_text())
        size = card["input_size"]
        return cls(
            name=card["name"],
            embedding_dim=int(card["embedding_dim"]),
            input_size=(int(size[0]), int(size[1])) if isinstance(size, list) else (size, size),
            template=np.asarray(card["template"], dtype=np.float32).reshape(5, 2),
            licence=str(card.get("licence", "")),
            source=str(card.get("source", "")),
            onnx_sha256=str(card.get("onnx_sha256", "")),
        )


def session_options(threads: int) -> ort.SessionOptions:
    """Graph optimisations on, a fixed number of intra-op threads, no thread spinning."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads burn a core while waiting for the next batch: bad on a shared node.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class Embedder:
    """An embedding model served by ONNX Runtime."""

    def __init__(
        self,
        model_dir: Path,
        provider: Literal["openvino", "cpu"] = "openvino",
        threads: int = 1,
        version: str = "local",
    ) -> None:
        self.model_dir = model_dir
        self.card = ModelCard.read(model_dir)
        self.requested_provider = provider
        self.threads = threads
        self.version = version
        self._session: ort.InferenceSession | None = None
        self.active_provider = "none"

    @property
    def name(self) -> str:
        return self.card.name

    def load(self) -> Embedder:
        """Open the session and check the provider it really uses."""
        path = self.model_dir / "model.onnx"
        if not path.is_file():
            raise FacegateError(f"no ONNX model at {path}; run `make models`")
        providers: list[str | tuple[str, dict[str, str]]]
        if self.requested_provider == "openvino":
            ov_options = {"device_type": "CPU", "num_of_threads": str(self.threads)}
            providers = [(OPENVINO, ov_options), CPU]
        else:
            providers = [CPU]
        self._session = ort.InferenceSession(
            str(path), sess_options=session_options(self.threads), providers=providers
        )
        self.active_provider = self._session.get_providers()[0]
        EMBEDDER_PROVIDER.labels(self.name, self.active_provider).set(1)
        if self.requested_provider == "openvino" and self.active_provider != OPENVINO:
            EMBEDDER_FALLBACKS.labels(self.name).inc()
            log.warning(
                "%s: OpenVINO execution provider unavailable, running on %s",
                self.name,
                self.active_provider,
            )
        else:
            log.info("%s: loaded on %s", self.name, self.active_provider)
        return self

    def preprocess(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """Aligned RGB crops (H, W, 3) to the network's NCHW float input."""
        width, height = self.card.input_size
        for crop in crops:
            if crop.shape != (height, width, 3):
                raise ValueError(f"crop of shape {crop.shape}, expected {(height, width, 3)}")
        batch = np.stack(crops).astype(np.float32)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network on a prepared batch."""
        if self._session is None:
            raise RuntimeError("Embedder.load() was not called")
        (embeddings,) = self._session.run(["embedding"], {"input": batch})
        return np.asarray(embeddings, dtype=np.float32)

    @staticmethod
    def postprocess(embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """L2-normalise each embedding so that a dot product is a cosine similarity."""
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        scaled: npt.NDArray[np.float32] = embeddings / np.maximum(norms, 1e-12)
        return scaled

    def embed(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """Normalised embeddings of aligned crops, one row per crop."""
        if not crops:
            return np.zeros((0, self.card.embedding_dim), dtype=np.float32)
        return self.postprocess(self.predict(self.preprocess(crops)))
