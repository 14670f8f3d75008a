"""How a proctor's decision becomes a training sample: its label and its place in the dataset.

A partition is one day and one model version:
``feedback/date=YYYY-MM-DD/part-<model_version>/<feedback_id>.jpg`` with the sample's manifest
``<feedback_id>.json`` beside it (object stores cannot append, so each sample has its own; a
reader lists the partition).  The image is the verdict's thumbnail: the face aligned to the
serving model's template and JPEG-compressed, which is what the verdict carries.  The full
frame is not kept anywhere, so the exact crop the model saw cannot be recovered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from facegate.storage_keys import FEEDBACK_PREFIX
from schemas.messages import Feedback

# What each action says about the face: the student it is (or is not).
# - confirm / accept_manual: the face is the claimed student (a positive sample);
# - impostor: the face is NOT the claimed student (a negative pair for that student);
# - retry: nothing is known about the face: no sample.
LABEL_KIND = {"confirm": "genuine", "accept_manual": "genuine", "impostor": "impostor"}


@dataclass(frozen=True)
class Sample:
    """Where a feedback sample goes and what its manifest says."""

    image_key: str
    manifest_key: str
    manifest: dict[str, Any]


def partition(feedback: Feedback) -> str:
    """The dataset partition of a feedback: its UTC day and the model version judged."""
    day = time.strftime("%Y-%m-%d", time.gmtime(feedback.decided_at))
    safe_version = "".join(
        ch if ch.isalnum() or ch in "-_." else "_" for ch in feedback.model_version
    )
    return f"{FEEDBACK_PREFIX}date={day}/part-{safe_version}"


def is_false_reject(feedback: Feedback) -> bool:
    """The pipeline did not accept a student the proctor then accepted as who they claimed."""
    return feedback.verdict_decision != "accept" and feedback.action in ("confirm", "accept_manual")


def is_false_accept(feedback: Feedback) -> bool:
    """The pipeline accepted someone the proctor found to be an impostor."""
    return feedback.verdict_decision == "accept" and feedback.action == "impostor"


def sample_for(feedback: Feedback, evidence: dict[str, Any]) -> Sample | None:
    """The training sample of a feedback, or None when it says nothing about the face."""
    kind = LABEL_KIND.get(feedback.action)
    if kind is None or not feedback.student_id:
        return None
    base = f"{partition(feedback)}/{feedback.feedback_id}"
    manifest = {
        "feedback_id": feedback.feedback_id,
        "frame_id": feedback.frame_id,
        "exam_id": feedback.exam_id,
        "gate_id": feedback.gate_id,
        "student_id": feedback.student_id,
        "label": kind,
        "action": feedback.action,
        "verdict_decision": feedback.verdict_decision,
        "model_version": feedback.model_version,
        "proctor": feedback.proctor,
        "decided_at": feedback.decided_at,
        "image": f"{base}.jpg",
        "image_kind": "verdict thumbnail (aligned face crop, JPEG)",
        **evidence,
    }
    return Sample(f"{base}.jpg", f"{base}.json", manifest)
