"""The librdkafka clients of the hot path (facegate/rdkafka_clients.py) against the real broker."""

from __future__ import annotations

import time
import uuid

import pytest

from facegate.errors import FacegateError
from facegate.kafka_clients import make_producer
from facegate.rdkafka_clients import RdConsumer, RdProducer, Record
from facegate.settings import KafkaSettings, load_settings
from facegate.stack import LocalStack
from producers.publisher import FramePublisher
from producers.settings import ProducerSettings
from schemas.topics import FRAMES
from tests.topic_reader import create_scratch_topic

pytestmark = pytest.mark.integration


def _poll_until(consumer: RdConsumer, count: int, timeout_s: float = 30) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200, max_records=count - len(records)).values():
            records.extend(batch)
    return records


def test_a_gate_lands_on_the_partition_kafka_python_would_choose(local_stack: LocalStack) -> None:
    # Frames are produced by the publisher (librdkafka) and replayed by kafka-python, faces by
    # Faust (aiokafka): a gate's records must share one partition whichever library sent them.
    kafka = load_settings(KafkaSettings)
    topic = create_scratch_topic("partitioner", kafka, FRAMES.partitions)
    ours, theirs = RdProducer(kafka), make_producer(kafka)
    try:
        keys = [f"gate-{n}".encode() for n in range(24)]
        landed = [ours.send(topic, b"x", key).get(30).partition for key in keys]
        expected = [theirs.send(topic, b"x", key=key).get(30).partition for key in keys]
    finally:
        ours.close()
        theirs.close()
    assert landed == expected
    assert len(set(landed)) > 1, "24 gates all on one partition: the keys were not hashed"


def test_records_go_round_and_a_commit_holds_for_the_next_member(local_stack: LocalStack) -> None:
    kafka = load_settings(KafkaSettings)
    topic = create_scratch_topic("rd-round", kafka)
    group = f"rd-group-{uuid.uuid4().hex[:8]}"
    producer = RdProducer(kafka)
    for n in range(6):
        meta = producer.send(topic, str(n).encode(), key=b"gate-a").get(30)
        assert (meta.topic, meta.partition, meta.offset) == (topic, 0, n)
    first = RdConsumer(kafka, group, [topic])
    try:
        first.commit()  # nothing polled yet: not an error
        records = _poll_until(first, 4)
        assert [(r.key, r.value, r.offset) for r in records] == [
            (b"gate-a", str(n).encode(), n) for n in range(4)
        ]
        first.commit()
    finally:
        first.close()
    # The next member of the group starts after what the first committed, not before.
    second = RdConsumer(kafka, group, [topic])
    try:
        rest = _poll_until(second, 2)
        assert [r.value for r in rest] == [b"4", b"5"]
        assert not second.poll(timeout_ms=500), "records beyond the six produced"
    finally:
        second.close()
        producer.close()


def test_the_publisher_says_when_kafka_cannot_be_reached() -> None:
    dead = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # discard port: nothing listens
    started = time.monotonic()
    with pytest.raises(FacegateError, match=r"cannot reach Kafka at 127\.0\.0\.1:9"):
        FramePublisher(ProducerSettings(kafka=dead, send_timeout_s=2))
    assert time.monotonic() - started < 10


def test_poll_returns_what_has_arrived_without_waiting_for_a_full_batch(
    local_stack: LocalStack,
) -> None:
    # kafka-python's poll answers as soon as a record is there; the worker asks for up to a
    # batch with a long timeout and must not sit out the timeout with one face in hand.
    kafka = load_settings(KafkaSettings)
    topic = create_scratch_topic("rd-poll", kafka)
    consumer = RdConsumer(kafka, f"rd-poll-{uuid.uuid4().hex[:8]}", [topic])
    producer = RdProducer(kafka)
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            assert not consumer.poll(timeout_ms=200), "a record on a topic nobody wrote to"
        assert consumer.assignment(), "the consumer joined no group in 30 s"
        producer.send(topic, b"one", key=b"gate-a").get(30)
        started = time.monotonic()
        polled = consumer.poll(timeout_ms=5000, max_records=8)
        waited_s = time.monotonic() - started
    finally:
        consumer.close()
        producer.close()
    assert [r.value for batch in polled.values() for r in batch] == [b"one"]
    assert waited_s < 1.0, f"poll held one record for {waited_s:.2f} s"
