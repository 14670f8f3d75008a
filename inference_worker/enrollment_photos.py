"""Enrolment photos in the object store: what new model versions re-embed and training reads.

Layout in the datasets bucket (``FACEGATE_S3_BUCKET_DATASETS``):
``enrollment/student=<student_id>/<sha256 of the bytes>.<ext>``, the photo exactly as enrolled,
sealed with the gallery key (``sealed_objects.py``).  Content-addressed names make re-enrolling
the same photo idempotent.  A photo is stored only when it was used (one good face): refused
photos are never kept.
"""

from __future__ import annotations

import hashlib

from minio import Minio

from facegate.storage_keys import ENROLLMENT_PREFIX
from inference_worker.sealed_objects import PHOTO, get_opened, put_sealed
from inference_worker.template_crypto import TemplateCipher

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png"}


def _extension(data: bytes) -> str:
    return "png" if data.startswith(b"\x89PNG") else "jpg"


def student_prefix(student_id: str) -> str:
    """The key prefix of one student's photos."""
    return f"{ENROLLMENT_PREFIX}student={student_id}/"


def student_of(key: str) -> str:
    """The student id a photo key belongs to."""
    part = key.split("/")[1]
    if not part.startswith("student="):
        raise ValueError(f"not an enrolment photo key: {key}")
    return part.removeprefix("student=")


class EnrollmentPhotos:
    """Students' enrolment photos in one bucket."""

    def __init__(self, client: Minio, bucket: str, cipher: TemplateCipher | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.cipher = cipher  # None: the process's gallery key settings

    def put(self, student_id: str, data: bytes) -> str:
        """Store a photo; return its key."""
        ext = _extension(data)
        key = f"{student_prefix(student_id)}{hashlib.sha256(data).hexdigest()}.{ext}"
        put_sealed(self.client, self.bucket, key, data, CONTENT_TYPES[ext], self.cipher)
        return key

    def keys(self, student_id: str | None = None) -> list[str]:
        """Keys of one student's photos, or of every student's."""
        prefix = student_prefix(student_id) if student_id else ENROLLMENT_PREFIX
        objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
        return sorted(str(o.object_name) for o in objects if o.object_name)

    def by_student(self) -> dict[str, list[str]]:
        """Every stored photo key, grouped by student."""
        grouped: dict[str, list[str]] = {}
        for key in self.keys():
            grouped.setdefault(student_of(key), []).append(key)
        return grouped

    def get(self, key: str) -> bytes | None:
        """A photo's bytes (opened), or None when it is gone."""
        return get_opened(self.client, self.bucket, key, PHOTO, self.cipher)

    def remove_student(self, student_id: str) -> int:
        """Delete every photo of a student; return how many there were."""
        keys = self.keys(student_id)
        for key in keys:
            self.client.remove_object(self.bucket, key)
        return len(keys)
