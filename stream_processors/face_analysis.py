"""One frame in, the face to verify out: detect, choose, align to each template, score quality.

This is the production path of the stream processor and of every offline use of the models
(enrolment, evaluation), so that what is measured is what runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from stream_processors.vision.alignment import align_to_template
from stream_processors.vision.face_policy import FacePolicy, choose_face
from stream_processors.vision.mtcnn import MtcnnConfig, MtcnnDetector
from stream_processors.vision.quality import QualityReport, QualityThresholds, assess_quality
from stream_processors.vision.types import DetectedFace

if TYPE_CHECKING:
    from stream_processors.settings import StreamProcessorSettings

UInt8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class AlignmentTarget:
    """An embedder's input: its template's name, landmark positions and crop size."""

    name: str
    template: npt.NDArray[np.float32]
    size: tuple[int, int]


def _same_targets(a: list[AlignmentTarget], b: list[AlignmentTarget]) -> bool:
    """Whether two target lists align the same crops (names, sizes and templates, in order)."""
    return len(a) == len(b) and all(
        x.name == y.name
        and tuple(x.size) == tuple(y.size)
        and np.array_equal(x.template, y.template)
        for x, y in zip(a, b, strict=True)
    )


@dataclass
class FaceAnalysis:
    """What one frame holds: the outcome, the chosen face, its aligned crops and quality."""

    outcome: str
    face_count: int
    face: DetectedFace | None = None
    crops: dict[str, UInt8Image] = field(default_factory=dict)
    quality: QualityReport | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def detector_for(settings: StreamProcessorSettings) -> MtcnnDetector:
    """The MTCNN detector as the stream processor's settings configure it, loaded."""
    config = MtcnnConfig(
        min_face_size=settings.min_face_size,
        max_side=settings.max_side,
        intra_op_num_threads=settings.detector_threads,
    )
    return MtcnnDetector(config=config).load()


class FaceAnalyzer:
    """Detector, face policy, alignment and quality checks behind one call."""

    def __init__(
        self,
        detector: MtcnnDetector,
        targets: list[AlignmentTarget],
        policy: FacePolicy = "largest_central",
        quality_thresholds: QualityThresholds | None = None,
        dominance_ratio: float | None = None,
        centre_weight: float | None = None,
    ) -> None:
        self.detector = detector
        self.targets: list[AlignmentTarget] = []
        self.set_targets(targets)
        self.policy = policy
        self.quality_thresholds = quality_thresholds or QualityThresholds()
        self.dominance_ratio = dominance_ratio
        self.centre_weight = centre_weight

    def set_targets(self, targets: list[AlignmentTarget]) -> bool:
        """Align to ``targets`` from the next frame on; False when they are the current ones.

        One reference assignment: a frame being analysed keeps the targets it started with.
        """
        if not targets:
            raise ValueError("at least one alignment target is needed")
        if _same_targets(targets, self.targets):
            return False
        self.targets = list(targets)
        return True

    def analyze(self, image_rgb: UInt8Image) -> FaceAnalysis:
        """Analyse one RGB frame."""
        targets = self.targets  # one frame, one set of targets (see set_targets)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        faces = self.detector.detect(image_rgb)
        timings["detect"] = (time.perf_counter() - started) * 1000
        kwargs = {} if self.dominance_ratio is None else {"dominance_ratio": self.dominance_ratio}
        if self.centre_weight is not None:
            kwargs["centre_weight"] = self.centre_weight
        choice = choose_face(faces, image_rgb.shape, self.policy, **kwargs)
        if choice.face is None:
            return FaceAnalysis(choice.outcome, choice.count, timings_ms=timings)
        clock = time.perf_counter()
        crops = {
            target.name: align_to_template(
                image_rgb, choice.face.landmarks, target.template, target.size
            )
            for target in targets
        }
        timings["align"] = (time.perf_counter() - clock) * 1000
        clock = time.perf_counter()
        quality = assess_quality(
            image_rgb, choice.face, crops[targets[0].name], self.quality_thresholds
        )
        timings["quality"] = (time.perf_counter() - clock) * 1000
        return FaceAnalysis(choice.outcome, choice.count, choice.face, crops, quality, timings)
