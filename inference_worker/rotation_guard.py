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
message that says which is running; nothing is left half done.  Both keys expire on their own
if their process dies.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from facegate.errors import FacegateError

# Held by the running rotation; it expires on its own if that process dies.
ROTATION_LOCK = "facegate:gallery:rotation-lock"
ROTATION_LOCK_TTL_S = 6 * 3600
# One key per running deletion of face images (forget, unenrol, retention), naming it.
DELETION_PREFIX = "facegate:gallery:deleting:"
DELETION_TTL_S = 3600
# Release the lock only if it is still ours (it may have expired and been taken meanwhile).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def rotation_lock(client: redis.Redis[bytes], ttl_s: int = ROTATION_LOCK_TTL_S) -> Iterator[str]:
    """Hold the gallery's rotation lock for the block; raise if another rotation holds it or
    face images are being deleted."""
    owner = _owner()
    if not client.set(ROTATION_LOCK, owner, nx=True, ex=ttl_s):
        raise FacegateError(
            f"another key rotation is running ({_text(client.get(ROTATION_LOCK))}); wait for "
            f"it to finish. If that process is gone, the lock expires on its own, or delete "
            f"the Redis key {ROTATION_LOCK}"
        )
    try:
        running = [_text(client.get(key)) for key in client.scan_iter(DELETION_PREFIX + "*")]
        if running:
            raise FacegateError(
                f"face images are being deleted ({'; '.join(sorted(running))}); rotate the key "
                f"when that has finished. A deletion whose process is gone expires within "
                f"{DELETION_TTL_S // 60} minutes (keys {DELETION_PREFIX}*)"
            )
        yield owner
    finally:
        client.register_script(_RELEASE)(keys=[ROTATION_LOCK], args=[owner])


@contextmanager
def deleting_face_images(client: redis.Redis[bytes], what: str) -> Iterator[None]:
    """Announce a deletion of stored face images (``what``: "forget", "unenrol"...) for the
    block; raise, having deleted nothing, while a key rotation runs."""
    key = f"{DELETION_PREFIX}{uuid.uuid4().hex}"
    client.set(key, f"{what} by {_owner()}", ex=DELETION_TTL_S)
    try:
        holder = client.get(ROTATION_LOCK)
        if holder is not None:
            raise FacegateError(
                f"a key rotation is running ({_text(holder)}): {what} deletes nothing until it "
                f"has finished (it re-writes the face images a deletion would remove); run it "
                f"again then"
            )
        yield
    finally:
        client.delete(key)
