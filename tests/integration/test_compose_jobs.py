"""The one-shot jobs of docker-compose.yml (topics, buckets) run for real against the stack.

The scripts are taken from the compose file itself and run with the same FACEGATE_* settings
mechanism the containers use, so a job that cannot work fails here rather than at deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml

from facegate.settings import ObjectStoreSettings
from facegate.stack import LocalStack
from facegate.stack.services import object_store_client
from tests.deploy.checks import COMPOSE_FILE

pytestmark = pytest.mark.integration


def _job_script(name: str) -> str:
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]
    assert service["entrypoint"] == ["python", "-c"]
    return str(service["command"][0])


def _run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_topics_job_runs_against_the_broker(local_stack: LocalStack) -> None:
    result = _run(_job_script("kafka-topics"))
    assert result.returncode == 0, result.stderr
    # The stack created the topics already: the job finds them and creates nothing.
    assert "topics created: none needed" in result.stdout


def test_buckets_job_creates_every_bucket(local_stack: LocalStack) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = {
        f"FACEGATE_S3_BUCKET_{kind.upper()}": f"job-{kind}-{suffix}"
        for kind in ("feedback", "datasets", "models", "frames", "mlflow", "broker")
    }
    result = _run(_job_script("minio-buckets"), **names)
    assert result.returncode == 0, result.stderr
    client = object_store_client(local_stack.settings)
    for bucket in names.values():
        assert client.bucket_exists(bucket), bucket
    assert len(ObjectStoreSettings().buckets()) == len(names)
