"""Server-side login sessions that expire, each with its own CSRF token."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from console.users import User


@dataclass(frozen=True)
class Session:
    """A logged-in user: the cookie's token, the CSRF token and when it ends."""

    token: str
    csrf: str
    user: User
    expires_at: float


class SessionStore:
    """Sessions in memory: a console restart logs everyone out, which is the safe default."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: User) -> Session:
        """A new session for ``user``."""
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, self.clock() + self.ttl_s
        )
        with self._lock:
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie's token; expired ones are dropped."""
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires_at <= self.clock():
                del self._sessions[token]
                return None
        return session

    def end(self, token: str) -> None:
        """Log out."""
        with self._lock:
            self._sessions.pop(token, None)


def csrf_matches(session: Session, sent: str | None) -> bool:
    """Whether a request carries the session's CSRF token (compared in constant time)."""
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")
