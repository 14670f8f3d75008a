"""Brute-force protection of the console login, against the real Redis."""

from __future__ import annotations

import time
import uuid

import pytest

from console.throttle import LoginThrottle
from facegate.redis_client import make_redis
from facegate.settings import RedisSettings
from facegate.stack import LocalStack

pytestmark = pytest.mark.integration


def test_failures_lock_the_name_until_the_window_ends(local_stack: LocalStack) -> None:
    throttle = LoginThrottle(make_redis(RedisSettings()), max_failures=3, window_s=2)
    name = f"user-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        throttle.failed(name)
        assert throttle.retry_after(name) == 0
    throttle.failed(name)
    assert 1 <= throttle.retry_after(name) <= 2
    assert throttle.retry_after(name.upper()) > 0  # the same name, however it is typed
    assert throttle.retry_after(f"other-{name}") == 0  # other users are not affected
    time.sleep(2.2)
    assert throttle.retry_after(name) == 0


def test_a_successful_login_clears_the_failures(local_stack: LocalStack) -> None:
    throttle = LoginThrottle(make_redis(RedisSettings()), max_failures=2, window_s=60)
    name = f"user-{uuid.uuid4().hex[:6]}"
    throttle.failed(name)
    throttle.succeeded(name)
    throttle.failed(name)
    assert throttle.retry_after(name) == 0
