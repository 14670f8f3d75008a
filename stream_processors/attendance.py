"""Per-exam attendance: who checked in, when, with which verdict.

Kept in Redis (a hash per exam, a field per student) so that it survives any worker restart
and is shared by every worker of the group.  Updates are idempotent per frame: a verdict
delivered twice (at-least-once delivery) writes the same field with the same value.  A
student's entry keeps their latest verdict and the time of their first accepted check-in.

Each verdict is also appended, in the same atomic step, to the verdict audit stream
(``facegate:audit:verdicts``, append-only like the main audit log of ``facegate.privacy.audit``,
but trimmed by ``facegate retention run`` after ``FACEGATE_RETENTION_VERDICT_AUDIT_DAYS``):
once per frame, unless a verdict for an older frame is redelivered after a newer one (then it
appears twice, with the same frame id).

A Redis error that waiting may cure (Redis down, loading, read-only during a failover, out of
memory) is retried by the stream processor; one that it cannot (the exam's key holds another
type, a stored entry that is not JSON) is not, and the verdict is dead-lettered instead
(``facegate.redis_client.waiting_may_cure``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from facegate.privacy.audit import AuditEntry, encode_entry
from schemas.messages import Verdict

log = logging.getLogger(__name__)


class AttendanceUnreadable(Exception):
    """An exam's attendance key that holds something other than an attendance hash."""


# Verdicts have their own stream: one entry per check-in would bury the enrolments, decisions
# and deletions of the main audit log on the console's audit page.
VERDICT_AUDIT_STREAM = "facegate:audit:verdicts"


def _key(exam_id: str) -> str:
    return f"facegate:attendance:{exam_id}"


class AttendanceTable:
    """Read and update the attendance of exams."""

    # Compare-and-set in one round trip: keep the earliest accepted check-in time.
    _UPDATE = """
    local current = redis.call('HGET', KEYS[1], ARGV[1])
    local entry = cjson.decode(ARGV[2])
    local new_frame = true
    if current then
        local old = cjson.decode(current)
        if old['first_accepted_at'] ~= cjson.null and old['first_accepted_at'] ~= nil then
            if entry['first_accepted_at'] == cjson.null
                or old['first_accepted_at'] < entry['first_accepted_at'] then
                entry['first_accepted_at'] = old['first_accepted_at']
            end
        end
        new_frame = old['last_frame_id'] ~= entry['last_frame_id']
        entry['attempts'] = (old['attempts'] or 0) + (new_frame and 1 or 0)
    end
    redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
    if new_frame then
        redis.call('XADD', KEYS[2], '*', 'entry', ARGV[3])
    end
    return 1
    """

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client
        self._script = client.register_script(self._UPDATE)

    def record(self, verdict: Verdict) -> None:
        """Record a verdict for the claimed student of its exam."""
        student = verdict.claimed_student_id or f"unclaimed:{verdict.frame_id}"
        entry: dict[str, Any] = {
            "student_id": student,
            "gate_id": verdict.gate_id,
            "decision": verdict.decision,
            "reason": verdict.reason,
            "score": verdict.score,
            "model_version": verdict.model_version,
            "last_frame_id": verdict.frame_id,
            "last_seen_at": verdict.captured_at,
            "first_accepted_at": verdict.captured_at if verdict.decision == "accept" else None,
            "attempts": 1,
        }
        audit = AuditEntry(
            action=f"verdict:{verdict.decision}",
            subject=verdict.claimed_student_id or "",
            actor=f"model:{verdict.model_name} v{verdict.model_version} ({verdict.model_alias})",
            at=verdict.decided_at,
            details={
                "frame_id": verdict.frame_id,
                "exam_id": verdict.exam_id,
                "gate_id": verdict.gate_id,
                "reason": verdict.reason,
                "score": verdict.score,
                "threshold": verdict.threshold,
            },
        )
        self._script(
            keys=[_key(verdict.exam_id), VERDICT_AUDIT_STREAM],
            args=[student, json.dumps(entry), encode_entry(audit)],
        )

    def exam(self, exam_id: str) -> list[dict[str, Any]]:
        """Every student's entry for an exam, sorted by student id.

        An entry that is not a JSON object is listed with the decision ``unreadable`` rather
        than dropped (the student stays in the record); a key that is not a hash raises
        ``AttendanceUnreadable``."""
        key = _key(exam_id)
        try:
            raw = self.client.hgetall(key)
        except redis.ResponseError as error:
            if not str(error).startswith("WRONGTYPE"):
                raise
            raise AttendanceUnreadable(
                f"{key} is not an attendance hash (Redis: {error}); see `redis-cli TYPE {key}`"
            ) from error
        rows = [_row(field, value, exam_id) for field, value in raw.items()]
        return sorted(rows, key=lambda row: str(row["student_id"]))


def _row(field: bytes, value: bytes, exam_id: str) -> dict[str, Any]:
    """One student's entry as stored, or an ``unreadable`` row naming them."""
    try:
        row = json.loads(value)
    except ValueError:
        row = None
    if isinstance(row, dict) and "student_id" in row:
        return row
    student = field.decode("utf-8", "replace")
    log.warning("attendance of %s in exam %s is not readable: %r", student, exam_id, value[:80])
    return {"student_id": student, "decision": "unreadable", "reason": "unreadable_entry"}
