"""Scratch topics for a test, and reading a topic back from its beginning without a group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord

from facegate.kafka_clients import make_admin, make_consumer
from facegate.settings import KafkaSettings

T = TypeVar("T")


def create_scratch_topic(
    prefix: str, kafka: KafkaSettings | None = None, partitions: int = 1
) -> str:
    """A new topic named ``prefix-<random>`` (one partition unless told), so a test reads only
    its records."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = make_admin(kafka or KafkaSettings())
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)], timeout_ms=10_000)
    finally:
        admin.close()
    return topic


def read_topic(
    topic: str,
    partitions: int,
    match: Callable[[ConsumerRecord], T | None],
    done: Callable[[list[T]], bool],
    timeout_s: float,
    **consumer_overrides: Any,
) -> list[T]:
    """What ``match`` returns for each record of ``topic`` (None: skip the record), read from
    the beginning until ``done`` says so or ``timeout_s`` runs out."""
    consumer = make_consumer(KafkaSettings(), None, **consumer_overrides)
    found: list[T] = []
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout_s
        while not done(found) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                for record in records:
                    item = match(record)
                    if item is not None:
                        found.append(item)
    finally:
        consumer.close()
    return found
