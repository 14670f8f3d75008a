"""The one Kafka client factory: every producer, consumer and admin client is made here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)

from facegate.settings import KafkaSettings
from schemas.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python options of every FaceGate producer."""
    return {
        **settings.common_config(),
        "acks": "all",
        "linger_ms": 0,
        "retries": 5,
        "enable_idempotence": settings.idempotent_producer,
        "max_request_size": 16 * 1024 * 1024,
    }


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer that waits for the broker's acknowledgement of every record."""
    return KafkaProducer(**{**producer_config(settings), **overrides})


def make_consumer(
    settings: KafkaSettings, group_id: str | None, topics: Iterable[str] = (), **overrides: Any
) -> KafkaConsumer:
    """A consumer in ``group_id`` that commits only what the caller says it has processed."""
    config: dict[str, Any] = {
        **settings.common_config(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    topic_list = list(topics)
    if topic_list:
        consumer.subscribe(topic_list)
    return consumer


def make_control_consumer(
    settings: KafkaSettings, group_id: str | None, topics: Iterable[str] = (), **overrides: Any
) -> KafkaConsumer:
    """A consumer of a low-rate control topic, which lets the broker hold an idle fetch longer.

    Services follow enrolments, model events, drift reports and feedback beside their hot path;
    polling those every ``fetch_max_wait_ms`` would spend a share of the node on empty fetches.
    """
    overrides.setdefault("fetch_max_wait_ms", settings.control_fetch_max_wait_ms)
    return make_consumer(settings, group_id, topics, **overrides)


# The group moved on (a rebalance gave the partitions to another member, or a restarted broker
# forgot this member): the records are redelivered to their new owner, not lost.
GROUP_MOVED_ON = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)


class Committer(Protocol):
    """What :func:`commit_processed` needs of a consumer."""

    def commit(self) -> Any: ...


def commit_processed(
    consumer: Committer,
    stopping: threading.Event,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = 5.0,
) -> bool:
    """Commit the positions of everything polled so far, waiting out a broker outage.

    kafka-python's ``commit()`` raises as soon as it cannot reach the coordinator (a broker
    restart, say); a service that let that escape would die with its batch already answered.
    Retriable errors are retried with exponential backoff until the commit lands (True).  False
    when the group moved on (the partitions' new owner gets the records again; consumers
    de-duplicate by frame id) or ``stopping`` was set first (uncommitted records are redelivered
    after the restart).  Anything else is raised.
    """
    backoff_s = first_backoff_s
    while True:
        try:
            consumer.commit()
            return True
        except GROUP_MOVED_ON as error:
            log.warning("offsets not committed, the group moved on (redelivered): %s", error)
            return False
        except KafkaError as error:
            if not error.retriable:
                raise
            log.warning("offset commit failed (%s); retrying in %.1f s", error, backoff_s)
        if stopping.wait(backoff_s):
            log.warning("stopping before the offsets were committed: they are redelivered")
            return False
        backoff_s = min(backoff_s * 2, max_backoff_s)


# One wait for acknowledgements before checking whether the service is stopping; the producer
# itself keeps retrying meanwhile.
ACK_WAIT_S = 5.0


class Sender(Protocol):
    """What :func:`send_acknowledged` needs of a producer."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...


def send_acknowledged(
    producer: Sender,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes]],
    stopping: threading.Event,
    wait_s: float = ACK_WAIT_S,
) -> bool:
    """Send ``(key, value)`` records and wait until the broker acknowledged every one.

    However long the broker is away: a record whose delivery failed with a retriable error (its
    delivery timeout ran out, say) is sent again, so a consumer that commits only after this
    returns True loses nothing and keeps running through the outage.  False when ``stopping``
    was set before everything was acknowledged (commit nothing: the input is redelivered).  A
    record the broker refuses for good (too large, not authorised) raises.
    """
    pending = [(record, producer.send(topic, key=record[0], value=record[1])) for record in records]
    while pending:
        waiting = []
        for record, future in pending:
            try:
                future.get(timeout=wait_s)
            except KafkaError as error:
                if future.is_done:
                    if not error.retriable:
                        raise
                    log.warning("record to %s not delivered (%s); sending it again", topic, error)
                    future = producer.send(topic, key=record[0], value=record[1])
                waiting.append((record, future))
        if waiting and stopping.is_set():
            log.warning("stopping with %d records to %s unacknowledged", len(waiting), topic)
            return False
        pending = waiting
    return True


def read_whole_topic(
    settings: KafkaSettings, topic: str, idle_s: float = 2.0, timeout_s: float = 30.0
) -> list[bytes]:
    """Every record value of ``topic`` from its beginning, read without a consumer group (no
    service's offsets move) until nothing new has arrived for ``idle_s``.

    Not until the end offsets: tansu reports the first offset of the newest batch plus one
    (ENVIRONMENT.md), so a reader stopping there misses the rest of a batch."""
    consumer = make_control_consumer(settings, group_id=None)
    values: list[bytes] = []
    try:
        assigned = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not assigned:
            return values
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout_s
        last_seen = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_seen < idle_s:
            for records in consumer.poll(timeout_ms=300).values():
                last_seen = time.monotonic()
                values.extend(record.value for record in records)
    finally:
        consumer.close()
    return values


def make_admin(settings: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    """An admin client for topic management."""
    return KafkaAdminClient(**{**settings.common_config(), **overrides})


def ensure_topics(
    settings: KafkaSettings, topics: Iterable[Topic] = ALL_TOPICS, replication_factor: int = 1
) -> list[str]:
    """Create every topic that does not exist yet with its partition count; return those created.

    Topics are always created explicitly: brokers that auto-create topics pick their own
    partition count (tansu uses 4), which would break the keyed ordering per gate.
    """
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        for topic in topics:
            if topic.name in existing:
                continue
            try:
                configs = {"retention.ms": str(topic.retention_ms)} if topic.retention_ms else None
                admin.create_topics(
                    [NewTopic(topic.name, topic.partitions, replication_factor, None, configs)],
                    timeout_ms=10_000,
                )
                created.append(topic.name)
                log.info("created topic %s with %d partitions", topic.name, topic.partitions)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
