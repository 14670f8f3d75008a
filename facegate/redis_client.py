"""The one Redis client factory: every connection to the gallery's Redis is made here; and
which Redis errors a service should wait out rather than give the record up for."""

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


# Error replies of a server that is not ready, which a later attempt may not get: loading its
# data, read-only (a replica during a failover), out of memory, busy with a script, a cluster
# being formed.
_PASSING_REPLIES = frozenset(
    ("LOADING", "READONLY", "OOM", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
)


def waiting_may_cure(error: redis.RedisError) -> bool:
    """Whether the same command may succeed later without anyone acting on the data.

    Connection errors and timeouts may (Redis or the network is down); so do the error replies
    of a server that is not ready.  Any other error reply is about the command's data
    (WRONGTYPE when a key holds another type; a script's error on a stored value it cannot
    parse) and repeats on every attempt: services dead-letter the record instead of retrying
    it forever, which would hold back every record after it."""
    if not isinstance(error, redis.ResponseError):
        return True
    # redis-py 5+ keeps the reply's code (OOM, LOADING, ...) apart from the message it strips
    # it from; an unknown code stays at the message's start.
    code = getattr(error, "status_code", None) or str(error).partition(" ")[0]
    return code in _PASSING_REPLIES
