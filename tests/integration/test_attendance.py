"""Attendance in Redis: survives a new table instance (a restarted worker), idempotent per frame;
an update Redis refuses for its data is raised, one it cannot take while down is retried."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest
import redis

from facegate.privacy.audit import AuditLog
from facegate.redis_client import waiting_may_cure
from facegate.settings import RedisSettings
from facegate.stack import LocalStack
from schemas.messages import Verdict
from stream_processors.app import record_with_retry
from stream_processors.attendance import VERDICT_AUDIT_STREAM, AttendanceTable
from tests.messages import make_verdict

pytestmark = pytest.mark.integration


def _verdict(exam: str, student: str, frame: str, decision: str, at: float) -> Verdict:
    reason = "match" if decision == "accept" else "mismatch"
    return make_verdict(
        frame_id=frame,
        exam_id=exam,
        claimed_student_id=student,
        captured_at=at,
        decided_at=at + 0.1,
        decision=decision,
        reason=reason,
    )


def test_attendance_survives_restart_and_repeats(local_stack: LocalStack) -> None:
    exam = f"exam-{uuid.uuid4().hex[:8]}"
    table = AttendanceTable(redis.Redis.from_url(RedisSettings().url))
    table.record(_verdict(exam, "alice", "f1", "reject", 100.0))
    table.record(_verdict(exam, "alice", "f2", "accept", 130.0))
    table.record(_verdict(exam, "alice", "f2", "accept", 130.0))  # at-least-once repeat
    table.record(_verdict(exam, "alice", "f3", "accept", 160.0))  # a later re-check
    table.record(_verdict(exam, "bob", "f4", "reject", 140.0))

    # A new instance on a new connection: what a restarted worker would read.
    rows = {
        r["student_id"]: r
        for r in AttendanceTable(redis.Redis.from_url(RedisSettings().url)).exam(exam)
    }
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["first_accepted_at"] == 130.0  # the first accepted check-in is kept
    assert rows["alice"]["attempts"] == 3  # f1, f2, f3: the repeated f2 is not counted twice
    assert rows["alice"]["decision"] == "accept"
    assert rows["bob"]["first_accepted_at"] is None


def test_every_verdict_is_in_the_verdict_audit_stream_once(local_stack: LocalStack) -> None:
    exam = f"exam-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(RedisSettings().url)
    table = AttendanceTable(client)
    table.record(_verdict(exam, "carol", "g1", "reject", 100.0))
    table.record(_verdict(exam, "carol", "g2", "accept", 130.0))
    table.record(_verdict(exam, "carol", "g2", "accept", 130.0))  # at-least-once repeat

    entries = [
        e
        for e in AuditLog(client, VERDICT_AUDIT_STREAM).entries(count=500)
        if e.details.get("exam_id") == exam
    ]
    # Newest first; the repeated frame is there once.
    assert [(e.action, e.details["frame_id"]) for e in entries] == [
        ("verdict:accept", "g2"),
        ("verdict:reject", "g1"),
    ]
    assert entries[0].subject == "carol" and entries[0].actor == "model:m v1 (champion)"
    assert entries[0].details["score"] == 0.8 and entries[0].at == 130.1
    # The main audit log (enrolments, decisions, deletions) is not flooded with check-ins.
    assert not [e for e in AuditLog(client).entries(count=500) if e.details.get("exam_id") == exam]


def test_redis_errors_are_retried_only_when_waiting_may_cure_them(local_stack: LocalStack) -> None:
    """An exam key holding another type, or a stored entry that is not JSON, fails the same way
    on every attempt: ``record_with_retry`` raises it at once (the stream processor then
    dead-letters the verdict) instead of holding every later verdict back.  An unreachable
    Redis is retried until it answers."""
    client = redis.Redis.from_url(RedisSettings().url)
    table = AttendanceTable(client)

    wrong_type = f"exam-{uuid.uuid4().hex[:8]}"
    client.set(f"facegate:attendance:{wrong_type}", "not a hash")
    corrupt = f"exam-{uuid.uuid4().hex[:8]}"
    client.hset(f"facegate:attendance:{corrupt}", "dave", "{not json")

    try:
        for exam, expected in ((wrong_type, "WRONGTYPE"), (corrupt, "user_script")):
            verdict = _verdict(exam, "dave", uuid.uuid4().hex, "accept", 100.0)
            with pytest.raises(redis.ResponseError, match=expected) as caught:
                table.record(verdict)
            assert not waiting_may_cure(caught.value)
            started = time.monotonic()
            with pytest.raises(redis.ResponseError, match=expected):
                asyncio.run(asyncio.wait_for(_record(table, verdict), timeout=10))
            assert time.monotonic() - started < 2, "a refused update was retried"
    finally:  # keys of another type would trip other tests that scan attendance
        client.delete(f"facegate:attendance:{wrong_type}", f"facegate:attendance:{corrupt}")

    # Nothing listens on this port: connection refused, which waiting may cure.
    down = AttendanceTable(redis.Redis(host="127.0.0.1", port=_free_port()))
    verdict = _verdict(corrupt, "erin", uuid.uuid4().hex, "accept", 100.0)
    with pytest.raises(redis.ConnectionError) as refused:
        down.record(verdict)
    assert waiting_may_cure(refused.value)
    with pytest.raises(TimeoutError):  # still retrying when the wait ends
        asyncio.run(asyncio.wait_for(_record(down, verdict), timeout=1.5))


async def _record(table: AttendanceTable, verdict: Verdict) -> None:
    await record_with_retry(asyncio.get_running_loop(), table, verdict)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
