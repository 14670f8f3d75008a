"""Brute-force protection of the login: failed attempts per user name, counted in Redis.

After ``max_failures`` wrong passwords for one user name within ``window_s``, further logins for
that name are refused without checking the password until the window has passed; a successful
login clears the count.  Counting in Redis makes the limit hold across console replicas and
restarts.
"""

from __future__ import annotations

import redis


class LoginThrottle:
    """Counts failed logins per user name."""

    def __init__(self, client: redis.Redis[bytes], max_failures: int, window_s: int) -> None:
        self.client = client
        self.max_failures = max_failures
        self.window_s = window_s

    @staticmethod
    def _key(username: str) -> str:
        return f"facegate:console:login-failures:{username.strip().lower()}"

    def retry_after(self, username: str) -> int:
        """Seconds until ``username`` may try again; 0 when it may try now."""
        key = self._key(username)
        failures = int(self.client.get(key) or 0)
        if failures < self.max_failures:
            return 0
        return max(1, int(self.client.ttl(key)))

    def failed(self, username: str) -> None:
        """Count a wrong password; the window starts at the first failure."""
        key = self._key(username)
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.window_s, nx=True)
        pipe.execute()

    def succeeded(self, username: str) -> None:
        """Forget the failures of a user who logged in."""
        self.client.delete(self._key(username))
