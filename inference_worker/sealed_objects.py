"""Face images at rest sealed like gallery templates: in the object store and in Redis.

An enrolment photo, the portrait the console shows and the face crop a proctor's decision
keeps are biometric data as much as a template is: whoever copies a bucket or Redis (a backup,
a replica, a leaked access key) must not get usable faces with it.  They are sealed with the
gallery key ring (``template_crypto.py``: AES-256-GCM, the ``FGT`` header naming the key)
before they are written and opened after they are read.  The associated data is where the
value lives (``s3://<bucket>/<key>``, or the Redis key and field), so a photo copied under
another student's key fails to open.

Values written before this existed (plain JPEG or PNG bytes: never the ``FGT`` header) are
read as they are, unless ``FACEGATE_GALLERY_ALLOW_PLAINTEXT`` is false; ``facegate gallery
rotate-key`` seals them, and re-seals everything under the current key before old keys go.

What is sealed (:data:`SEALED_FIELDS` and :func:`sealed_objects` list it for the rotation):

- enrolment photos: ``enrollment/student=<id>/...`` in ``FACEGATE_S3_BUCKET_DATASETS``;
- feedback face images: ``feedback/.../<feedback_id>.jpg`` in ``FACEGATE_S3_BUCKET_FEEDBACK``
  (their JSON manifests are not faces and stay readable);
- the enrolment portrait: field ``photo`` of ``facegate:student:<id>`` in Redis;
- the evidence of a proctor's decision: field ``thumbnail`` of
  ``facegate:feedback:evidence:<frame>`` in Redis (kept for the feedback consumer, with a TTL).

The trainer's working copies are sealed too (:func:`seal_file_bytes`, :func:`open_file_bytes`):
the images its dataset cache fetches and the face crops it aligns, kept between runs under
``FACEGATE_TRAIN_CACHE_DIR``.  Their associated data is the file's name (the SHA-256 of what
it holds), so the cache can move.  Files without the header (a labelled folder's own images,
or a cache written before this) are read as they are.

Not sealed: faces in flight (Kafka records, process memory) and a backfill's temporary folder
(deleted when it ends).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import redis
from minio import Minio
from minio.error import S3Error

from facegate.object_store import get_bytes, put_bytes
from facegate.settings import ObjectStoreSettings
from facegate.storage_keys import ENROLLMENT_PREFIX, FEEDBACK_PREFIX, evidence_key
from inference_worker.gallery import student_key
from inference_worker.template_crypto import TemplateCipher, default_cipher, sealed_key_id

# A sealed object is not an image any more: it is stored as opaque bytes.
SEALED_CONTENT_TYPE = "application/octet-stream"
FEEDBACK_IMAGE_SUFFIX = ".jpg"
PORTRAIT_FIELD = "photo"
THUMBNAIL_FIELD = "thumbnail"
PHOTO = "enrolment photo"
FEEDBACK_IMAGE = "feedback face image"
PORTRAIT = "enrolment portrait"
EVIDENCE = "decision evidence image"
CACHED_IMAGE = "cached face image"
# (what, Redis key pattern, hash field) of the face images sealed in Redis hashes.
SEALED_FIELDS = (
    (PORTRAIT, student_key("*"), PORTRAIT_FIELD),
    (EVIDENCE, evidence_key("*"), THUMBNAIL_FIELD),
)


def object_address(bucket: str, key: str) -> str:
    """Where an object lives, as the sealed value's associated data and in messages."""
    return f"s3://{bucket}/{key}"


def field_address(redis_key: str, field: str) -> str:
    """Where a hash field lives in Redis: its key and field."""
    return f"{redis_key}#{field}"


def put_sealed(
    client: Minio,
    bucket: str,
    key: str,
    data: bytes,
    content_type: str,
    cipher: TemplateCipher | None = None,
) -> None:
    """Store ``data`` under ``key`` sealed (as it is, with ``content_type``, without a key)."""
    cipher = cipher or default_cipher()
    stored = cipher.seal(object_address(bucket, key), data)
    put_bytes(client, bucket, key, stored, SEALED_CONTENT_TYPE if cipher.encrypts else content_type)


def get_opened(
    client: Minio, bucket: str, key: str, what: str, cipher: TemplateCipher | None = None
) -> bytes | None:
    """The object's plaintext bytes, or None when it does not exist.

    Raises ``TemplateKeyError`` when it cannot be opened (no key, a dropped key, altered).
    """
    stored = get_bytes(client, bucket, key)
    if stored is None:
        return None
    return (cipher or default_cipher()).open(object_address(bucket, key), stored, what)


def seal_field(
    redis_key: str, field: str, data: bytes, cipher: TemplateCipher | None = None
) -> bytes:
    """The value to store in a hash field (empty stays empty: no image)."""
    if not data:
        return data
    return (cipher or default_cipher()).seal(field_address(redis_key, field), data)


def open_field(
    redis_key: str,
    field: str,
    stored: bytes | None,
    what: str,
    cipher: TemplateCipher | None = None,
) -> bytes | None:
    """The image stored in a hash field, opened; None when there is none."""
    if not stored:
        return None
    return (cipher or default_cipher()).open(field_address(redis_key, field), stored, what)


def file_address(path: Path) -> str:
    """A working copy's associated data: its file name (content-addressed in the caches)."""
    return f"file:{path.name}"


def seal_file_bytes(path: Path, data: bytes, cipher: TemplateCipher | None = None) -> bytes:
    """What to write to the working copy ``path`` for ``data``."""
    return (cipher or default_cipher()).seal(file_address(path), data)


def open_file_bytes(path: Path, stored: bytes, cipher: TemplateCipher | None = None) -> bytes:
    """A working copy's bytes, opened when sealed and as they are when not (see the module).

    Raises ``TemplateKeyError`` when sealed and it cannot be opened (a dropped key, altered).
    """
    if sealed_key_id(stored, f"{CACHED_IMAGE} {path}") is None:
        return stored
    return (cipher or default_cipher()).open(file_address(path), stored, CACHED_IMAGE)


def sealed_objects(client: Minio, s3: ObjectStoreSettings) -> Iterator[tuple[str, str, str]]:
    """(what, bucket, key) of every face image in the object store."""
    for what, bucket, prefix in (
        (PHOTO, s3.bucket_datasets, ENROLLMENT_PREFIX),
        (FEEDBACK_IMAGE, s3.bucket_feedback, FEEDBACK_PREFIX),
    ):
        try:
            for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
                name = str(obj.object_name or "")
                if what == FEEDBACK_IMAGE and not name.endswith(FEEDBACK_IMAGE_SUFFIX):
                    continue  # a sample's JSON manifest
                if name:
                    yield what, bucket, name
        except S3Error as error:
            if error.code != "NoSuchBucket":
                raise


def keys_with_field(client: redis.Redis[bytes], pattern: str, field: str) -> list[str]:
    """Redis keys matching ``pattern`` whose hash has a non-empty ``field``."""
    found = []
    for raw in client.scan_iter(match=pattern, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            if client.hget(key, field):
                found.append(key)
        except redis.ResponseError:  # WRONGTYPE: not a hash
            continue
    return sorted(found)
