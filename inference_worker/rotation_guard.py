"""Key rotation and deletions of face images kept apart, through Redis.

A key rotation re-seals each stored face object by reading it and writing it back.  A forget,
an unenrol or a retention run that deleted the object between the two would see it come back
(under the new key).  So neither starts while the other runs:

- a rotation holds :data:`ROTATION_LOCK` (one at a time: two could each write their own new
  key to the key file and lose the other's) and, once it holds it, refuses to go on while a
  deletion is announced;
- a deletion announces itself under :data:`DELETION_PREFIX` and, once announced, refuses to
  go on while the rotation lock is held.

Each side writes before it reads the other's key (Redis applies commands one at a time), so of
a rotation and a deletion that start together at least one sees the other and stops, with a
message that says which is running; nothing is left half done.  Both keys expire within
:data:`GUARD_TTL_S` if their process dies: while the block runs, a thread renews the expiry
(:func:`kept_alive`), so a rotation or a forget that runs for hours keeps its key, and a crashed
one locks the others out for a minute, not for hours.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from facegate.errors import FacegateError

log = logging.getLogger(__name__)

# Held by the running rotation.
ROTATION_LOCK = "facegate:gallery:rotation-lock"
# One key per running deletion of face images (forget, unenrol, retention), naming it.
DELETION_PREFIX = "facegate:gallery:deleting:"
# Both keys' expiry; renewed every third of it while their holder runs.
GUARD_TTL_S = 60
# Release the lock only if it is still ours (it may have expired and been taken meanwhile).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
# Push the expiry back only while the key still holds our value.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def kept_alive(client: redis.Redis[bytes], key: str, value: str, ttl_s: int) -> Iterator[None]:
    """Renew ``key``'s expiry to ``ttl_s`` every third of it while the block runs, as long as
    the key still holds ``value``."""
    stop = threading.Event()
    renew = client.register_script(_RENEW)

    def keep() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not renew(keys=[key], args=[value, ttl_s]):
                    log.error("%s expired or was taken while its holder ran: not renewed", key)
                    return
            except redis.RedisError as error:  # the next renewal may get through
                log.warning("could not renew %s (Redis: %s)", key, error)

    thread = threading.Thread(target=keep, name="guard-renewal", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


@contextmanager
def rotation_lock(client: redis.Redis[bytes], ttl_s: int = GUARD_TTL_S) -> Iterator[str]:
    """Hold the gallery's rotation lock for the block; raise if another rotation holds it or
    face images are being deleted."""
    owner = _owner()
    if not client.set(ROTATION_LOCK, owner, nx=True, ex=ttl_s):
        holder = client.get(ROTATION_LOCK)
        raise FacegateError(
            f"another key rotation is running ({_text(holder or b'just ended')}); wait for it "
            f"to finish. If that process is gone, the lock expires within {ttl_s} s, or delete "
            f"the Redis key {ROTATION_LOCK}"
        )
    try:
        with kept_alive(client, ROTATION_LOCK, owner, ttl_s):
            holders = [client.get(key) for key in client.scan_iter(DELETION_PREFIX + "*")]
            running = sorted(_text(holder) for holder in holders if holder is not None)
            if running:
                raise FacegateError(
                    f"face images are being deleted ({'; '.join(running)}); rotate the key "
                    f"when that has finished. A deletion whose process is gone expires within "
                    f"{GUARD_TTL_S} s (keys {DELETION_PREFIX}*)"
                )
            yield owner
    finally:
        client.register_script(_RELEASE)(keys=[ROTATION_LOCK], args=[owner])


@contextmanager
def deleting_face_images(
    client: redis.Redis[bytes], what: str, ttl_s: int = GUARD_TTL_S
) -> Iterator[None]:
    """Announce a deletion of stored face images (``what``: "forget", "unenrol"...) for the
    block; raise, having deleted nothing, while a key rotation runs."""
    key = f"{DELETION_PREFIX}{uuid.uuid4().hex}"
    announcement = f"{what} by {_owner()}"
    client.set(key, announcement, ex=ttl_s)
    try:
        with kept_alive(client, key, announcement, ttl_s):
            holder = client.get(ROTATION_LOCK)
            if holder is not None:
                raise FacegateError(
                    f"a key rotation is running ({_text(holder)}): {what} deletes nothing until "
                    f"it has finished (it re-writes the face images a deletion would remove); "
                    f"run it again then"
                )
            yield
    finally:
        client.delete(key)
