"""Enrolment: students' photos through the production detect-align-embed path into the gallery.

A photo is used only when it shows exactly one face that passes the quality checks; every
refusal is reported with its reason.  Templates are stored per model version (a model change
re-embeds), the student's name and a small photo for the proctor console are stored beside
them, and an ``enrollments`` event tells every worker to refresh that student.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import redis
from kafka import KafkaProducer

from facegate.errors import FacegateError
from inference_worker.enrollment_events import announce
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.face_pipeline import LocalFacePipeline
from inference_worker.gallery import GalleryStore, student_key
from inference_worker.rotation_guard import deleting_face_images
from inference_worker.sealed_objects import PORTRAIT_FIELD, seal_field
from stream_processors.image_decoding import ImageError, decode_image

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class RosterEntry:
    """A student to enrol and their photos."""

    student_id: str
    name: str
    photos: tuple[Path, ...]


@dataclass
class EnrollmentSummary:
    """What an enrolment run did."""

    enrolled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    photos_used: int = 0
    photos_refused: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "enrolled": len(self.enrolled),
            "failed": dict(self.failed),
            "photos_used": self.photos_used,
            "photos_refused": dict(self.photos_refused),
        }


def roster_from_folder(folder: Path, limit: int | None = None) -> list[RosterEntry]:
    """One student per sub-folder (its name is the student id), its images as photos."""
    if not folder.is_dir():
        raise FacegateError(f"roster folder {folder} does not exist")
    entries = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = tuple(sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        if photos:
            entries.append(RosterEntry(person.name, person.name.replace("_", " "), photos))
    return entries[:limit] if limit else entries


def roster_from_csv(path: Path) -> list[RosterEntry]:
    """Rows of ``student_id,name,photo`` (one row per photo; paths relative to the CSV)."""
    photos: dict[str, list[Path]] = {}
    names: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"student_id", "photo"} - set(reader.fieldnames or [])
        if missing:
            raise FacegateError(f"{path}: missing column(s) {sorted(missing)}")
        for row in reader:
            student = row["student_id"].strip()
            names.setdefault(student, (row.get("name") or student).strip())
            photos.setdefault(student, []).append((path.parent / row["photo"].strip()).resolve())
    return [RosterEntry(s, names[s], tuple(p)) for s, p in photos.items()]


def _photo_refusal(
    pipeline: LocalFacePipeline, image: np.ndarray
) -> tuple[str | None, np.ndarray | None]:
    analysis = pipeline.analyse([image])[0]
    if analysis.face_count == 0:
        return "no_face", None
    if analysis.face_count > 1:
        return "several_faces", None
    if analysis.quality is None or not analysis.quality.ok:
        reasons = analysis.quality.reasons if analysis.quality else ["unknown"]
        return f"low_quality:{','.join(reasons)}", None
    crop = analysis.crops[pipeline.embedder.card.template_name]
    return None, crop


def enroll(
    roster: Iterable[RosterEntry],
    pipelines: dict[str, LocalFacePipeline],
    client: redis.Redis[bytes],
    producer: KafkaProducer | None,
    min_photos: int = 1,
    progress: Callable[[str], None] = lambda _: None,
    photos: EnrollmentPhotos | None = None,
    by: str = "facegate",
) -> EnrollmentSummary:
    """Enrol every student under every model version in ``pipelines`` (version -> pipeline).

    With ``photos``, every photo used is kept in the object store, so that a new model version
    can be enrolled from the same photos and training can learn from them.  ``by`` names who
    enrolled in the ``enrollments`` events (``backfill`` for a new version's gallery).
    """
    summary = EnrollmentSummary()
    for entry in roster:
        progress(entry.student_id)
        templates: dict[str, list[np.ndarray]] = {version: [] for version in pipelines}
        portrait: bytes | None = None
        used: list[bytes] = []
        for photo in entry.photos:
            try:
                data = photo.read_bytes()
                image = decode_image(data, MAX_PIXELS)
            except (OSError, ImageError) as error:
                summary.photos_refused[f"unreadable:{type(error).__name__}"] += 1
                continue
            # A photo is used for every model version or for none, so versions stay in step.
            checked = {v: _photo_refusal(p, image) for v, p in pipelines.items()}
            refusal = next((r for r, _ in checked.values() if r is not None), None)
            if refusal is not None:
                summary.photos_refused[refusal] += 1
                continue
            for version, (_, crop) in checked.items():
                assert crop is not None
                templates[version].append(pipelines[version].embedder.embed([crop])[0])
                portrait = portrait or _jpeg(crop)
            summary.photos_used += 1
            used.append(data)
        count = min(len(t) for t in templates.values()) if templates else 0
        if count < min_photos:
            summary.failed[entry.student_id] = f"{count} usable photo(s), {min_photos} needed"
            continue
        if photos is not None:
            for data in used:
                photos.put(entry.student_id, data)
        for version, rows in templates.items():
            GalleryStore(client, version).put(entry.student_id, np.stack(rows))
        client.hset(
            student_key(entry.student_id),
            mapping={
                "name": entry.name,
                PORTRAIT_FIELD: seal_field(
                    student_key(entry.student_id), PORTRAIT_FIELD, portrait or b""
                ),
            },
        )
        summary.enrolled.append(entry.student_id)
        if producer is not None:
            announce(producer, entry.student_id, "enrolled", pipelines, count, by)
    return summary


def _jpeg(crop: np.ndarray) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    return data.tobytes() if ok else b""


def unenroll(
    student_ids: Iterable[str],
    versions: Iterable[str],
    client: redis.Redis[bytes],
    producer: KafkaProducer | None,
    photos: EnrollmentPhotos | None = None,
) -> list[str]:
    """Remove students' templates under every version and tell the workers; return those removed.

    Refuses to delete anything while a key rotation runs (``rotation_guard``)."""
    removed = []
    versions = list(versions)
    with deleting_face_images(client, "unenrol"):
        for student in student_ids:
            found = [GalleryStore(client, v).remove(student) for v in versions]
            # The enrolment photos are biometric data too: they go with the templates.
            found.append(bool(client.delete(student_key(student))))
            if photos is not None:
                found.append(photos.remove_student(student) > 0)
            if not any(found):
                continue
            removed.append(student)
            if producer is not None:
                announce(producer, student, "removed", versions)
    return removed
