"""Service heartbeats in the real Redis: a stopped or killed service disappears on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from facegate.heartbeat import Heartbeat, alive_instances
from facegate.redis_client import make_redis
from facegate.settings import RedisSettings
from facegate.stack import LocalStack

pytestmark = pytest.mark.integration


def test_a_stopped_service_leaves_at_once(local_stack: LocalStack) -> None:
    client = make_redis(RedisSettings())
    before = alive_instances(client, "heartbeat-test")
    beat = Heartbeat(client, "heartbeat-test", interval_s=0.2, ttl_s=2).start()
    time.sleep(0.5)
    assert alive_instances(client, "heartbeat-test") == before + 1
    beat.stop()
    assert alive_instances(client, "heartbeat-test") == before


def test_a_killed_service_expires(local_stack: LocalStack) -> None:
    client = make_redis(RedisSettings())
    code = (
        "import time\n"
        "from facegate.heartbeat import Heartbeat\n"
        "from facegate.redis_client import make_redis\n"
        "from facegate.settings import RedisSettings\n"
        "Heartbeat(make_redis(RedisSettings()), 'killed-test', 0.2, 2).start()\n"
        "print('beating', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=os.environ.copy(), text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "beating"
    deadline = time.monotonic() + 5
    while alive_instances(client, "killed-test") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # No goodbye from a SIGKILLed process: the key's expiry (2 s here) removes it.
    deadline = time.monotonic() + 5
    while alive_instances(client, "killed-test") > 0:
        assert time.monotonic() < deadline, "a killed service still looks alive"
        time.sleep(0.1)
