"""Detector report: MTCNN misses on LFW, latency per frame size, execution providers per net,
and how the quality checks treat ordinary and degraded LFW faces.

    python -m trainer.evaluation.detector_report [--count 500] [--quality-count 300]

Images are drawn at random (fixed seed) from LFW's manifest, one per person.  The 1280x720
frame is a grey, lightly noisy background with a 250x250 LFW photo pasted in.  Run it with one
thread per process (``OMP_NUM_THREADS=1``), as the services run.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from stream_processors.vision.alignment import (
    ARCFACE_112_SIZE,
    ARCFACE_112_TEMPLATE,
    align_to_template,
)
from stream_processors.vision.face_policy import choose_face
from stream_processors.vision.mtcnn import (
    NETS,
    MtcnnConfig,
    MtcnnDetector,
    Provider,
    make_session,
    read_mtcnn_files,
)
from stream_processors.vision.quality import QualityThresholds, assess_quality
from stream_processors.vision.types import DetectedFace
from trainer.build_mtcnn import default_mtcnn_dir
from trainer.evaluation.cli import default_lfw_dir

UInt8Image = npt.NDArray[np.uint8]

EXPECTED_REASON = {"blurred": "blurry", "darkened": "too_dark", "tiny": "face_too_small"}


# --------------------------------------------------------------------------- inputs (I/O)


def sample_lfw(lfw_dir: Path, count: int, seed: int) -> list[Path]:
    """``count`` LFW images, one per person, drawn with a fixed seed."""
    with open(lfw_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        first: dict[str, str] = {}
        for row in csv.DictReader(handle):
            first.setdefault(row["identity"], row["relpath"])
    relpaths = sorted(first.values())
    random.Random(seed).shuffle(relpaths)
    return [lfw_dir / "images" / rel for rel in relpaths[:count]]


def read_images(paths: Sequence[Path]) -> list[UInt8Image]:
    """RGB arrays of the image files."""
    images = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(path)
        images.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    return images


# --------------------------------------------------------------------------- measurements


def paste_into_frame(
    image: UInt8Image, seed: int, size: tuple[int, int] = (1280, 720)
) -> UInt8Image:
    """A ``size`` (w, h) grey frame with light noise and ``image`` pasted at a random place."""
    rng = np.random.default_rng(seed)
    width, height = size
    frame = np.clip(114 + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    x = int(rng.integers(0, width - image.shape[1]))
    y = int(rng.integers(0, height - image.shape[0]))
    frame[y : y + image.shape[0], x : x + image.shape[1]] = image
    return frame


def detection_failures(detector: MtcnnDetector, images: Sequence[UInt8Image]) -> dict[str, Any]:
    """How many images yield no face, and how many faces the others yield."""
    counts = [len(detector.detect(image)) for image in images]
    return {
        "images": len(images),
        "no_face": counts.count(0),
        "no_face_indices": [i for i, c in enumerate(counts) if c == 0],
        "faces_per_image": dict(sorted(Counter(counts).items())),
    }


def time_detection(
    detector: MtcnnDetector, images: Sequence[UInt8Image], repeats: int = 3
) -> dict[str, float]:
    """Median milliseconds per image, whole detection and per stage (after one warm-up pass)."""
    for image in images:
        detector.detect(image)
    samples: dict[str, list[float]] = {"total": [], "pnet": [], "rnet": [], "onet": []}
    for _ in range(repeats):
        for image in images:
            stages: dict[str, float] = {}
            started = time.perf_counter()
            detector.detect(image, stages)
            samples["total"].append(time.perf_counter() - started)
            for stage, seconds in stages.items():
                samples[stage].append(seconds)
    return {key: round(1000 * statistics.median(values), 2) for key, values in samples.items()}


def capture_net_inputs(
    detector: MtcnnDetector, images: Sequence[UInt8Image]
) -> dict[str, list[npt.NDArray[np.float32]]]:
    """The tensors each net receives while ``detector`` processes ``images``."""
    captured: dict[str, list[npt.NDArray[np.float32]]] = {net: [] for net in NETS}
    sessions = detector._sessions  # the one place that looks inside: measurement only

    class Recorder:
        def __init__(self, net: str) -> None:
            self.net, self.inner = net, sessions[net]

        def get_inputs(self) -> Any:
            return self.inner.get_inputs()

        def run(self, names: Any, feed: dict[str, Any]) -> Any:
            captured[self.net].append(next(iter(feed.values())))
            return self.inner.run(names, feed)

    original = dict(sessions)
    try:
        for net in NETS:
            sessions[net] = Recorder(net)
        for image in images:
            detector.detect(image)
    finally:
        sessions.update(original)
    return captured


def compare_providers(
    models: dict[str, bytes],
    inputs: dict[str, list[npt.NDArray[np.float32]]],
    images: int,
    threads: int = 1,
    rounds: int = 6,
) -> dict[str, dict[str, float]]:
    """Milliseconds per image spent in each net's ``run`` on each provider.

    Rounds alternate the providers' order so that load from other processes hits both alike;
    "first" is the first pass (every input shape new: OpenVINO compiles per shape), "best" and
    "median" the later passes.
    """
    providers: tuple[Provider, ...] = ("cpu", "openvino")
    result: dict[str, dict[str, float]] = {}
    for net in NETS:
        sessions = {p: make_session(models[net], p, threads) for p in providers}
        passes: dict[str, list[float]] = {p: [] for p in providers}
        for round_index in range(rounds):
            order = providers if round_index % 2 == 0 else providers[::-1]
            for provider in order:
                session = sessions[provider]
                name = session.get_inputs()[0].name
                started = time.perf_counter()
                for tensor in inputs[net]:
                    session.run(None, {name: tensor})
                passes[provider].append(1000 * (time.perf_counter() - started) / images)
        for provider in providers:
            later = passes[provider][1:]
            result[f"{net}/{provider}"] = {
                "first": round(passes[provider][0], 3),
                "best": round(min(later), 3),
                "median": round(statistics.median(later), 3),
            }
    return result


PROVIDER_MIXES: dict[str, tuple[Provider, Provider, Provider]] = {
    "cpu/cpu/cpu": ("cpu", "cpu", "cpu"),
    "cpu/openvino/openvino": ("cpu", "openvino", "openvino"),
    "openvino/openvino/openvino": ("openvino", "openvino", "openvino"),
}


def compare_provider_mixes(
    models: dict[str, bytes],
    images: Sequence[UInt8Image],
    max_side: int | None = None,
    tries: int = 5,
) -> dict[str, dict[str, float]]:
    """Whole detections with each P/R/O-Net provider mix: per image the best of ``tries``
    consecutive runs (other processes' load only ever adds time), averaged over the images.

    Unlike :func:`compare_providers` the nets run between crops and resizes, as in service.
    """
    detectors = {}
    for label, (pnet, rnet, onet) in PROVIDER_MIXES.items():
        config = MtcnnConfig(
            max_side=max_side, pnet_provider=pnet, rnet_provider=rnet, onet_provider=onet
        )
        detectors[label] = MtcnnDetector(config=config).load_models(models)
        for image in images:  # warm-up: every input shape seen once
            detectors[label].detect(image)
    labels = list(detectors)
    best: dict[str, dict[str, list[float]]] = {
        label: {"total": [], "pnet": [], "rnet": [], "onet": []} for label in labels
    }
    for index, image in enumerate(images):
        rotation = index % len(labels)  # which mix goes first changes from image to image
        for label in labels[rotation:] + labels[:rotation]:
            runs = []
            for _ in range(tries):
                stages: dict[str, float] = {}
                started = time.perf_counter()
                detectors[label].detect(image, stages)
                stages["total"] = time.perf_counter() - started
                runs.append(stages)
            for key, values in best[label].items():
                values.append(1000 * min(run[key] for run in runs))
    return {
        label: {key: round(statistics.fmean(values), 2) for key, values in stages_ms.items()}
        for label, stages_ms in best.items()
    }


def degraded_versions(
    image: UInt8Image, face: DetectedFace
) -> dict[str, tuple[UInt8Image, DetectedFace]]:
    """The image as is, blurred, darkened and shrunk so the face's box is 30 px high."""
    factor = 30.0 / face.height
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    actual = size[0] / image.shape[1]
    tiny_face = DetectedFace(
        tuple(v * actual for v in face.box),
        face.score,
        (face.landmarks + 0.5) * actual - 0.5,
    )
    return {
        "ordinary": (image, face),
        "blurred": (np.asarray(cv2.GaussianBlur(image, (0, 0), 4), np.uint8), face),
        "darkened": (np.round(image.astype(np.float32) * 0.25).astype(np.uint8), face),
        "tiny": (
            np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8),
            tiny_face,
        ),
    }


def quality_rates(
    detector: MtcnnDetector, images: Sequence[UInt8Image], thresholds: QualityThresholds
) -> dict[str, dict[str, Any]]:
    """Pass rates of ordinary LFW faces and failure rates (with the expected reason) of degraded
    copies of the same faces; the face geometry of a degraded copy is the original's."""
    tallies: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    passed: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for image in images:
        choice = choose_face(detector.detect(image), image.shape, dominance_ratio=1.0)
        if choice.face is None:
            continue
        for variant, (picture, face) in degraded_versions(image, choice.face).items():
            crop = align_to_template(
                picture, face.landmarks, ARCFACE_112_TEMPLATE, ARCFACE_112_SIZE
            )
            report = assess_quality(picture, face, crop, thresholds)
            totals[variant] += 1
            passed[variant] += report.ok
            expected[variant] += EXPECTED_REASON.get(variant, "") in report.reasons
            tallies.setdefault(variant, Counter()).update(report.reasons)
    return {
        variant: {
            "faces": totals[variant],
            "pass_rate": round(passed[variant] / totals[variant], 4),
            "expected_reason_rate": (
                round(expected[variant] / totals[variant], 4)
                if variant in EXPECTED_REASON
                else None
            ),
            "reasons": dict(tallies.get(variant, {})),
        }
        for variant in totals
    }


# --------------------------------------------------------------------------- command


def main(argv: Sequence[str] | None = None) -> None:
    """Print the detector report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw-dir", type=Path, default=default_lfw_dir())
    parser.add_argument("--model-dir", type=Path, default=default_mtcnn_dir())
    parser.add_argument("--count", type=int, default=500, help="images for the miss count")
    parser.add_argument("--quality-count", type=int, default=300)
    parser.add_argument("--timing-count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    images = read_images(sample_lfw(args.lfw_dir, args.count, args.seed))
    detector = MtcnnDetector(args.model_dir, MtcnnConfig(min_face_size=40)).load()
    report: dict[str, Any] = {"providers": detector.providers()}
    report["detection"] = detection_failures(detector, images)

    timing_images = images[: args.timing_count]
    frames = [paste_into_frame(img, seed=i) for i, img in enumerate(timing_images[:20])]
    limited = MtcnnDetector(args.model_dir, MtcnnConfig(max_side=640)).load()
    report["latency_ms"] = {
        "lfw_250x250": time_detection(detector, timing_images),
        "frame_1280x720": time_detection(detector, frames),
        "frame_1280x720_max_side_640": time_detection(limited, frames),
    }
    models = read_mtcnn_files(args.model_dir)
    cpu_only = MtcnnDetector(
        args.model_dir,
        MtcnnConfig(pnet_provider="cpu", rnet_provider="cpu", onet_provider="cpu"),
    ).load_models(models)
    report["pipeline_ms_by_providers"] = {
        "lfw_250x250": compare_provider_mixes(models, timing_images[:30]),
        "frame_1280x720": compare_provider_mixes(models, frames[:10]),
        "frame_1280x720_max_side_640": compare_provider_mixes(models, frames[:10], 640),
    }
    report["net_run_ms_per_image"] = {
        "lfw_250x250": compare_providers(
            models, capture_net_inputs(cpu_only, timing_images), len(timing_images)
        ),
        "frame_1280x720": compare_providers(
            models, capture_net_inputs(cpu_only, frames), len(frames)
        ),
    }
    quality_images = read_images(sample_lfw(args.lfw_dir, args.quality_count, args.seed + 1))
    report["quality"] = quality_rates(detector, quality_images, QualityThresholds())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
