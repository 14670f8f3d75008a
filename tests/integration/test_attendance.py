"""Attendance in Redis: survives a new table instance (a restarted worker), idempotent per frame."""

from __future__ import annotations

import uuid

import pytest
import redis

from facegate.privacy.audit import AuditLog
from facegate.settings import RedisSettings
from facegate.stack import LocalStack
from schemas.messages import Verdict
from stream_processors.attendance import VERDICT_AUDIT_STREAM, AttendanceTable

pytestmark = pytest.mark.integration


def _verdict(exam: str, student: str, frame: str, decision: str, at: float) -> Verdict:
    return Verdict(
        frame_id=frame,
        gate_id="g1",
        exam_id=exam,
        claimed_student_id=student,
        captured_at=at,
        decided_at=at + 0.1,
        decision=decision,  # type: ignore[arg-type]
        reason="match" if decision == "accept" else "mismatch",
        score=0.8,
        threshold=0.5,
        model_name="m",
        model_version="1",
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
