"""The ``enrollments`` events that tell serving workers a student's templates changed.

Enrolment, unenrolment and ``facegate forget`` all announce a change the same way: one event
per gallery version, keyed by the student (so a student's events stay in order), each
acknowledged by the broker before the command reports success.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from kafka import KafkaProducer

from schemas.codec import encode
from schemas.messages import Enrollment, now
from schemas.topics import ENROLLMENTS

SEND_TIMEOUT_S = 30


def announce(
    producer: KafkaProducer,
    student_id: str,
    action: Literal["enrolled", "removed"],
    versions: Iterable[str],
    template_count: int = 0,
    by: str = "facegate",
) -> None:
    """Publish ``action`` for ``student_id`` under each of ``versions``; raises on a send the
    broker does not acknowledge within ``SEND_TIMEOUT_S``."""
    for version in versions:
        event = Enrollment(
            student_id=student_id,
            action=action,
            model_version=version,
            template_count=template_count,
            at=now(),
            by=by,
        )
        producer.send(ENROLLMENTS.name, key=student_id.encode(), value=encode(event)).get(
            SEND_TIMEOUT_S
        )
