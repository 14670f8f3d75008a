"""A worker's gallery sync on the real broker and Redis: an unreadable enrolment event, a
template sealed with a key the worker does not have and a template key overwritten with
another type all go to the dead-letter topic with their reason, and the sync goes on to apply
the next event; at start, a template that does not open or a key of another type leaves out
its student, not the whole gallery."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from facegate.errors import FacegateError
from facegate.kafka_clients import make_producer
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, RedisSettings
from facegate.stack import LocalStack
from inference_worker.gallery import GalleryIndex, GalleryStore
from inference_worker.gallery_sync import SERVICE, GallerySync
from inference_worker.metrics import UNREADABLE_TEMPLATES
from inference_worker.template_crypto import KeyRing, TemplateCipher, new_key
from schemas.codec import decode, encode
from schemas.messages import DeadLetter, Enrollment, now
from schemas.topics import ENROLLMENTS, FRAMES_DLQ
from tests.topic_reader import read_topic

pytestmark = pytest.mark.integration
DIM = 8


def _letters(keys: set[bytes], timeout_s: float) -> dict[bytes, DeadLetter]:
    def ours(record: ConsumerRecord) -> DeadLetter | None:
        letter = decode(record.value, DeadLetter)
        return letter if letter.service == SERVICE and letter.key in keys else None

    found = read_topic(
        FRAMES_DLQ.name,
        FRAMES_DLQ.partitions,
        ours,
        lambda letters: {letter.key for letter in letters} == keys,
        timeout_s,
    )
    return {letter.key: letter for letter in found if letter.key is not None}


def _event(student: str, version: str) -> bytes:
    return encode(
        Enrollment(
            student_id=student, action="enrolled", model_version=version, template_count=1, at=now()
        )
    )


def test_unreadable_events_and_templates_are_dead_lettered_and_sync_goes_on(
    local_stack: LocalStack,
) -> None:
    version = f"letters-{uuid.uuid4().hex[:8]}"
    client = make_redis(RedisSettings())
    mine = TemplateCipher(KeyRing([new_key("worker-key")]))
    foreign = TemplateCipher(KeyRing([new_key("other-key")]))
    rng = np.random.default_rng(0)
    sealed_elsewhere, good = f"s-{uuid.uuid4().hex[:6]}", f"s-{uuid.uuid4().hex[:6]}"
    overwritten = f"s-{uuid.uuid4().hex[:6]}"
    producer = make_producer(KafkaSettings())
    sync = GallerySync(
        GalleryStore(client, version, mine), GalleryIndex(DIM), KafkaSettings(), producer
    )
    sync.start()
    try:
        # Written after the worker started, by someone holding another key.
        GalleryStore(client, version, foreign).put(
            sealed_elsewhere, rng.normal(size=(1, DIM)).astype(np.float32)
        )
        garbage_key = f"garbage-{uuid.uuid4().hex[:6]}".encode()
        producer.send(ENROLLMENTS.name, key=garbage_key, value=b"\x00 not an event").get(30)
        producer.send(
            ENROLLMENTS.name, key=sealed_elsewhere.encode(), value=_event(sealed_elsewhere, version)
        ).get(30)
        # Another tool wrote a hash over a student's templates: every GET of it fails with
        # WRONGTYPE, which the sync used to retry forever, applying no later event.
        client.hset(GalleryStore(client, version).template_key(overwritten), "x", "y")
        producer.send(
            ENROLLMENTS.name, key=overwritten.encode(), value=_event(overwritten, version)
        ).get(30)
        GalleryStore(client, version, mine).put(good, rng.normal(size=(1, DIM)).astype(np.float32))
        producer.send(ENROLLMENTS.name, key=good.encode(), value=_event(good, version)).get(30)
        letters = _letters(
            {garbage_key, sealed_elsewhere.encode(), overwritten.encode()}, timeout_s=30
        )
        deadline = time.monotonic() + 30
        while good not in set(sync.index.students()) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sync.stop()
        producer.close()
        client.delete(GalleryStore(client, version).template_key(overwritten))
    assert letters[sealed_elsewhere.encode()].reason == "template_unreadable"
    assert "other-key" in letters[sealed_elsewhere.encode()].detail
    assert letters[garbage_key].reason and letters[garbage_key].payload == b"\x00 not an event"
    assert letters[overwritten.encode()].reason == "template_unreadable"
    assert "Redis refused: ResponseError: WRONGTYPE" in letters[overwritten.encode()].detail
    students = set(sync.index.students())
    assert good in students and sealed_elsewhere not in students
    client.close()


def test_a_worker_starts_without_the_templates_it_cannot_read(local_stack: LocalStack) -> None:
    version = f"start-{uuid.uuid4().hex[:8]}"
    client = make_redis(RedisSettings())
    mine = TemplateCipher(KeyRing([new_key("worker-key")]))
    store = GalleryStore(client, version, mine)
    rng = np.random.default_rng(1)
    for student in ("alice", "bob", "carol"):
        store.put(student, rng.normal(size=(2, DIM)).astype(np.float32))
    # Bob's templates tampered with at rest: Alice's ciphertext copied over them.
    client.copy(store.template_key("alice"), store.template_key("bob"), replace=True)
    # Dave's overwritten with a hash: his GET fails with WRONGTYPE (it failed the whole load).
    store.put("dave", rng.normal(size=(2, DIM)).astype(np.float32))
    client.delete(store.template_key("dave"))
    client.hset(store.template_key("dave"), "x", "y")
    sync = GallerySync(store, GalleryIndex(DIM), KafkaSettings()).start()
    try:
        assert set(sync.index.students()) == {"alice", "carol"}
        assert sync.unreadable_at_start == ["bob", "dave"]
        assert UNREADABLE_TEMPLATES.labels(version)._value.get() == 2
    finally:
        sync.stop()
    # A worker whose key opens none of them refuses to start, with the reason.
    stranger = GalleryStore(client, version, TemplateCipher(KeyRing([new_key("stranger")])))
    with pytest.raises(FacegateError, match="none of the 4 students' templates can be read"):
        GallerySync(stranger, GalleryIndex(DIM), KafkaSettings()).start()
    load = store.load_readable()
    assert "fails authentication" in load.unreadable["bob"]
    assert "WRONGTYPE" in load.unreadable["dave"]
    assert sorted(load.templates) == ["alice", "carol"]
    for student in ("alice", "bob", "carol", "dave"):
        store.remove(student)
    client.close()
