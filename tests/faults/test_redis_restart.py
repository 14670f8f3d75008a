"""Redis (Valkey) stopped and started again under a serving pipeline.

What the design promises, and what this test holds it to:
- verdicts need no Redis: the worker decides from its in-memory gallery, so frames published
  while Redis is down get their verdicts during the outage, not after it;
- the local Valkey runs with ``--appendonly yes`` in the stack's state directory, so the
  gallery and the students' records are on disk and survive the restart;
- an enrolment event the worker reads while Redis is down is not lost: the worker retries the
  read with backoff and the student is matched once Redis is back;
- attendance (written by the stream processor from the verdicts) is recorded for the verdicts
  decided during the outage once Redis is back (the stream processor retries the write with
  backoff instead of dropping the verdict); attendance of verdicts after the outage is recorded.
"""

from __future__ import annotations

import time

import pytest
import redis

from facegate.kafka_clients import make_producer
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, MlflowSettings, RedisSettings
from inference_worker.enrollment import RosterEntry, enroll
from inference_worker.enrollment_service import serving_pipelines
from inference_worker.gallery import GalleryStore, student_key
from schemas.codec import encode
from schemas.messages import Enrollment, now
from schemas.topics import ENROLLMENTS
from stream_processors.attendance import AttendanceTable
from tests.faults.conftest import FaultPipeline, one_verdict_each
from tests.gate_frames import frames_of, publish

pytestmark = [pytest.mark.faults]


def test_redis_restart_keeps_verdicts_flowing_and_gallery_following(
    fault_pipeline: FaultPipeline,
) -> None:
    pipeline = fault_pipeline
    version = pipeline.model_version
    client = make_redis(RedisSettings())
    late = pipeline.roster.students[4]  # not enrolled by the fixture
    assert late.student_id not in pipeline.enrolled
    # The late student's templates reach Redis before the outage; the event announcing them
    # is read by the worker only while Redis is down (as when Redis dies right after enrolment).
    summary = enroll(
        [RosterEntry(late.student_id, late.name, late.enrollment_photos)],
        serving_pipelines(MlflowSettings()),
        client,
        producer=None,
    )
    assert summary.enrolled == [late.student_id]
    stored_before = set(GalleryStore(client, version).students())
    assert {late.student_id, *pipeline.enrolled} <= stored_before

    photos = [(s.student_id, p) for s in pipeline.students() for p in s.probe_photos[:2]]
    late_photos = [(late.student_id, p) for p in late.probe_photos[:2]]
    pipeline.fault.stop("redis")
    try:
        producer = make_producer(KafkaSettings())
        event = Enrollment(
            student_id=late.student_id,
            action="enrolled",
            model_version=version,
            template_count=len(late.enrollment_photos),
            at=now(),
        )
        producer.send(ENROLLMENTS.name, key=late.student_id.encode(), value=encode(event)).get(30)
        producer.close()

        started = time.monotonic()
        ids = publish(frames_of(photos + late_photos, "redis-outage"))
        missing = pipeline.collector.wait_for(ids, timeout_s=60)
        assert not missing, f"{len(missing)} frames without a verdict while Redis was down"
        outage_s = time.monotonic() - started
        verdicts = one_verdict_each(pipeline.collector, ids)
        # The in-memory gallery kept deciding: enrolled students are still accepted...
        known = [v for v in verdicts.values() if v.claimed_student_id != late.student_id]
        assert sum(v.decision == "accept" for v in known) >= len(known) // 2
        # ...and the late student is not in it yet (the worker could not read their templates).
        assert {v.reason for v in verdicts.values() if v.claimed_student_id == late.student_id} == {
            "unknown_student"
        }
        for name in ("worker", "stream-processor"):
            assert pipeline.stack.table.running(name) is not None, f"{name} died without Redis"
        print(f"verdicts during the Redis outage after {outage_s:.1f} s")
    finally:
        pipeline.fault.restart()

    # The data survived the restart (append-only file in the state directory).
    assert set(GalleryStore(client, version).students()) == stored_before
    assert client.hget(student_key(late.student_id), "name") == late.name.encode()

    # The worker reconnects and applies the event it could not apply during the outage.
    deadline = time.monotonic() + 60
    while True:
        ids = publish(frames_of(late_photos, "redis-back"))
        assert not pipeline.collector.wait_for(ids, timeout_s=30)
        after = one_verdict_each(pipeline.collector, ids)
        if any(v.decision == "accept" for v in after.values()):
            break
        assert time.monotonic() < deadline, "the late student never reached the worker's gallery"
        time.sleep(2)
    for name in ("worker", "stream-processor"):
        assert pipeline.stack.table.running(name) is not None

    client.close()


def _attendance_rows(client: redis.Redis[bytes], exam_id: str, timeout_s: float) -> set[str]:
    """The students with an attendance entry for the exam, waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        students = {str(row["student_id"]) for row in AttendanceTable(client).exam(exam_id)}
        if students or time.monotonic() > deadline:
            return students
        time.sleep(0.5)


def test_attendance_is_recorded_again_after_a_redis_outage(
    fault_pipeline: FaultPipeline,
) -> None:
    pipeline = fault_pipeline
    client = make_redis(RedisSettings())
    student = pipeline.students()[1]
    photos = [(student.student_id, student.probe_photos[0])]
    try:
        ids = publish(frames_of(photos, "attendance-before"))
        assert not pipeline.collector.wait_for(ids, timeout_s=60)
        assert _attendance_rows(client, "attendance-before", 20) == {student.student_id}

        pipeline.fault.stop("redis")
        try:
            ids = publish(frames_of(photos, "attendance-outage"))
            assert not pipeline.collector.wait_for(ids, timeout_s=60)
        finally:
            pipeline.fault.restart()

        ids = publish(frames_of(photos, "attendance-after"))
        assert not pipeline.collector.wait_for(ids, timeout_s=60)
        assert _attendance_rows(client, "attendance-after", 30) == {student.student_id}
        # The verdict decided during the outage is recorded too once Redis is back.
        assert _attendance_rows(client, "attendance-outage", 10) == {student.student_id}
    finally:
        client.close()
