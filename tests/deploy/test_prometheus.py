"""Prometheus configuration and alert rules: promtool accepts them, and they use only metrics
FaceGate exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy import checks

pytestmark = pytest.mark.deploy


def _copy_config(tmp_path: Path) -> Path:
    folder = tmp_path / "prometheus"
    shutil.copytree(checks.PROMETHEUS_DIR, folder)
    return folder


def test_promtool_accepts_config_and_rules(promtool_path: str) -> None:
    config = checks.run_promtool("check", "config", "prometheus.yml", cwd=checks.PROMETHEUS_DIR)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 1 rule files found" in config.stdout
    rules = checks.run_promtool("check", "rules", "rules.yml", cwd=checks.PROMETHEUS_DIR)
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_alerts_fire_on_the_situations_they_describe(promtool_path: str) -> None:
    """rules_test.yml: a gate without verdicts, a lagging group, a worse canary, drift, a
    rollback, a failed retraining and registry errors fire."""
    result = checks.run_promtool("test", "rules", "rules_test.yml", cwd=checks.PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(promtool_path: str, tmp_path: Path) -> None:
    folder = _copy_config(tmp_path)
    config = folder / "prometheus.yml"
    config.write_text(config.read_text().replace("scrape_interval: 15s", "scrape_interval: often"))
    result = checks.run_promtool("check", "config", "prometheus.yml", cwd=folder)
    assert result.returncode != 0
    assert "often" in result.stdout + result.stderr


def test_promtool_rejects_broken_rules(promtool_path: str, tmp_path: Path) -> None:
    folder = _copy_config(tmp_path)
    rules = folder / "rules.yml"
    rules.write_text(rules.read_text().replace("(facegate_consumer_lag) > 500\n", "(group (\n"))
    result = checks.run_promtool("check", "rules", "rules.yml", cwd=folder)
    assert result.returncode != 0


def test_rule_tests_catch_an_alert_that_does_not_fire(promtool_path: str, tmp_path: Path) -> None:
    folder = _copy_config(tmp_path)
    rules = folder / "rules.yml"
    rules.write_text(rules.read_text().replace("> 500\n", "> 500000\n"))
    result = checks.run_promtool("test", "rules", "rules_test.yml", cwd=folder)
    assert result.returncode != 0
    assert "FaceGateConsumerLagHigh" in result.stdout + result.stderr


def test_rules_use_only_exported_metrics(exported_metrics: set[str]) -> None:
    assert checks.rules_problems(checks.PROMETHEUS_DIR / "rules.yml", exported_metrics) == []


def test_a_rule_on_a_metric_nobody_exports_is_caught(
    exported_metrics: set[str], tmp_path: Path
) -> None:
    folder = _copy_config(tmp_path)
    rules = folder / "rules.yml"
    text = rules.read_text().replace(
        "(facegate_consumer_lag) > 500\n", "(kafka_consumer_lag) > 500\n"
    )
    rules.write_text(text)
    assert checks.rules_problems(rules, exported_metrics) == [
        "FaceGateConsumerLagHigh: kafka_consumer_lag"
    ]


def test_every_alert_has_severity_and_summary() -> None:
    for group in yaml.safe_load((checks.PROMETHEUS_DIR / "rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
                assert rule["annotations"]["summary"], rule


def test_required_alerts_exist() -> None:
    names = {name for name, _ in checks.rule_expressions(checks.PROMETHEUS_DIR / "rules.yml")}
    assert {
        "FaceGateConsumerLagHigh",
        "FaceGateDeadLetterRateHigh",
        "FaceGateFrameAnalysisFailing",
        "FaceGateScoreDrift",
        "FaceGateFrameQualityDrift",
        "FaceGateActiveGateWithoutVerdicts",
        "FaceGateCanaryDegraded",
        "FaceGateDrift",
        "FaceGateCanaryRolledBack",
        "FaceGateCanaryCheckDegraded",
        "FaceGateRetrainFailed",
        "FaceGateWorkerRegistryErrors",
    } <= names


@pytest.mark.parametrize(
    ("old", "new", "alert"),
    [
        # Without the new-series arm the first rollback (a counter child created by its first
        # increment) goes unnoticed: increase() needs two samples.
        (
            """            or
            (
              facegate_rollout_decisions_total{action="rollback"}
              unless facegate_rollout_decisions_total{action="rollback"} offset 15m
            )
""",
            "",
            "FaceGateCanaryRolledBack",
        ),
        (
            "max(facegate_canary_share) > 0",
            "max(facegate_canary_share) > 1",
            "FaceGateCanaryCheckDegraded",
        ),
        # Every breach ever, not only recent ones.
        (
            "(facegate_drift_breaches_total unless facegate_drift_breaches_total offset 10m)",
            "facegate_drift_breaches_total",
            "FaceGateDrift",
        ),
    ],
)
def test_lifecycle_rule_tests_catch_broken_alerts(
    promtool_path: str, tmp_path: Path, old: str, new: str, alert: str
) -> None:
    folder = _copy_config(tmp_path)
    rules = folder / "rules.yml"
    text = rules.read_text()
    assert old in text
    rules.write_text(text.replace(old, new))
    assert checks.run_promtool("check", "rules", "rules.yml", cwd=folder).returncode == 0
    result = checks.run_promtool("test", "rules", "rules_test.yml", cwd=folder)
    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stdout + result.stderr


def test_scrape_jobs_match_the_compose_services() -> None:
    """Prometheus finds the services by their compose names, on their metrics port."""
    config = yaml.safe_load((checks.PROMETHEUS_DIR / "prometheus.yml").read_text())
    compose = yaml.safe_load(checks.COMPOSE_FILE.read_text())["services"]
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                environment = compose[name]["environment"]
                ports = {v for k, v in environment.items() if k.endswith("_METRICS_PORT")}
                assert ports == {str(sd["port"])}, (name, ports)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{x="y", z=~"w"}[5m]))', {"a_bucket"}),
        ('x * on (v) group_left () max by (v) (info{alias="canary"}) > 0.05', {"x", "info"}),
        (
            "histogram_quantile(0.95, sum by (le, s) (rate(b_bucket[$__rate_interval])))",
            {"b_bucket"},
        ),
        ("rec:ord:ed offset 1d / 1e3 unless c", {"rec:ord:ed", "c"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert checks.promql_metric_names(expr) == names
