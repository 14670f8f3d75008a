"""Hot-path Kafka clients on librdkafka (confluent-kafka), with kafka-python's calling surface.

Every frame crosses the broker twice on its way to a verdict, and most of a record's client-side
cost in kafka-python is Python: measured on tansu (2026-12-04, a 38 KB record every 20 ms, both
ends in one process), one hop cost 2.85 ms of CPU and 4.0 ms (p50) from send to receipt with
kafka-python at both ends, 0.54 ms and 2.4 ms with librdkafka, whose network threads also run
without the GIL the models need.  The records a verdict depends on go through these clients: the
camera publisher's producer, the worker's ``faces`` consumer and verdict producer, and the
readers of verdicts as they happen (the pipeline's ``VerdictCollector``, the console's live
feed).  The stream processor keeps Faust's aiokafka; control topics and admin stay on
kafka-python (:mod:`facegate.kafka_clients`).

The classes answer the calls the services make of kafka-python (``send(...).get()``, ``poll``
returning records per partition, ``commit``) and raise kafka-python's exception classes, so the
delivery and commit loops of :mod:`facegate.kafka_clients` (``send_acknowledged``,
``commit_processed``) keep one meaning for both libraries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import kafka.errors
from kafka import TopicPartition
from kafka.producer.future import RecordMetadata

from facegate.settings import KafkaSettings

log = logging.getLogger(__name__)

# librdkafka's own errors (negative codes) that pass when the broker comes back.
_TRANSIENT = {
    confluent_kafka.KafkaError._TRANSPORT,
    confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
    confluent_kafka.KafkaError._MSG_TIMED_OUT,
    confluent_kafka.KafkaError._TIMED_OUT,
    confluent_kafka.KafkaError._TIMED_OUT_QUEUE,
    confluent_kafka.KafkaError._WAIT_COORD,
    confluent_kafka.KafkaError._RESOLVE,
    confluent_kafka.KafkaError._QUEUE_FULL,
}
# The member lost its partitions (a rebalance it slept through): its commit cannot land.
_GROUP_LOST = {confluent_kafka.KafkaError._ASSIGNMENT_LOST, confluent_kafka.KafkaError._STATE}


def kafka_python_error(error: confluent_kafka.KafkaError) -> kafka.errors.KafkaError:
    """The kafka-python exception meaning what librdkafka's ``error`` means.

    Broker error codes are the protocol's, shared by both libraries; librdkafka's own are
    negative: the transient ones become a retriable connection error, a lost assignment the
    failed commit it causes, anything else a plain (not retriable) ``KafkaError``.
    """
    code = error.code()
    text = f"{error.name()}: {error.str()}"
    if code > 0:
        return kafka.errors.for_code(code)(text)
    if code in _TRANSIENT or error.retriable():
        return kafka.errors.KafkaConnectionError(text)
    if code in _GROUP_LOST:
        return kafka.errors.CommitFailedError(text)
    return kafka.errors.KafkaError(text)


def common_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka's names for the connection options of :meth:`KafkaSettings.common_config`."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "client.id": settings.client_id,
        "socket.timeout.ms": settings.request_timeout_ms,
        # A record is sent when it is ready, not held back for a fuller packet.
        "socket.nagle.disable": True,
        # librdkafka's log lines go through Python's logging, not straight to stderr.
        "logger": logging.getLogger("facegate.librdkafka"),
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        if settings.sasl_password:
            config["sasl.password"] = settings.sasl_password.get_secret_value()
    for ours, theirs in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        value = getattr(settings, ours)
        if value:
            config[theirs] = value
    return config


@dataclass(frozen=True)
class Record:
    """A consumed record: the fields services read of kafka-python's ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class DeliveryFuture:
    """The broker's answer to one produced record, as kafka-python's ``FutureRecordMetadata``."""

    def __init__(self, producer: confluent_kafka.Producer) -> None:
        self._producer = producer
        self._done = threading.Event()
        self._metadata: RecordMetadata | None = None
        self._error: kafka.errors.KafkaError | None = None

    def delivered(
        self, error: confluent_kafka.KafkaError | None, message: confluent_kafka.Message
    ) -> None:
        """librdkafka's delivery report for the record (called from ``poll``)."""
        if error is not None:
            self._error = kafka_python_error(error)
        else:
            topic = message.topic() or ""
            partition = message.partition() or 0
            offset = message.offset()
            self._metadata = RecordMetadata(
                topic,
                partition,
                TopicPartition(topic, partition),
                # Delivered without an offset (an idempotent producer's retry the broker called a
                # duplicate): -1, as kafka-python reports it.
                -1 if offset is None or offset < 0 else offset,
                message.timestamp()[1],
                None,
                len(message.key() or b""),
                len(message.value() or b""),
                -1,
            )
        self._done.set()

    @property
    def is_done(self) -> bool:
        return self._done.is_set()

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Where the record landed; kafka-python's exception if it failed or ``timeout`` ran out.

        Delivery reports are handed out by ``poll``: the waiting thread serves them itself.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise kafka.errors.KafkaTimeoutError(f"no acknowledgement within {timeout} s")
            self._producer.poll(left)
        if self._error is not None:
            raise self._error
        assert self._metadata is not None
        return self._metadata


class RdProducer:
    """A producer that waits for every replica's acknowledgement and sends without lingering."""

    def __init__(self, settings: KafkaSettings) -> None:
        config = {
            **common_config(settings),
            "acks": "all",
            "linger.ms": 0,
            "enable.idempotence": settings.idempotent_producer,
            "message.max.bytes": 16 * 1024 * 1024,
            # The Java client's partitioner, which kafka-python and aiokafka use too: a gate's
            # records land on one partition whichever library sent them (librdkafka's own
            # default hashes keys with CRC32).
            "partitioner": "murmur2_random",
            # As kafka-python's default: a record not delivered in two minutes fails retriably
            # and ``send_acknowledged`` sends it again.
            "message.timeout.ms": 120_000,
        }
        self._producer = confluent_kafka.Producer(config)

    def check_reachable(self, timeout_s: float) -> None:
        """Raise kafka-python's ``KafkaConnectionError`` unless the cluster answers in time.

        librdkafka connects in the background; this is the early, clear failure kafka-python
        gives at construction."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except confluent_kafka.KafkaException as error:
            raise kafka.errors.KafkaConnectionError(str(error.args[0])) from None

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> DeliveryFuture:
        """Queue one record (to ``partition``, or the one its key hashes to)."""
        future = DeliveryFuture(self._producer)
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    on_delivery=future.delivered,
                    # librdkafka's "unassigned": the partitioner picks from the key.
                    partition=-1 if partition is None else partition,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.1)
            except confluent_kafka.KafkaException as error:
                raise kafka_python_error(error.args[0]) from None
        self._producer.poll(0)
        return future

    def flush(self, timeout: float | None = None) -> None:
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise kafka.errors.KafkaTimeoutError(f"{left} records unacknowledged after {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        """Flush what is in flight (librdkafka frees the handle when it is collected)."""
        left = self._producer.flush(30 if timeout is None else timeout)
        if left:
            log.warning("closing a producer with %d records unacknowledged", left)


class RdConsumer:
    """A consumer in a group that commits only what the caller says it has processed."""

    def __init__(self, settings: KafkaSettings, group_id: str, topics: Iterable[str] = ()) -> None:
        self.group_id = group_id  # read by the lag reporter
        self._consumer = confluent_kafka.Consumer(
            {
                **common_config(settings),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                "fetch.wait.max.ms": settings.fetch_max_wait_ms,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                "fetch.max.bytes": 64 * 1024 * 1024,
                # Records fetched ahead of the caller: enough for a few batches, not a backlog.
                "queued.max.messages.kbytes": 16 * 1024,
            }
        )
        topic_list = list(topics)
        if topic_list:
            self._consumer.subscribe(topic_list)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read ``partitions`` from their beginning, outside any group's assignment."""
        self._consumer.assign(
            [
                confluent_kafka.TopicPartition(
                    tp.topic, tp.partition, confluent_kafka.OFFSET_BEGINNING
                )
                for tp in partitions
            ]
        )

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Up to ``max_records`` records (500 if not given), grouped by partition, waiting at
        most ``timeout_ms`` for the first and not at all for the others, as kafka-python does.

        (librdkafka's ``consume(n, timeout)`` would wait for ``n`` records or the whole timeout.)
        """
        first = self._consumer.poll(timeout_ms / 1000)
        if first is None:
            return {}
        messages = [first]
        limit = max_records or 500
        if limit > 1:
            messages += self._consumer.consume(limit - 1, 0)
        polled: dict[TopicPartition, list[Record]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise kafka_python_error(error)
                log.warning("consumer: %s", error.str())
                continue
            topic, partition = message.topic() or "", message.partition() or 0
            polled.setdefault(TopicPartition(topic, partition), []).append(
                Record(
                    topic,
                    partition,
                    message.offset() or 0,
                    message.key(),
                    message.value() or b"",
                )
            )
        return polled

    def commit(self) -> None:
        """Commit the positions of everything polled so far; kafka-python's exception if the
        commit fails.  Nothing polled since the last commit is not an error."""
        try:
            self._consumer.commit(asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
            if error.code() == confluent_kafka.KafkaError._NO_OFFSET:
                return
            raise kafka_python_error(error) from None

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end offset as the last fetch reported it (None before one)."""
        _, high = self._consumer.get_watermark_offsets(
            confluent_kafka.TopicPartition(partition.topic, partition.partition), cached=True
        )
        return high if high >= 0 else None

    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None:
        """The offset of the next record this consumer will return (None while unknown)."""
        (found,) = self._consumer.position(
            [confluent_kafka.TopicPartition(partition.topic, partition.partition)]
        )
        return found.offset if found.offset >= 0 else None

    def close(self) -> None:
        """Leave the group (its partitions go to the other members at once)."""
        self._consumer.close()
