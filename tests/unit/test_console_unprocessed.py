"""The console's hub shows a dead-lettered check-in at its gate until a verdict replaces it.

The hub's Kafka consumer is not started here: records are handed to it as its consumer thread
would hand them (the browser test runs the whole path on the real stack)."""

from __future__ import annotations

import time

from console.live import VerdictHub, letter_view
from facegate.settings import KafkaSettings
from schemas.codec import decode, encode
from schemas.messages import DeadLetter, Frame, Verdict
from schemas.topics import FRAMES, VERDICTS
from tests.messages import make_dead_letter


def _frame(frame_id: str) -> Frame:
    return Frame(
        frame_id=frame_id,
        gate_id="gate-1",
        exam_id="exam-1",
        claimed_student_id="s1",
        captured_at=time.time(),
        published_at=time.time(),
        source="test",
        image=b"\xff\xd8 half a jpeg",
    )


def _letter(frame: Frame, topic: str = FRAMES.name) -> bytes:
    return encode(
        make_dead_letter(
            source_topic=topic,
            key=b"gate-1",
            detail="JPEG ends before its end-of-image marker",
            failed_at=time.time(),
            payload=encode(frame),
            frame_id=frame.frame_id,
        )
    )


def _verdict(frame: Frame) -> bytes:
    return encode(
        Verdict(
            frame_id=frame.frame_id,
            gate_id=frame.gate_id,
            exam_id=frame.exam_id,
            claimed_student_id=frame.claimed_student_id,
            captured_at=frame.captured_at,
            decided_at=time.time(),
            decision="accept",
            reason="match",
            model_name="m",
            model_version="1",
        )
    )


def test_a_dead_letter_shows_until_its_verdict_replaces_it() -> None:
    hub = VerdictHub(KafkaSettings(), keep_per_gate=10, history_s=3600)
    frame = _frame("f1")
    hub._add_letter(_letter(frame))
    hub._add_letter(_letter(frame))  # a repeated delivery
    (shown,) = hub.recent("exam-1", "gate-1")
    assert (shown["decision"], shown["reason"], shown["student_id"]) == (
        "unprocessed",
        "truncated_image",
        "s1",
    )
    assert hub.verdict("f1") is None  # nothing a proctor could give feedback on
    hub._add(_verdict(frame))  # replayed after a fix: the verdict takes the letter's place
    (shown,) = hub.recent("exam-1", "gate-1")
    assert shown["decision"] == "accept" and hub.verdict("f1") is not None
    hub._add_letter(_letter(frame))  # a late letter does not hide the verdict
    assert [v["decision"] for v in hub.recent("exam-1", "gate-1")] == ["accept"]


def test_letters_that_name_no_check_in_are_not_shown() -> None:
    frame = _frame("f2")
    assert letter_view(decode(_letter(frame, VERDICTS.name), DeadLetter)) is None
    broken = make_dead_letter(reason="undecodable", payload=b"not msgpack")
    assert letter_view(broken) is None
