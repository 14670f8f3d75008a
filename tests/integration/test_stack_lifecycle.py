"""``facegate stack``: start, status, stop, and one-line errors for the common failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import TopicPartition

from facegate.kafka_clients import make_consumer, make_producer
from facegate.rdkafka_clients import RdConsumer, RdProducer
from facegate.settings import KafkaSettings, StackSettings
from facegate.stack.process import ProcessTable, pid_alive
from tests.conftest import stack_settings_on_free_ports
from tests.integration.test_fetch_proxy import (
    HELD_MS,
    WITHIN_S,
    Arrivals,
    poll_until_stopped,
    timed_sends,
)

pytestmark = pytest.mark.integration

FACEGATE = [sys.executable, "-m", "facegate"]


def _env(settings: StackSettings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "FACEGATE_STACK_STATE_DIR": str(settings.state_dir),
        "FACEGATE_STACK_S3_PORT": str(settings.s3_port),
        "FACEGATE_STACK_REDIS_PORT": str(settings.redis_port),
        "FACEGATE_STACK_BROKER_PORT": str(settings.broker_port),
        "FACEGATE_STACK_MLFLOW_PORT": str(settings.mlflow_port),
        "FACEGATE_STACK_WITH_MLFLOW": "false",
        "FACEGATE_STACK_STARTUP_TIMEOUT_S": "30",
    }
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FACEGATE, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[StackSettings]:
    settings = stack_settings_on_free_ports(tmp_path / "state", with_mlflow=False)
    yield settings
    _run(["stack", "down"], _env(settings))


def test_up_status_down_leaves_no_process(settings: StackSettings) -> None:
    env = _env(settings)
    up = _run(["stack", "up"], env)
    assert up.returncode == 0, up.stderr
    assert f"FACEGATE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{settings.broker_port}" in up.stdout
    table = ProcessTable(settings.state_dir)
    pids = table.live_pids()
    assert len(pids) >= 3  # weed, valkey, tansu (and any children)

    status = _run(["stack", "status"], env)
    assert status.returncode == 0, status.stdout
    for name in ("broker", "redis", "s3"):
        assert any(
            line.startswith(name) and "healthy" in line for line in status.stdout.splitlines()
        )

    # `up` again is a no-op that still reports healthy endpoints.
    again = _run(["stack", "up"], env)
    assert again.returncode == 0 and "starting" not in again.stdout

    logs = _run(["stack", "logs", "redis", "-n", "5"], env)
    assert logs.returncode == 0 and logs.stdout.strip()

    down = _run(["stack", "down"], env)
    assert down.returncode == 0
    assert set(down.stdout.removeprefix("stopped: ").strip().split(", ")) == {
        "broker",
        "redis",
        "s3",
    }
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert table.live_pids() == set()

    status = _run(["stack", "status"], env)
    assert status.returncode == 1 and "not running" in status.stdout


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("facegate: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_port_in_use_is_a_one_line_error(settings: StackSettings) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.broker_port))
        blocker.listen()
        line = _one_line_error(_run(["stack", "up"], _env(settings)))
    assert f"port {settings.broker_port} needed by broker is in use" in line
    assert ProcessTable(settings.state_dir).live_pids() == set()


def test_missing_binary_is_a_one_line_error(settings: StackSettings) -> None:
    env = _env(settings, FACEGATE_TANSU_BIN="/nonexistent/tansu")
    line = _one_line_error(_run(["stack", "up"], env))
    assert "tansu broker not found at /nonexistent/tansu" in line and "make setup" in line
    assert ProcessTable(settings.state_dir).live_pids() == set()


def test_crashing_service_names_its_log(settings: StackSettings, tmp_path: Path) -> None:
    crashing = tmp_path / "tansu"
    crashing.write_text("#!/bin/sh\necho 'broker: cannot open storage' >&2\nexit 3\n")
    crashing.chmod(0o755)
    line = _one_line_error(_run(["stack", "up"], _env(settings, FACEGATE_TANSU_BIN=str(crashing))))
    assert "broker exited during start" in line
    assert "logs/broker.log" in line and "cannot open storage" in line
    # What the failed `up` had started is stopped again.
    assert ProcessTable(settings.state_dir).live_pids() == set()


def test_broker_on_durable_s3_storage_keeps_records_across_restart(
    settings: StackSettings,
) -> None:
    env = _env(settings, FACEGATE_STACK_BROKER_STORAGE="s3")
    assert _run(["stack", "up"], env).returncode == 0
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{settings.broker_port}")
    producer = make_producer(kafka)
    for i in range(3):
        producer.send("drift", value=b"durable-%d" % i).get(timeout=10)
    producer.close()
    assert _run(["stack", "down"], env).returncode == 0
    assert _run(["stack", "up"], env).returncode == 0

    consumer = make_consumer(kafka, None)
    partition = TopicPartition("drift", 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(values) < 3 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values.extend(record.value for record in records)
    consumer.close()
    assert values == [b"durable-0", b"durable-1", b"durable-2"]

    # On S3 storage too the broker is tansu behind the fetch proxy: a record produced while a
    # fetch waits (2 s) arrives within 0.5 s, where tansu alone sleeps out the wait.
    log = (settings.state_dir / "logs" / "broker.log").read_text()
    assert "fetch proxy on" in log
    waiting = kafka.model_copy(update={"fetch_max_wait_ms": HELD_MS})
    arrivals = Arrivals()
    reader = RdConsumer(waiting, "durable-proxy-test")
    reader.assign([partition])
    polling = threading.Thread(target=poll_until_stopped, args=(reader, arrivals), daemon=True)
    polling.start()
    sender = RdProducer(waiting)
    try:
        arrivals.wait_for(b"durable-2", 30)  # connected, and reading from the partition's end
        took = timed_sends(sender, "drift", arrivals, [0.3] * 5)
    finally:
        arrivals.stopping.set()
        polling.join(15)
        sender.close()
    assert max(took) < WITHIN_S, [f"{t * 1000:.0f} ms" for t in took]
