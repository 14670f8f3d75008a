"""Turn one raw ``frames`` record into a ``faces`` message, or a dead letter with the reason.

Kept free of Kafka and asyncio so that it can run in an executor thread (and be tested alone):
the Faust agent hands it raw bytes and publishes what it returns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.codec import SchemaError, decode
from schemas.messages import DeadLetter, Face, FaceCrop, Frame, now
from stream_processors.face_analysis import FaceAnalyzer
from stream_processors.image_decoding import ImageError, decode_image

log = logging.getLogger(__name__)


def _from_frame(frame: Frame) -> dict[str, Any]:
    """The fields a face message carries over from its frame."""
    return {
        "frame_id": frame.frame_id,
        "gate_id": frame.gate_id,
        "exam_id": frame.exam_id,
        "claimed_student_id": frame.claimed_student_id,
        "captured_at": frame.captured_at,
    }


@dataclass(frozen=True)
class RecordRef:
    """Where a record came from (for the dead letter)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


@dataclass(frozen=True)
class FrameResult:
    """Exactly one of ``face`` and ``dead_letter`` is set."""

    face: Face | None = None
    dead_letter: DeadLetter | None = None


class FrameProcessor:
    """Decode, analyse and describe one frame."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        max_pixels: int,
        service: str,
        max_frame_age_s: float | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.max_pixels = max_pixels
        self.service = service
        # Frames older than this when they arrive are answered ``stale`` without analysis.
        self.max_frame_age_s = max_frame_age_s or None

    def process(
        self, raw: bytes | None, ref: RecordRef, received_at: float | None = None
    ) -> FrameResult:
        """The face message for a frame record, or a dead letter saying why there is none.

        ``received_at`` (epoch seconds) is when the record reached this service; the time since
        the frame was published is reported as the ``frames_hop`` stage.  A frame captured
        more than ``max_frame_age_s`` before it arrived is not analysed: its answer would come
        too late for the gate, and under overload shedding it is what keeps the backlog bounded.
        """
        try:
            frame = decode(raw, Frame)
        except SchemaError as error:
            return self._dead_result(raw, ref, error.reason, error.detail, None)
        if received_at is not None and self.max_frame_age_s is not None:
            age_s = received_at - frame.captured_at
            if age_s > self.max_frame_age_s:
                return FrameResult(face=self._stale(frame, age_s, received_at))
        started = time.perf_counter()
        try:
            image = decode_image(frame.image, self.max_pixels)
        except ImageError as error:
            return self._dead_result(raw, ref, error.reason, error.detail, frame.frame_id)
        decode_ms = (time.perf_counter() - started) * 1000
        hop = {}
        if received_at is not None:
            hop["frames_hop"] = max(0.0, (received_at - frame.published_at) * 1000)
        try:
            return FrameResult(face=self._analyse(frame, image, {**hop, "decode": decode_ms}))
        except Exception as error:
            # Faust acks a record whose agent raises, so an escaping error would lose the frame
            # without an answer: it goes to the dead-letter topic whole, with the error.
            log.exception("analysis of frame %s failed", frame.frame_id)
            detail = f"{type(error).__name__}: {error}"
            return self._dead_result(raw, ref, "analysis_failed", detail, frame.frame_id)

    def _analyse(
        self, frame: Frame, image: npt.NDArray[np.uint8], timings_ms: dict[str, float]
    ) -> Face:
        """The face message of a decoded frame: detection, alignment, quality."""
        analysis = self.analyzer.analyze(image)
        crops = [
            FaceCrop(
                template=name,
                width=crop.shape[1],
                height=crop.shape[0],
                pixels=np.ascontiguousarray(crop).tobytes(),
            )
            for name, crop in analysis.crops.items()
        ]
        face = analysis.face
        quality = analysis.quality
        return Face(
            **_from_frame(frame),
            outcome=analysis.outcome,  # type: ignore[arg-type]
            face_count=analysis.face_count,
            box=list(face.box) if face else None,
            landmarks=face.landmarks.tolist() if face else None,
            detection_score=face.score if face else None,
            quality_ok=bool(quality and quality.ok),
            quality=dict(quality.scores) if quality else {},
            quality_reasons=list(quality.reasons) if quality else [],
            crops=crops,
            timings_ms={**timings_ms, **analysis.timings_ms},
        )

    @staticmethod
    def _stale(frame: Frame, age_s: float, received_at: float) -> Face:
        """The face message of a frame that waited too long: no analysis, a reason to retake."""
        return Face(
            **_from_frame(frame),
            outcome="stale",
            face_count=0,
            timings_ms={
                "frames_hop": max(0.0, (received_at - frame.published_at) * 1000),
                "waited": age_s * 1000,
            },
        )

    def _dead_result(
        self, raw: bytes | None, ref: RecordRef, reason: str, detail: str, frame_id: str | None
    ) -> FrameResult:
        return FrameResult(dead_letter=self.dead_letter(raw, ref, reason, detail, frame_id))

    def dead_letter(
        self, raw: bytes | None, ref: RecordRef, reason: str, detail: str, frame_id: str | None
    ) -> DeadLetter:
        """The dead letter of a record this service cannot process, with the record whole."""
        return DeadLetter(
            source_topic=ref.topic,
            partition=ref.partition,
            offset=ref.offset,
            key=ref.key,
            reason=reason,
            detail=detail,
            service=self.service,
            failed_at=now(),
            payload=raw,
            frame_id=frame_id,
        )
