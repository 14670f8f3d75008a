"""What the models alone can do on this machine: the bound the pipeline is compared with.

Each figure is measured in this process on one core (one ONNX Runtime and one OpenCV thread),
on the demo's registry-package photos, with the production detector settings of the stream
processor (minimum face size, frame downscaling) and the production embedder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.stats import latency_summary, percentile

EMBEDDER = "mobilefacenet"
ROSTER_SEED = 7


@dataclass(frozen=True)
class BenchFrame:
    """A representative frame: the JPEG a gate camera publishes, and the student it claims."""

    path: Path
    student_id: str
    jpeg: bytes


def usable_cores() -> int:
    """The cores this process may run on (the pipeline's services share them)."""
    return len(os.sched_getaffinity(0))


def probe_frames(folder: Path, students: int) -> list[BenchFrame]:
    """Genuine check-ins: the probe photos of the roster's students, taken in turn per student.

    The roster is the one the pipeline enrols (same folder, count and seed), so the frames are
    the same in every part of the benchmark.
    """
    from producers.roster import load_roster

    roster = load_roster(folder, students, seed=ROSTER_SEED, min_enroll=2)
    frames: list[BenchFrame] = []
    longest = max(len(s.probe_photos) for s in roster.students)
    for rank in range(longest):
        for student in roster.students:
            if rank < len(student.probe_photos):
                path = student.probe_photos[rank]
                frames.append(BenchFrame(path, student.student_id, path.read_bytes()))
    return frames


@dataclass(frozen=True)
class BenchModels:
    """The production embedder and face analyzer, on one thread each."""

    embedder: Any
    analyzer: Any
    settings: Any


def load_models() -> BenchModels:
    """Embedder and detector as the services configure them, limited to one thread."""
    import cv2

    from facegate.paths import models_dir
    from inference_worker.embedder import Embedder
    from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer
    from stream_processors.settings import StreamProcessorSettings
    from stream_processors.vision.mtcnn import MtcnnConfig, MtcnnDetector

    cv2.setNumThreads(1)
    settings = StreamProcessorSettings()
    embedder = Embedder(models_dir() / EMBEDDER, provider="openvino", threads=1).load()
    card = embedder.card
    detector = MtcnnDetector(
        config=MtcnnConfig(
            min_face_size=settings.min_face_size,
            max_side=settings.max_side,
            intra_op_num_threads=1,
        )
    ).load()
    analyzer = FaceAnalyzer(
        detector,
        [AlignmentTarget(card.template_name, card.template, card.input_size)],
        policy=settings.face_policy,
    )
    return BenchModels(embedder, analyzer, settings)


def model_only_bound(
    frames: Sequence[BenchFrame], batch_sizes: Sequence[int], rounds: int = 5
) -> dict[str, Any]:
    """Decode + detect + align (+ quality) per frame, embed per face at each batch size.

    Throughput per core at batch b is ``1000 / (front_ms + embed_ms[b])`` with ``front_ms`` the
    mean per-frame cost of everything before the embedder (each frame's best of ``rounds``).
    ``stage_ms`` summarises every round.
    """
    from stream_processors.image_decoding import decode_image

    models = load_models()
    embedder, analyzer, settings = models.embedder, models.analyzer, models.settings
    card = embedder.card
    analyzer.analyze(decode_image(frames[0].jpeg, settings.max_pixels))  # warm-up
    stage_ms: dict[str, list[float]] = {"decode": [], "detect": [], "align": [], "quality": []}
    # Best of ``rounds`` per frame, like the embedder's figure: the cost of the model, not of
    # whatever else shares the cores at that moment.
    front_ms = [float("inf")] * len(frames)
    crops: list[npt.NDArray[np.uint8]] = []
    for round_number in range(rounds):
        for position, frame in enumerate(frames):
            started = time.perf_counter()
            image = decode_image(frame.jpeg, settings.max_pixels)
            decoded = time.perf_counter()
            analysis = analyzer.analyze(image)
            front_ms[position] = min(front_ms[position], (time.perf_counter() - started) * 1000)
            stage_ms["decode"].append((decoded - started) * 1000)
            for name, value in analysis.timings_ms.items():
                stage_ms.setdefault(name, []).append(value)
            if round_number == 0 and analysis.face is not None:
                crops.append(analysis.crops[card.template_name])
    embed_ms = _embed_cost(embedder, crops, batch_sizes, rounds)
    front_mean = float(np.mean(front_ms))
    per_core = {str(b): round(1000 / (front_mean + ms), 2) for b, ms in embed_ms.items()}
    best = min(embed_ms, key=lambda b: embed_ms[b])
    cores = usable_cores()
    return {
        "frames": len(frames),
        "faces": len(crops),
        "embedder": f"{EMBEDDER}/{embedder.active_provider}",
        "detector": {"min_face_size": settings.min_face_size, "max_side": settings.max_side},
        "stage_ms": {name: latency_summary(values) for name, values in stage_ms.items()},
        "front_ms_mean": round(front_mean, 2),
        "embed_ms_per_face": {str(b): round(ms, 3) for b, ms in embed_ms.items()},
        "per_core_fps": per_core,
        "best_batch": best,
        "cores": cores,
        # What the cores would do if they added up; `all_cores_fps` measures what they do.
        "linear_bound_fps": round(per_core[str(best)] * cores, 2),
        # The gate target's yardstick: the median frame, embedded alone.
        "frame_ms_batch1": round(percentile(front_ms, 50) + embed_ms[1], 2),
    }


def _embed_cost(
    embedder: Any, crops: Sequence[npt.NDArray[np.uint8]], batch_sizes: Sequence[int], rounds: int
) -> dict[int, float]:
    """Milliseconds per face at each batch size, best of ``rounds`` passes over the crops."""
    result: dict[int, float] = {}
    for size in batch_sizes:
        batches = [list(crops[i : i + size]) for i in range(0, len(crops) - size + 1, size)]
        if not batches:
            continue
        embedder.embed(batches[0])
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for batch in batches:
                embedder.embed(batch)
            best = min(best, (time.perf_counter() - started) * 1000 / (len(batches) * size))
        result[size] = best
    return result


def search_cost(sizes: Sequence[int], queries: int, seed: int = 0) -> dict[str, Any]:
    """Per-query 1:N search time (``GalleryIndex.search``, top 5) for random unit templates.

    Per gallery size: the path a worker takes by default (``p50``, ``p99``..., and ``path``):
    the float32 scan below ``FACEGATE_WORKER_SEARCH_INT8_FROM`` students, the int8 shortlist
    with exact re-scoring from there up.  Where the int8 path applies, the float32 scan is
    measured too (``float32``) and ``recall_at_k`` is the share of the exact top 5 that the int8
    path returned.  Measured on one BLAS thread, like every other figure here: on a busy 2-core
    node a multi-threaded matrix-vector product of this size mostly waits for its threads.
    """
    from threadpoolctl import threadpool_limits

    from facegate.paths import models_dir
    from inference_worker.embedder import ModelCard
    from inference_worker.settings import InferenceWorkerSettings

    dim = ModelCard.read(models_dir() / EMBEDDER).embedding_dim
    int8_from = InferenceWorkerSettings.model_fields["search_int8_from"].default
    with threadpool_limits(limits=1):
        return _search_cost(sizes, queries, dim, seed, int8_from)


def _time_searches(index: Any, probes: np.ndarray, k: int) -> tuple[list[float], list[set[str]]]:
    index.search(probes[:1])  # warm-up
    times, found = [], []
    for row in range(len(probes)):
        started = time.perf_counter()
        top = index.search(probes[row : row + 1], k=k)[0]
        times.append((time.perf_counter() - started) * 1000)
        found.append({c.student_id for c in top})
    return times, found


def _search_cost(
    sizes: Sequence[int], queries: int, dim: int, seed: int, int8_from: int, k: int = 5
) -> dict[str, Any]:
    from inference_worker.gallery import GalleryIndex, normalise

    rng = np.random.default_rng(seed)
    result: dict[str, dict[str, Any]] = {}
    for size in sizes:
        templates = normalise(rng.standard_normal((size, dim)).astype(np.float32))
        gallery = {f"s{i:07d}": templates[i : i + 1] for i in range(size)}
        probes = normalise(rng.standard_normal((queries, dim)).astype(np.float32))
        exact = GalleryIndex(dim)
        exact.replace_all(gallery)
        exact_ms, exact_top = _time_searches(exact, probes, k)
        enrolment = _enrolment_cost(exact, gallery, rng)
        if not int8_from or size < int8_from:
            result[str(size)] = {
                **latency_summary(exact_ms),
                "path": "float32",
                "enrolment_ms": enrolment,
            }
            continue
        shortlisted = GalleryIndex(dim, int8_from)
        shortlisted.replace_all(gallery)
        if not shortlisted.wait_for_int8(120):
            raise RuntimeError(f"the int8 copy of a {size}-student gallery was not built")
        int8_ms, int8_top = _time_searches(shortlisted, probes, k)
        recall = np.mean([len(a & b) / k for a, b in zip(exact_top, int8_top, strict=True)])
        result[str(size)] = {
            **latency_summary(int8_ms),
            "path": "int8 shortlist + exact re-score",
            "float32": latency_summary(exact_ms),
            "recall_at_k": round(float(recall), 4),
            "enrolment_ms": enrolment,
        }
    return result


def _enrolment_cost(
    index: Any, gallery: dict[str, np.ndarray], rng: np.random.Generator, count: int = 20
) -> dict[str, float]:
    """p50 ms of one ``GalleryIndex.upsert`` into ``index``: a new student, an enrolment
    replayed with unchanged templates (what a worker does at start), changed templates."""
    from inference_worker.gallery import normalise

    dim = index.dim
    enrolled = list(gallery)[:count]
    cases = {
        "new": [(f"new{i:04d}", rng.standard_normal((3, dim))) for i in range(count)],
        "replayed": [(s, gallery[s]) for s in enrolled],
        "changed": [(s, rng.standard_normal((3, dim))) for s in enrolled[: max(1, count // 4)]],
    }
    cost: dict[str, float] = {}
    for case, updates in cases.items():
        times = []
        for student, templates in updates:
            rows = normalise(np.asarray(templates, dtype=np.float32))
            started = time.perf_counter()
            index.upsert(student, rows)
            times.append((time.perf_counter() - started) * 1000)
        cost[case] = round(float(np.median(times)), 3)
    return cost


def provider_cost(frames: Sequence[BenchFrame], batch_sizes: Sequence[int]) -> dict[str, Any]:
    """OpenVINO against the CPU execution provider (``trainer.evaluation.embed_cost``)."""
    from trainer.evaluation.embed_cost import measure_photos

    raw = measure_photos(
        [f.path for f in frames], batch_sizes, ("openvino", "cpu"), rounds=3, models=[EMBEDDER]
    )
    results = raw["results"]
    ov = results[f"{EMBEDDER}/openvino"]["ms_per_face"]
    cpu = results[f"{EMBEDDER}/cpu"]["ms_per_face"]
    raw["cpu_over_openvino"] = {b: round(cpu[b] / ov[b], 2) for b in ov if b in cpu}
    return raw
