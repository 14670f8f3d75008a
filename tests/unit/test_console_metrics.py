"""The console's /metrics endpoint and its login and live-page metrics.

The FastAPI app is driven directly over ASGI (no test client, no server, no broker): only the
login and event-stream routes run, with users in a temporary file and an in-memory throttle.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from console.app import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Console, create_app
from console.live import _Watcher
from console.sessions import SessionStore
from console.settings import ConsoleSettings
from console.users import User, UserStore
from tests.asgi import asgi_request

PASSWORD = "correct horse"


class _Throttle:
    """LoginThrottle without Redis: locked names are refused for 60 s."""

    def __init__(self) -> None:
        self.locked: set[str] = set()
        self.failures: list[str] = []

    def retry_after(self, username: str) -> int:
        return 60 if username in self.locked else 0

    def failed(self, username: str) -> None:
        self.failures.append(username)

    def succeeded(self, username: str) -> None:
        pass


class _Hub:
    """The verdict hub's page side, with no Kafka consumer behind it."""

    def __init__(self) -> None:
        self.watchers: list[_Watcher] = []

    def watch(self, exam_id: str, gate_id: str) -> _Watcher:
        watcher = _Watcher(exam_id, gate_id, asyncio.Queue(), asyncio.get_running_loop())
        self.watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: _Watcher) -> None:
        self.watchers.remove(watcher)

    def recent(self, exam_id: str, gate_id: str) -> list[dict[str, Any]]:
        return []

    def gate_ages(self) -> dict[str, float]:
        return {}

    def alive(self) -> bool:
        return True


class _Redis:
    def hget(self, key: str, field: str) -> None:
        return None


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Console:
    monkeypatch.setenv("FACEGATE_CONSOLE_USERS_FILE", str(tmp_path / "users.json"))
    settings = ConsoleSettings()
    users = UserStore(settings.users_path())
    users.add("alice", PASSWORD, "proctor")
    # Heartbeats are read from Redis for the status line: none here.
    monkeypatch.setattr("console.app.alive_instances", lambda client, name: 0)
    return Console(
        settings=settings,
        users=users,
        sessions=SessionStore(ttl_s=60),
        hub=_Hub(),  # type: ignore[arg-type]
        recorder=None,  # type: ignore[arg-type]
        redis=_Redis(),  # type: ignore[arg-type]
        producer=None,  # type: ignore[arg-type]
        throttle=_Throttle(),  # type: ignore[arg-type]
    )


def _logins(outcome: str) -> float:
    value = REGISTRY.get_sample_value("facegate_console_logins_total", {"outcome": outcome})
    return value or 0.0


def _login_counts() -> dict[str, float]:
    return {o: _logins(o) for o in ("ok", "wrong_password", "locked_out", "csrf_rejected")}


def _login(app: FastAPI, username: str, password: str, csrf: str = "tok") -> int:
    form = urlencode({"username": username, "password": password, "csrf_token": "tok"})
    status, _, _ = asyncio.run(
        asgi_request(app, "POST", "/login", form.encode(), {LOGIN_CSRF_COOKIE: csrf})
    )
    return status


def test_metrics_answer_without_a_session(console: Console) -> None:
    status, headers, body = asyncio.run(asgi_request(create_app(console), "GET", "/metrics"))
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert "facegate_console_logins_total" in text
    assert 'facegate_console_logins_total{outcome="wrong_password"}' in text
    assert "facegate_console_live_clients" in text


def test_a_wrong_password_counts_once_as_wrong_password(console: Console) -> None:
    app = create_app(console)
    before = _login_counts()
    assert _login(app, "alice", "wrong horse!") == 401
    after = _login_counts()
    assert after["wrong_password"] - before["wrong_password"] == 1
    assert {o: after[o] - before[o] for o in after if o != "wrong_password"} == {
        "ok": 0,
        "locked_out": 0,
        "csrf_rejected": 0,
    }
    assert console.throttle.failures == ["alice"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("outcome", "password", "csrf", "locked", "status"),
    [
        ("ok", PASSWORD, "tok", False, 303),
        ("locked_out", PASSWORD, "tok", True, 429),
        ("csrf_rejected", PASSWORD, "other", False, 403),
    ],
)
def test_each_login_outcome_counts_once(
    console: Console, outcome: str, password: str, csrf: str, locked: bool, status: int
) -> None:
    if locked:
        console.throttle.locked.add("alice")  # type: ignore[attr-defined]
    before = _login_counts()
    assert _login(create_app(console), "alice", password, csrf) == status
    after = _login_counts()
    assert {o: after[o] - before[o] for o in after} == {o: 1 if o == outcome else 0 for o in after}


def test_live_clients_follow_the_event_streams(console: Console) -> None:
    app = create_app(console)
    session = console.sessions.create(User("alice", "proctor"))

    def live() -> float:
        return REGISTRY.get_sample_value("facegate_console_live_clients") or 0.0

    async def scenario() -> tuple[float, float, float]:
        before = live()
        first_event = asyncio.Event()
        disconnect = asyncio.Event()
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                first_event.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/events",
            "raw_path": b"/events",
            "query_string": b"exam=e1&gate=g1",
            "root_path": "",
            "headers": [
                (b"host", b"console.test"),
                (b"cookie", f"{SESSION_COOKIE}={session.token}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("console.test", 80),
        }
        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(first_event.wait(), 5)
        during = live()
        disconnect.set()
        await asyncio.wait_for(task, 10)
        return before, during, live()

    before, during, after = asyncio.run(scenario())
    assert during == before + 1
    assert after == before
    assert console.hub.watchers == []  # type: ignore[attr-defined]
