"""``facegate forget STUDENT...``: remove a student's personal data from every FaceGate store.

What goes (each counted in the summary and in one ``forget`` audit entry):

- ``templates``: the student's face templates under every model version that has any, found
  by scanning ``facegate:gallery:*:t:<student>`` and every version's students set (not only the
  versions served now: a retired model's gallery is biometric data too);
- ``student_record``: ``facegate:student:<student>`` (name and the console's enrolment crop);
- ``enrolment_photos``: ``enrollment/student=<student>/*`` in the datasets bucket;
- ``feedback_samples``: every feedback sample whose manifest names the student (the ``.json``
  and its image, every ``date=``/``part-`` partition of the feedback bucket);
- ``evidence``: the verdict thumbnails the console keeps in Redis for the feedback consumer
  (``facegate:feedback:evidence:<frame>``), for the frames named by the student's feedback
  samples and by their attendance entries (the evidence hash itself does not name the student,
  so evidence of other frames ages out with its TTL);
- ``feedback_state``: ``facegate:feedback:student:<exam>:<student>`` (retry counts, 7-day TTL);
- ``frames``: objects in the frames bucket under a ``student=<student>`` path segment (nothing
  writes frames today; a future writer must use that segment for forget to find them).

Then every model version the student had templates under is told through ``enrollments``
(``removed``, by ``forget``) so running workers drop the student without a restart.

What stays, and is said so in the output: attendance entries (the exam record), the audit log
(append-only; it names the student id), dataset manifests and MLflow runs naming the student
(their images are deleted; rebuild the dataset to drop the names), and messages on Kafka topics
(they age out with the topics' retention).

Deleting is idempotent: forgetting a student again finds nothing and says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import redis
from kafka import KafkaProducer
from minio import Minio
from minio.error import S3Error
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facegate.errors import FacegateError
from facegate.object_store import get_bytes
from facegate.privacy.audit import AuditLog, default_actor
from facegate.redis_client import waiting_may_cure
from facegate.service_process import lower_priority
from facegate.settings import (
    BaseServiceSettings,
    KafkaSettings,
    ObjectStoreSettings,
    RedisSettings,
    load_settings,
)
from facegate.storage_keys import DATASET_MANIFEST_PREFIX, FEEDBACK_PREFIX, evidence_key
from inference_worker.enrollment_events import announce
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.gallery import GalleryStore, gallery_versions, student_key
from inference_worker.rotation_guard import deleting_face_images

log = logging.getLogger(__name__)

GALLERY_PREFIX = "facegate:gallery:"
ATTENDANCE_PREFIX = "facegate:attendance:"
FEEDBACK_STATE_PREFIX = "facegate:feedback:student:"
# The kinds of data forget removes, in the order of the summary.
KINDS = (
    "templates",
    "student_record",
    "enrolment_photos",
    "feedback_samples",
    "evidence",
    "feedback_state",
    "frames",
)


class ForgetSettings(BaseServiceSettings):
    """``facegate forget``: the connections it needs (no settings of its own)."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_FORGET_")

    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))
    s3: ObjectStoreSettings = Field(default_factory=lambda: load_settings(ObjectStoreSettings))


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern (``*?[]\\`` escaped)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def version_of_template_key(key: str, student_id: str) -> str | None:
    """The model version of ``facegate:gallery:<version>:t:<student>``, or None for another key."""
    suffix = f":t:{student_id}"
    if not key.startswith(GALLERY_PREFIX) or not key.endswith(suffix):
        return None
    version = key[len(GALLERY_PREFIX) : -len(suffix)]
    # "facegate:gallery:7:t:a:t:s1" is student "a:t:s1" of version 7, not s1 of "7:t:a".
    return version if version and ":t:" not in version else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class ForgetPlan:
    """Everything of one student found in the stores: what forget deletes, and what it keeps."""

    student_id: str
    versions: list[str] = field(default_factory=list)
    redis_keys: dict[str, list[str]] = field(default_factory=dict)
    photo_keys: list[str] = field(default_factory=list)
    feedback_keys: list[str] = field(default_factory=list)
    frame_keys: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many items of each kind (templates: model versions; samples: image+json pairs)."""
        return {
            "templates": len(self.versions),
            "student_record": len(self.redis_keys.get("student_record", [])),
            "enrolment_photos": len(self.photo_keys),
            "feedback_samples": len([k for k in self.feedback_keys if k.endswith(".json")]),
            "evidence": len(self.redis_keys.get("evidence", [])),
            "feedback_state": len(self.redis_keys.get("feedback_state", [])),
            "frames": len(self.frame_keys),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "student_id": self.student_id,
            "removed": self.counts(),
            "versions": self.versions,
            "objects": {
                "enrolment_photos": self.photo_keys,
                "feedback_samples": self.feedback_keys,
                "frames": self.frame_keys,
            },
            "redis_keys": self.redis_keys,
            "kept": self.kept,
        }


class Forgetter:
    """Finds and deletes one student's data in Redis and the object store."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        store: Minio,
        s3: ObjectStoreSettings,
        producer: KafkaProducer | None,
    ) -> None:
        self.client = client
        self.store = store
        self.s3 = s3
        self.producer = producer
        self.photos = EnrollmentPhotos(store, s3.bucket_datasets)

    # ---- finding ---------------------------------------------------------------------------

    def _scan(self, pattern: str) -> list[str]:
        return sorted(_text(k) for k in self.client.scan_iter(match=pattern, count=1000))

    def _objects(self, bucket: str, prefix: str = "") -> Iterator[str]:
        try:
            for obj in self.store.list_objects(bucket, prefix=prefix, recursive=True):
                if obj.object_name:
                    yield str(obj.object_name)
        except S3Error as error:
            if error.code != "NoSuchBucket":
                raise

    def _json(self, bucket: str, key: str) -> Any:
        data = get_bytes(self.store, bucket, key)
        try:
            return json.loads(data) if data is not None else None
        except ValueError:
            log.warning("%s/%s is not JSON; skipped", bucket, key)
            return None

    def _versions(self, student: str) -> list[str]:
        pattern = f"{GALLERY_PREFIX}*:t:{glob_escape(student)}"
        found = {v for k in self._scan(pattern) if (v := version_of_template_key(k, student))}
        # A students set that lists them without a template key (an interrupted write).
        for version in gallery_versions(self.client):
            if self.client.sismember(f"{GALLERY_PREFIX}{version}:students", student):
                found.add(version)
        return sorted(found)

    def _feedback_samples(self, student: str) -> tuple[list[str], set[str]]:
        """Keys of the student's samples (json and image) and the frame ids they name."""
        bucket = self.s3.bucket_feedback
        keys: list[str] = []
        frames: set[str] = set()
        for key in self._objects(bucket, FEEDBACK_PREFIX):
            if not key.endswith(".json"):
                continue
            manifest = self._json(bucket, key)
            if not isinstance(manifest, dict) or manifest.get("student_id") != student:
                continue
            keys.append(key)
            keys.append(str(manifest.get("image") or key.removesuffix(".json") + ".jpg"))
            if manifest.get("frame_id"):
                frames.add(str(manifest["frame_id"]))
        return keys, frames

    def _attendance_frames(self, student: str) -> tuple[set[str], int, int]:
        """Frame ids of the student's attendance entries, how many exams have one, and how many
        attendance keys could not be searched (another type: written over by another tool)."""
        frames: set[str] = set()
        exams = unreadable = 0
        for key in self._scan(f"{ATTENDANCE_PREFIX}*"):
            try:
                raw = self.client.hget(key, student)
            except redis.ResponseError as error:
                if waiting_may_cure(error):
                    raise
                # The erasure goes on: attendance is kept anyway, and evidence of a frame
                # named only there expires with its TTL.
                log.warning("forget %s: %s not searched (%s)", student, key, error)
                unreadable += 1
                continue
            if raw is None:
                continue
            exams += 1
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("last_frame_id"):
                frames.add(str(entry["last_frame_id"]))
        return frames, exams, unreadable

    def _dataset_manifests(self, student: str) -> int:
        """How many dataset manifests list an image of the student (kept, see the docstring)."""
        count = 0
        for key in self._objects(self.s3.bucket_datasets, DATASET_MANIFEST_PREFIX):
            if not key.endswith("/manifest.json"):
                continue
            manifest = self._json(self.s3.bucket_datasets, key)
            entries = manifest.get("entries", []) if isinstance(manifest, dict) else []
            if any(isinstance(e, dict) and e.get("identity") == student for e in entries):
                count += 1
        return count

    def plan(self, student: str) -> ForgetPlan:
        """Everything stored about ``student``, without deleting anything."""
        if not student.strip():
            raise FacegateError("a student id is needed")
        plan = ForgetPlan(student)
        plan.versions = self._versions(student)
        plan.photo_keys = self.photos.keys(student)
        plan.feedback_keys, sample_frames = self._feedback_samples(student)
        attendance_frames, exams, unreadable = self._attendance_frames(student)
        evidence = [
            evidence_key(frame)
            for frame in sorted(sample_frames | attendance_frames)
            if self.client.exists(evidence_key(frame))
        ]
        record = [student_key(student)] if self.client.exists(student_key(student)) else []
        plan.redis_keys = {
            "student_record": record,
            "evidence": evidence,
            "feedback_state": self._scan(f"{FEEDBACK_STATE_PREFIX}*:{glob_escape(student)}"),
        }
        plan.frame_keys = [
            key
            for key in self._objects(self.s3.bucket_frames)
            if f"student={student}" in key.split("/")
        ]
        plan.kept = {
            "attendance_exams": exams,
            "dataset_manifests": self._dataset_manifests(student),
        }
        if unreadable:
            plan.kept["attendance_keys_unreadable"] = unreadable
        return plan

    # ---- deleting --------------------------------------------------------------------------

    def execute(self, plan: ForgetPlan) -> None:
        """Delete what ``plan`` found, then tell the workers."""
        student = plan.student_id
        for version in plan.versions:
            GalleryStore(self.client, version).remove(student)
        keys = [k for group in plan.redis_keys.values() for k in group]
        if keys:
            self.client.delete(*keys)
        self.photos.remove_student(student)
        for key in plan.feedback_keys:
            self.store.remove_object(self.s3.bucket_feedback, key)
        for key in plan.frame_keys:
            self.store.remove_object(self.s3.bucket_frames, key)
        if self.producer is not None:
            announce(self.producer, student, "removed", plan.versions, by="forget")


def forget_students(
    students: list[str],
    client: redis.Redis[bytes],
    store: Minio,
    s3: ObjectStoreSettings,
    producer: KafkaProducer | None,
    actor: str,
    dry_run: bool = False,
) -> list[ForgetPlan]:
    """Forget each student (or, with ``dry_run``, only find their data); audit each forget.

    A dry run deletes nothing and writes no audit entry.  Refuses to delete anything while a
    key rotation runs (``rotation_guard``).
    """
    forgetter = Forgetter(client, store, s3, producer)
    audit = AuditLog(client)
    plans = []
    with nullcontext() if dry_run else deleting_face_images(client, "forget"):
        for student in students:
            plan = forgetter.plan(student)
            if not dry_run:
                forgetter.execute(plan)
                details = {"removed": plan.counts(), "versions": plan.versions, "kept": plan.kept}
                audit.append("forget", student, actor, details)
            plans.append(plan)
    return plans


def describe(plan: ForgetPlan, dry_run: bool) -> list[str]:
    """The lines ``facegate forget`` prints for one student."""
    verb = "would remove" if dry_run else "removed"
    counts = plan.counts()
    lines = [f"{plan.student_id}: {verb}"]
    versions = f" (model versions {', '.join(plan.versions)})" if plan.versions else ""
    lines.append(f"  templates: {counts['templates']}{versions}")
    lines.extend(f"  {kind}: {counts[kind]}" for kind in KINDS[1:])
    if not any(counts.values()):
        lines.append("  nothing of this student was found")
    lines.append(
        f"  kept: attendance in {plan.kept.get('attendance_exams', 0)} exam(s) (the exam record); "
        "audit log entries (append-only)"
    )
    if plan.kept.get("attendance_keys_unreadable"):
        lines.append(
            f"  not searched: {plan.kept['attendance_keys_unreadable']} attendance key(s) that "
            "are not attendance hashes (named in the log; `redis-cli TYPE` them); evidence of a "
            "frame named only there expires with its TTL"
        )
    if plan.kept.get("dataset_manifests"):
        lines.append(
            f"  kept: {plan.kept['dataset_manifests']} dataset manifest(s) and their MLflow runs "
            "name the student (their images are gone; rebuild the dataset to drop the name)"
        )
    lines.append("  Kafka topics keep their messages until the topics' retention removes them")
    return lines


@click.command("forget")
@click.argument("students", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="List what would be removed; delete nothing.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write what was found (and removed) as JSON.",
)
@click.option(
    "--actor",
    default=None,
    help="Who asks, for the audit log (default: FACEGATE_ACTOR, else the OS user).",
)
def forget_command(
    students: tuple[str, ...], dry_run: bool, json_path: Path | None, actor: str | None
) -> None:
    """Remove STUDENTS' personal data everywhere: templates under every model version, name and
    photo, enrolment photos, feedback samples, evidence thumbnails, stored frames.

    Attendance entries stay (they are the exam record).  Running workers drop the students
    through the enrollments topic; each forget is written to the audit log.
    """
    from facegate.kafka_clients import make_producer
    from facegate.object_store import make_object_store
    from facegate.redis_client import make_redis

    settings = load_settings(ForgetSettings)
    lower_priority(settings)
    client = make_redis(settings.redis)
    producer = None if dry_run else make_producer(settings.kafka)
    try:
        plans = forget_students(
            list(students),
            client,
            make_object_store(settings.s3),
            settings.s3,
            producer,
            actor or default_actor(),
            dry_run,
        )
    finally:
        if producer is not None:
            producer.close()
        client.close()
    for plan in plans:
        for line in describe(plan, dry_run):
            click.echo(line)
    if json_path:
        report = {"dry_run": dry_run, "students": [p.as_dict() for p in plans]}
        json_path.write_text(json.dumps(report, indent=2))
