"""``facegate feedback-consumer``: proctors' decisions into the dataset and the business metrics."""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import redis
from kafka import KafkaConsumer
from minio import Minio

from console.actions import evidence_key
from console.dataset import is_false_accept, is_false_reject, sample_for
from console.metrics import (
    CHECKIN_SECONDS,
    FALSE_ACCEPTS,
    FALSE_REJECTS,
    FEEDBACK_ACTIONS,
    RETRIES,
    RETRIES_PER_STUDENT,
    SAMPLES,
)
from schemas.codec import SchemaError, decode
from schemas.messages import Feedback

log = logging.getLogger(__name__)


def _state_key(feedback: Feedback) -> str:
    return f"facegate:feedback:student:{feedback.exam_id}:{feedback.student_id}"


class FeedbackSink:
    """Handles one feedback message: metrics, per-student state in Redis, the dataset sample."""

    def __init__(self, client: redis.Redis[bytes], store: Minio, bucket: str) -> None:
        self.client = client
        self.store = store
        self.bucket = bucket

    def handle(self, feedback: Feedback) -> str | None:
        """Process a feedback; return the object key of its sample, if it has one."""
        version = feedback.model_version
        FEEDBACK_ACTIONS.labels(feedback.action, feedback.verdict_decision, version).inc()
        if is_false_reject(feedback):
            FALSE_REJECTS.labels(version).inc()
        if is_false_accept(feedback):
            FALSE_ACCEPTS.labels(version).inc()
        raw = self.client.hgetall(evidence_key(feedback.frame_id))
        evidence = {k.decode(): v for k, v in raw.items()}
        self._track_student(feedback, evidence)
        thumbnail = evidence.pop("thumbnail", b"")
        meta: dict[str, Any] = {k: v.decode() for k, v in evidence.items()}
        sample = sample_for(feedback, meta)
        if sample is None:
            return None
        if not thumbnail:
            log.warning("no thumbnail for frame %s: no sample written", feedback.frame_id)
            return None
        # Keys are derived from the feedback id: a redelivery rewrites the same objects.
        self.store.put_object(
            self.bucket, sample.image_key, io.BytesIO(thumbnail), len(thumbnail), "image/jpeg"
        )
        body = json.dumps(sample.manifest, indent=1).encode()
        self.store.put_object(
            self.bucket, sample.manifest_key, io.BytesIO(body), len(body), "application/json"
        )
        SAMPLES.labels(sample.manifest["label"]).inc()
        return sample.image_key

    def _track_student(self, feedback: Feedback, evidence: dict[str, bytes]) -> None:
        if not feedback.student_id:
            return
        key = _state_key(feedback)
        captured = evidence.get("captured_at")
        if captured:
            self.client.hsetnx(key, "first_captured_at", captured)
        self.client.expire(key, 7 * 24 * 3600)
        if feedback.action == "retry":
            RETRIES.labels(feedback.model_version).inc()
            self.client.hincrby(key, "retries", 1)
            return
        state = self.client.hgetall(key)
        if state.get(b"done"):
            return  # a second decision on the same student: counted once
        self.client.hset(key, "done", "1")
        RETRIES_PER_STUDENT.observe(int(state.get(b"retries", b"0")))
        first = state.get(b"first_captured_at")
        if first:
            CHECKIN_SECONDS.observe(max(0.0, feedback.decided_at - float(first)))


def run_consumer(consumer: KafkaConsumer, sink: FeedbackSink, stop: threading.Event) -> None:
    """Consume until ``stop``; offsets are committed after each batch is stored."""
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=500)
        for records in batches.values():
            for record in records:
                try:
                    feedback = decode(record.value, Feedback)
                except SchemaError as exc:
                    log.warning("unreadable feedback skipped at offset %d: %s", record.offset, exc)
                    continue
                key = sink.handle(feedback)
                log.info("feedback %s %s -> %s", feedback.action, feedback.frame_id, key)
        if batches:
            consumer.commit()
