"""The console's web app: login, live check-ins per gate, proctors' actions, attendance."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import redis
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from kafka import KafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from console import pages
from console.actions import FeedbackRecorder, make_feedback
from console.live import VerdictHub
from console.metrics import LIVE_CLIENTS, LOGINS
from console.sessions import Session, SessionStore, csrf_matches
from console.settings import ConsoleSettings
from console.throttle import LoginThrottle
from console.users import UserStore
from facegate.heartbeat import alive_instances
from inference_worker.gallery import student_key
from inference_worker.sealed_objects import PORTRAIT, PORTRAIT_FIELD, open_field
from inference_worker.template_crypto import TemplateKeyError
from stream_processors.attendance import AttendanceTable, AttendanceUnreadable

SESSION_COOKIE = "facegate_session"
LOGIN_CSRF_COOKIE = "facegate_login_csrf"
# Pages may load only their own scripts, styles and images: injected markup cannot run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATUS_EVERY_S = 5.0


class _LoginRequired(Exception):
    pass


@dataclass
class Console:
    """Everything the routes use."""

    settings: ConsoleSettings
    users: UserStore
    sessions: SessionStore
    hub: VerdictHub
    recorder: FeedbackRecorder
    redis: redis.Redis[bytes]
    producer: KafkaProducer
    throttle: LoginThrottle

    def student_name(self, student_id: str | None) -> str | None:
        if not student_id:
            return None
        name = self.redis.hget(student_key(student_id), "name")
        return name.decode() if name else None

    def status_html(self) -> str:
        try:
            services = {
                name: alive_instances(self.redis, name) for name in ("stream-processor", "worker")
            }
        except redis.RedisError:
            services = {}
        return pages.gate_status(
            self.hub.gate_ages(), self.settings.quiet_after_s, self.hub.alive(), services
        )


async def _form(request: Request) -> dict[str, str]:
    # URL-encoded forms only: parsed here, so no multipart parser is needed.
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(body).items()}


def create_app(console: Console) -> FastAPI:
    """The FastAPI app of a console; the verdict hub runs while the app does."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        console.hub.start()
        try:
            yield
        finally:
            console.hub.stop()
            console.producer.close(timeout=5)

    app = FastAPI(
        title="FaceGate proctor console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(_LoginRequired)
    async def to_login(request: Request, exc: _LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    def session(request: Request) -> Session:
        found = console.sessions.get(request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise _LoginRequired()
        return found

    def api_session(request: Request) -> Session:
        found = console.sessions.get(request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise HTTPException(401, "log in first")
        return found

    def html(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status)

    # ---- login ------------------------------------------------------------------------------

    def login_form(error: str = "", status: int = 200) -> Response:
        # Double-submit token: a page of another site cannot read the cookie to send it back.
        token = secrets.token_urlsafe(24)
        response = html(pages.login_page(token, error), status)
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=console.settings.secure_cookies,
            max_age=3600,
        )
        return response

    @app.get("/login")
    async def login_get() -> Response:
        return login_form()

    @app.post("/login")
    async def login_post(request: Request) -> Response:
        form = await _form(request)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not cookie or not secrets.compare_digest(cookie, form.get("csrf_token", "")):
            LOGINS.labels("csrf_rejected").inc()
            raise HTTPException(403, "CSRF token missing or wrong")
        username = form.get("username", "")
        wait_s = await asyncio.to_thread(console.throttle.retry_after, username)
        if wait_s:
            LOGINS.labels("locked_out").inc()
            response = login_form(f"Too many failed logins; try again in {wait_s} s.", 429)
            response.headers["Retry-After"] = str(wait_s)
            return response
        user = await asyncio.to_thread(
            console.users.authenticate, username, form.get("password", "")
        )
        if user is None:
            LOGINS.labels("wrong_password").inc()
            await asyncio.to_thread(console.throttle.failed, username)
            return login_form("Wrong user name or password.", 401)
        LOGINS.labels("ok").inc()
        await asyncio.to_thread(console.throttle.succeeded, username)
        created = console.sessions.create(user)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            created.token,
            httponly=True,
            samesite="strict",
            secure=console.settings.secure_cookies,
            max_age=int(console.settings.session_ttl_s),
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        current = session(request)
        if not csrf_matches(current, (await _form(request)).get("csrf_token")):
            raise HTTPException(403, "CSRF token missing or wrong")
        console.sessions.end(current.token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # ---- gates and live check-ins -----------------------------------------------------------

    @app.get("/")
    async def picker(request: Request) -> Response:
        current = session(request)
        return html(
            pages.picker_page(
                console.hub.exams_and_gates(),
                console.status_html(),
                current.user.name,
                current.csrf,
                current.user.role == "admin",
            )
        )

    @app.get("/live")
    async def live(request: Request, exam: str, gate: str) -> Response:
        current = session(request)
        return html(pages.live_page(exam, gate, current.user.name, current.csrf))

    @app.get("/static/console.js")
    async def console_js() -> Response:
        return Response(pages.CONSOLE_JS, media_type="text/javascript")

    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    def with_name(view: dict[str, Any]) -> dict[str, Any]:
        return {**view, "name": console.student_name(view["student_id"])}

    @app.get("/events")
    async def events(request: Request, exam: str, gate: str) -> Response:
        api_session(request)
        watcher = console.hub.watch(exam, gate)

        async def stream() -> AsyncIterator[str]:
            LIVE_CLIENTS.inc()
            try:
                yield event("status", {"html": console.status_html()})
                for view in console.hub.recent(exam, gate):
                    yield event("checkin", with_name(view))
                while not await request.is_disconnected():
                    try:
                        view = await asyncio.wait_for(watcher.queue.get(), STATUS_EVERY_S)
                        yield event("checkin", with_name(view))
                        yield event("status", {"html": console.status_html()})
                    except TimeoutError:
                        # Gate ages move on without verdicts: that is how a quiet gate shows.
                        yield event("status", {"html": console.status_html()})
            finally:
                LIVE_CLIENTS.dec()
                console.hub.unwatch(watcher)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    @app.get("/photo/{student_id}")
    async def photo(request: Request, student_id: str) -> Response:
        api_session(request)
        key = student_key(student_id)
        try:
            stored = console.redis.hget(key, PORTRAIT_FIELD)
            data = open_field(key, PORTRAIT_FIELD, stored, PORTRAIT)
        except TemplateKeyError as error:  # names key ids only, never key material
            raise HTTPException(503, f"enrolment photo cannot be opened: {error}") from None
        if not data:
            raise HTTPException(404, "no enrolment photo")
        return Response(data, media_type="image/jpeg")

    @app.get("/thumbnail/{frame_id}")
    async def thumbnail(request: Request, frame_id: str) -> Response:
        api_session(request)
        verdict = console.hub.verdict(frame_id)
        if verdict is None or not verdict.thumbnail:
            raise HTTPException(404, "no thumbnail")
        return Response(verdict.thumbnail, media_type="image/jpeg")

    @app.post("/checkins/{frame_id}/feedback")
    async def feedback(request: Request, frame_id: str) -> Response:
        current = api_session(request)
        form = await _form(request)
        sent = request.headers.get("X-CSRF-Token") or form.get("csrf_token")
        if not csrf_matches(current, sent):
            raise HTTPException(403, "CSRF token missing or wrong")
        verdict = console.hub.verdict(frame_id)
        if verdict is None:
            raise HTTPException(404, "unknown check-in")
        action = form.get("action", "")
        if action not in ("confirm", "accept_manual", "impostor", "retry"):
            raise HTTPException(422, "unknown action")
        message = make_feedback(verdict, action, current.user.name, form.get("note", ""))
        await asyncio.to_thread(console.recorder.record, verdict, message)
        return JSONResponse({"feedback_id": message.feedback_id, "action": action})

    # ---- attendance and audit ---------------------------------------------------------------

    async def _attendance_rows(exam_id: str) -> list[dict[str, Any]]:
        """The exam's attendance, read off the event loop; a broken record is a clear 500."""
        try:
            return await asyncio.to_thread(AttendanceTable(console.redis).exam, exam_id)
        except AttendanceUnreadable as error:
            detail = f"the attendance of exam {exam_id} cannot be read: {error}"
            raise HTTPException(500, detail) from error

    @app.get("/exams/{exam_id}/attendance")
    async def attendance(request: Request, exam_id: str) -> Response:
        current = session(request)
        rows = await _attendance_rows(exam_id)
        return html(pages.attendance_page(exam_id, rows, current.user.name, current.csrf))

    @app.get("/exams/{exam_id}/attendance.csv")
    async def attendance_csv(request: Request, exam_id: str) -> Response:
        session(request)
        rows = await _attendance_rows(exam_id)
        out = io.StringIO()
        columns = [
            "student_id",
            "decision",
            "reason",
            "score",
            "gate_id",
            "first_accepted_at",
            "last_seen_at",
            "attempts",
            "model_version",
            "last_frame_id",
        ]
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in exam_id)
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="attendance-{safe}.csv"'},
        )

    @app.get("/admin/audit")
    async def audit(request: Request) -> Response:
        current = session(request)
        if current.user.role != "admin":
            raise HTTPException(403, "admins only")
        entries = await asyncio.to_thread(console.recorder.audit)
        return html(pages.audit_page(entries, current.user.name, current.csrf))

    @app.get("/healthz")
    async def healthz() -> Response:
        alive = console.hub.alive()
        return JSONResponse({"verdict_feed": alive}, status_code=200 if alive else 503)

    # No login: Prometheus scrapes it. Served on the console's own web port (the other
    # services have a separate metrics port because they have no web server of their own).
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def build_console(settings: ConsoleSettings) -> Console:
    """A console wired to the settings' broker and Redis."""
    from facegate.kafka_clients import make_producer
    from facegate.redis_client import make_redis

    client = make_redis(settings.redis)
    producer = make_producer(settings.kafka)
    return Console(
        settings=settings,
        users=UserStore(settings.users_path()),
        sessions=SessionStore(settings.session_ttl_s),
        hub=VerdictHub(settings.kafka, settings.keep_per_gate, settings.history_s),
        recorder=FeedbackRecorder(producer, client, settings.evidence_ttl_s),
        redis=client,
        producer=producer,
        throttle=LoginThrottle(client, settings.login_max_failures, settings.login_window_s),
    )
