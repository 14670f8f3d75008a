"""The Helm chart: lints (Helm v4 SDK), renders, and its manifests pass Kubernetes schemas."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import checks

pytestmark = pytest.mark.deploy

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
EVERYTHING_ON: dict[str, Any] = {
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "streamProcessor": {
        "autoscaling": {"consumerLag": {"enabled": True}},
        "alignModels": ["mobilefacenet"],
    },
    "worker": {"autoscaling": {"consumerLag": {"enabled": True}}, "extraEnv": {"A": 1}},
    "kafka": {
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "tls": {"existingSecret": "kafka-ca", "certKey": "tls.crt", "keyKey": "tls.key"},
    },
}
MINIMAL: dict[str, Any] = {
    "existingSecret": "facegate-credentials",
    "topics": {"create": False},
    "streamProcessor": {"autoscaling": {"enabled": False}, "pdb": {"enabled": False}},
    "worker": {"enabled": False},
}


def _chart_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "facegate"
    shutil.copytree(checks.CHART_DIR, copy)
    return copy


def _by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_chart_lints_strictly() -> None:
    assert checks.lint_chart(checks.CHART_DIR) == []
    assert checks.lint_chart(checks.CHART_DIR, EVERYTHING_ON) == []


@pytest.mark.parametrize("values", [None, EVERYTHING_ON, MINIMAL], ids=["default", "all", "min"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_pass_kubernetes_schemas(
    values: dict[str, Any] | None, kube_version: str
) -> None:
    documents = checks.render_chart(checks.CHART_DIR, values)
    assert documents
    assert checks.manifest_problems(documents, kube_version) == []


def test_lint_fails_on_a_broken_template(tmp_path: Path) -> None:
    chart = _chart_copy(tmp_path)
    template = chart / "templates" / "configmap.yaml"
    template.write_text(template.read_text().replace("{{- end }}", "", 1))
    assert checks.lint_chart(chart) != []


def test_schema_validation_fails_on_a_broken_manifest(tmp_path: Path) -> None:
    chart = _chart_copy(tmp_path)
    template = chart / "templates" / "deployments.yaml"
    text = template.read_text().replace("containerPort:", "containerPorts:")
    template.write_text(text)
    documents = checks.render_chart(chart)
    problems = checks.manifest_problems(documents, KUBE_VERSIONS[-1])
    # Every Deployment (stream processor, worker, feedback consumer) loses its containerPort.
    assert len(problems) == 3 and all("containerPort" in p for p in problems), problems


def test_pods_run_as_non_root_on_a_read_only_root() -> None:
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    workloads = _by_kind(documents, "Deployment") + _by_kind(documents, "Job")
    assert len(workloads) == 4  # three Deployments and the topics Job
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"] and container["resources"]["requests"]


def test_settings_are_facegate_variables(facegate_variables: set[str]) -> None:
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    names = set()
    for config in _by_kind(documents, "ConfigMap"):
        names |= set(config["data"])
    for secret in _by_kind(documents, "Secret"):
        names |= set(secret["stringData"])
    for deployment in _by_kind(documents, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container["env"] if e["name"].startswith("FACEGATE_")}
    assert names - facegate_variables == set()
    assert {"FACEGATE_KAFKA_BOOTSTRAP_SERVERS", "FACEGATE_KAFKA_SASL_PASSWORD"} <= names


def test_autoscaling_on_cpu_and_on_consumer_lag() -> None:
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    hpas = {h["metadata"]["name"]: h for h in _by_kind(documents, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"exam-facegate-stream-processor", "exam-facegate-inference-worker"}
    groups = {}
    for name, hpa in hpas.items():
        kinds = [m["type"] for m in hpa["spec"]["metrics"]]
        assert kinds == ["Resource", "External"]
        external = hpa["spec"]["metrics"][1]["external"]
        assert external["metric"]["name"] == "facegate_consumer_lag"
        groups[name] = external["metric"]["selector"]["matchLabels"]["group"]
    assert groups == {
        "exam-facegate-stream-processor": "facegate-stream",
        "exam-facegate-inference-worker": "facegate-inference",
    }
    default = checks.render_chart(checks.CHART_DIR)
    for hpa in _by_kind(default, "HorizontalPodAutoscaler"):
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


def test_service_monitors_scrape_the_metrics_port_under_the_compose_job_names() -> None:
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    services = {s["metadata"]["name"]: s for s in _by_kind(documents, "Service")}
    monitors = _by_kind(documents, "ServiceMonitor")
    assert len(monitors) == 3
    jobs = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [
            s for s in services.values() if selector.items() <= s["metadata"]["labels"].items()
        ]
        assert len(matched) == 1
        ports = {p["name"] for p in matched[0]["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports
        jobs.add(matched[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]])
    scrape = yaml.safe_load((checks.PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert jobs == {j["job_name"] for j in scrape["scrape_configs"]} - {"prometheus"}
    assert _by_kind(checks.render_chart(checks.CHART_DIR), "ServiceMonitor") == []


def test_prometheus_rule_carries_the_same_rules(promtool_path: str, tmp_path: Path) -> None:
    """The chart's copy of the rules is monitoring's, and promtool accepts the rendered rule."""
    chart_rules = checks.CHART_DIR / "files" / "rules.yml"
    assert chart_rules.read_text() == (checks.PROMETHEUS_DIR / "rules.yml").read_text()
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    [rule] = _by_kind(documents, "PrometheusRule")
    rendered = tmp_path / "rendered.yml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = checks.run_promtool("check", "rules", str(rendered), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_selector_matches_its_pods() -> None:
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in _by_kind(documents, "Deployment")]
    for kind in ("Service", "PodDisruptionBudget"):
        for document in _by_kind(documents, kind):
            spec = document["spec"]
            selector = spec["selector"].get("matchLabels", spec["selector"])
            assert sum(selector.items() <= labels.items() for labels in pods) == 1, document


def test_lint_fails_on_values_outside_the_schema() -> None:
    problems = checks.lint_chart(checks.CHART_DIR, {"worker": {"profile": "fast"}})
    assert any("/worker/profile" in p for p in problems), problems
