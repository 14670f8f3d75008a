"""Sending a record that cannot be processed to the dead-letter topic, whole, with the reason."""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from facegate.metrics import DEAD_LETTERS
from schemas.codec import SchemaError, encode
from schemas.messages import DeadLetter, now
from schemas.topics import FRAMES_DLQ

log = logging.getLogger(__name__)


def dead_letter_record(
    record: ConsumerRecord, error: SchemaError, service: str
) -> tuple[bytes | None, bytes]:
    """Log and count ``record`` as a dead letter; return the ``(key, value)`` to send to
    ``frames.dlq``: the record whole, with the reason (for senders that batch their sends)."""
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
    )
    return record.key, encode(letter)


def send_dead_letter(
    producer: KafkaProducer, record: ConsumerRecord, error: SchemaError, service: str
) -> Any:
    """Send ``record`` to ``frames.dlq`` as :func:`dead_letter_record` makes it; return the
    send's future (wait on it before committing the record's offset)."""
    key, value = dead_letter_record(record, error, service)
    return producer.send(FRAMES_DLQ.name, key=key, value=value)
