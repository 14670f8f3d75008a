"""Load shedding: a frame that waited too long is answered ``stale`` without being decoded or
analysed by the stream processor, or embedded by the worker; every other frame as before.

The analyzer here is a stand-in that records its calls (said so): what is under test is the
decision to analyse, not the detector (the real one is exercised by the e2e tests and the soak).
"""

from __future__ import annotations

from typing import Any

import pytest

from inference_worker.settings import InferenceWorkerSettings
from inference_worker.worker import shed_if_stale
from schemas.codec import decode, encode
from schemas.messages import Face, FaceCrop, Frame, new_id, now
from stream_processors.frame_processor import FrameProcessor, RecordRef
from stream_processors.settings import StreamProcessorSettings

REF = RecordRef("frames", 0, 7, b"gate-1")


class RecordingAnalyzer:
    """Stand-in analyzer: fails the test if a stale frame reaches it."""

    def __init__(self) -> None:
        self.calls = 0

    def analyze(self, image: Any) -> Any:
        self.calls += 1
        raise AssertionError("a stale frame must not be analysed")


def _frame(captured_at: float, image: bytes = b"not even an image") -> bytes:
    return encode(
        Frame(
            frame_id=new_id(),
            gate_id="gate-1",
            exam_id="exam-1",
            claimed_student_id="s1",
            captured_at=captured_at,
            published_at=captured_at,
            source="test",
            image=image,
        )
    )


def test_a_frame_older_than_the_limit_is_answered_stale_unanalysed() -> None:
    analyzer = RecordingAnalyzer()
    processor = FrameProcessor(analyzer, 4096 * 4096, "test", max_frame_age_s=15.0)  # type: ignore[arg-type]
    received = now()
    result = processor.process(_frame(received - 20.0), REF, received_at=received)
    assert analyzer.calls == 0 and result.dead_letter is None
    face = result.face
    assert face is not None and face.outcome == "stale" and face.crops == []
    assert face.claimed_student_id == "s1" and face.exam_id == "exam-1"
    assert face.timings_ms["waited"] == pytest.approx(20_000, abs=1)
    # It travels like any face message (schema v3 allows the outcome).
    assert decode(encode(face), Face).outcome == "stale"


def test_a_frame_within_the_limit_is_analysed() -> None:
    analyzer = RecordingAnalyzer()
    processor = FrameProcessor(analyzer, 4096 * 4096, "test", max_frame_age_s=15.0)  # type: ignore[arg-type]
    received = now()
    # The image is junk, so the frame is dead-lettered at decoding, before the analyzer: the
    # point is that it was not shed.
    result = processor.process(_frame(received - 5.0), REF, received_at=received)
    assert result.face is None and result.dead_letter is not None
    assert result.dead_letter.reason != "stale"


@pytest.mark.parametrize("limit", [0.0, None])
def test_no_limit_sheds_nothing(limit: float | None) -> None:
    processor = FrameProcessor(RecordingAnalyzer(), 4096 * 4096, "test", max_frame_age_s=limit)  # type: ignore[arg-type]
    received = now()
    result = processor.process(_frame(received - 3600.0), REF, received_at=received)
    assert result.face is None and result.dead_letter is not None  # decoded, not shed


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert StreamProcessorSettings().max_frame_age_s == 15.0
    monkeypatch.setenv("FACEGATE_STREAM_MAX_FRAME_AGE_S", "4.5")
    assert StreamProcessorSettings().max_frame_age_s == 4.5


def _face(captured_at: float, outcome: str = "face") -> Face:
    return Face(
        frame_id=new_id(),
        gate_id="gate-1",
        exam_id="exam-1",
        claimed_student_id="s1",
        captured_at=captured_at,
        outcome=outcome,  # type: ignore[arg-type]
        face_count=1 if outcome == "face" else 0,
        quality_ok=True,
        crops=[FaceCrop(template="t", width=1, height=1, pixels=b"\x00\x00\x00")],
        timings_ms={"detect": 20.0},
    )


def test_the_worker_sheds_a_face_that_waited_too_long() -> None:
    at = now()
    shed = shed_if_stale(_face(at - 16.0), 15.0, at)
    assert shed.outcome == "stale" and shed.crops == []
    assert shed.timings_ms == {"detect": 20.0, "waited": pytest.approx(16_000)}
    fresh = _face(at - 2.0)
    assert shed_if_stale(fresh, 15.0, at) is fresh
    # No limit, or nothing to embed: untouched.
    old = _face(at - 600.0)
    assert shed_if_stale(old, None, at) is old
    no_face = _face(at - 600.0, "no_face")
    assert shed_if_stale(no_face, 15.0, at) is no_face
    assert InferenceWorkerSettings().max_frame_age_s == 30.0


def test_the_worker_keeps_more_time_than_the_stream_processor() -> None:
    # A frame analysed just under the stream processor's limit must not be shed by the worker.
    assert InferenceWorkerSettings().max_frame_age_s > StreamProcessorSettings().max_frame_age_s
