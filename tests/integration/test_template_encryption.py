"""Templates encrypted at rest in the real Redis of the local stack, and key rotation.

The rotation test works in a Redis database of its own (the stack's server, database 9) with a
key file of its own, because ``rotate-key`` re-seals every template it finds: the session's
other tests keep the stack's key and database 0.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from facegate.errors import FacegateError
from facegate.redis_client import make_redis
from facegate.settings import RedisSettings
from facegate.stack import LocalStack
from inference_worker.gallery import GalleryStore, Vector, normalise
from inference_worker.template_crypto import (
    KeyRing,
    TemplateCipher,
    new_key,
    read_key_file,
    sealed_key_id,
    write_key_file,
)
from inference_worker.template_crypto_cli import rotate_key_command
from inference_worker.template_crypto_rotation import ROTATION_LOCK

pytestmark = pytest.mark.integration

PRIVATE_DB = 9


def _templates(seed: int, count: int = 3, dim: int = 128) -> Vector:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return normalise(rows)


def _use_key_file(url: str, key_file: Path, key_id: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key file holding one new key, and the test's Redis URL and that file as the settings
    the CLI reads."""
    write_key_file(key_file, [new_key(key_id)])
    monkeypatch.setenv("FACEGATE_REDIS_URL", url)
    monkeypatch.setenv("FACEGATE_GALLERY_KEY_FILE", str(key_file))
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
    result = CliRunner().invoke(rotate_key_command, ["--drop-old", "--no-progress"])
    assert result.exit_code != 0
    assert "1 template(s) could not be re-encrypted" in str(result.exception)
    assert "facegate:gallery:v1:t:orphan" in result.output
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
