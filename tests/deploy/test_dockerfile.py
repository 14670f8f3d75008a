"""docker/Dockerfile: the promises of the image, checked without a Docker engine, and its health
check run for real against a metrics endpoint."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from tests.deploy import checks

pytestmark = pytest.mark.deploy

HEALTHCHECK = checks.REPO / "docker" / "healthcheck.py"


def test_dockerfile_keeps_its_promises() -> None:
    assert [name for name, _ in checks.dockerfile_stages(checks.DOCKERFILE)] == [
        "build",
        "mlflow",
        "runtime",
    ]
    assert checks.dockerfile_problems(checks.DOCKERFILE, checks.REPO) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER 10001:10001\nWORKDIR /var/lib/facegate", "WORKDIR /var/lib/facegate", "as root"),
        ("COPY trainer ./trainer", "COPY trainers ./trainers", "COPY trainers"),
        ("RUN facegate models build", "RUN true", "models are not built"),
        ("HEALTHCHECK --interval=15s --timeout=5s --start-period=180s", "#", "no HEALTHCHECK"),
    ],
)
def test_dockerfile_check_fails_on_broken_copies(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    text = checks.DOCKERFILE.read_text()
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new))
    problems = checks.dockerfile_problems(broken, checks.REPO)
    assert any(problem in p for p in problems), problems


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"FACEGATE_HEALTHCHECK_PORT": str(port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_passes_on_a_metrics_endpoint_and_fails_without_one() -> None:
    port = _free_port()
    assert _healthcheck(port).returncode == 1
    server, thread = start_http_server(port, addr="127.0.0.1", registry=CollectorRegistry())
    try:
        result = _healthcheck(port)
        assert result.returncode == 0, result.stderr
    finally:
        server.shutdown()
        thread.join(timeout=5)
