"""Privacy operations on the real stack: forget a student everywhere, retention, the audit log.

A real LFW person is enrolled through the production path (champion from MLflow, MTCNN,
embedder), proctors' decisions on them go through the console's recorder and the feedback
consumer's sink, then ``facegate forget`` must leave nothing of them in Redis or the buckets.
"""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from minio import Minio

from console.actions import FeedbackRecorder, make_feedback
from console.feedback_consumer import FeedbackSink
from console.pages import audit_page
from facegate.kafka_clients import make_consumer, make_producer
from facegate.object_store import get_bytes, make_object_store, put_bytes
from facegate.pipeline import ensure_champion
from facegate.privacy.audit import AuditLog, read_audit
from facegate.privacy.forget import forget_command, forget_students
from facegate.privacy.retention import (
    DAY_S,
    RetentionSettings,
    apply_retention,
    retention_command,
)
from facegate.redis_client import make_redis
from facegate.settings import (
    KafkaSettings,
    MlflowSettings,
    ObjectStoreSettings,
    RedisSettings,
    load_settings,
)
from facegate.stack import LocalStack
from inference_worker.enrollment import RosterEntry
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.enrollment_service import enroll_roster, unenroll_students
from inference_worker.gallery import GalleryStore, student_key
from inference_worker.sealed_objects import PORTRAIT, PORTRAIT_FIELD, open_field
from schemas.codec import SchemaError, decode
from schemas.messages import Enrollment, Feedback, Verdict, new_id, now
from schemas.topics import ENROLLMENTS
from stream_processors.attendance import AttendanceTable

pytestmark = pytest.mark.integration

RETIRED_VERSION = "retired-0"


@pytest.fixture(scope="module")
def champion(local_stack: LocalStack) -> str:
    """The calibrated champion registered in MLflow (what enrolment embeds with)."""
    return ensure_champion(load_settings(MlflowSettings))


@pytest.fixture(scope="module")
def lfw_people(lfw_dir: Path) -> list[list[Path]]:
    """LFW people with at least three photos, each as their first three photos."""
    photos: dict[str, list[str]] = {}
    with open(lfw_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            photos.setdefault(row["identity"], []).append(row["relpath"])
    return [
        [lfw_dir / "images" / rel for rel in sorted(rels)[:3]]
        for _, rels in sorted(photos.items())
        if len(rels) >= 3
    ]


@dataclass
class Stores:
    client: redis.Redis[bytes]
    store: Minio
    s3: ObjectStoreSettings


@pytest.fixture
def stores(local_stack: LocalStack) -> Iterator[Stores]:
    s3 = load_settings(ObjectStoreSettings)
    client = make_redis(load_settings(RedisSettings))
    yield Stores(client, make_object_store(s3), s3)
    client.close()


def _enrol(people: list[list[Path]], index: int, actor: str = "registrar") -> str:
    student = f"priv-{new_id()[:10]}"
    summary = enroll_roster(
        [RosterEntry(student, "Test Student", tuple(people[index]))], actor=actor
    )
    assert summary.enrolled == [student], summary.as_dict()
    return student


def _verdict(student: str, exam: str, thumbnail: bytes, version: str) -> Verdict:
    captured = now()
    return Verdict(
        frame_id=new_id(),
        gate_id="g-priv",
        exam_id=exam,
        claimed_student_id=student,
        captured_at=captured,
        decided_at=captured + 0.1,
        decision="reject",
        reason="mismatch",
        score=0.3,
        threshold=0.45,
        model_name="mobilefacenet",
        model_version=version,
        thumbnail=thumbnail,
    )


def _decide(stores: Stores, verdict: Verdict, decided_at: float | None = None) -> tuple[str, str]:
    """A proctor accepts the verdict: recorded by the console, stored by the feedback sink.

    Returns the sample's image and manifest keys.
    """
    producer = make_producer(load_settings(KafkaSettings))
    try:
        feedback: Feedback = make_feedback(verdict, "accept_manual", "proctor1")
        if decided_at is not None:
            feedback = feedback.model_copy(update={"decided_at": decided_at})
        FeedbackRecorder(producer, stores.client, ttl_s=600).record(verdict, feedback)
    finally:
        producer.close()
    sink = FeedbackSink(stores.client, stores.store, stores.s3.bucket_feedback)
    image_key = sink.handle(feedback)
    assert image_key is not None
    return image_key, image_key.removesuffix(".jpg") + ".json"


def _keys_naming(client: redis.Redis[bytes], student: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"*{student}*", count=1000))


def _feedback_manifests_naming(stores: Stores, student: str) -> list[str]:
    found = []
    objects = stores.store.list_objects(stores.s3.bucket_feedback, "feedback/", recursive=True)
    for obj in objects:
        key = str(obj.object_name)
        if key.endswith(".json"):
            data = get_bytes(stores.store, stores.s3.bucket_feedback, key)
            if data is not None and json.loads(data).get("student_id") == student:
                found.append(key)
    return found


def _removal_events(student: str, expected: int, timeout_s: float = 20) -> list[Enrollment]:
    consumer = make_consumer(load_settings(KafkaSettings), f"priv-{new_id()}", [ENROLLMENTS.name])
    events: list[Enrollment] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(events) < expected:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:
                        event = decode(record.value, Enrollment)
                    except SchemaError:  # other tests put unreadable records on the topic
                        continue
                    if event.student_id == student and event.action == "removed":
                        events.append(event)
    finally:
        consumer.close()
    return events


@dataclass
class StudentData:
    """A student with data in every store forget knows of, and a bystander's sample."""

    student: str
    versions: list[str]
    samples: list[str]
    frame_key: str
    exam: str
    bystander_sample: str


@pytest.fixture
def student_everywhere(champion: str, lfw_people: list[list[Path]], stores: Stores) -> StudentData:
    student = _enrol(lfw_people, 0)
    served = GalleryStore(stores.client, champion).get(student)
    assert served is not None
    # A model version no longer served still holds their templates.
    GalleryStore(stores.client, RETIRED_VERSION).put(student, served)
    sealed = stores.client.hget(student_key(student), PORTRAIT_FIELD)
    # Enrolment keeps the portrait sealed (sealed_objects.py): Redis holds no JPEG.
    assert sealed and not sealed.startswith(b"\xff\xd8")
    portrait = open_field(student_key(student), PORTRAIT_FIELD, sealed, PORTRAIT)
    assert portrait is not None and portrait.startswith(b"\xff\xd8")
    exam = f"exam-{new_id()[:8]}"
    verdict = _verdict(student, exam, portrait, champion)
    AttendanceTable(stores.client).record(verdict)
    samples = list(_decide(stores, verdict))
    # A decision from long ago, in an old partition.
    old = _verdict(student, exam, portrait, champion)
    samples += _decide(stores, old, decided_at=time.time() - 400 * 86400)
    # Frames: nothing writes them today; a writer must put them under student=<id>.
    frame_key = f"frames/date={date.today()}/student={student}/{new_id()}.jpg"
    put_bytes(stores.store, stores.s3.bucket_frames, frame_key, portrait, "image/jpeg")
    bystander = f"priv-other-{new_id()[:8]}"
    bystander_sample = _decide(stores, _verdict(bystander, exam, portrait, champion))[1]
    return StudentData(
        student, sorted([champion, RETIRED_VERSION]), samples, frame_key, exam, bystander_sample
    )


def test_enrolment_and_removal_are_audited(
    champion: str, lfw_people: list[list[Path]], stores: Stores
) -> None:
    student = _enrol(lfw_people, 1, actor="registrar")
    assert unenroll_students([student], actor="office") == [student]
    entries = read_audit(stores.client, count=50, subject=student)
    assert [(e.action, e.actor) for e in entries] == [
        ("unenrolled", "office"),
        ("enrolled", "registrar"),
    ]
    assert entries[1].details["versions"] == [champion]


def test_dry_run_finds_everything_and_deletes_nothing(
    student_everywhere: StudentData, stores: Stores
) -> None:
    data = student_everywhere
    keys_before = _keys_naming(stores.client, data.student)
    photos = EnrollmentPhotos(stores.store, stores.s3.bucket_datasets)
    photos_before = photos.keys(data.student)
    audit_before = read_audit(stores.client, count=50, subject=data.student)

    (plan,) = forget_students(
        [data.student], stores.client, stores.store, stores.s3, None, "dpo", dry_run=True
    )
    assert plan.versions == data.versions
    assert plan.counts() == {
        "templates": 2,
        "student_record": 1,
        "enrolment_photos": len(photos_before),
        "feedback_samples": 2,
        "evidence": 2,
        "feedback_state": 1,
        "frames": 1,
    }
    assert sorted(plan.feedback_keys) == sorted(data.samples)
    assert plan.kept["attendance_exams"] == 1
    # Nothing was touched, nothing was audited.
    assert _keys_naming(stores.client, data.student) == keys_before
    assert photos.keys(data.student) == photos_before
    assert sorted(_feedback_manifests_naming(stores, data.student)) == sorted(
        k for k in data.samples if k.endswith(".json")
    )
    assert get_bytes(stores.store, stores.s3.bucket_frames, data.frame_key) is not None
    assert read_audit(stores.client, count=50, subject=data.student) == audit_before


def test_forget_removes_the_student_everywhere(
    student_everywhere: StudentData, stores: Stores, tmp_path: Path
) -> None:
    data = student_everywhere
    assert len(_keys_naming(stores.client, data.student)) >= 4  # templates, record, state
    report_path = tmp_path / "forget.json"
    # Another exam's attendance key written over with a string: every HGET of it fails with
    # WRONGTYPE, which used to stop the whole erasure.
    broken = f"facegate:attendance:broken-{uuid.uuid4().hex[:8]}"
    stores.client.set(broken, "not a hash")
    try:
        result = CliRunner().invoke(
            forget_command, [data.student, "--json", str(report_path), "--actor", "dpo"]
        )
    finally:
        stores.client.delete(broken)
    assert result.exit_code == 0, result.output
    assert "attendance in 1 exam(s) (the exam record)" in result.output
    assert "not searched: 1 attendance key(s) that are not attendance hashes" in result.output

    # Redis: no key names them; no gallery lists them; their evidence is gone.
    assert _keys_naming(stores.client, data.student) == []
    for version in data.versions:
        assert GalleryStore(stores.client, version).get(data.student) is None
        assert data.student not in GalleryStore(stores.client, version).students()
    report = json.loads(report_path.read_text())["students"][0]
    assert report["removed"]["evidence"] == 2
    for key in report["redis_keys"]["evidence"]:
        assert not stores.client.exists(key)
    # Buckets: enrolment photos, both samples (image and manifest), the stored frame.
    assert EnrollmentPhotos(stores.store, stores.s3.bucket_datasets).keys(data.student) == []
    assert _feedback_manifests_naming(stores, data.student) == []
    for key in data.samples:
        assert get_bytes(stores.store, stores.s3.bucket_feedback, key) is None
    assert get_bytes(stores.store, stores.s3.bucket_frames, data.frame_key) is None
    # What stays: the attendance record, and other people's samples.
    rows = AttendanceTable(stores.client).exam(data.exam)
    assert [r["student_id"] for r in rows] == [data.student]
    assert get_bytes(stores.store, stores.s3.bucket_feedback, data.bystander_sample) is not None

    events = _removal_events(data.student, expected=2)
    assert sorted(e.model_version for e in events) == data.versions
    assert {e.by for e in events} == {"forget"}

    latest = read_audit(stores.client, count=50, subject=data.student)[0]
    assert (latest.action, latest.actor) == ("forget", "dpo")
    assert latest.details["removed"] == report["removed"]
    assert latest.details["removed"]["templates"] == 2

    # Forgetting again finds nothing and says so (and is audited again).
    again = CliRunner().invoke(forget_command, [data.student, "--actor", "dpo"])
    assert again.exit_code == 0 and "nothing of this student was found" in again.output


def test_the_console_audit_page_lists_privacy_entries(stores: Stores) -> None:
    subject = f"priv-page-{new_id()[:8]}"
    AuditLog(stores.client).append("forget", subject, "dpo", {"removed": {"templates": 1}})
    producer = make_producer(load_settings(KafkaSettings))
    try:
        entries = FeedbackRecorder(producer, stores.client, ttl_s=60).audit(count=20)
    finally:
        producer.close()
    html = audit_page(entries, "admin1", "csrf")
    assert f"<td>{subject}</td>" in html and "<td>forget</td>" in html


def test_retention_deletes_only_expired_objects(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, frames = stores.s3.bucket_feedback, stores.s3.bucket_frames
    today = datetime.now(UTC).date()
    old_day = today - timedelta(days=200)
    mine = new_id()[:10]
    sample = {"student_id": "s-ret", "label": "genuine"}
    old_samples = [f"feedback/date={old_day}/part-7/{mine}.{ext}" for ext in ("jpg", "json")]
    new_samples = [f"feedback/date={today}/part-7/{mine}.{ext}" for ext in ("jpg", "json")]
    for key in old_samples + new_samples:
        body = json.dumps(sample).encode() if key.endswith(".json") else b"\xff\xd8jpeg"
        put_bytes(stores.store, bucket, key, body, "application/octet-stream")
    old_frame = f"frames/date={today - timedelta(days=8)}/student=s-ret/{mine}.jpg"
    new_frame = f"frames/date={today}/student=s-ret/{mine}.jpg"
    unpartitioned_frame = f"frames/{mine}.jpg"  # last-modified (now) decides: kept
    for key in (old_frame, new_frame, unpartitioned_frame):
        put_bytes(stores.store, frames, key, b"\xff\xd8jpeg", "image/jpeg")
    settings = load_settings(RetentionSettings, feedback_days=180, frames_days=7)
    # A verdict stream of the test's own (entry ids carry their time, and a stream only
    # accepts ids above its last one): 3 entries from 400 days ago, 2 from today.
    stream = f"facegate:test:verdicts:{mine}"
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 400 * DAY_S * 1000
    for i, at_ms in enumerate([old_ms, old_ms + 1, old_ms + 2, now_ms - 5, now_ms - 4]):
        stores.client.xadd(stream, {"entry": f"verdict {i}"}, id=f"{at_ms}-0")

    monkeypatch.setattr("facegate.privacy.retention.STREAM_PAGE", 2)  # count across pages
    dry = apply_retention(
        stores.store, stores.client, settings, dry_run=True, verdict_stream=stream
    )
    assert set(old_samples) <= set(dry.deleted["feedback_samples"])
    assert old_frame in dry.deleted["frames"]
    assert all(get_bytes(stores.store, bucket, key) for key in old_samples)
    assert (dry.trimmed["verdict_audit"], dry.kept["verdict_audit"]) == (3, 2)
    assert stores.client.xlen(stream) == 5

    before = len(read_audit(stores.client, count=1000))
    runner = CliRunner().invoke(retention_command, ["run"])
    assert runner.exit_code == 0, runner.output
    for key in old_samples:
        assert get_bytes(stores.store, bucket, key) is None
    assert get_bytes(stores.store, frames, old_frame) is None
    for key in new_samples:
        assert get_bytes(stores.store, bucket, key) is not None
    assert get_bytes(stores.store, frames, new_frame) is not None
    assert get_bytes(stores.store, frames, unpartitioned_frame) is not None
    entries = read_audit(stores.client, count=1000)
    assert len(entries) == before + 1
    assert entries[0].action == "retention"
    assert entries[0].details["deleted"]["feedback_samples"] >= 2
    assert entries[0].details["deleted"]["frames"] >= 1

    # Idempotent: a second run finds nothing more to delete and audits nothing.
    second = apply_retention(stores.store, stores.client, settings)
    assert second.counts() == {"feedback_samples": 0, "frames": 0, "verdict_audit": 0}
    assert len(read_audit(stores.client, count=1000)) == before + 1
    assert all(get_bytes(stores.store, bucket, key) for key in new_samples)

    # The verdict stream: only the entries older than 365 days go.
    trimmed = apply_retention(stores.store, stores.client, settings, verdict_stream=stream)
    assert (trimmed.trimmed["verdict_audit"], trimmed.kept["verdict_audit"]) == (3, 2)
    assert [fields[b"entry"] for _, fields in stores.client.xrange(stream)] == [
        b"verdict 3",
        b"verdict 4",
    ]
    forever = load_settings(RetentionSettings, verdict_audit_days=0)
    assert (
        "verdict_audit"
        not in apply_retention(stores.store, stores.client, forever, verdict_stream=stream).counts()
    )
    stores.client.delete(stream)
