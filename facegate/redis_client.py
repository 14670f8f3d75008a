"""The one Redis client factory: every connection to the gallery's Redis is made here."""

from __future__ import annotations

import redis

from facegate.settings import RedisSettings


def make_redis(settings: RedisSettings) -> redis.Redis[bytes]:
    """A client for ``settings.url``, with the password (if any) and socket timeout applied."""
    password = settings.password.get_secret_value() if settings.password else None
    return redis.Redis.from_url(
        settings.url,
        password=password,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
    )
