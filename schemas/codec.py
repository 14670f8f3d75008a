"""Binary encoding of every FaceGate message: a versioned msgpack envelope.

On the wire a message is ``{"schema": NAME, "v": VERSION, "data": {...}}`` packed with msgpack:
image bytes travel as raw binary (no base64), numbers as numbers.  ``decode`` validates what it
reads and raises :class:`SchemaError` with a reason that goes into the dead letter; a message of
an older version is upgraded to the current one, a newer or unknown one is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, ValidationError


class SchemaError(ValueError):
    """A message that cannot be read; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Message(BaseModel):
    """Base of every topic's message: a name, a version, and upgrades from older versions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    SCHEMA: ClassVar[str]
    VERSION: ClassVar[int]
    # UPGRADES[v] turns the data of version v into the data of version v + 1.
    UPGRADES: ClassVar[dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}


M = TypeVar("M", bound=Message)

# Frames are the largest messages: a 1080p JPEG is well under this; anything bigger is refused
# before it is unpacked.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def encode(message: Message) -> bytes:
    """Pack a message into its envelope."""
    envelope = {
        "schema": message.SCHEMA,
        "v": message.VERSION,
        "data": message.model_dump(mode="python"),
    }
    return msgpack.packb(envelope, use_bin_type=True)  # type: ignore[no-any-return]


def encode_version(schema: str, version: int, data: dict[str, Any]) -> bytes:
    """Pack raw data under a given schema version (what older producers wrote; used by tests)."""
    return msgpack.packb(  # type: ignore[no-any-return]
        {"schema": schema, "v": version, "data": data}, use_bin_type=True
    )


def peek_schema(raw: bytes) -> tuple[str | None, int | None]:
    """The schema name and version of a raw message, if they can be read at all."""
    try:
        envelope = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception:
        return None, None
    if not isinstance(envelope, dict):
        return None, None
    schema, version = envelope.get("schema"), envelope.get("v")
    return (
        schema if isinstance(schema, str) else None,
        version if isinstance(version, int) else None,
    )


def decode(raw: bytes | None, cls: type[M]) -> M:
    """Read a message of type ``cls``, upgrading older versions; raise SchemaError otherwise."""
    if raw is None:
        raise SchemaError("empty_message", "the record has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SchemaError("oversized", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        envelope = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:
        raise SchemaError("undecodable", f"not a msgpack envelope ({type(exc).__name__})") from None
    if not isinstance(envelope, dict) or not {"schema", "v", "data"} <= envelope.keys():
        raise SchemaError("bad_envelope", "expected keys schema, v, data")
    schema, version, data = envelope["schema"], envelope["v"], envelope["data"]
    if schema != cls.SCHEMA:
        raise SchemaError("wrong_schema", f"expected {cls.SCHEMA}, got {schema!r}")
    if not isinstance(version, int) or version < 1:
        raise SchemaError("bad_version", f"version {version!r}")
    if version > cls.VERSION:
        raise SchemaError(
            "unsupported_version", f"{schema} v{version} is newer than this reader's v{cls.VERSION}"
        )
    if not isinstance(data, dict):
        raise SchemaError("bad_envelope", "data is not a map")
    for old in range(version, cls.VERSION):
        upgrade = cls.UPGRADES.get(old)
        if upgrade is None:
            raise SchemaError("unsupported_version", f"no upgrade from {schema} v{old}")
        try:
            data = upgrade(dict(data))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError("invalid", f"cannot upgrade {schema} v{old}: {exc}") from None
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise SchemaError("invalid", f"{where}: {first['msg']}") from None
