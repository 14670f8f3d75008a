"""FAKE face pipelines for the evaluation suite's unit tests (no detector, no model).

``CodedFacePipeline`` reads an identity code written into the image's top-left pixel by
``coded_face_image`` and returns a fixed unit vector per identity plus a fixed per-image noise
vector, or ``"no_face"`` when the code marks the image faceless.  ``PixelFacePipeline`` embeds a
downscaled grey copy of the image: a weak but real function of the pixels, enough to drive the
LFW protocols end to end without a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from trainer.evaluation.pipeline_protocol import EmbedOutcome

FAKE_DIM = 32
FAKE_TIMINGS = {"detect": 2.0, "align": 0.5, "embed": 1.0}


def coded_face_image(identity: int, variant: int, has_face: bool = True) -> np.ndarray:
    """A 48x48 RGB image whose top-left pixel carries (identity, variant, face flag)."""
    rng = np.random.default_rng(1000 * identity + variant)
    image = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    image[0, 0] = (identity, variant, 255 if has_face else 0)
    return image


class CodedFacePipeline:
    """FAKE: identity vector + 0.3 * noise per image, decoded from the top-left pixel."""

    model_name = "fake-coded"

    def __init__(self, noise: float = 0.3) -> None:
        self.noise = noise
        self.calls: list[int] = []

    def embed_images(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        self.calls.append(len(images))
        outcomes = []
        for image in images:
            identity, variant, face = (int(v) for v in image[0, 0])
            if face == 0:
                outcomes.append(EmbedOutcome(None, dict(FAKE_TIMINGS), "no_face"))
                continue
            base = np.random.default_rng(identity).normal(size=FAKE_DIM)
            jitter = np.random.default_rng(10_000 + 1000 * identity + variant).normal(size=FAKE_DIM)
            vector = base / np.linalg.norm(base) + self.noise * jitter / np.sqrt(FAKE_DIM)
            outcomes.append(
                EmbedOutcome(
                    (vector / np.linalg.norm(vector)).astype(np.float32), dict(FAKE_TIMINGS)
                )
            )
        return outcomes


class PixelFacePipeline:
    """FAKE: the centre of the image, grey, 16x16, mean-removed, as the embedding."""

    model_name = "fake-pixels"

    def embed_images(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        outcomes = []
        for image in images:
            height, width = image.shape[:2]
            centre = image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4]
            grey = cv2.cvtColor(centre, cv2.COLOR_RGB2GRAY)
            vector = cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
            vector = vector.ravel() - vector.mean()
            norm = float(np.linalg.norm(vector))
            if norm < 1e-3:  # a flat image has no "face"
                outcomes.append(EmbedOutcome(None, {"embed": 0.1}, "no_face"))
            else:
                outcomes.append(EmbedOutcome(vector / norm, {"embed": 0.1}))
        return outcomes
