"""From a face and its match scores to the recommendation a proctor sees.

The policy, in order (a verdict is a recommendation; the proctor always decides):
0. the frame waited too long to be analysed -> review, ``stale`` (ask for a new picture);
1. no face in the frame -> review, ``no_face`` (ask the student to face the camera);
2. several faces and no dominant one -> review, ``several_faces``;
3. no claimed identity (no card read) -> review, ``no_claim`` (1:N candidates still shown);
4. claimed student not enrolled under the serving model -> review, ``unknown_student``;
5. the face fails the quality checks -> review, ``low_quality`` (score still reported);
6. best 1:1 similarity >= the operating threshold -> accept, ``match``; else reject, ``mismatch``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.messages import Decision, VerdictReason


@dataclass(frozen=True)
class Outcome:
    """The decision and its reason."""

    decision: Decision
    reason: VerdictReason


def decide(
    face_outcome: str,
    claimed_student_id: str | None,
    enrolled: bool,
    quality_ok: bool,
    score: float | None,
    threshold: float,
) -> Outcome:
    """Apply the policy above."""
    if face_outcome == "stale":
        return Outcome("review", "stale")
    if face_outcome == "no_face":
        return Outcome("review", "no_face")
    if face_outcome == "several_faces":
        return Outcome("review", "several_faces")
    if not claimed_student_id:
        return Outcome("review", "no_claim")
    if not enrolled or score is None:
        return Outcome("review", "unknown_student")
    if not quality_ok:
        return Outcome("review", "low_quality")
    if score >= threshold:
        return Outcome("accept", "match")
    return Outcome("reject", "mismatch")
