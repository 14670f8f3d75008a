"""Key rotation of the gallery: every stored template re-sealed under the current key.

The same pass re-seals the face images sealed with the gallery key (``sealed_objects.py``):
enrolment portraits and decision evidence in Redis and, when an object store is given,
enrolment photos and feedback face images; an old key may go only when none of them needs it
either.

Rotation is two steps, each safe to interrupt and repeat:

1. the key file gets the new key first, the old ones kept after it (one atomic replace), so
   every template, whichever key sealed it, still opens, and services that follow the file
   (see ``KeyRing``) seal new templates with the new key from then on;
2. every template of every model version is read, opened and sealed again with the current
   key; values already under it are left alone, plaintext ones (written before encryption)
   are sealed for the first time.  Each rewrite is an optimistic transaction (WATCH) on that
   one key, so an enrolment that replaces the template meanwhile is never overwritten with
   the older one.

Only when a pass finds nothing left under an old key may the old keys be dropped.

One rotation at a time, and none while face images are being deleted:
:func:`~inference_worker.rotation_guard.rotation_lock` (a Redis key with an expiry) is held for
the whole command.  Two rotations at once could each write the key file with their own new key,
one overwriting the other's, and templates sealed under the lost key would no longer open; a
forget during a rotation could see a deleted object written back.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import redis
from minio import Minio
from tqdm import tqdm

from facegate.object_store import get_bytes, put_bytes
from facegate.redis_client import waiting_may_cure
from facegate.settings import ObjectStoreSettings
from inference_worker.gallery import GalleryStore, gallery_versions, unlisted_template_keys
from inference_worker.sealed_objects import (
    SEALED_CONTENT_TYPE,
    SEALED_FIELDS,
    field_address,
    keys_with_field,
    object_address,
    sealed_objects,
)
from inference_worker.template_crypto import (
    GalleryKey,
    KeyRing,
    TemplateCipher,
    TemplateKeyError,
    read_key_file,
    sealed_key_id,
    write_key_file,
)

log = logging.getLogger(__name__)

Outcome = Literal["rewritten", "migrated", "current", "missing", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("rewritten", "migrated", "current", "missing", "failed")
UNLISTED = "(unlisted)"


@dataclass
class RotationReport:
    """What one re-encryption pass did, per model version."""

    key_id: str
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    # Face images by kind ("enrolment photo", ...): they are not templates of a version.
    images: dict[str, Counter[str]] = field(default_factory=dict)
    # Redis key or object address -> why it could not be re-sealed (no key material in it).
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, version: str, outcome: Outcome) -> None:
        self.counts.setdefault(version, Counter())[outcome] += 1

    def add_image(self, what: str, outcome: Outcome) -> None:
        self.images.setdefault(what, Counter())[outcome] += 1

    def total(self, outcome: Outcome) -> int:
        return sum(c[outcome] for c in self.counts.values())

    @property
    def templates(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def complete(self) -> bool:
        """Every template that exists is under the current key."""
        return not self.failed

    def lines(self) -> list[str]:
        """One line per version, one for the total and one per kind of face image."""

        def line(label: str, counts: Counter[str], unit: str = "template") -> str:
            parts = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
            total = sum(counts.values())
            return f"{label}: {total} {unit}{'' if total == 1 else 's'} ({parts or 'none'})"

        rows = [line(f"  v{v}" if v != UNLISTED else f"  {v}", c) for v, c in self.counts.items()]
        total: Counter[str] = Counter()
        for counts in self.counts.values():
            total.update(counts)
        images = [line(f"  {what}s", c, "image") for what, c in self.images.items()]
        return [*rows, line(f"  all versions, key {self.key_id}", total), *images]


def _targets(client: redis.Redis[bytes]) -> list[tuple[str, str]]:
    """(version, Redis key) of every stored template: the students sets, then strays."""
    targets = []
    for version in gallery_versions(client):
        store = GalleryStore(client, version)
        targets += [(version, store.template_key(s)) for s in store.students()]
    listed = {key for _, key in targets}
    targets += [(UNLISTED, key) for key in unlisted_template_keys(client, listed)]
    return targets


def reseal(
    client: redis.Redis[bytes],
    cipher: TemplateCipher,
    key: str,
    field: str | None = None,
    what: str = "gallery template",
) -> Outcome:
    """Re-seal the value under ``key`` (or in its hash ``field``: an image, empty meaning none)
    with the current key, unless it already is."""
    current = cipher.current_key_id()
    if current is None:
        raise TemplateKeyError("re-encryption needs a gallery key")
    address = key if field is None else field_address(key, field)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                # After WATCH the pipeline runs commands at once (until MULTI).
                if field is None:
                    raw = cast("bytes | None", pipe.get(key))
                else:
                    raw = cast("bytes | None", pipe.hget(key, field)) or None
                if raw is None:
                    return "missing"
                key_id = sealed_key_id(raw, f"{what} {address}")
                if key_id == current:
                    return "current"
                sealed = cipher.seal(address, cipher.open(address, raw, what))
                pipe.multi()
                if field is None:
                    pipe.set(key, sealed, keepttl=True)
                else:
                    pipe.hset(key, field, sealed)  # the hash keeps its TTL
                pipe.execute()
                return "migrated" if key_id is None else "rewritten"
            except redis.WatchError:
                continue  # written meanwhile: read it again


def reseal_object(
    client: Minio, bucket: str, key: str, what: str, cipher: TemplateCipher
) -> Outcome:
    """Re-seal one object with the current key, unless it already is.

    Objects are content-addressed or written once, so a read-then-write cannot overwrite a
    newer value with an older one.  A concurrent forget may delete it and a rewrite after that
    would bring it back, so the object is checked again just before the write.
    """
    stored = get_bytes(client, bucket, key)
    if stored is None:
        return "missing"
    address = object_address(bucket, key)
    key_id = sealed_key_id(stored, f"{what} {address}")
    if key_id == cipher.current_key_id():
        return "current"
    plaintext = cipher.open(address, stored, what)
    if get_bytes(client, bucket, key) is None:
        return "missing"
    put_bytes(client, bucket, key, cipher.seal(address, plaintext), SEALED_CONTENT_TYPE)
    return "migrated" if key_id is None else "rewritten"


def reseal_images(
    client: redis.Redis[bytes],
    cipher: TemplateCipher,
    report: RotationReport,
    store: tuple[Minio, ObjectStoreSettings] | None,
    progress: bool,
) -> None:
    """Re-seal the face images in Redis hashes and in the object store."""
    for what, pattern, hash_field in SEALED_FIELDS:
        for key in keys_with_field(client, pattern, hash_field):
            try:
                report.add_image(what, reseal(client, cipher, key, hash_field, what))
            except TemplateKeyError as error:
                report.failed[field_address(key, hash_field)] = str(error)
                report.add_image(what, "failed")
    if store is None:
        return
    minio, s3 = store
    try:
        targets = list(sealed_objects(minio, s3))
    except Exception as error:  # an unreachable store: nothing there can be called re-sealed
        report.failed[f"object store {s3.endpoint}"] = f"cannot list it: {error}"
        return
    bar = tqdm(targets, desc=f"re-encrypting images (key {report.key_id})", disable=not progress)
    for what, bucket, key in bar:
        try:
            report.add_image(what, reseal_object(minio, bucket, key, what, cipher))
        except Exception as error:  # a key missing from the ring, or the store going away
            report.failed[object_address(bucket, key)] = str(error)
            report.add_image(what, "failed")
    bar.close()


def reencrypt_all(
    client: redis.Redis[bytes],
    cipher: TemplateCipher,
    progress: bool = True,
    store: tuple[Minio, ObjectStoreSettings] | None = None,
) -> RotationReport:
    """Re-seal every template of every model version under the cipher's current key, and
    the face images sealed with the gallery key (those in ``store``'s buckets when given)."""
    key_id = cipher.current_key_id()
    if key_id is None:
        raise TemplateKeyError("re-encryption needs a gallery key")
    report = RotationReport(key_id)
    targets = _targets(client)
    bar = tqdm(targets, desc=f"re-encrypting (key {key_id})", unit="template", disable=not progress)
    for version, key in bar:
        try:
            outcome = reseal(client, cipher, key)
        except TemplateKeyError as error:
            report.failed[key] = str(error)
            outcome = "failed"
        except redis.ResponseError as error:
            if waiting_may_cure(error):
                raise
            # A key of another type (written over by another tool): named in the report, and
            # the rotation goes on with the others instead of stopping half-way.
            report.failed[key] = f"Redis refused: {error}"
            outcome = "failed"
        report.add(version, outcome)
    bar.close()
    reseal_images(client, cipher, report, store, progress)
    log.info(
        "re-encryption under %s: %d templates, %d rewritten, %d migrated, %d failed; "
        "face images %s",
        key_id,
        report.templates,
        report.total("rewritten"),
        report.total("migrated"),
        report.total("failed"),
        {what: dict(counts) for what, counts in report.images.items()} or "none",
    )
    return report


def add_current_key(path: Path, key: GalleryKey) -> KeyRing:
    """Make ``key`` the current key of the key file at ``path`` (created if missing), keeping
    the others after it; return the new ring."""
    old = read_key_file(path) if path.exists() else []
    if any(k.key_id == key.key_id for k in old):
        raise TemplateKeyError(f"key id {key.key_id!r} is already in {path}: choose another")
    write_key_file(path, [key, *old])
    return KeyRing.from_file(path)


def drop_old_keys(path: Path) -> list[str]:
    """Keep only the current key in the key file; return the ids dropped."""
    keys = read_key_file(path)
    if len(keys) > 1:
        write_key_file(path, keys[:1])
    return [k.key_id for k in keys[1:]]
