"""Enrolment as a command: resolve the serving models, then enrol a roster into them.

Every student enrolled or removed here gets an entry in the audit log (``facegate.privacy.
audit``): who did it, when, under which model versions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from facegate.kafka_clients import make_producer
from facegate.object_store import make_object_store
from facegate.paths import models_dir
from facegate.privacy.audit import AuditLog, default_actor
from facegate.redis_client import make_redis
from facegate.settings import (
    KafkaSettings,
    MlflowSettings,
    ObjectStoreSettings,
    RedisSettings,
    load_settings,
)
from inference_worker.embedder import Embedder
from inference_worker.enrollment import (
    EnrollmentSummary,
    RosterEntry,
    enroll,
    roster_from_csv,
    roster_from_folder,
)
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.face_pipeline import LocalFacePipeline
from stream_processors.vision.mtcnn import MtcnnDetector

log = logging.getLogger(__name__)


def serving_pipelines(settings: MlflowSettings) -> dict[str, LocalFacePipeline]:
    """A pipeline per model version that workers serve (champion, and canary if set)."""
    from trainer.registry import resolve

    detector = MtcnnDetector(models_dir() / "mtcnn").load()
    pipelines: dict[str, LocalFacePipeline] = {}
    for alias in ("champion", "canary"):
        try:
            registered = resolve(settings, alias)
        except Exception:
            if alias == "champion":
                raise
            continue
        embedder = Embedder(registered.model_dir, version=registered.version).load()
        pipelines.setdefault(registered.version, LocalFacePipeline(embedder, detector, False))
    return pipelines


def photo_store() -> EnrollmentPhotos:
    """The enrolment photos in the configured object store."""
    s3 = load_settings(ObjectStoreSettings)
    return EnrollmentPhotos(make_object_store(s3), s3.bucket_datasets)


def read_roster(path: Path, limit: int | None = None) -> list[RosterEntry]:
    """A roster from a folder or a CSV file."""
    entries = roster_from_csv(path) if path.is_file() else roster_from_folder(path)
    return entries[:limit] if limit else entries


def enroll_roster(
    path: Path | list[RosterEntry],
    limit: int | None = None,
    min_photos: int = 1,
    actor: str | None = None,
) -> EnrollmentSummary:
    """Enrol a roster into every serving model version, with a progress bar.

    ``actor`` names who enrolled in the audit log (default: :func:`default_actor`).
    """
    entries = read_roster(path, limit) if isinstance(path, Path) else path
    pipelines = serving_pipelines(load_settings(MlflowSettings))
    versions = sorted(pipelines)
    client = make_redis(load_settings(RedisSettings))
    producer = make_producer(load_settings(KafkaSettings))
    bar = tqdm(total=len(entries), desc="enrolling", unit="student")

    def tick(_student: str) -> None:
        bar.update()

    try:
        summary = enroll(entries, pipelines, client, producer, min_photos, tick, photo_store())
        audit = AuditLog(client)
        for student in summary.enrolled:
            audit.append("enrolled", student, actor or default_actor(), {"versions": versions})
        return summary
    finally:
        bar.close()
        producer.close()
        client.close()


def unenroll_students(student_ids: list[str], actor: str | None = None) -> list[str]:
    """Remove students from the gallery of every serving model version.

    Templates of versions no longer served stay: ``facegate forget`` removes a student from
    every version and every other store.
    """
    from inference_worker.enrollment import unenroll

    versions = list(serving_pipelines(load_settings(MlflowSettings)))
    client = make_redis(load_settings(RedisSettings))
    producer = make_producer(load_settings(KafkaSettings))
    try:
        removed = unenroll(student_ids, versions, client, producer, photo_store())
        audit = AuditLog(client)
        for student in removed:
            audit.append("unenrolled", student, actor or default_actor(), {"versions": versions})
        return removed
    finally:
        producer.close()
        client.close()
