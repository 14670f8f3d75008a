"""The audit log: one append-only Redis stream of who did what to whose data, and when.

Every entry is one stream record with a single field ``entry``, a JSON object::

    {"action": ..., "subject": <student id or "">, "actor": ..., "at": <unix seconds>,
     "details": {...}}

Writers: the console (a proctor's decision, written by ``console.actions.FeedbackRecorder`` as
the feedback message itself), enrolment and removal (``inference_worker.enrollment_service``),
``facegate forget`` and ``facegate retention run``.  :func:`read_audit` reads both shapes.

Append-only by construction: this module has no way to edit or delete an entry (only XADD and
reads).  In production that must also hold against a compromised or careless service: give
FaceGate's Redis users an ACL without ``XDEL``, ``XTRIM``, ``DEL``/``UNLINK`` on
``facegate:audit`` and without ``FLUSHDB``/``FLUSHALL``, e.g.
``ACL SETUSER facegate ... -xdel -xtrim -flushdb -flushall`` (the stream is never trimmed by
FaceGate, so it grows by one small record per enrolment, removal, decision and forget).

The console's audit page (``/admin/audit``) reads every kind through :func:`read_audit`.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import redis

# The stream's name; console.actions imports it from here.
AUDIT_STREAM = "facegate:audit"

# Fields of a feedback message (console.actions) that are not the common audit fields.
_FEEDBACK_FIELDS = ("proctor", "decided_at", "student_id")


@dataclass(frozen=True)
class AuditEntry:
    """One audit record: ``action`` by ``actor`` on ``subject`` (a student id, or "") at ``at``."""

    action: str
    subject: str
    actor: str
    at: float
    details: dict[str, Any] = field(default_factory=dict)
    entry_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "subject": self.subject,
            "actor": self.actor,
            "at": self.at,
            "details": self.details,
        }


def default_actor() -> str:
    """Who runs this process, for entries written by commands: ``FACEGATE_ACTOR`` or the OS user.

    A container often has no user name for its uid; the uid is named then.
    """
    explicit = os.environ.get("FACEGATE_ACTOR")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def encode_entry(entry: AuditEntry) -> str:
    """The JSON stored in the stream's ``entry`` field."""
    return json.dumps(entry.as_dict(), sort_keys=True)


def decode_entry(raw: bytes | str, entry_id: str = "") -> AuditEntry:
    """An entry of either shape: written here, or a feedback message written by the console."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("an audit entry is a JSON object")
    if "details" in data and "subject" in data:
        return AuditEntry(
            action=str(data["action"]),
            subject=str(data.get("subject") or ""),
            actor=str(data.get("actor") or ""),
            at=float(data.get("at") or 0.0),
            details=dict(data.get("details") or {}),
            entry_id=entry_id,
        )
    # A proctor's decision: the feedback message itself.
    details = {k: v for k, v in data.items() if k not in (*_FEEDBACK_FIELDS, "action")}
    return AuditEntry(
        action=f"feedback:{data.get('action', '')}",
        subject=str(data.get("student_id") or ""),
        actor=str(data.get("proctor") or ""),
        at=float(data.get("decided_at") or 0.0),
        details=details,
        entry_id=entry_id,
    )


class AuditLog:
    """Append entries to the audit stream and read them back; nothing else."""

    def __init__(self, client: redis.Redis[bytes], stream: str = AUDIT_STREAM) -> None:
        self.client = client
        self.stream = stream

    def append(
        self,
        action: str,
        subject: str,
        actor: str,
        details: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> str:
        """Add one entry (XADD); return its stream id."""
        entry = AuditEntry(action, subject, actor, time.time() if at is None else at, details or {})
        entry_id = self.client.xadd(self.stream, {"entry": encode_entry(entry)})
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def entries(self, count: int = 200, subject: str | None = None) -> list[AuditEntry]:
        """The latest ``count`` entries, newest first; only ``subject``'s when given.

        With ``subject``, ``count`` bounds how far back is read, not how many are returned.
        """
        rows = self.client.xrevrange(self.stream, count=count)
        result = []
        for raw_id, fields in rows:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            raw = fields.get(b"entry")
            if raw is None:
                continue
            entry = decode_entry(raw, entry_id)
            if subject is None or entry.subject == subject:
                result.append(entry)
        return result


def read_audit(
    client: redis.Redis[bytes], count: int = 200, subject: str | None = None
) -> list[AuditEntry]:
    """The latest audit entries, newest first (see :meth:`AuditLog.entries`)."""
    return AuditLog(client).entries(count, subject)
