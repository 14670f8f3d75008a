"""Face templates encrypted at rest: AES-256-GCM under a key ring read from a secret.

A face template is biometric data: whoever copies Redis (a dump, a replica, a backup) must not
get usable templates with it.  Every template value is sealed before it is written and opened
after it is read; the in-memory gallery a worker matches against stays plaintext.  The same
keys seal the face images kept in Redis and the object store (``sealed_objects.py``).

Stored value (``seal``)::

    b"FGT" | format version (1 byte) | key id length (1 byte) | key id | nonce (12) | ciphertext+tag

The associated data is the header (magic, version, key id) and the Redis key the value lives
under, so a value copied to another student's key, or given another key id, fails to open.

Keys: a key ring of ``id:base64`` entries (32-byte keys), the first the current one (new
values are sealed with it), the others kept so that values sealed before a rotation still
open.  The ring comes from ``FACEGATE_GALLERY_KEY_FILE`` (a file, 0600 when FaceGate writes
it), or from ``FACEGATE_GALLERY_KEYS`` (the same entries inline, comma or newline separated:
a container given the secret as a variable), or, when neither is set, from the local stack's
key file (``<state dir>/gallery.keys``, which ``facegate stack up`` creates) if it exists.

Without any key: values are written as plaintext float32 (one warning per process) unless
``FACEGATE_GALLERY_REQUIRE_KEY`` is true (as in docker-compose and Helm), which refuses; a
sealed value then cannot be opened and says so in one line.  Values written before encryption
existed (plain float32 bytes, no ``FGT`` header) are read as they are, and ``facegate gallery
rotate-key`` rewrites them sealed; ``FACEGATE_GALLERY_ALLOW_PLAINTEXT=false`` then refuses any
plaintext value (a template slipped into Redis without the key).  A legacy value whose first
float32 happened to be the bytes ``FGT\\x01`` (about 2.4e-38) would be taken for a sealed one
and fail to open loudly; a unit-length embedding never has such a component.

Key material is never logged or put in an error message: only key ids are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from facegate.errors import FacegateError
from facegate.settings import StackSettings, _Settings, load_settings

log = logging.getLogger(__name__)

MAGIC = b"FGT"
FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# The key file of the local stack, in its state directory.
KEY_FILE_NAME = "gallery.keys"
KEY_FILE_MODE = 0o600
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEADER = MAGIC + bytes([FORMAT_VERSION])
_KEY_HELP = "set FACEGATE_GALLERY_KEY_FILE or FACEGATE_GALLERY_KEYS"


class TemplateKeyError(FacegateError):
    """A key ring that cannot be read, or a template that cannot be opened with it."""


class GallerySecuritySettings(_Settings):
    """Where the gallery's encryption keys come from (``FACEGATE_GALLERY_*``)."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_GALLERY_")

    # A file of ``id:base64`` entries, one a line, the current key first.
    key_file: Path | None = None
    # The same entries inline (comma or newline separated), e.g. from a container secret.
    keys: SecretStr | None = None
    # Refuse to write templates unencrypted when no key is configured (deployments set it).
    require_key: bool = False
    # Read values written before encryption existed.  Set false once `rotate-key` has sealed
    # them all: a plaintext value is then refused, so nobody with write access to Redis can
    # slip in an unsealed template.
    allow_plaintext: bool = True


@dataclass(frozen=True)
class GalleryKey:
    """One key of the ring; the key bytes are left out of ``repr``."""

    key_id: str
    secret: bytes = field(repr=False)

    def entry(self) -> str:
        """The ``id:base64`` line of a key file."""
        return f"{self.key_id}:{base64.b64encode(self.secret).decode()}"


def new_key(key_id: str | None = None) -> GalleryKey:
    """A fresh random 256-bit key; its id defaults to ``k<UTC time>-<random>``."""
    if key_id is None:
        key_id = f"k{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(2)}"
    _check_key_id(key_id, "the new key")
    return GalleryKey(key_id, AESGCM.generate_key(bit_length=256))


def _check_key_id(key_id: str, source: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise TemplateKeyError(
            f"{source}: key id {key_id[:70]!r} is not 1-64 characters of A-Z a-z 0-9 _ . -"
        )


def parse_keys(text: str, source: str) -> list[GalleryKey]:
    """Read ``id:base64`` entries (newline or comma separated; ``#`` starts a comment line).

    Errors name the source and the entry's position, never its content.
    """
    lines = (line.strip() for line in text.splitlines())
    entries = [
        item.strip()
        for line in lines
        if line and not line.startswith("#")
        for item in line.split(",")
        if item.strip()
    ]
    keys: list[GalleryKey] = []
    for number, item in enumerate(entries, start=1):
        key_id, sep, encoded = item.partition(":")
        key_id = key_id.strip()
        if not sep:
            raise TemplateKeyError(f"{source}: entry {number} is not 'id:base64'")
        _check_key_id(key_id, source)
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise TemplateKeyError(f"{source}: key {key_id!r} is not valid base64") from None
        if len(secret) != KEY_BYTES:
            raise TemplateKeyError(
                f"{source}: key {key_id!r} is {len(secret)} bytes; AES-256 needs {KEY_BYTES}"
            )
        if any(k.key_id == key_id for k in keys):
            raise TemplateKeyError(f"{source}: key id {key_id!r} appears twice")
        keys.append(GalleryKey(key_id, secret))
    if not keys:
        raise TemplateKeyError(f"{source}: no key in it")
    return keys


def format_keys(keys: Iterable[GalleryKey]) -> str:
    """The text of a key file holding ``keys`` (the first is the current key)."""
    header = (
        "# FaceGate gallery keys (AES-256-GCM): id:base64, the current key first.\n"
        "# Keep every key that still encrypts a template; `facegate gallery rotate-key`.\n"
    )
    return header + "".join(f"{key.entry()}\n" for key in keys)


def write_key_file(path: Path, keys: Sequence[GalleryKey]) -> None:
    """Replace ``path`` with ``keys`` atomically, mode 0600 (readers see old or new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, KEY_FILE_MODE)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(format_keys(keys))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_key_file(path: Path) -> bool:
    """Create ``path`` with one new key (0600) unless it exists; return whether it was created."""
    if path.exists():
        return False
    write_key_file(path, [new_key()])
    log.info("created gallery key file %s", path)
    return True


def read_key_file(path: Path) -> list[GalleryKey]:
    """The keys of a key file; warns (once per read) when anyone may read it."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TemplateKeyError(f"gallery key file {path} does not exist ({_KEY_HELP})") from None
    except OSError as error:
        raise TemplateKeyError(
            f"gallery key file {path} cannot be read: {error.strerror}"
        ) from None
    # Group bits are tolerated: Kubernetes gives a mounted secret to the pod's fsGroup.
    if mode & stat.S_IRWXO:
        log.warning(
            "gallery key file %s is readable by others (mode %o): chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return parse_keys(text, f"gallery key file {path}")


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


class KeyRing:
    """The keys that open templates, the first one sealing new ones.

    A ring read from a file follows that file: it is checked (one ``stat``) before each seal,
    before each read of the gallery and when an unknown key id turns up, so services pick up a
    rotation (``rotate-key`` rewrites the file) and the drop of old keys without a restart.
    """

    def __init__(self, keys: Sequence[GalleryKey], path: Path | None = None) -> None:
        if not keys:
            raise TemplateKeyError("a gallery key ring needs at least one key")
        self.path = path
        self._lock = threading.Lock()
        self._signature = _file_signature(path) if path is not None else None
        self._set(keys)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        # absolute(), not resolve(): a Kubernetes secret mount swaps a symlink on update, and
        # the ring must follow the link, not the directory it pointed to at start.
        path = path.absolute()
        return cls(read_key_file(path), path)

    def _set(self, keys: Sequence[GalleryKey]) -> None:
        # One assignment: a thread reading while another reloads sees the old or the new ring.
        self._state = (list(keys), {key.key_id: AESGCM(key.secret) for key in keys})

    @property
    def current(self) -> GalleryKey:
        return self._state[0][0]

    @property
    def keys(self) -> list[GalleryKey]:
        return list(self._state[0])

    def ids(self) -> list[str]:
        return [key.key_id for key in self._state[0]]

    def current_cipher(self) -> tuple[GalleryKey, AESGCM]:
        keys, ciphers = self._state
        return keys[0], ciphers[keys[0].key_id]

    def cipher(self, key_id: str) -> AESGCM | None:
        return self._state[1].get(key_id)

    def refresh(self) -> bool:
        """Re-read the key file if it changed; return whether the ring changed.

        A file that cannot be read now (being replaced, a bad edit) leaves the ring as it was.
        """
        if self.path is None:
            return False
        signature = _file_signature(self.path)
        if signature == self._signature:
            return False
        with self._lock:
            if signature == self._signature:
                return False
            try:
                keys = read_key_file(self.path)
            except TemplateKeyError as error:
                log.warning("keeping the gallery keys in memory: %s", error)
                return False
            self._signature = signature
            changed = keys != self._state[0]
            self._set(keys)
        if changed:
            log.info("gallery keys reloaded from %s: current key %s", self.path, keys[0].key_id)
        return changed


def sealed_key_id(stored: bytes, where: str = "a gallery template") -> str | None:
    """The key id a stored value was sealed with; None for a plaintext (legacy) value."""
    if not stored.startswith(MAGIC):
        return None
    if len(stored) < len(_HEADER) + 1 or stored[len(MAGIC)] != FORMAT_VERSION:
        version = stored[len(MAGIC)] if len(stored) > len(MAGIC) else "none"
        raise TemplateKeyError(
            f"{where} has encryption format version {version}, which this FaceGate cannot read"
        )
    length = stored[len(_HEADER)]
    start = len(_HEADER) + 1
    if len(stored) < start + length + NONCE_BYTES + TAG_BYTES:
        raise TemplateKeyError(f"{where} is truncated (shorter than its encryption header)")
    return stored[start : start + length].decode("ascii", errors="replace")


class TemplateCipher:
    """Seals template bytes for Redis and opens them again, bound to their Redis key."""

    def __init__(
        self, ring: KeyRing | None, require_key: bool = False, allow_plaintext: bool = True
    ) -> None:
        if ring is None and require_key:
            raise TemplateKeyError(
                f"no gallery key configured and FACEGATE_GALLERY_REQUIRE_KEY is true: {_KEY_HELP}"
            )
        self.ring = ring
        self.allow_plaintext = allow_plaintext
        self._warned_plaintext = False
        self._warned_legacy = False

    @property
    def encrypts(self) -> bool:
        return self.ring is not None

    def current_key_id(self) -> str | None:
        return self.ring.current.key_id if self.ring is not None else None

    def refresh(self) -> None:
        """Follow the key file now (readers call it once per read of the gallery)."""
        if self.ring is not None:
            self.ring.refresh()

    def seal(self, redis_key: str, plaintext: bytes) -> bytes:
        """The value to store under ``redis_key``: sealed with the current key (see module)."""
        if self.ring is None:
            if not self._warned_plaintext:
                log.warning(
                    "gallery templates and face images are written UNENCRYPTED: %s", _KEY_HELP
                )
                self._warned_plaintext = True
            return plaintext
        self.ring.refresh()
        key, cipher = self.ring.current_cipher()
        header = _header(key.key_id)
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + cipher.encrypt(nonce, plaintext, _aad(header, redis_key))

    def open(self, redis_key: str, stored: bytes, what: str = "gallery template") -> bytes:
        """The bytes stored under ``redis_key``; a plaintext value as it is.

        ``what`` names the value in errors and warnings ("gallery template", "enrolment photo").
        """
        key_id = sealed_key_id(stored, f"{what} {redis_key}")
        if key_id is None:
            if not self.allow_plaintext:
                raise TemplateKeyError(
                    f"{what} {redis_key} is not encrypted and "
                    "FACEGATE_GALLERY_ALLOW_PLAINTEXT is false: enrol the student again, or run "
                    "`facegate gallery rotate-key --reencrypt-only` with the key"
                )
            if not self._warned_legacy:
                log.warning(
                    "unencrypted %s values are stored (e.g. %s): "
                    "`facegate gallery rotate-key` encrypts them",
                    what,
                    redis_key,
                )
                self._warned_legacy = True
            return stored
        if self.ring is None:
            raise TemplateKeyError(
                f"{what} {redis_key} is encrypted (key {key_id}) "
                f"but no gallery key is configured: {_KEY_HELP}"
            )
        cipher = self.ring.cipher(key_id)
        if cipher is None and self.ring.refresh():
            cipher = self.ring.cipher(key_id)
        if cipher is None:
            raise TemplateKeyError(
                f"{what} {redis_key} is encrypted with key {key_id!r}, which is not in "
                f"the gallery key ring ({', '.join(self.ring.ids())}): add that key back"
            )
        header = _header(key_id)
        nonce_at = len(header)
        nonce = stored[nonce_at : nonce_at + NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, stored[nonce_at + NONCE_BYTES :], _aad(header, redis_key))
        except InvalidTag:
            raise TemplateKeyError(
                f"{what} {redis_key} fails authentication under key {key_id!r}: "
                "it was altered or copied from another key"
            ) from None


def _header(key_id: str) -> bytes:
    encoded = key_id.encode("ascii")
    return _HEADER + bytes([len(encoded)]) + encoded


def _aad(header: bytes, redis_key: str) -> bytes:
    return header + b"\x00" + redis_key.encode("utf-8")


def local_stack_key_file() -> Path:
    """The key file of the local stack under the configured state directory."""
    return (load_settings(StackSettings).state_dir / KEY_FILE_NAME).absolute()


def ring_from_settings(settings: GallerySecuritySettings) -> KeyRing | None:
    """The configured key ring (file, inline, then the local stack's file), or None."""
    if settings.key_file is not None:
        return KeyRing.from_file(settings.key_file)
    if settings.keys is not None:
        return KeyRing(parse_keys(settings.keys.get_secret_value(), "FACEGATE_GALLERY_KEYS"))
    stack_file = local_stack_key_file()
    if stack_file.is_file():
        return KeyRing.from_file(stack_file)
    return None


_cache_lock = threading.Lock()
_cache: dict[tuple[str, ...], TemplateCipher] = {}


def default_cipher() -> TemplateCipher:
    """The cipher of this process's settings, shared by every GalleryStore that uses them.

    Settings are read on each call (tests and tools change the environment); the key ring is
    read once per distinct configuration and then follows its file (see ``KeyRing``).
    """
    settings = load_settings(GallerySecuritySettings)
    stack_file = (
        local_stack_key_file() if settings.key_file is None and settings.keys is None else None
    )
    if stack_file is not None and not stack_file.is_file():
        stack_file = None
    identity = (
        str(settings.key_file or ""),
        # Only a digest of the inline keys is kept as the cache key.
        _digest(settings.keys.get_secret_value()) if settings.keys is not None else "",
        str(stack_file or ""),
        str(settings.require_key),
        str(settings.allow_plaintext),
    )
    with _cache_lock:
        cipher = _cache.get(identity)
        if cipher is None:
            ring = ring_from_settings(settings)
            cipher = TemplateCipher(ring, settings.require_key, settings.allow_plaintext)
            _cache[identity] = cipher
    return cipher


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
