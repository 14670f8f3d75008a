"""Embedding cost per face at batch 1 and at larger batches, per embedder and provider.

Measured on real aligned faces (LFW through the production detector and alignment), one
intra-op thread, best-of-N rounds after a warm-up: the figure that says whether batching pays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facegate.paths import models_dir


def _aligned_faces(
    photos: Iterable[Path], count: int, models: Sequence[str] | None = None
) -> dict[str, list[np.ndarray]]:
    from inference_worker.embedder import ModelCard
    from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer
    from stream_processors.vision.mtcnn import MtcnnDetector
    from trainer.build_models import EMBEDDERS
    from trainer.evaluation.embedding import decode_image

    cards = [ModelCard.read(models_dir() / name) for name in (models or EMBEDDERS)]
    targets = [AlignmentTarget(c.template_name, c.template, c.input_size) for c in cards]
    analyzer = FaceAnalyzer(
        MtcnnDetector(models_dir() / "mtcnn").load(), targets, dominance_ratio=1.0
    )
    crops: dict[str, list[np.ndarray]] = {c.name: [] for c in cards}
    for path in photos:
        image = decode_image(path)
        if image is None:
            continue
        analysis = analyzer.analyze(image)
        if analysis.face is None:
            continue
        for card in cards:
            crops[card.name].append(analysis.crops[card.template_name])
        if len(crops[cards[0].name]) >= count:
            break
    return crops


def measure(
    lfw_dir: Path,
    batch_sizes: Sequence[int] = (1, 8, 32),
    providers: Sequence[str] = ("openvino", "cpu"),
    rounds: int = 5,
) -> dict[str, Any]:
    """Milliseconds per face for each embedder, provider and batch size (best of ``rounds``)."""
    photos = sorted((lfw_dir / "images").glob("*/*_0001.jpg"))
    return measure_photos(photos, batch_sizes, providers, rounds)


def measure_photos(
    photos: Iterable[Path],
    batch_sizes: Sequence[int] = (1, 8, 32),
    providers: Sequence[str] = ("openvino", "cpu"),
    rounds: int = 5,
    models: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`measure` on any photos (the benchmark uses the demo's), for some or all embedders."""
    from inference_worker.embedder import Embedder

    faces = _aligned_faces(photos, max(batch_sizes) * 2, models)
    results: dict[str, Any] = {}
    for name, crops in faces.items():
        for provider in providers:
            embedder = Embedder(models_dir() / name, provider=provider, threads=1).load()  # type: ignore[arg-type]
            per_face: dict[str, float] = {}
            for size in batch_sizes:
                batches = [crops[i : i + size] for i in range(0, len(crops) - size + 1, size)]
                embedder.embed(batches[0])  # warm-up (first call compiles on OpenVINO)
                best = float("inf")
                for _ in range(rounds):
                    started = time.perf_counter()
                    for batch in batches:
                        embedder.embed(batch)
                    elapsed = time.perf_counter() - started
                    best = min(best, elapsed * 1000 / (len(batches) * size))
                per_face[str(size)] = round(best, 3)
            results[f"{name}/{provider}"] = {
                "active_provider": embedder.active_provider,
                "ms_per_face": per_face,
                "batch_32_cheaper_than_1": per_face.get("32", np.inf) < per_face.get("1", 0),
            }
    return {"faces": len(next(iter(faces.values()))), "threads": 1, "results": results}
