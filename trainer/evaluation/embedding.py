"""Decode image files and embed them through a :class:`FacePipeline`, each image once.

Decoding (``cv2.imread``, BGR -> RGB) is timed as the stage ``"decode"``; the pipeline reports
its own stages per image.  Images are fed to the pipeline in chunks so that a batching pipeline
can batch, and so that a long run reports progress as it goes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trainer.evaluation.pipeline_protocol import DEFAULT_CHUNK_SIZE, EmbedOutcome, FacePipeline

DECODE_STAGE = "decode"
UNREADABLE = "unreadable"

ImageTransform = Callable[[np.ndarray], np.ndarray]
# Called as (label, images done, images in this run) after each chunk.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EmbeddingTable:
    """One row per image: its embedding (zeros when none), whether it has one, and why not."""

    keys: list[str]
    embeddings: np.ndarray  # (N, D) float32, L2-normalised rows; zero rows where not valid
    valid: np.ndarray  # (N,) bool
    reasons: list[str | None]
    timings_ms: list[dict[str, float]]

    def select(self, keys: Sequence[str]) -> EmbeddingTable:
        """The rows of ``keys``, in that order."""
        rows = self.rows(keys)
        return EmbeddingTable(
            keys=list(keys),
            embeddings=self.embeddings[rows],
            valid=self.valid[rows],
            reasons=[self.reasons[r] for r in rows],
            timings_ms=[self.timings_ms[r] for r in rows],
        )

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Row indices of ``keys``."""
        index = {key: row for row, key in enumerate(self.keys)}
        return np.array([index[key] for key in keys], dtype=np.int64)

    @property
    def failure_rate(self) -> float:
        """Share of images without an embedding (no face, or unreadable)."""
        return float(np.mean(~self.valid)) if self.valid.size else 0.0

    def failure_reasons(self) -> dict[str, int]:
        """How many images failed, per reason."""
        return dict(
            Counter(
                r or "unknown" for r, ok in zip(self.reasons, self.valid, strict=True) if not ok
            )
        )


def decode_image(path: Path) -> np.ndarray | None:
    """The image as RGB uint8 (H, W, 3), or None when it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_chunk(
    paths: Sequence[Path], transform: ImageTransform | None
) -> tuple[list[np.ndarray | None], list[float]]:
    images: list[np.ndarray | None] = []
    decode_ms: list[float] = []
    for path in paths:
        started = time.perf_counter()
        image = decode_image(path)
        decode_ms.append((time.perf_counter() - started) * 1000.0)
        # Degradations are part of the experiment, not of decoding: applied after the clock.
        images.append(image if image is None or transform is None else transform(image))
    return images, decode_ms


def _embed_chunk(pipeline: FacePipeline, images: Sequence[np.ndarray | None]) -> list[EmbedOutcome]:
    readable = [image for image in images if image is not None]
    produced = pipeline.embed_images(readable) if readable else []
    if len(produced) != len(readable):
        raise ValueError(
            f"pipeline {pipeline.model_name!r} returned {len(produced)} outcomes for "
            f"{len(readable)} images"
        )
    results = iter(produced)
    return [
        EmbedOutcome(None, {}, UNREADABLE) if image is None else next(results) for image in images
    ]


def _stack(outcomes: Sequence[EmbedOutcome]) -> tuple[np.ndarray, np.ndarray]:
    dims = {o.embedding.shape[-1] for o in outcomes if o.embedding is not None}
    if len(dims) > 1:
        raise ValueError(f"pipeline returned embeddings of different sizes: {sorted(dims)}")
    dim = dims.pop() if dims else 0
    embeddings = np.zeros((len(outcomes), dim), np.float32)
    valid = np.zeros(len(outcomes), bool)
    for row, outcome in enumerate(outcomes):
        if outcome.embedding is not None:
            vector = np.asarray(outcome.embedding, np.float32).ravel()
            norm = float(np.linalg.norm(vector))
            if norm > 0 and np.isfinite(norm):
                embeddings[row] = vector / norm
                valid[row] = True
    return embeddings, valid


def embed_files(
    keys: Sequence[str],
    paths: Sequence[Path],
    pipeline: FacePipeline,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    transform: ImageTransform | None = None,
    progress: ProgressCallback | None = None,
    label: str = "images",
) -> EmbeddingTable:
    """Decode each file (optionally ``transform`` it) and embed it; ``keys`` name the rows."""
    if len(keys) != len(paths):
        raise ValueError("keys and paths differ in length")
    outcomes: list[EmbedOutcome] = []
    timings: list[dict[str, float]] = []
    for start in range(0, len(paths), chunk_size):
        images, decode_ms = _decode_chunk(paths[start : start + chunk_size], transform)
        chunk = _embed_chunk(pipeline, images)
        outcomes.extend(chunk)
        timings.extend(
            {DECODE_STAGE: ms, **o.timings_ms} for ms, o in zip(decode_ms, chunk, strict=True)
        )
        if progress is not None:
            progress(label, len(outcomes), len(paths))
    embeddings, valid = _stack(outcomes)
    reasons = [
        None if ok else (o.reason or "no_embedding") for o, ok in zip(outcomes, valid, strict=True)
    ]
    return EmbeddingTable(
        keys=list(keys), embeddings=embeddings, valid=valid, reasons=reasons, timings_ms=timings
    )


def summarize_timings(timings: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage (and ``"total"`` per image): mean, p50 and p95 in ms, and how many images."""
    stages: dict[str, list[float]] = {}
    for per_image in timings:
        for stage, ms in per_image.items():
            stages.setdefault(stage, []).append(ms)
        stages.setdefault("total", []).append(sum(per_image.values()))
    return {
        stage: {
            "mean": float(np.mean(values)),
            "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)),
            "n": len(values),
        }
        for stage, values in stages.items()
    }
