"""Where reference windows are kept: in memory, or in Redis so that a restart keeps them.

Key: ``facegate:drift:reference:<model_version>:<gate>`` (gate ``all`` for the all-gates
window).  The monitor reads the reference again at every closed window, so deleting a key
(``facegate drift reset-reference``) makes the next full window of that gate the reference,
even in a monitor that is running.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis

from stream_processors.drift.statistics import Reference

log = logging.getLogger(__name__)

PREFIX = "facegate:drift:reference"
ALL_GATES = "all"


def gate_label(gate_id: str | None) -> str:
    """The gate as keys and metric labels name it (``all`` for the all-gates window)."""
    return ALL_GATES if gate_id is None else gate_id


def reference_key(model_version: str, gate_id: str | None) -> str:
    """The Redis key of a reference window."""
    return f"{PREFIX}:{model_version}:{gate_label(gate_id)}"


class ReferenceStore(Protocol):
    """Reference windows by model version and gate."""

    def get(self, model_version: str, gate_id: str | None) -> Reference | None: ...

    def put(self, model_version: str, gate_id: str | None, reference: Reference) -> None: ...


class MemoryReferenceStore:
    """References held by this process only."""

    def __init__(self) -> None:
        self._references: dict[tuple[str, str | None], Reference] = {}

    def get(self, model_version: str, gate_id: str | None) -> Reference | None:
        return self._references.get((model_version, gate_id))

    def put(self, model_version: str, gate_id: str | None, reference: Reference) -> None:
        self._references[(model_version, gate_id)] = reference

    def delete(self, model_version: str | None = None, gate: str | None = None) -> int:
        """Forget references of a model version and/or gate label (all when both are None)."""
        doomed = [
            key
            for key in self._references
            if (model_version is None or key[0] == model_version)
            and (gate is None or gate_label(key[1]) == gate)
        ]
        for key in doomed:
            del self._references[key]
        return len(doomed)


class RedisReferenceStore:
    """References in Redis; while Redis cannot be reached, the last ones read or written."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client
        self._cache = MemoryReferenceStore()

    def get(self, model_version: str, gate_id: str | None) -> Reference | None:
        try:
            raw = self.client.get(reference_key(model_version, gate_id))
        except redis.RedisError as exc:
            log.warning("drift reference not read from Redis (%s); using the cached one", exc)
            return self._cache.get(model_version, gate_id)
        if raw is None:
            # Deleted (reset) or never stored: forget the cached one too.
            self._cache.delete(model_version, gate_label(gate_id))
            return None
        try:
            reference = Reference.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable drift reference %s (%s): ignored", model_version, exc)
            return None
        self._cache.put(model_version, gate_id, reference)
        return reference

    def put(self, model_version: str, gate_id: str | None, reference: Reference) -> None:
        self._cache.put(model_version, gate_id, reference)
        try:
            self.client.set(reference_key(model_version, gate_id), reference.to_json())
        except redis.RedisError as exc:
            log.warning("drift reference not saved in Redis (%s); kept in memory", exc)

    def delete(self, model_version: str | None = None, gate: str | None = None) -> int:
        """Delete references of a model version and/or gate label (all when both are None)."""
        self._cache.delete(model_version, gate)
        if model_version is not None and gate is not None:
            return int(self.client.delete(f"{PREFIX}:{model_version}:{gate}"))
        version_part = _glob_escape(model_version) if model_version is not None else "*"
        gate_part = _glob_escape(gate) if gate is not None else "*"
        keys = list(self.client.scan_iter(match=f"{PREFIX}:{version_part}:{gate_part}", count=500))
        return int(self.client.delete(*keys)) if keys else 0


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)
