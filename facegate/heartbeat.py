"""Service heartbeats in Redis: each running service says it is alive; the console reads them.

A service refreshes ``facegate:heartbeat:{service}:{instance}`` every few seconds with a short
expiry, so a crashed or stopped process disappears on its own within ``ttl_s``.  Consumer-group
membership would say the same, but tansu cannot describe groups (ENVIRONMENT.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

import redis

log = logging.getLogger(__name__)
PREFIX = "facegate:heartbeat"


def instance_id() -> str:
    """This process, as host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Heartbeat:
    """A thread that keeps this service's heartbeat key alive."""

    def __init__(
        self, client: redis.Redis[bytes], service: str, interval_s: float = 3.0, ttl_s: int = 10
    ) -> None:
        self.client = client
        self.key = f"{PREFIX}:{service}:{instance_id()}"
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.set(self.key, str(time.time()), ex=self.ttl_s)
            except redis.RedisError as error:
                # Redis down: the console will show the service as gone, which is the truth
                # as far as anyone can tell; keep trying.
                log.warning("heartbeat not written: %s", error)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)


def alive_instances(client: redis.Redis[bytes], service: str) -> int:
    """How many instances of ``service`` have a live heartbeat."""
    return sum(1 for _ in client.scan_iter(match=f"{PREFIX}:{service}:*", count=100))
