"""Proctors' decisions on the real stack: feedback published, audited, turned into a sample."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from minio import Minio
from prometheus_client import REGISTRY

from console.actions import FeedbackRecorder, make_feedback
from console.feedback_consumer import FeedbackSink
from facegate.kafka_clients import make_producer
from facegate.object_store import make_object_store
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, ObjectStoreSettings, RedisSettings
from facegate.stack import LocalStack
from facegate.storage_keys import evidence_key
from inference_worker.sealed_objects import THUMBNAIL_FIELD, get_opened
from inference_worker.template_crypto import KeyRing, TemplateCipher, new_key
from schemas.messages import Verdict, new_id, now

pytestmark = pytest.mark.integration


def _verdict(exam: str, student: str, decision: str, captured_at: float) -> Verdict:
    # A synthetic face-sized JPEG: this test is about the plumbing, not about faces.
    pixels = np.zeros((112, 112, 3), dtype=np.uint8)
    cv2.circle(pixels, (56, 56), 40, (200, 170, 150), -1)
    ok, jpeg = cv2.imencode(".jpg", pixels)
    assert ok
    return Verdict(
        frame_id=new_id(),
        gate_id="g1",
        exam_id=exam,
        claimed_student_id=student,
        captured_at=captured_at,
        decided_at=captured_at + 0.1,
        decision=decision,  # type: ignore[arg-type]
        reason="mismatch" if decision == "reject" else "match",
        score=0.3,
        threshold=0.45,
        model_name="mobilefacenet",
        model_version="7",
        thumbnail=jpeg.tobytes(),
    )


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_retry_then_override_gives_a_sample_metrics_and_audit(local_stack: LocalStack) -> None:
    s3 = ObjectStoreSettings()
    store = Minio(
        s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key.get_secret_value(),
        secure=False,
    )
    client = make_redis(RedisSettings())
    producer = make_producer(KafkaSettings())
    recorder = FeedbackRecorder(producer, client, ttl_s=600)
    sink = FeedbackSink(client, store, s3.bucket_feedback)
    exam = f"exam-{new_id()[:8]}"
    first_capture = now() - 30
    retries_before = _value("facegate_proctor_retries_per_student_sum")
    checkins_before = _value("facegate_proctor_checkin_seconds_count")
    rejects_before = _value("facegate_proctor_false_rejects_total", model_version="7")

    first = _verdict(exam, "s1", "reject", first_capture)
    retry = make_feedback(first, "retry", "proctor1")
    recorder.record(first, retry)
    assert sink.handle(retry) is None  # a retry says nothing about the face

    second = _verdict(exam, "s1", "reject", first_capture + 20)
    override = make_feedback(second, "accept_manual", "proctor1", note="ID card checked")
    recorder.record(second, override)
    key = sink.handle(override)
    assert key is not None and key.endswith(f"/part-7/{override.feedback_id}.jpg")
    # The face is sealed with the gallery key (sealed_objects.py); the key opens it.
    stored = store.get_object(s3.bucket_feedback, key).read()
    assert second.thumbnail and second.thumbnail[:32] not in stored
    assert get_opened(store, s3.bucket_feedback, key, "feedback face image") == second.thumbnail
    manifest = json.loads(store.get_object(s3.bucket_feedback, key[:-4] + ".json").read())
    assert (manifest["student_id"], manifest["label"], manifest["model_version"]) == (
        "s1",
        "genuine",
        "7",
    )
    assert float(manifest["captured_at"]) == second.captured_at

    assert _value("facegate_proctor_retries_per_student_sum") - retries_before == 1
    assert _value("facegate_proctor_checkin_seconds_count") - checkins_before == 1
    assert _value("facegate_proctor_false_rejects_total", model_version="7") - rejects_before == 1
    # A second decision on the same student is not a second check-in.
    sink.handle(make_feedback(second, "confirm", "proctor2"))
    assert _value("facegate_proctor_checkin_seconds_count") - checkins_before == 1

    audit = [e.details.get("feedback_id") for e in recorder.audit(count=50)]
    assert audit.index(override.feedback_id) < audit.index(retry.feedback_id)  # newest first
    producer.close()
    client.close()


def test_evidence_is_sealed_and_one_that_cannot_be_opened_writes_no_sample(
    local_stack: LocalStack,
) -> None:
    s3 = ObjectStoreSettings()
    store = make_object_store(s3)
    client = make_redis(RedisSettings())
    producer = make_producer(KafkaSettings())
    try:
        exam = f"exam-{new_id()[:8]}"
        # The console seals the face it keeps for the consumer: Redis holds no JPEG.
        recorder = FeedbackRecorder(producer, client, ttl_s=600)
        verdict = _verdict(exam, "s1", "reject", now())
        feedback = make_feedback(verdict, "accept_manual", "proctor1")
        recorder.record(verdict, feedback)
        kept = client.hget(evidence_key(verdict.frame_id), THUMBNAIL_FIELD)
        assert verdict.thumbnail and kept and verdict.thumbnail[:32] not in kept
        # A console whose key the consumer does not have (a key dropped too early): the sink
        # says so, writes no sample and goes on; it does not die on the record.
        foreign = FeedbackRecorder(producer, client, 600, TemplateCipher(KeyRing([new_key("x")])))
        other = _verdict(exam, "s2", "reject", now())
        unreadable = make_feedback(other, "accept_manual", "proctor1")
        foreign.record(other, unreadable)
        sink = FeedbackSink(client, store, s3.bucket_feedback)
        assert sink.handle(unreadable) is None
        key = sink.handle(feedback)
        assert key is not None
        assert get_opened(store, s3.bucket_feedback, key, "face") == verdict.thumbnail
    finally:
        producer.close()
        client.close()


def test_a_feedback_handled_again_counts_once(local_stack: LocalStack) -> None:
    """What a retry after an outage or a redelivery does: the same feedback handled twice
    rewrites the same sample and counts nothing again (it used to count every attempt, so a
    minute's object-store outage could count one false reject eight times)."""
    s3 = ObjectStoreSettings()
    store = make_object_store(s3)
    client = make_redis(RedisSettings())
    producer = make_producer(KafkaSettings())
    recorder = FeedbackRecorder(producer, client, ttl_s=600)
    sink = FeedbackSink(client, store, s3.bucket_feedback)
    version = f"v-{new_id()[:8]}"  # this test's own metric series
    exam = f"exam-{new_id()[:8]}"
    first = _verdict(exam, "s1", "reject", now() - 30).model_copy(update={"model_version": version})
    second = first.model_copy(update={"frame_id": new_id(), "captured_at": now()})
    retry = make_feedback(first, "retry", "proctor1")
    override = make_feedback(second, "accept_manual", "proctor1")
    recorder.record(first, retry)
    recorder.record(second, override)
    checkins = _value("facegate_proctor_checkin_seconds_count")
    retries_per_student = _value("facegate_proctor_retries_per_student_sum")
    genuine = _value("facegate_feedback_samples_total", label="genuine")
    try:
        keys = []
        for _ in range(2):
            assert sink.handle(retry) is None
            keys.append(sink.handle(override))
        assert keys[0] is not None and keys[0] == keys[1]
        assert get_opened(store, s3.bucket_feedback, keys[0], "face") == second.thumbnail
        assert _value("facegate_proctor_retries_total", model_version=version) == 1
        assert _value("facegate_proctor_false_rejects_total", model_version=version) == 1
        for action in ("retry", "accept_manual"):
            labels = {"action": action, "verdict_decision": "reject", "model_version": version}
            assert _value("facegate_proctor_feedback_total", **labels) == 1
        assert _value("facegate_proctor_checkin_seconds_count") - checkins == 1
        # One retry before the decision, not two.
        assert _value("facegate_proctor_retries_per_student_sum") - retries_per_student == 1
        assert _value("facegate_feedback_samples_total", label="genuine") - genuine == 1
    finally:
        producer.close()
        client.close()
