"""The feedback consumer on the real broker, Redis and object store: an unreadable record goes
whole to the dead-letter topic with its reason, and only then does the group's offset move past
it (it used to be logged and skipped); so does a feedback that Redis refuses for its data (it
used to stop the consumer, and every restart stopped on it again)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from console.actions import make_feedback
from console.feedback_consumer import SERVICE, FeedbackSink, counted_key, run_consumer
from console.settings import ConsoleSettings
from facegate.kafka_clients import make_consumer, make_producer
from facegate.object_store import make_object_store
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings
from facegate.stack import LocalStack
from facegate.storage_keys import evidence_key
from schemas.codec import decode, encode
from schemas.messages import DeadLetter, Feedback, new_id
from schemas.topics import FRAMES_DLQ
from tests.messages import make_verdict
from tests.topic_reader import create_scratch_topic, read_topic

pytestmark = pytest.mark.integration
GARBAGE = b"\x00 not a feedback message"


def _letter(key: bytes, timeout_s: float) -> DeadLetter | None:
    def ours(record: ConsumerRecord) -> DeadLetter | None:
        letter = decode(record.value, DeadLetter)
        return letter if letter.service == SERVICE and letter.key == key else None

    found = read_topic(FRAMES_DLQ.name, FRAMES_DLQ.partitions, ours, bool, timeout_s)
    return found[0] if found else None


def _committed(group: str, partition: TopicPartition) -> int | None:
    consumer = make_consumer(KafkaSettings(), group)
    try:
        offset: int | None = consumer.committed(partition)
        return offset
    finally:
        consumer.close()


def test_unreadable_feedback_is_dead_lettered_before_its_offset_moves_on(
    local_stack: LocalStack,
) -> None:
    # A topic of its own, so that the consumer reads nothing but this test's record.
    topic = create_scratch_topic("feedback-letters")
    group = f"{topic}-group"
    settings = ConsoleSettings()
    producer = make_producer(KafkaSettings())
    key = f"garbage-{uuid.uuid4().hex[:6]}".encode()
    offset = producer.send(topic, key=key, value=GARBAGE).get(timeout=30).offset
    consumer = make_consumer(KafkaSettings(), group, [topic])
    sink = FeedbackSink(
        make_redis(settings.redis), make_object_store(settings.s3), settings.s3.bucket_feedback
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=run_consumer, args=(consumer, sink, stop, producer), daemon=True
    )
    thread.start()
    partition = TopicPartition(topic, 0)
    try:
        letter = _letter(key, timeout_s=30)
        deadline = time.monotonic() + 30
        while (_committed(group, partition) or 0) <= offset and time.monotonic() < deadline:
            time.sleep(0.2)
        committed = _committed(group, partition)
    finally:
        stop.set()
        thread.join(timeout=30)
        consumer.close()
        producer.close()
    assert not thread.is_alive(), "the consumer did not stop"
    assert letter is not None, "no dead letter for the unreadable feedback record"
    assert letter.source_topic == topic and letter.offset == offset
    assert letter.reason and letter.payload == GARBAGE
    assert committed == offset + 1


def test_feedback_redis_refuses_is_dead_lettered_and_the_consumer_goes_on(
    local_stack: LocalStack,
) -> None:
    topic = create_scratch_topic("feedback-refused")
    settings = ConsoleSettings()
    client = make_redis(settings.redis)
    verdict = make_verdict(exam_id=f"exam-{new_id()[:8]}", decision="reject", reason="mismatch")
    # Another tool wrote a string where the console keeps the frame's evidence hash: every
    # read of it fails with WRONGTYPE, which no wait cures.
    client.set(evidence_key(verdict.frame_id), "not a hash", ex=600)
    refused = make_feedback(verdict, "accept_manual", "proctor1")
    after = make_feedback(verdict.model_copy(update={"frame_id": new_id()}), "confirm", "p1")
    producer = make_producer(KafkaSettings())
    for feedback in (refused, after):
        producer.send(topic, key=feedback.frame_id.encode(), value=encode(feedback)).get(30)
    consumer = make_consumer(KafkaSettings(), f"{topic}-group", [topic])
    sink = FeedbackSink(client, make_object_store(settings.s3), settings.s3.bucket_feedback)
    stop = threading.Event()
    thread = threading.Thread(
        target=run_consumer, args=(consumer, sink, stop, producer), daemon=True
    )
    thread.start()
    try:
        letter = _letter(refused.frame_id.encode(), timeout_s=30)
        deadline = time.monotonic() + 30
        while not client.exists(counted_key(after)) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=30)
        consumer.close()
        producer.close()
        client.delete(evidence_key(verdict.frame_id))
    assert alive, "the consumer stopped on the refused feedback"
    assert letter is not None, "no dead letter for the refused feedback"
    assert letter.reason == "feedback_not_stored" and "WRONGTYPE" in letter.detail
    assert letter.frame_id == refused.frame_id
    assert decode(letter.payload or b"", Feedback) == refused
    assert client.exists(counted_key(after)), "the feedback after it was not handled"
    client.close()
