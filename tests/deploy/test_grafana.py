"""Grafana dashboards: well-formed, on the provisioned data source, on exported metrics only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.deploy import checks

pytestmark = pytest.mark.deploy

DASHBOARDS = sorted(checks.DASHBOARDS_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def known_metrics(exported_metrics: set[str]) -> set[str]:
    """Exported series, Prometheus's own and the recording rules' (dashboards may use them)."""
    recorded = checks.recorded_names(checks.PROMETHEUS_DIR / "rules.yml")
    return exported_metrics | checks.PROMETHEUS_SERIES | recorded


# The metrics of the model lifecycle (drift monitor, canary controller, workers' rollout,
# training service): the lifecycle dashboard shows every one of them.
LIFECYCLE_MODULES = (
    "stream_processors.drift.metrics",
    "inference_worker.canary_controller",
    "inference_worker.rollout",
    "trainer.retrain_service",
)


def test_the_five_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "facegate-pipeline",
        "facegate-latency",
        "facegate-models",
        "facegate-data-quality",
        "facegate-lifecycle",
    }


def test_lifecycle_dashboard_shows_every_lifecycle_metric() -> None:
    families = set().union(*(checks.defined_metric_names(m) for m in LIFECYCLE_MODULES))
    assert len(families) == 13, families
    board = json.loads((checks.DASHBOARDS_DIR / "facegate-lifecycle.json").read_text())
    used = {
        name
        for _, expr in checks.dashboard_expressions(board)
        for name in checks.promql_metric_names(expr)
    }
    assert families - used == set()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_well_formed_on_exported_metrics(path: Path, known_metrics: set[str]) -> None:
    assert checks.dashboard_problems(path, known_metrics, checks.PROVISIONING_DIR) == []


def test_dashboard_uids_are_distinct() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_a_dashboard_on_a_missing_metric_is_caught(known_metrics: set[str], tmp_path: Path) -> None:
    board = json.loads((checks.DASHBOARDS_DIR / "facegate-pipeline.json").read_text())
    board["panels"][4]["targets"][0]["expr"] = "sum(rate(node_cpu_seconds_total[5m]))"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(board))
    problems = checks.dashboard_problems(broken, known_metrics, checks.PROVISIONING_DIR)
    assert problems == [
        f"broken.json: panel {board['panels'][4]['title']!r} A: node_cpu_seconds_total"
    ]


def test_malformed_and_misshapen_dashboards_are_caught(
    known_metrics: set[str], tmp_path: Path
) -> None:
    text = (checks.DASHBOARDS_DIR / "facegate-latency.json").read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    [problem] = checks.dashboard_problems(truncated, known_metrics, checks.PROVISIONING_DIR)
    assert problem.startswith("truncated.json: not JSON")
    board = json.loads(text)
    board["panels"][1]["id"] = board["panels"][0]["id"]
    board["panels"][2]["gridPos"]["x"] = 20
    board["panels"][3]["datasource"] = {"type": "prometheus", "uid": "nowhere"}
    misshapen = tmp_path / "misshapen.json"
    misshapen.write_text(json.dumps(board))
    problems = checks.dashboard_problems(misshapen, known_metrics, checks.PROVISIONING_DIR)
    assert len(problems) == 3, problems


def test_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    providers = yaml.safe_load(
        (checks.PROVISIONING_DIR / "dashboards" / "facegate.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load(
        (checks.PROVISIONING_DIR / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert sources[0]["type"] == "prometheus" and sources[0]["url"] == "http://prometheus:9090"
