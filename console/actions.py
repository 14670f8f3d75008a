"""A proctor's decision on a check-in: the feedback message, its evidence, the audit log.

The feedback message says who decided what on which verdict and model version; it carries no
image.  The aligned face the feedback consumer needs is the verdict's thumbnail, which the
console keeps in Redis beside the decision (``evidence_key``) for ``evidence_ttl_s``.
"""

from __future__ import annotations

import json
from typing import Literal, get_args

import redis
from kafka import KafkaProducer

from facegate.errors import FacegateError
from facegate.privacy.audit import AUDIT_STREAM, AuditEntry, read_audit  # append-only
from facegate.storage_keys import evidence_key
from inference_worker.sealed_objects import THUMBNAIL_FIELD, seal_field
from inference_worker.template_crypto import TemplateCipher, default_cipher
from schemas.codec import encode
from schemas.messages import Feedback, Verdict, new_id, now
from schemas.topics import FEEDBACK

Action = Literal["confirm", "accept_manual", "impostor", "retry"]
ACTIONS: tuple[Action, ...] = get_args(Action)
ACTION_LABELS: dict[str, str] = {
    "confirm": "Confirm",
    "accept_manual": "Accept after ID check",
    "impostor": "Impostor",
    "retry": "Ask for retry",
}


def make_feedback(verdict: Verdict, action: str, proctor: str, note: str = "") -> Feedback:
    """The feedback message for a proctor's action on a verdict."""
    if action not in ACTIONS:
        raise FacegateError(f"unknown action {action!r}")
    return Feedback(
        feedback_id=new_id(),
        frame_id=verdict.frame_id,
        exam_id=verdict.exam_id,
        gate_id=verdict.gate_id,
        student_id=verdict.claimed_student_id,
        proctor=proctor,
        action=action,
        verdict_decision=verdict.decision,
        model_version=verdict.model_version,
        decided_at=now(),
        note=note[:500],
    )


class FeedbackRecorder:
    """Publishes proctors' decisions and writes each to the audit log."""

    def __init__(
        self,
        producer: KafkaProducer,
        client: redis.Redis[bytes],
        ttl_s: int,
        cipher: TemplateCipher | None = None,
    ) -> None:
        self.producer = producer
        self.client = client
        self.ttl_s = ttl_s
        self.cipher = cipher or default_cipher()

    def record(self, verdict: Verdict, feedback: Feedback) -> None:
        """Store the evidence, publish the feedback (waiting for the broker), then audit it."""
        evidence: dict[str | bytes, bytes | float | int | str] = {
            "captured_at": str(verdict.captured_at),
            "model_name": verdict.model_name,
            "score": "" if verdict.score is None else str(verdict.score),
            # Sealed with the gallery key (sealed_objects.py) for its days in Redis.
            THUMBNAIL_FIELD: seal_field(
                evidence_key(verdict.frame_id),
                THUMBNAIL_FIELD,
                verdict.thumbnail or b"",
                self.cipher,
            ),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(evidence_key(verdict.frame_id), mapping=evidence)
        pipe.expire(evidence_key(verdict.frame_id), self.ttl_s)
        pipe.execute()
        self.producer.send(
            FEEDBACK.name, key=feedback.exam_id.encode(), value=encode(feedback)
        ).get(timeout=10)
        self.client.xadd(AUDIT_STREAM, {"entry": json.dumps(feedback.model_dump(mode="json"))})

    def audit(self, count: int = 200) -> list[AuditEntry]:
        """The latest audit entries of every kind, newest first."""
        return read_audit(self.client, count)
