"""A valid verdict for tests that need one but are not about its fields."""

from __future__ import annotations

from schemas.messages import Verdict, new_id


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
