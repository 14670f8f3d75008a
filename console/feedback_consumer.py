"""``facegate feedback-consumer``: proctors' decisions into the dataset and the business metrics."""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import redis
import urllib3
from kafka import KafkaConsumer, KafkaProducer
from minio import Minio
from minio.error import S3Error, ServerError

from console.dataset import Sample, is_false_accept, is_false_reject, sample_for
from console.metrics import (
    CHECKIN_SECONDS,
    FALSE_ACCEPTS,
    FALSE_REJECTS,
    FEEDBACK_ACTIONS,
    RETRIES,
    RETRIES_PER_STUDENT,
    SAMPLES,
)
from facegate.dead_letters import dead_letter_record
from facegate.kafka_clients import commit_processed, send_acknowledged
from facegate.redis_client import waiting_may_cure
from facegate.storage_keys import evidence_key
from inference_worker.sealed_objects import EVIDENCE, THUMBNAIL_FIELD, open_field, put_sealed
from inference_worker.template_crypto import TemplateCipher, TemplateKeyError, default_cipher
from schemas.codec import SchemaError, decode
from schemas.messages import Feedback
from schemas.topics import FRAMES_DLQ

log = logging.getLogger(__name__)
SERVICE = "feedback-consumer"
# The dead-letter reason of a feedback whose sample could not be stored (see run_consumer).
FEEDBACK_NOT_STORED = "feedback_not_stored"

# Backoff while Redis or the object store is unreachable: first wait, longest wait.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
# Object-store answers that mean "not now" rather than "never".
TRANSIENT_S3_CODES = frozenset(
    {"ServiceUnavailable", "InternalError", "SlowDown", "RequestTimeout"}
)


# How long a student's check-in state and a feedback's "counted" mark are kept.
STATE_TTL_S = 7 * 24 * 3600


def _state_key(feedback: Feedback) -> str:
    return f"facegate:feedback:student:{feedback.exam_id}:{feedback.student_id}"


def counted_key(feedback: Feedback) -> str:
    """Set once a feedback's metrics are counted: a retry or a redelivery counts nothing again."""
    return f"facegate:feedback:counted:{feedback.feedback_id}"


class FeedbackSink:
    """Handles one feedback message: metrics, per-student state in Redis, the dataset sample."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        store: Minio,
        bucket: str,
        cipher: TemplateCipher | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.bucket = bucket
        # Read at start: a missing key that FACEGATE_GALLERY_REQUIRE_KEY demands stops the
        # service before it consumes anything, not on its first sample.
        self.cipher = cipher or default_cipher()

    def handle(self, feedback: Feedback) -> str | None:
        """Process a feedback; return the object key of its sample, if it has one.

        Safe to repeat (a retry after an outage, a redelivery): the sample's keys derive from
        the feedback id, and the metrics and per-student state are counted once per feedback
        id (``counted_key``), after the sample is stored."""
        key = evidence_key(feedback.frame_id)
        raw = self.client.hgetall(key)
        evidence = {k.decode(): v for k, v in raw.items()}
        sample = self._store_sample(feedback, key, evidence)
        if self.client.set(counted_key(feedback), b"1", nx=True, ex=STATE_TTL_S):
            self._count(feedback, evidence)
            if sample is not None:
                SAMPLES.labels(sample.manifest["label"]).inc()
        return sample.image_key if sample is not None else None

    def _store_sample(
        self, feedback: Feedback, key: str, evidence: dict[str, bytes]
    ) -> Sample | None:
        """The feedback's sample written to the object store, or None when it has none."""
        sealed = evidence.get(THUMBNAIL_FIELD, b"")
        meta: dict[str, Any] = {k: v.decode() for k, v in evidence.items() if k != THUMBNAIL_FIELD}
        sample = sample_for(feedback, meta)
        if sample is None:
            return None
        try:
            thumbnail = open_field(key, THUMBNAIL_FIELD, sealed, EVIDENCE, self.cipher)
        except TemplateKeyError as error:  # a dropped key, or altered: the face is not usable
            log.error("frame %s: %s; no sample written", feedback.frame_id, error)
            return None
        if not thumbnail:
            log.warning("no thumbnail for frame %s: no sample written", feedback.frame_id)
            return None
        # Keys are derived from the feedback id: a redelivery rewrites the same objects.
        # The face is sealed like a template (sealed_objects.py); the manifest is not a face.
        put_sealed(self.store, self.bucket, sample.image_key, thumbnail, "image/jpeg", self.cipher)
        body = json.dumps(sample.manifest, indent=1).encode()
        self.store.put_object(
            self.bucket, sample.manifest_key, io.BytesIO(body), len(body), "application/json"
        )
        return sample

    def _count(self, feedback: Feedback, evidence: dict[str, bytes]) -> None:
        """The business metrics of one feedback, and its student's check-in state."""
        version = feedback.model_version
        FEEDBACK_ACTIONS.labels(feedback.action, feedback.verdict_decision, version).inc()
        if is_false_reject(feedback):
            FALSE_REJECTS.labels(version).inc()
        if is_false_accept(feedback):
            FALSE_ACCEPTS.labels(version).inc()
        if not feedback.student_id:
            return
        key = _state_key(feedback)
        captured = evidence.get("captured_at")
        if captured:
            self.client.hsetnx(key, "first_captured_at", captured)
        self.client.expire(key, STATE_TTL_S)
        if feedback.action == "retry":
            RETRIES.labels(version).inc()
            self.client.hincrby(key, "retries", 1)
            return
        if not self.client.hsetnx(key, "done", "1"):
            return  # a second decision on the same student: counted once
        state = self.client.hgetall(key)
        RETRIES_PER_STUDENT.observe(int(state.get(b"retries", b"0")))
        first = state.get(b"first_captured_at")
        if first:
            CHECKIN_SECONDS.observe(max(0.0, feedback.decided_at - float(first)))


def is_transient(error: Exception) -> bool:
    """Whether an error of Redis or the object store may go away if the same call is retried."""
    if isinstance(error, S3Error):
        return error.code in TRANSIENT_S3_CODES
    if isinstance(error, redis.RedisError):
        return waiting_may_cure(error)
    return isinstance(
        error,
        urllib3.exceptions.HTTPError | ServerError | ConnectionError | TimeoutError,
    )


def handle_with_retry(sink: FeedbackSink, feedback: Feedback, stop: threading.Event) -> bool:
    """Handle one feedback, waiting out an outage of Redis or the object store.

    A sample is never skipped: the same feedback is retried with backoff until it is stored
    (its object keys derive from the feedback id, so a retry rewrites the same objects).
    Returns False if ``stop`` came first; the caller must then not commit.
    """
    delay = RETRY_FIRST_S
    while True:
        try:
            key = sink.handle(feedback)
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning(
                "feedback %s not stored yet (%s: %s); retrying in %.1f s",
                feedback.feedback_id,
                type(error).__name__,
                str(error)[:200],
                delay,
            )
            if stop.wait(delay):
                return False
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        log.info("feedback %s %s -> %s", feedback.action, feedback.frame_id, key)
        return True


def run_consumer(
    consumer: KafkaConsumer, sink: FeedbackSink, stop: threading.Event, producer: KafkaProducer
) -> None:
    """Consume until ``stop``; offsets are committed after each batch is stored.

    While Redis or the object store is down the batch waits (see ``handle_with_retry``); its
    offsets move on only once every sample of it is stored.  An unreadable record goes whole
    to the dead-letter topic with its reason, and so does one whose sample cannot be stored for
    a reason waiting would not cure (``feedback_not_stored``: a Redis key of another type, an
    object store refusing access), acknowledged before the offsets move on; before, such a
    record stopped the consumer, and every restart stopped on it again.
    """
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=500)
        letters: list[tuple[bytes | None, bytes]] = []
        for records in batches.values():
            for record in records:
                try:
                    feedback = decode(record.value, Feedback)
                except SchemaError as error:
                    letters.append(dead_letter_record(record, error, SERVICE))
                    continue
                try:
                    if not handle_with_retry(sink, feedback, stop):
                        return  # stopping mid-batch: uncommitted, so redelivered to the next run
                except Exception as error:  # waiting would not cure it: kept, the batch goes on
                    log.exception("feedback %s not stored", feedback.feedback_id)
                    detail = f"{type(error).__name__}: {error}"
                    refused = SchemaError(FEEDBACK_NOT_STORED, detail)
                    letters.append(dead_letter_record(record, refused, SERVICE, feedback.frame_id))
        if not send_acknowledged(producer, FRAMES_DLQ.name, letters, stop):
            return  # stopping during a broker outage: uncommitted, redelivered
        if batches:
            # If a long outage outlasted max_poll_interval_ms and the group moved on, the batch
            # is redelivered after the rejoin and rewrites the same objects.
            commit_processed(consumer, stop)
