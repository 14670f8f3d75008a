"""``stack up --with-monitoring`` for real: Debian's Prometheus scrapes a FaceGate metrics
endpoint on the port the stack exported, and loads FaceGate's alert rules."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from facegate.errors import StackError
from facegate.settings import StackSettings
from facegate.stack import LocalStack
from facegate.stack.binaries import prometheus_binary
from facegate.stack.ports import free_port_block
from tests.conftest import stack_settings_on_free_ports

pytestmark = pytest.mark.integration


@pytest.fixture
def monitored_stack(tmp_path: Path) -> Iterator[LocalStack]:
    try:
        prometheus_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    base = stack_settings_on_free_ports(tmp_path / "state", with_mlflow=False)
    ports = free_port_block(3, start=base.mlflow_port + 1)
    settings = StackSettings(
        **{
            **base.model_dump(exclude={"kafka", "redis", "s3", "mlflow"}),
            "with_monitoring": True,
            "prometheus_port": ports,
            "stream_metrics_port": ports + 1,
            "worker_metrics_port": ports + 2,
            "startup_timeout_s": 60,
        }
    )
    stack = LocalStack(settings)
    try:
        yield stack
    finally:
        stack.down()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_prometheus_scrapes_the_exported_metrics_port(monitored_stack: LocalStack) -> None:
    endpoints = monitored_stack.up()
    port = int(endpoints["FACEGATE_STREAM_METRICS_PORT"])
    registry = CollectorRegistry()
    Counter("facegate_probe", "A series the test serves.", registry=registry).inc(3)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{monitored_stack.settings.prometheus_port}"
    try:
        deadline = time.monotonic() + 40
        result: list[Any] = []
        while time.monotonic() < deadline and not result:
            result = _get(f"{url}/api/v1/query?query=facegate_probe_total")["data"]["result"]
            time.sleep(1)
        assert result, "Prometheus never scraped the metrics endpoint"
        assert result[0]["metric"]["job"] == "facegate-stream-processor"
        assert float(result[0]["value"][1]) == 3
        rules = _get(f"{url}/api/v1/rules")["data"]["groups"]
        alerts = {r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert "FaceGateConsumerLagHigh" in alerts
        status = {row.name: row.healthy for row in monitored_stack.status()}
        assert status["prometheus"] is True
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert "prometheus" in monitored_stack.down()
