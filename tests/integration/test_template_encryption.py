"""Templates and face images encrypted at rest in the real Redis and object store of the local
stack, and key rotation.

The rotation tests work in a Redis database of their own (the stack's server, database 9) with
a key file of their own, and point the datasets and feedback buckets at buckets of their own,
because ``rotate-key`` re-seals every template and face image it finds: the session's other
tests keep the stack's key, database 0 and buckets.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from click.testing import CliRunner
from minio import Minio

from facegate.errors import FacegateError
from facegate.object_store import get_bytes, make_object_store, put_bytes
from facegate.privacy.forget import forget_students
from facegate.privacy.retention import RetentionSettings, apply_retention
from facegate.redis_client import make_redis
from facegate.settings import ObjectStoreSettings, RedisSettings, load_settings
from facegate.stack import LocalStack
from facegate.storage_keys import FEEDBACK_PREFIX, evidence_key
from inference_worker.enrollment import unenroll
from inference_worker.enrollment_photos import EnrollmentPhotos
from inference_worker.face_pipeline import get_pipeline
from inference_worker.gallery import GalleryStore, Vector, normalise, student_key
from inference_worker.gallery_backfill import backfill_version
from inference_worker.rotation_guard import (
    DELETION_PREFIX,
    ROTATION_LOCK,
    deleting_face_images,
    rotation_lock,
)
from inference_worker.sealed_objects import (
    PORTRAIT,
    PORTRAIT_FIELD,
    THUMBNAIL_FIELD,
    get_opened,
    open_field,
    put_sealed,
    seal_field,
)
from inference_worker.template_crypto import (
    KeyRing,
    TemplateCipher,
    new_key,
    read_key_file,
    sealed_key_id,
    write_key_file,
)
from inference_worker.template_crypto_cli import rotate_key_command
from tests.conftest import lfw_sample

pytestmark = pytest.mark.integration

PRIVATE_DB = 9


def _templates(seed: int, count: int = 3, dim: int = 128) -> Vector:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return normalise(rows)


def _use_key_file(url: str, key_file: Path, key_id: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key file holding one new key, and the test's Redis URL, that file and buckets of the
    test's own (not created: a test that needs them makes them) as the settings the CLI reads."""
    write_key_file(key_file, [new_key(key_id)])
    monkeypatch.setenv("FACEGATE_REDIS_URL", url)
    monkeypatch.setenv("FACEGATE_GALLERY_KEY_FILE", str(key_file))
    suffix = uuid.uuid4().hex[:12]
    monkeypatch.setenv("FACEGATE_S3_BUCKET_DATASETS", f"rotation-{suffix}-datasets")
    monkeypatch.setenv("FACEGATE_S3_BUCKET_FEEDBACK", f"rotation-{suffix}-feedback")
    return key_file


@pytest.fixture
def private_redis(local_stack: LocalStack) -> Iterator[tuple[str, redis.Redis[bytes]]]:
    """Database 9 of the stack's Redis, empty before and after the test."""
    url = local_stack.endpoints()["FACEGATE_REDIS_URL"].rsplit("/", 1)[0] + f"/{PRIVATE_DB}"
    client = make_redis(RedisSettings(url=url))
    client.flushdb()
    try:
        yield url, client
    finally:
        client.flushdb()
        client.close()


def test_the_stack_seals_templates_with_its_own_key_file(
    local_stack: LocalStack, private_redis: tuple[str, redis.Redis[bytes]]
) -> None:
    _, client = private_redis
    key_file = Path(os.environ["FACEGATE_GALLERY_KEY_FILE"])
    assert key_file == local_stack.gallery_key_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    store = GalleryStore(client, "stack-key")  # the cipher of the session's settings
    templates = _templates(1)
    store.put("s1", templates)
    raw = client.get(store.template_key("s1"))
    assert raw is not None and templates.tobytes() not in raw
    assert sealed_key_id(raw) == read_key_file(key_file)[0].key_id
    loaded = GalleryStore(client, "stack-key").get("s1")
    assert loaded is not None and np.allclose(loaded, templates, atol=1e-6)


def test_rotation_reseals_every_template_and_old_keys_go_only_when_asked(
    private_redis: tuple[str, redis.Redis[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, client = private_redis
    key_file = _use_key_file(url, tmp_path / "gallery.keys", "k-old", monkeypatch)

    # Enrol through the store: what Redis holds is not the float32 bytes.
    enrolled = {
        ("v1", "s1"): _templates(1),
        ("v1", "s2"): _templates(2),
        ("v2", "s3"): _templates(3),
    }
    for (version, student), templates in enrolled.items():
        GalleryStore(client, version).put(student, templates)
    v1 = GalleryStore(client, "v1")
    raw_s1 = client.get(v1.template_key("s1"))
    assert raw_s1 is not None
    assert raw_s1 != enrolled["v1", "s1"].tobytes()
    assert enrolled["v1", "s1"].tobytes()[:64] not in raw_s1
    assert sealed_key_id(raw_s1) == "k-old"
    # A template written before encryption existed: plain float32 bytes, still read.
    legacy = _templates(4)
    client.set(v1.template_key("legacy"), legacy.tobytes())
    client.sadd("facegate:gallery:v1:students", "legacy")
    enrolled["v1", "legacy"] = legacy

    def assert_gallery(cipher: TemplateCipher | None = None) -> None:
        for version in ("v1", "v2"):
            load = GalleryStore(client, version, cipher).load_readable()
            assert load.unreadable == {}
            loaded = load.templates
            expected = {s: t for (v, s), t in enrolled.items() if v == version}
            assert loaded.keys() == expected.keys()
            for student, templates in expected.items():
                assert np.allclose(loaded[student], templates, atol=1e-6), (version, student)

    assert_gallery()

    # Rotate: a new current key, every template re-sealed, the legacy one sealed for the first time.
    result = CliRunner().invoke(rotate_key_command, ["--key-id", "k-new"])
    assert result.exit_code == 0, result.output
    assert "4 templates (3 rewritten, 1 migrated)" in result.output
    assert "old keys kept: k-old" in result.output
    assert [k.key_id for k in read_key_file(key_file)] == ["k-new", "k-old"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for version, student in enrolled:
        raw = client.get(GalleryStore(client, version).template_key(student))
        assert raw is not None and sealed_key_id(raw) == "k-new", (version, student)
    assert_gallery()  # the cipher of the settings, which followed the file
    assert_gallery(TemplateCipher(KeyRing.from_file(key_file)))  # a freshly started service

    # An interrupted rotation: one template still under the old key.  It reads, and a re-run
    # finishes the job.
    client.set(v1.template_key("s1"), raw_s1)
    assert_gallery()
    result = CliRunner().invoke(rotate_key_command, ["--reencrypt-only", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "4 templates (1 rewritten, 3 current)" in result.output

    # Drop the old key: templates still read; one sealed with the dropped key no longer does.
    result = CliRunner().invoke(rotate_key_command, ["--reencrypt-only", "--drop-old"])
    assert result.exit_code == 0, result.output
    assert "old keys dropped: k-old" in result.output
    assert [k.key_id for k in read_key_file(key_file)] == ["k-new"]
    assert_gallery(TemplateCipher(KeyRing.from_file(key_file)))
    client.set(v1.template_key("s1"), raw_s1)
    with pytest.raises(FacegateError, match="'k-old', which is not in the gallery key ring"):
        GalleryStore(client, "v1").get("s1")


def test_a_template_moved_or_read_without_a_key_is_refused(
    private_redis: tuple[str, redis.Redis[bytes]],
) -> None:
    _, client = private_redis
    cipher = TemplateCipher(KeyRing([new_key("k1")]))
    store = GalleryStore(client, "v1", cipher)
    store.put("alice", _templates(1))
    store.put("bob", _templates(2))
    # Alice's sealed templates copied over Bob's: Bob's key does not open them.
    client.copy(store.template_key("alice"), store.template_key("bob"), replace=True)
    with pytest.raises(FacegateError, match="fails authentication"):
        store.get("bob")
    load = store.load_readable()
    assert "fails authentication" in load.unreadable["bob"]
    assert list(load.templates) == ["alice"]
    # A worker without any key meets a sealed template: one clear line.
    with pytest.raises(FacegateError, match="no gallery key is configured"):
        GalleryStore(client, "v1", TemplateCipher(None)).get("alice")


def test_rotation_refuses_to_drop_keys_while_a_template_cannot_be_read(
    private_redis: tuple[str, redis.Redis[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, client = private_redis
    key_file = _use_key_file(url, tmp_path / "gallery.keys", "k1", monkeypatch)
    GalleryStore(client, "v1").put("ok", _templates(1))
    # Sealed with a key nobody has any more.
    lost = GalleryStore(client, "v1", TemplateCipher(KeyRing([new_key("lost")])))
    lost.put("orphan", _templates(2))
    # Written over with a hash by another tool: its GET fails with WRONGTYPE, which used to
    # stop the rotation half-way with Redis's error.
    GalleryStore(client, "v1").put("typed", _templates(1))
    typed = GalleryStore(client, "v1").template_key("typed")
    client.delete(typed)
    client.hset(typed, "x", "y")
    result = CliRunner().invoke(rotate_key_command, ["--drop-old", "--no-progress"])
    assert result.exit_code != 0
    assert "2 template(s) or image(s) could not be re-encrypted" in str(result.exception)
    assert "facegate:gallery:v1:t:orphan" in result.output
    assert "facegate:gallery:v1:t:typed: Redis refused: WRONGTYPE" in result.output
    assert len(read_key_file(key_file)) == 2  # nothing dropped


def test_one_rotation_at_a_time(
    private_redis: tuple[str, redis.Redis[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, client = private_redis
    key_file = _use_key_file(url, tmp_path / "gallery.keys", "k1", monkeypatch)
    GalleryStore(client, "v1").put("alice", _templates(1))
    before = key_file.read_text()
    # Another rotation (another host's process) holds the lock: this one changes nothing.
    client.set(ROTATION_LOCK, "other-host:4242", ex=60)
    refused = CliRunner().invoke(rotate_key_command, ["--key-id", "k2", "--no-progress"])
    assert refused.exit_code != 0
    assert "another key rotation is running (other-host:4242)" in str(refused.exception)
    assert key_file.read_text() == before
    # Once it is done, a rotation runs, and gives the lock back at the end.
    client.delete(ROTATION_LOCK)
    done = CliRunner().invoke(rotate_key_command, ["--key-id", "k2", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert [k.key_id for k in read_key_file(key_file)] == ["k2", "k1"]
    assert client.get(ROTATION_LOCK) is None
    assert (
        sealed_key_id(client.get(GalleryStore(client, "v1").template_key("alice")) or b"") == "k2"
    )


@pytest.fixture
def private_buckets(
    private_redis: tuple[str, redis.Redis[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Minio, ObjectStoreSettings, Path]]:
    """A key file (key ``k-old``) and datasets and feedback buckets of the test's own, made."""
    url, _ = private_redis
    key_file = _use_key_file(url, tmp_path / "gallery.keys", "k-old", monkeypatch)
    s3 = load_settings(ObjectStoreSettings)
    store = make_object_store(s3)
    buckets = (s3.bucket_datasets, s3.bucket_feedback)
    for bucket in buckets:
        store.make_bucket(bucket)
    try:
        yield store, s3, key_file
    finally:
        for bucket in buckets:
            for obj in store.list_objects(bucket, recursive=True):
                store.remove_object(bucket, str(obj.object_name))
            store.remove_bucket(bucket)


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", pixels)
    assert ok
    return data.tobytes()


def test_face_images_are_sealed_where_they_live_and_rotate_with_the_templates(
    private_redis: tuple[str, redis.Redis[bytes]],
    private_buckets: tuple[Minio, ObjectStoreSettings, Path],
) -> None:
    _, client = private_redis
    store, s3, key_file = private_buckets
    photos = EnrollmentPhotos(store, s3.bucket_datasets)  # the cipher of the settings: k-old

    # An enrolment photo: the bucket holds no JPEG, only what the key opens.
    photo = _jpeg(1)
    photo_key = photos.put("s1", photo)
    stored = get_bytes(store, s3.bucket_datasets, photo_key)
    assert stored is not None and not stored.startswith(b"\xff\xd8") and photo[:64] not in stored
    assert sealed_key_id(stored) == "k-old"
    assert photos.get(photo_key) == photo
    # One written before sealing existed: read as it is, sealed by the rotation.
    legacy_photo = _jpeg(2)
    legacy_key = "enrollment/student=s2/legacy.jpg"
    put_bytes(store, s3.bucket_datasets, legacy_key, legacy_photo, "image/jpeg")
    assert photos.get(legacy_key) == legacy_photo
    # A feedback face image and its manifest, which is not a face and stays readable.
    sample = "feedback/date=2026-12-03/part-v1/f1"
    face = _jpeg(3)
    put_sealed(store, s3.bucket_feedback, f"{sample}.jpg", face, "image/jpeg")
    manifest = b'{"student_id": "s1", "label": "genuine"}'
    put_bytes(store, s3.bucket_feedback, f"{sample}.json", manifest, "application/json")
    # In Redis: portraits, one sealed as enrolment writes it and one legacy, and the evidence
    # of a proctor's decision as the console writes it, with its TTL.
    portrait, evidence = _jpeg(4), _jpeg(6)
    s1 = student_key("s1")
    client.hset(
        s1, mapping={"name": "One", PORTRAIT_FIELD: seal_field(s1, PORTRAIT_FIELD, portrait)}
    )
    client.hset(student_key("s2"), mapping={"name": "Two", PORTRAIT_FIELD: portrait})
    assert open_field(s1, PORTRAIT_FIELD, client.hget(s1, PORTRAIT_FIELD), PORTRAIT) == portrait
    decided = evidence_key("frame-1")
    client.hset(decided, THUMBNAIL_FIELD, seal_field(decided, THUMBNAIL_FIELD, evidence))
    client.expire(decided, 600)
    hashes = {
        (s1, PORTRAIT_FIELD): portrait,
        (student_key("s2"), PORTRAIT_FIELD): portrait,
        (decided, THUMBNAIL_FIELD): evidence,
    }

    # A photo copied under another student's key does not open there.
    stolen = "enrollment/student=s3/copied.jpg"
    put_bytes(store, s3.bucket_datasets, stolen, stored, "application/octet-stream")
    with pytest.raises(FacegateError, match="fails authentication"):
        photos.get(stolen)
    store.remove_object(s3.bucket_datasets, stolen)

    result = CliRunner().invoke(rotate_key_command, ["--key-id", "k-new", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "enrolment photos: 2 images (1 rewritten, 1 migrated)" in result.output
    assert "feedback face images: 1 image (1 rewritten)" in result.output
    assert "enrolment portraits: 2 images (1 rewritten, 1 migrated)" in result.output
    assert "decision evidence images: 1 image (1 rewritten)" in result.output
    for bucket, key in (
        (s3.bucket_datasets, photo_key),
        (s3.bucket_datasets, legacy_key),
        (s3.bucket_feedback, f"{sample}.jpg"),
    ):
        assert sealed_key_id(get_bytes(store, bucket, key) or b"") == "k-new", key
    for key, hash_field in hashes:
        assert sealed_key_id(client.hget(key, hash_field) or b"") == "k-new", key
    assert 0 < client.ttl(decided) <= 600  # the evidence still expires
    assert get_bytes(store, s3.bucket_feedback, f"{sample}.json") == manifest

    # The old key goes: everything still opens with the file's one key, as a new service would.
    result = CliRunner().invoke(rotate_key_command, ["--reencrypt-only", "--drop-old"])
    assert result.exit_code == 0, result.output
    assert "old keys dropped: k-old" in result.output
    fresh = TemplateCipher(KeyRing.from_file(key_file), allow_plaintext=False)
    assert EnrollmentPhotos(store, s3.bucket_datasets, fresh).get(photo_key) == photo
    assert EnrollmentPhotos(store, s3.bucket_datasets, fresh).get(legacy_key) == legacy_photo
    assert get_opened(store, s3.bucket_feedback, f"{sample}.jpg", "face", fresh) == face
    for (key, hash_field), image in hashes.items():
        assert open_field(key, hash_field, client.hget(key, hash_field), "face", fresh) == image


def test_rotation_keeps_old_keys_while_a_face_image_cannot_be_read(
    private_redis: tuple[str, redis.Redis[bytes]],
    private_buckets: tuple[Minio, ObjectStoreSettings, Path],
) -> None:
    store, s3, key_file = private_buckets
    lost = TemplateCipher(KeyRing([new_key("lost")]))
    EnrollmentPhotos(store, s3.bucket_datasets, lost).put("orphan", _jpeg(5))
    result = CliRunner().invoke(rotate_key_command, ["--drop-old", "--no-progress"])
    assert result.exit_code != 0
    assert "1 template(s) or image(s) could not be re-encrypted" in str(result.exception)
    assert "enrollment/student=orphan/" in result.output
    assert "'lost', which is not in the gallery key ring" in result.output
    assert len(read_key_file(key_file)) == 2  # nothing dropped


def test_a_rotation_and_a_deletion_of_face_images_never_run_together(
    private_redis: tuple[str, redis.Redis[bytes]],
    private_buckets: tuple[Minio, ObjectStoreSettings, Path],
) -> None:
    """A rotation writes back each face object it re-seals: a forget meanwhile could see a
    deleted photo come back.  Each side refuses while the other runs, deleting nothing."""
    _, client = private_redis
    store, s3, key_file = private_buckets
    photos = EnrollmentPhotos(store, s3.bucket_datasets)
    template_key = GalleryStore(client, "v1").template_key("s1")
    GalleryStore(client, "v1").put("s1", _templates(1))
    photo_key = photos.put("s1", _jpeg(1))
    expired = f"{FEEDBACK_PREFIX}date=2020-01-01/part-v1/sample.jpg"  # past any retention
    put_sealed(store, s3.bucket_feedback, expired, _jpeg(2), "image/jpeg")
    # (the shared frames bucket is not the test's to clean: a frames bucket that does not exist)
    no_frames = s3.model_copy(update={"bucket_frames": f"{s3.bucket_feedback}-no-frames"})
    retention = load_settings(RetentionSettings, s3=no_frames)

    # Another host's rotation runs: forget, unenrol and retention delete nothing and say why.
    client.set(ROTATION_LOCK, "other-host:4242", ex=60)
    running = r"a key rotation is running \(other-host:4242\): {} deletes nothing"
    with pytest.raises(FacegateError, match=running.format("forget")):
        forget_students(["s1"], client, store, s3, None, "test")
    with pytest.raises(FacegateError, match=running.format("unenrol")):
        unenroll(["s1"], ["v1"], client, None, photos)
    with pytest.raises(FacegateError, match=running.format("retention")):
        apply_retention(store, client, retention)
    assert client.exists(template_key) and photos.get(photo_key) is not None
    assert get_bytes(store, s3.bucket_feedback, expired) is not None
    assert list(client.scan_iter(DELETION_PREFIX + "*")) == []
    # A dry run deletes nothing: it still lists what a forget would remove.
    (plan,) = forget_students(["s1"], client, store, s3, None, "test", dry_run=True)
    assert plan.counts()["enrolment_photos"] == 1, plan.counts()
    client.delete(ROTATION_LOCK)

    # A forget runs: a rotation started now changes nothing and gives its lock back.
    before = key_file.read_text()
    with deleting_face_images(client, "forget"):
        refused = CliRunner().invoke(rotate_key_command, ["--key-id", "k-new", "--no-progress"])
    assert refused.exit_code != 0
    assert "face images are being deleted (forget by " in str(refused.exception)
    assert key_file.read_text() == before and client.get(ROTATION_LOCK) is None
    assert list(client.scan_iter(DELETION_PREFIX + "*")) == []

    # Neither running: the forget and the retention delete.
    forget_students(["s1"], client, store, s3, None, "test")
    assert not client.exists(template_key) and photos.get(photo_key) is None
    assert expired in apply_retention(store, client, retention).deleted["feedback_samples"]
    assert get_bytes(store, s3.bucket_feedback, expired) is None


def test_the_guards_keys_live_as_long_as_their_holders(
    private_redis: tuple[str, redis.Redis[bytes]],
) -> None:
    """The rotation lock and a deletion's announcement expire a TTL after their holder stops
    renewing them (a crash), and are renewed for as long as it runs (a rotation of hours)."""
    _, client = private_redis
    with rotation_lock(client, ttl_s=1) as owner:
        time.sleep(2.5)  # past two TTLs: only the renewals keep the lock
        assert client.get(ROTATION_LOCK) == owner.encode()
        assert 0 < client.pttl(ROTATION_LOCK) <= 1000
    assert client.get(ROTATION_LOCK) is None
    with deleting_face_images(client, "forget", ttl_s=1):
        time.sleep(2.5)
        (announced,) = client.scan_iter(DELETION_PREFIX + "*")
        assert (client.get(announced) or b"").startswith(b"forget by ")
    assert list(client.scan_iter(DELETION_PREFIX + "*")) == []
    # A holder that died: nobody renews its key, and within the TTL a rotation may start.
    client.set(ROTATION_LOCK, "dead-host:1", ex=1)
    with (
        pytest.raises(FacegateError, match=r"\(dead-host:1\).*expires within 60 s"),
        rotation_lock(client),
    ):
        pass
    time.sleep(1.5)
    with rotation_lock(client) as owner:
        assert client.get(ROTATION_LOCK) == owner.encode()


def test_a_backfill_skips_a_photo_it_cannot_open_and_enrols_the_others(
    private_redis: tuple[str, redis.Redis[bytes]],
    private_buckets: tuple[Minio, ObjectStoreSettings, Path],
    lfw_dir: Path,
) -> None:
    _, client = private_redis
    store, s3, _ = private_buckets
    ok_photo, lost_photo = lfw_sample(lfw_dir, 2, seed=7)
    photos = EnrollmentPhotos(store, s3.bucket_datasets)
    photos.put("s-ok", ok_photo.read_bytes())
    lost = TemplateCipher(KeyRing([new_key("lost")]))
    EnrollmentPhotos(store, s3.bucket_datasets, lost).put("s-lost", lost_photo.read_bytes())
    reference = GalleryStore(client, "ref")
    for student in ("s-ok", "s-lost"):
        reference.put(student, _templates(len(student), count=1, dim=192))

    report = backfill_version("new", get_pipeline(), "ref", client, photos, None)
    assert report.enrolled == ["s-ok"]
    assert report.without_photos == []
    assert "'lost', which is not in the gallery key ring" in report.failed["s-lost"]
    assert GalleryStore(client, "new").students() == ["s-ok"]
