"""``facegate stack up --with-monitoring``: the Prometheus service, its configuration, and the
one-line error when Debian's prometheus package is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from facegate.cli import cli
from facegate.errors import StackError
from facegate.settings import StackSettings
from facegate.stack import LocalStack
from facegate.stack.binaries import prometheus_binary
from facegate.stack.services import prometheus_config, stack_services


def _settings(tmp_path: Path, **changes: object) -> StackSettings:
    return StackSettings(state_dir=tmp_path / "stack", **changes)  # type: ignore[arg-type]


def test_prometheus_runs_only_with_monitoring(tmp_path: Path) -> None:
    assert "prometheus" not in [s.name for s in stack_services(_settings(tmp_path))]
    with_it = stack_services(_settings(tmp_path, with_monitoring=True, prometheus_port=29090))
    [prometheus] = [s for s in with_it if s.name == "prometheus"]
    assert prometheus.ports == [29090]
    assert prometheus.endpoint == "http://127.0.0.1:29090"


def test_config_scrapes_the_services_metrics_ports_and_loads_the_rules(tmp_path: Path) -> None:
    settings = _settings(tmp_path, stream_metrics_port=29101, worker_metrics_port=29102)
    config = prometheus_config(settings, tmp_path / "targets")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}  # type: ignore[attr-defined]
    assert jobs["facegate-stream-processor"]["static_configs"] == [{"targets": ["127.0.0.1:29101"]}]
    assert jobs["facegate-inference-worker"]["static_configs"] == [{"targets": ["127.0.0.1:29102"]}]
    assert jobs["facegate-extra"]["file_sd_configs"] == [
        {"files": [str(tmp_path / "targets" / "*.json")]}
    ]
    rule_files = config["rule_files"]
    assert isinstance(rule_files, list)
    [rules] = rule_files
    assert Path(rules).name == "rules.yml" and Path(rules).is_file()
    json.dumps(config)  # written as JSON, which Prometheus reads as YAML


def test_missing_prometheus_is_one_line_that_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FACEGATE_PROMETHEUS_BIN", str(tmp_path / "no-prometheus"))
    with pytest.raises(StackError) as error:
        prometheus_binary()
    message = str(error.value)
    assert "\n" not in message and "apt-get install -y prometheus" in message


def test_up_with_monitoring_fails_before_starting_anything_without_prometheus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FACEGATE_PROMETHEUS_BIN", str(tmp_path / "no-prometheus"))
    stack = LocalStack(_settings(tmp_path, with_monitoring=True))
    with pytest.raises(StackError, match="prometheus"):
        stack.up()
    assert stack.table.live_pids() == set()


def test_cli_flag_turns_monitoring_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEGATE_PROMETHEUS_BIN", str(tmp_path / "no-prometheus"))
    monkeypatch.setenv("FACEGATE_STACK_STATE_DIR", str(tmp_path / "stack"))
    result = CliRunner().invoke(cli, ["stack", "up", "--with-monitoring"])
    assert isinstance(result.exception, StackError)
    assert "Prometheus not found" in str(result.exception)


def test_endpoints_tell_services_which_metrics_ports_are_scraped(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path, with_monitoring=True, with_mlflow=False))
    endpoints = stack.endpoints()
    assert endpoints["FACEGATE_STREAM_METRICS_PORT"] == "19101"
    assert endpoints["FACEGATE_WORKER_METRICS_PORT"] == "19102"
    assert "FACEGATE_STREAM_METRICS_PORT" not in LocalStack(_settings(tmp_path)).endpoints()
    assert endpoints["FACEGATE_CONSOLE_METRICS_PORT"] == "19103"
    assert endpoints["FACEGATE_DRIFT_METRICS_PORT"] == "19104"
    assert endpoints["FACEGATE_CANARY_METRICS_PORT"] == "19105"
    assert endpoints["FACEGATE_RETRAIN_METRICS_PORT"] == "19106"


def test_local_prometheus_scrapes_every_service_job_that_docker_compose_scrapes(
    tmp_path: Path,
) -> None:
    import yaml

    compose = yaml.safe_load(
        (Path(__file__).parents[2] / "monitoring/prometheus/prometheus.yml").read_text()
    )
    compose_jobs = {j["job_name"] for j in compose["scrape_configs"]} - {"prometheus"}
    config = prometheus_config(_settings(tmp_path), tmp_path / "targets")
    local_jobs = {j["job_name"] for j in config["scrape_configs"]}  # type: ignore[attr-defined]
    assert compose_jobs <= local_jobs, compose_jobs - local_jobs
    ports = [port for _, port in _settings(tmp_path).service_metrics_ports().values()]
    assert len(set(ports)) == len(ports)
