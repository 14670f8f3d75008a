"""Valid messages for tests that need one but are not about most of its fields."""

from __future__ import annotations

from schemas.messages import DeadLetter, Verdict, new_id, now


def make_verdict(**changes: object) -> Verdict:
    """A verdict with every field set (an accepted check-in, a new frame id); ``changes``
    override any field."""
    fields: dict[str, object] = {
        "frame_id": new_id(),
        "gate_id": "g1",
        "exam_id": "e1",
        "claimed_student_id": "s1",
        "captured_at": 100.0,
        "decided_at": 100.1,
        "decision": "accept",
        "reason": "match",
        "score": 0.8,
        "threshold": 0.5,
        "model_name": "m",
        "model_version": "1",
    }
    fields.update(changes)
    return Verdict(**fields)  # type: ignore[arg-type]


def make_dead_letter(**changes: object) -> DeadLetter:
    """The dead letter of a truncated frame written now, without a frame id; ``changes``
    override any field."""
    fields: dict[str, object] = {
        "source_topic": "frames",
        "partition": 0,
        "offset": 0,
        "key": None,
        "reason": "truncated_image",
        "detail": "",
        "service": "stream-processor",
        "failed_at": now(),
        "payload": b"x",
        "frame_id": None,
    }
    fields.update(changes)
    return DeadLetter(**fields)  # type: ignore[arg-type]
