"""A frame whose analysis fails is dead-lettered whole, with the error, instead of raising.

Faust acks a record whose agent raises, so an exception escaping the frame processor would lose
the frame without a verdict or a dead letter.  The analyzer here is a stand-in that raises (said
so): no input found by the fuzz tests makes the real detector raise, and what is under test is
what the processor does when something does.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import pytest

from schemas.codec import encode
from schemas.messages import Frame, new_id, now
from stream_processors.frame_processor import FrameProcessor, RecordRef


class FailingAnalyzer:
    """Stand-in analyzer whose detector fails."""

    def analyze(self, image: Any) -> Any:
        raise RuntimeError("ONNXRuntimeError: failed to allocate memory")


def test_a_failed_analysis_is_dead_lettered_with_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((48, 64, 3), dtype=np.uint8))
    assert ok
    frame = Frame(
        frame_id=new_id(),
        gate_id="gate-1",
        exam_id="exam-1",
        claimed_student_id="s1",
        captured_at=now(),
        published_at=now(),
        source="test",
        image=jpeg.tobytes(),
    )
    raw = encode(frame)
    processor = FrameProcessor(FailingAnalyzer(), 4096 * 4096, "stream-processor")  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="stream_processors.frame_processor"):
        result = processor.process(raw, RecordRef("frames", 3, 41, b"gate-1"))
    letter = result.dead_letter
    assert result.face is None and letter is not None
    assert letter.reason == "analysis_failed"
    assert letter.detail == "RuntimeError: ONNXRuntimeError: failed to allocate memory"
    assert letter.frame_id == frame.frame_id and letter.payload == raw
    assert (letter.source_topic, letter.partition, letter.offset) == ("frames", 3, 41)
    assert letter.service == "stream-processor"
    # The traceback is in the log, for whoever investigates.
    assert any(r.exc_info and f"frame {frame.frame_id}" in r.getMessage() for r in caplog.records)
