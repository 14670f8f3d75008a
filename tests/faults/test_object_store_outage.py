"""The object store down under the feedback consumer: the sample waits, it is not dropped.

``facegate feedback-consumer`` runs as its own process on the private stack.  A proctor's
decision arrives while SeaweedFS is stopped: the consumer must neither crash nor move its
consumer group's offset past the feedback; once the object store is back the sample is written
and only then is the offset committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from kafka import TopicPartition
from kafka.producer.future import RecordMetadata
from minio import Minio

from console.actions import make_feedback
from facegate.kafka_clients import make_consumer, make_producer
from facegate.object_store import make_object_store
from facegate.pipeline import service_env
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, ObjectStoreSettings, RedisSettings
from facegate.storage_keys import evidence_key
from schemas.codec import encode
from schemas.messages import Feedback, Verdict, new_id, now
from schemas.topics import FEEDBACK
from tests.faults.conftest import FACEGATE, FaultStack

pytestmark = [pytest.mark.faults]

CONSUMER = "feedback-consumer"


def _rejected_verdict(exam_id: str) -> Verdict:
    # A face-sized JPEG as the thumbnail: this test is about storage, not about faces.
    pixels = np.zeros((112, 112, 3), dtype=np.uint8)
    cv2.circle(pixels, (56, 56), 40, (200, 170, 150), -1)
    ok, jpeg = cv2.imencode(".jpg", pixels)
    assert ok
    captured = now()
    return Verdict(
        frame_id=new_id(),
        gate_id="g1",
        exam_id=exam_id,
        claimed_student_id="s-outage",
        captured_at=captured,
        decided_at=captured + 0.1,
        decision="reject",
        reason="mismatch",
        score=0.3,
        threshold=0.45,
        model_name="mobilefacenet",
        model_version="1",
        thumbnail=jpeg.tobytes(),
    )


def _send_feedback(exam_id: str) -> tuple[Feedback, RecordMetadata]:
    """What the console does for a proctor's "accept after ID check": the verdict's evidence
    in Redis, then the feedback on its topic (the broker's record metadata is returned)."""
    verdict = _rejected_verdict(exam_id)
    feedback = make_feedback(verdict, "accept_manual", "proctor1", note="ID card checked")
    client = make_redis(RedisSettings())
    client.hset(
        evidence_key(verdict.frame_id),
        mapping={
            "captured_at": str(verdict.captured_at),
            "model_name": verdict.model_name,
            "score": str(verdict.score),
            "thumbnail": verdict.thumbnail or b"",
        },
    )
    client.close()
    producer = make_producer(KafkaSettings())
    metadata = producer.send(FEEDBACK.name, key=exam_id.encode(), value=encode(feedback)).get(30)
    producer.close()
    return feedback, metadata


def _wait_for_sample(store: Minio, bucket: str, feedback: Feedback, timeout_s: float) -> str:
    """The sample's image key, once its image and then its manifest are both stored (the sink
    writes them one after the other)."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = {str(o.object_name) for o in store.list_objects(bucket, recursive=True)}
        images = [n for n in names if n.endswith(f"/{feedback.feedback_id}.jpg")]
        if images and images[0][:-4] + ".json" in names:
            return images[0]
        assert time.monotonic() < deadline, f"no sample for feedback {feedback.feedback_id}"
        time.sleep(0.5)


def _committed(group_id: str, partition: int) -> int | None:
    """The consumer group's committed offset (read without joining the group)."""
    consumer = make_consumer(KafkaSettings(), group_id)
    try:
        offset: int | None = consumer.committed(TopicPartition(FEEDBACK.name, partition))
        return offset
    finally:
        consumer.close()


@pytest.fixture
def feedback_consumer(fault_stack: FaultStack) -> Iterator[str]:
    """``facegate feedback-consumer`` as a process of the private stack; yields its group id."""
    group_id = f"facegate-feedback-{new_id()[:8]}"
    env = {**service_env(fault_stack.endpoints), "FACEGATE_CONSOLE_FEEDBACK_GROUP_ID": group_id}
    stack = fault_stack.stack
    stack.table.start(CONSUMER, [*FACEGATE, CONSUMER], env, stack.state_dir / CONSUMER)
    try:
        yield group_id
    finally:
        stack.table.stop(CONSUMER)


def test_feedback_during_object_store_outage_is_stored_after_it(
    fault_stack: FaultStack, feedback_consumer: str
) -> None:
    s3 = ObjectStoreSettings()
    store = make_object_store(s3)
    table = fault_stack.stack.table
    exam = f"exam-{new_id()[:8]}"  # one exam: every feedback of this test on one partition

    # The consumer is in its group and storing samples.
    warm, _ = _send_feedback(exam)
    _wait_for_sample(store, s3.bucket_feedback, warm, timeout_s=60)

    fault_stack.stop("s3")
    try:
        feedback, record = _send_feedback(exam)
        # Long enough for the store's client to give up several times over.
        time.sleep(8)
        assert table.running(CONSUMER) is not None, (
            f"the feedback consumer died without its object store; see {table.log_file(CONSUMER)}"
        )
        committed = _committed(feedback_consumer, record.partition)
        assert committed is not None and committed <= record.offset, (
            f"offset {committed} moved past the unstored feedback at {record.offset}"
        )
    finally:
        restart_s = fault_stack.restart()
    print(f"object store back after {restart_s:.1f} s")

    key = _wait_for_sample(store, s3.bucket_feedback, feedback, timeout_s=60)
    size = store.stat_object(s3.bucket_feedback, key[:-4] + ".json").size
    assert size is not None and size > 0
    deadline = time.monotonic() + 20
    while (_committed(feedback_consumer, record.partition) or 0) <= record.offset:
        assert time.monotonic() < deadline, "the offset never moved on after the sample was stored"
        time.sleep(0.5)
    assert table.running(CONSUMER) is not None
    log = table.log_file(CONSUMER).read_text(errors="replace")
    assert f"feedback {feedback.feedback_id} not stored yet" in log
    assert "Traceback" not in log
