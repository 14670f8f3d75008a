"""The console's attendance page and CSV on real Redis, including a record that another tool
broke: an entry that is not JSON is listed as unreadable (the student is not dropped), a key
that is not a hash answers a clear error instead of an unhandled exception.

The app is driven over ASGI in-process; the parts these routes do not use (verdict hub,
feedback recorder, producer, login throttle) are absent."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from pathlib import Path

import pytest
import redis

from console.app import SESSION_COOKIE, Console, create_app
from console.sessions import SessionStore
from console.settings import ConsoleSettings
from console.users import User, UserStore
from facegate.settings import RedisSettings
from facegate.stack import LocalStack
from stream_processors.attendance import AttendanceTable, AttendanceUnreadable
from tests.asgi import asgi_request
from tests.messages import make_verdict

pytestmark = pytest.mark.integration


def test_a_broken_attendance_record_is_shown_as_such(
    local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(RedisSettings().url)
    exam, overwritten = f"exam-{uuid.uuid4().hex[:8]}", f"exam-{uuid.uuid4().hex[:8]}"
    AttendanceTable(client).record(make_verdict(exam_id=exam, claimed_student_id="alice"))
    client.hset(f"facegate:attendance:{exam}", "bob", "{not json")
    client.set(f"facegate:attendance:{overwritten}", "a string")

    try:
        rows = AttendanceTable(client).exam(exam)
        assert [(r["student_id"], r["decision"]) for r in rows] == [
            ("alice", "accept"),
            ("bob", "unreadable"),
        ]
        with pytest.raises(AttendanceUnreadable, match="not an attendance hash"):
            AttendanceTable(client).exam(overwritten)

        monkeypatch.setenv("FACEGATE_CONSOLE_USERS_FILE", str(tmp_path / "users.json"))
        settings = ConsoleSettings()
        console = Console(
            settings=settings,
            users=UserStore(settings.users_path()),
            sessions=SessionStore(ttl_s=60),
            hub=None,  # type: ignore[arg-type]
            recorder=None,  # type: ignore[arg-type]
            redis=client,
            producer=None,  # type: ignore[arg-type]
            throttle=None,  # type: ignore[arg-type]
        )
        app = create_app(console)
        cookies = {SESSION_COOKIE: console.sessions.create(User("alice", "proctor")).token}

        status, _, page = asyncio.run(
            asgi_request(app, "GET", f"/exams/{exam}/attendance", cookies=cookies)
        )
        assert status == 200
        assert b"<td>bob</td><td>unreadable</td><td>unreadable_entry</td>" in page
        status, _, body = asyncio.run(
            asgi_request(app, "GET", f"/exams/{exam}/attendance.csv", cookies=cookies)
        )
        assert status == 200
        table = list(csv.DictReader(io.StringIO(body.decode())))
        assert [(r["student_id"], r["decision"]) for r in table] == [
            ("alice", "accept"),
            ("bob", "unreadable"),
        ]

        for path in (f"/exams/{overwritten}/attendance", f"/exams/{overwritten}/attendance.csv"):
            status, _, body = asyncio.run(asgi_request(app, "GET", path, cookies=cookies))
            assert status == 500
            assert f"the attendance of exam {overwritten} cannot be read".encode() in body
            assert b"not an attendance hash" in body
    finally:  # keys of another type would trip other tests that scan attendance
        client.delete(f"facegate:attendance:{exam}", f"facegate:attendance:{overwritten}")
    client.close()
