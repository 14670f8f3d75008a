"""The Helm chart: lints (Helm v4 SDK), renders, and its manifests pass Kubernetes schemas."""

from __future__ import annotations

import json
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
    "driftMonitor": {"thresholds": {"mmd_max": 0.05, "false_accept_rate_max": "off"}},
    "trainer": {
        "maxSteps": 200,
        "folders": ["/data/extra"],
        "gate": {"lfwDir": "/data/lfw"},
        "gpu": {"enabled": True},
        "extraVolumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "lfw"}}],
        "extraVolumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
    },
    "console": {
        "users": {
            "json": '{"alice": {"role": "admin", "hash": "$argon2id$v=19$m=65536,t=3,p=4$x$y"}}'
        },
        "ingress": {"enabled": True, "className": "nginx", "tls": {"enabled": True}},
    },
}
MINIMAL: dict[str, Any] = {
    "existingSecret": "facegate-credentials",
    "topics": {"create": False},
    "streamProcessor": {"autoscaling": {"enabled": False}, "pdb": {"enabled": False}},
    "worker": {"enabled": False},
    "trainer": {"persistence": {"enabled": False}},
    "console": {"users": {"existingSecret": "console-users"}},
}
# The Deployments of everything on: scaled consumers, singletons and the console.
DEPLOYMENTS = {
    "stream-processor",
    "inference-worker",
    "feedback-consumer",
    "drift-monitor",
    "canary-controller",
    "trainer",
    "console",
}
SINGLETONS = ("drift-monitor", "canary-controller", "trainer")


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
    # Every Deployment but the console's (its own template) loses its containerPort.
    assert len(problems) == len(DEPLOYMENTS) - 1, problems
    assert all("containerPort" in p for p in problems), problems


def test_pods_run_as_non_root_on_a_read_only_root() -> None:
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    workloads = _by_kind(documents, "Deployment") + _by_kind(documents, "Job")
    assert len(workloads) == len(DEPLOYMENTS) + 1  # and the topics Job
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
    names = checks.rendered_variable_names(documents)
    assert names - facegate_variables == set()
    assert {"FACEGATE_KAFKA_BOOTSTRAP_SERVERS", "FACEGATE_KAFKA_SASL_PASSWORD"} <= names
    assert {
        "FACEGATE_DRIFT_WINDOW_SIZE",
        "FACEGATE_DRIFT_MMD_MAX",
        "FACEGATE_CANARY_MIN_VERDICTS",
        "FACEGATE_RETRAIN_GATE_LFW_DIR",
        "FACEGATE_RETRAIN_MAX_STEPS",
        "FACEGATE_TRAIN_CACHE_DIR",
        "FACEGATE_CONSOLE_USERS_FILE",
    } <= names


def test_a_setting_facegate_does_not_read_is_caught(
    facegate_variables: set[str], tmp_path: Path
) -> None:
    chart = _chart_copy(tmp_path)
    template = chart / "templates" / "deployments.yaml"
    template.write_text(
        template.read_text().replace("FACEGATE_RETRAIN_COOLDOWN_S", "FACEGATE_RETRAIN_COOLDOWN")
    )
    names = checks.rendered_variable_names(checks.render_chart(chart))
    assert names - facegate_variables == {"FACEGATE_RETRAIN_COOLDOWN"}


def test_drift_thresholds_in_the_schema_are_the_drift_bounds() -> None:
    from stream_processors.drift.settings import BOUND_FIELDS

    schema = json.loads((checks.CHART_DIR / "values.schema.json").read_text())
    thresholds = schema["properties"]["driftMonitor"]["properties"]["thresholds"]
    assert thresholds["propertyNames"]["enum"] == list(BOUND_FIELDS)
    problems = checks.lint_chart(checks.CHART_DIR, {"driftMonitor": {"thresholds": {"mmd": 1}}})
    assert any("mmd" in p for p in problems), problems


def test_chart_runs_facegate_commands_that_exist() -> None:
    commands = dict(checks.chart_commands(checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)))
    assert len(commands) == len(DEPLOYMENTS) + 1  # and the retention CronJob
    assert commands["exam-facegate-trainer/trainer"] == ["train", "serve"]
    assert commands["exam-facegate-retention/retention"] == ["retention", "run"]
    assert checks.cli_problems(commands.items()) == []
    # A CronJob running a command the CLI does not have is caught like a Deployment's.
    broken = {**commands, "exam-facegate-retention/retention": ["retention", "sweep"]}
    assert checks.cli_problems(broken.items()) != []


def test_retention_runs_daily_with_its_periods_and_can_be_turned_off() -> None:
    values = {
        **EVERYTHING_ON,
        "retention": {
            "enabled": True,
            "schedule": "5 4 * * *",
            "feedbackDays": 30,
            "framesDays": 2,
            "verdictAuditDays": 90,
        },
    }
    (job,) = _by_kind(checks.render_chart(checks.CHART_DIR, values), "CronJob")
    assert job["spec"]["schedule"] == "5 4 * * *"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    container = checks.pod_spec(job)["containers"][0]  # type: ignore[index]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FACEGATE_RETENTION_FEEDBACK_DAYS"] == "30"
    assert env["FACEGATE_RETENTION_FRAMES_DAYS"] == "2"
    assert env["FACEGATE_RETENTION_VERDICT_AUDIT_DAYS"] == "90"
    off = {**EVERYTHING_ON, "retention": {**values["retention"], "enabled": False}}
    assert _by_kind(checks.render_chart(checks.CHART_DIR, off), "CronJob") == []


def test_lifecycle_services_run_exactly_one_replica() -> None:
    """Never two drift monitors, canary controllers or trainers: one replica, replaced with
    Recreate, no autoscaler or disruption budget (a budget of one pod blocks node drains)."""
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in _by_kind(documents, "Deployment")
    }
    assert set(deployments) == DEPLOYMENTS
    scaled = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget")
        for d in _by_kind(documents, kind)
    }
    for name in (*SINGLETONS, "console"):
        assert deployments[name]["spec"]["replicas"] == 1, name
        assert name not in scaled, name
    for name in SINGLETONS:
        assert deployments[name]["spec"]["strategy"] == {"type": "Recreate"}, name


def test_trainer_storage_memory_and_gpu() -> None:
    def trainer(values: dict[str, Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        documents = checks.render_chart(checks.CHART_DIR, values)
        [deployment] = [
            d
            for d in _by_kind(documents, "Deployment")
            if d["metadata"]["name"].endswith("-trainer")
        ]
        return deployment["spec"]["template"]["spec"], documents

    pod, documents = trainer(None)
    [claim] = _by_kind(documents, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["train-data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    [container] = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/var/lib/facegate-train"] == "train-data"
    assert "/opt/facegate/models/trained" in mounts
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FACEGATE_TRAIN_CACHE_DIR"].startswith("/var/lib/facegate-train/")
    assert container["resources"]["limits"]["memory"] == "4Gi"
    assert "nodeSelector" not in pod and "nvidia.com/gpu" not in container["resources"]["limits"]

    pod, documents = trainer(EVERYTHING_ON)
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"

    pod, documents = trainer(MINIMAL)
    assert _by_kind(documents, "PersistentVolumeClaim") == []
    assert {v["name"]: v for v in pod["volumes"]}["train-data"] == {
        "name": "train-data",
        "emptyDir": {},
    }


def test_console_is_reachable_with_its_users_mounted() -> None:
    documents = checks.render_chart(checks.CHART_DIR, EVERYTHING_ON)
    [deployment] = [
        d for d in _by_kind(documents, "Deployment") if d["metadata"]["name"].endswith("-console")
    ]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FACEGATE_CONSOLE_HOST"] == "0.0.0.0"
    assert env["FACEGATE_CONSOLE_SECURE_COOKIES"] == "true"  # the Ingress has TLS
    users_dir, users_name = env["FACEGATE_CONSOLE_USERS_FILE"].rsplit("/", 1)
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == users_dir]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secrets = {s["metadata"]["name"]: s for s in _by_kind(documents, "Secret")}
    users = secrets[volume["secret"]["secretName"]]["stringData"][users_name]
    assert json.loads(users)["alice"]["role"] == "admin"
    port = int(env["FACEGATE_CONSOLE_PORT"])
    assert container["ports"][0]["containerPort"] == port
    [service] = [
        s for s in _by_kind(documents, "Service") if s["metadata"]["name"].endswith("-console")
    ]
    [ingress] = _by_kind(documents, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] == service["spec"]["ports"][0]["name"]
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    minimal = checks.render_chart(checks.CHART_DIR, MINIMAL)
    assert _by_kind(minimal, "Ingress") == []
    assert "console-users" in json.dumps(_by_kind(minimal, "Deployment"))


def test_console_users_must_be_a_users_file() -> None:
    """A users file that is not JSON stops the install (lint only logs `fail`: render it)."""
    from helm_python.errors import HelmRenderError

    with pytest.raises(HelmRenderError, match=r"console\.users\.json is not a users file"):
        checks.render_chart(checks.CHART_DIR, {"console": {"users": {"json": "alice:secret"}}})


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
    assert len(monitors) == len(DEPLOYMENTS) - 1  # the console has no metrics endpoint
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


def test_large_whole_numbers_render_as_digits() -> None:
    """Helm keeps numbers as floats: 1000000 would render as 1e+06, which an int setting
    refuses."""
    values = {"trainer": {"enrollmentsTrigger": 1_000_000}, "driftMonitor": {"windowSize": 10**6}}
    env: dict[str, str] = {}
    for deployment in _by_kind(checks.render_chart(checks.CHART_DIR, values), "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env |= {e["name"]: e["value"] for e in container["env"]}
    assert env["FACEGATE_RETRAIN_ENROLLMENTS_TRIGGER"] == "1000000"
    assert env["FACEGATE_DRIFT_WINDOW_SIZE"] == "1000000"
