"""A record that cannot be processed, made into a dead letter: the record whole, with the reason.

Services send the letters of a batch with ``facegate.kafka_clients.send_acknowledged`` to
``frames.dlq`` before committing the batch's offsets, so a broker outage delays them and loses
none.
"""

from __future__ import annotations

import logging
from typing import Protocol

from facegate.metrics import DEAD_LETTERS
from schemas.codec import SchemaError, encode
from schemas.messages import DeadLetter, now

log = logging.getLogger(__name__)


class SourceRecord(Protocol):
    """What a dead letter keeps of its record: kafka-python's ``ConsumerRecord`` or the
    librdkafka consumer's ``Record`` (:mod:`facegate.rdkafka_clients`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...


def dead_letter_record(
    record: SourceRecord, error: SchemaError, service: str, frame_id: str | None = None
) -> tuple[bytes | None, bytes]:
    """Log and count ``record`` as a dead letter; return the ``(key, value)`` to send to
    ``frames.dlq``: the record whole, with the reason (for senders that batch their sends),
    and the frame it answers when the record could be read that far."""
    log.warning(
        "dead letter from %s[%d]@%d: %s", record.topic, record.partition, record.offset, error
    )
    DEAD_LETTERS.labels(service, error.reason).inc()
    letter = DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        reason=error.reason,
        detail=error.detail,
        service=service,
        failed_at=now(),
        payload=record.value,
        frame_id=frame_id,
    )
    return record.key, encode(letter)
