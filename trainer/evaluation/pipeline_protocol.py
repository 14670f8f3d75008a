"""The face pipeline the evaluation suite drives: images in, one embedding (or a reason) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Images per embed_images call: enough for a batching pipeline to batch, small enough for
# progress to move and memory to stay flat.
DEFAULT_CHUNK_SIZE = 32


@dataclass
class EmbedOutcome:
    """What the pipeline made of one image.

    ``embedding`` is a (D,) float32 L2-normalised vector, or None when the image has no usable
    face; ``reason`` then says why (e.g. ``"no_face"``).  ``timings_ms`` holds this image's share
    of each stage in milliseconds (e.g. ``{"detect": .., "align": .., "embed": ..}``); a pipeline
    that batches divides a batch's time by its size.
    """

    embedding: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


class FacePipeline(Protocol):
    """Detector + aligner + embedder behind one call, as the evaluation suite sees it."""

    model_name: str

    def embed_images(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        """One outcome per image, in order; images are RGB uint8 arrays of shape (H, W, 3)."""
        ...
