"""Key rotation of the gallery: every stored template re-sealed under the current key.

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

One rotation at a time: :func:`rotation_lock` (a Redis key with an expiry) is held for the whole
command.  Two rotations at once could each write the key file with their own new key, one
overwriting the other's, and templates sealed under the lost key would no longer open.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import redis
from tqdm import tqdm

from facegate.errors import FacegateError
from inference_worker.gallery import GalleryStore, gallery_versions, unlisted_template_keys
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
# Held by the running rotation; it expires on its own if that process dies.
ROTATION_LOCK = "facegate:gallery:rotation-lock"
ROTATION_LOCK_TTL_S = 6 * 3600
# Release the lock only if it is still ours (it may have expired and been taken meanwhile).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@contextmanager
def rotation_lock(client: redis.Redis[bytes], ttl_s: int = ROTATION_LOCK_TTL_S) -> Iterator[str]:
    """Hold the gallery's rotation lock for the block; raise if another rotation holds it."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    if not client.set(ROTATION_LOCK, owner, nx=True, ex=ttl_s):
        holder = client.get(ROTATION_LOCK)
        who = holder.decode() if isinstance(holder, bytes) else holder
        raise FacegateError(
            f"another key rotation is running ({who}); wait for it to finish. If that process "
            f"is gone, the lock expires on its own, or delete the Redis key {ROTATION_LOCK}"
        )
    try:
        yield owner
    finally:
        client.register_script(_RELEASE)(keys=[ROTATION_LOCK], args=[owner])


@dataclass
class RotationReport:
    """What one re-encryption pass did, per model version."""

    key_id: str
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    # Redis key -> why it could not be re-sealed (no key material in it).
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, version: str, outcome: Outcome) -> None:
        self.counts.setdefault(version, Counter())[outcome] += 1

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
        """One line per version and one for the total, for the command's output."""

        def line(label: str, counts: Counter[str]) -> str:
            parts = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
            return f"{label}: {sum(counts.values())} templates ({parts or 'none'})"

        rows = [line(f"  v{v}" if v != UNLISTED else f"  {v}", c) for v, c in self.counts.items()]
        total: Counter[str] = Counter()
        for counts in self.counts.values():
            total.update(counts)
        return [*rows, line(f"  all versions, key {self.key_id}", total)]


def _targets(client: redis.Redis[bytes]) -> list[tuple[str, str]]:
    """(version, Redis key) of every stored template: the students sets, then strays."""
    targets = []
    for version in gallery_versions(client):
        store = GalleryStore(client, version)
        targets += [(version, store.template_key(s)) for s in store.students()]
    listed = {key for _, key in targets}
    targets += [(UNLISTED, key) for key in unlisted_template_keys(client, listed)]
    return targets


def reseal(client: redis.Redis[bytes], cipher: TemplateCipher, key: str) -> Outcome:
    """Re-seal the value under ``key`` with the current key, unless it already is."""
    current = cipher.current_key_id()
    if current is None:
        raise TemplateKeyError("re-encryption needs a gallery key")
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                # After WATCH the pipeline runs commands at once (until MULTI).
                raw = cast("bytes | None", pipe.get(key))
                if raw is None:
                    return "missing"
                key_id = sealed_key_id(raw, f"gallery template {key}")
                if key_id == current:
                    return "current"
                sealed = cipher.seal(key, cipher.open(key, raw))
                pipe.multi()
                pipe.set(key, sealed, keepttl=True)
                pipe.execute()
                return "migrated" if key_id is None else "rewritten"
            except redis.WatchError:
                continue  # written meanwhile: read it again


def reencrypt_all(
    client: redis.Redis[bytes], cipher: TemplateCipher, progress: bool = True
) -> RotationReport:
    """Re-seal every template of every model version under the cipher's current key."""
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
        report.add(version, outcome)
    bar.close()
    log.info(
        "re-encryption under %s: %d templates, %d rewritten, %d migrated, %d failed",
        key_id,
        report.templates,
        report.total("rewritten"),
        report.total("migrated"),
        report.total("failed"),
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
