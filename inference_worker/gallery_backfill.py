"""Enrol a new model version from the stored enrolment photos, before it serves anyone.

Templates are per model version, so a canary needs its own gallery: every student enrolled
under the champion is re-enrolled for the new version from the photos kept in the object store
(see enrollment_photos.py), through the same detect-align-embed path and the same checks.
Students without stored photos are reported; the canary sends them to review as
``unknown_student``, which the canary controller counts as a degradation.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis
from kafka import KafkaProducer
from tqdm import tqdm

from facegate.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings, RedisSettings
from inference_worker.enrollment import EnrollmentSummary, RosterEntry, enroll
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.face_pipeline import LocalFacePipeline
from inference_worker.gallery import GalleryStore, student_key
from inference_worker.template_crypto import TemplateKeyError

log = logging.getLogger(__name__)

# ``by`` of the enrolment events of a backfill: students enrolled again, not new ones.
BACKFILL = "backfill"


@dataclass
class BackfillReport:
    """What a backfill did."""

    version: str
    students: int = 0
    enrolled: list[str] = field(default_factory=list)
    without_photos: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "students": self.students,
            "enrolled": len(self.enrolled),
            "without_photos": self.without_photos,
            "failed": self.failed,
        }


def backfill_version(
    version: str,
    pipeline: LocalFacePipeline,
    reference_version: str,
    client: redis.Redis[bytes],
    photos: EnrollmentPhotos,
    producer: KafkaProducer | None,
) -> BackfillReport:
    """Enrol every student of ``reference_version``'s gallery under ``version``."""
    report = BackfillReport(version)
    students = GalleryStore(client, reference_version).students()
    report.students = len(students)
    stored = photos.by_student()
    unreadable: dict[str, str] = {}
    # The photos are opened (sealed_objects.py) into a private temporary folder, gone after.
    with tempfile.TemporaryDirectory(prefix="facegate-backfill-") as tmp:
        entries: list[RosterEntry] = []
        for student in students:
            keys = stored.get(student, [])
            paths = []
            for number, key in enumerate(keys):
                try:
                    data = photos.get(key)
                except TemplateKeyError as error:  # one photo, not the whole backfill
                    log.warning("backfill v%s: photo of %s skipped: %s", version, student, error)
                    unreadable[student] = str(error)
                    continue
                if data is None:
                    continue
                path = Path(tmp) / f"{len(entries)}-{number}{Path(key).suffix}"
                path.write_bytes(data)
                paths.append(path)
            if not paths:
                if student not in unreadable:
                    report.without_photos.append(student)
                continue
            name = client.hget(student_key(student), "name")
            entries.append(RosterEntry(student, name.decode() if name else student, tuple(paths)))
        bar = tqdm(total=len(entries), desc=f"enrolling v{version}", unit="student", disable=None)

        def tick(_student: str) -> None:
            bar.update()

        summary: EnrollmentSummary = enroll(
            entries, {version: pipeline}, client, producer, 1, tick, by=BACKFILL
        )
        bar.close()
    report.enrolled = summary.enrolled
    enrolled = set(summary.enrolled)
    report.failed = {
        **{s: reason for s, reason in unreadable.items() if s not in enrolled},
        **summary.failed,
    }
    log.info(
        "backfill v%s: %d/%d students enrolled, %d without photos",
        version,
        len(report.enrolled),
        report.students,
        len(report.without_photos),
    )
    return report


def backfill_model(
    version: str,
    model_dir: Path,
    mlflow: MlflowSettings,
    redis_settings: RedisSettings,
    s3: ObjectStoreSettings,
    kafka: KafkaSettings,
) -> BackfillReport:
    """Enrol the model in ``model_dir`` as ``version`` for every student of the champion's
    gallery, from the stored enrolment photos; workers are told on ``enrollments``."""
    from facegate.kafka_clients import make_producer
    from facegate.object_store import make_object_store
    from facegate.paths import models_dir
    from facegate.redis_client import make_redis
    from inference_worker.embedder import Embedder
    from stream_processors.vision.mtcnn import MtcnnDetector
    from trainer.registry import resolve

    champion = resolve(mlflow)
    client = make_redis(redis_settings)
    producer = make_producer(kafka)
    try:
        detector = MtcnnDetector(models_dir() / "mtcnn").load()
        pipeline = LocalFacePipeline(Embedder(model_dir, version=version).load(), detector, False)
        photos = EnrollmentPhotos(make_object_store(s3), s3.bucket_datasets)
        return backfill_version(version, pipeline, champion.version, client, photos, producer)
    finally:
        producer.close()
        client.close()
