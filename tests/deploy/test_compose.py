"""docker-compose.yml: valid against the Compose Specification, and consistent with FaceGate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from schemas.topics import ALL_TOPICS
from tests.deploy import checks

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def compose() -> dict[str, dict[str, object]]:
    return yaml.safe_load(checks.COMPOSE_FILE.read_text())["services"]  # type: ignore[no-any-return]


def _broken_copy(tmp_path: Path, old: str, new: str) -> Path:
    """The compose file with one change, beside the files it mounts (so only the change counts)."""
    shutil.copytree(checks.REPO / "monitoring", tmp_path / "monitoring")
    text = checks.COMPOSE_FILE.read_text()
    assert old in text
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace(old, new, 1))
    return copy


def test_compose_file_matches_the_compose_specification() -> None:
    assert checks.compose_schema_problems(checks.COMPOSE_FILE) == []


def test_compose_schema_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    broken = _broken_copy(tmp_path, "    restart: unless-stopped\n", "    restarts: always\n")
    problems = checks.compose_schema_problems(broken)
    assert problems and "restarts" in problems[0]


def test_dependencies_health_checks_variables_and_mounts_are_consistent(
    facegate_variables: set[str],
) -> None:
    assert checks.compose_problems(checks.COMPOSE_FILE, facegate_variables) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "      kafka-topics:\n        condition: service_completed_successfully\n      model",
            "      kafka-topic:\n        condition: service_completed_successfully\n      model",
            "stream-processor: depends on unknown service kafka-topic",
        ),
        (
            "FACEGATE_WORKER_GROUP_ID: facegate-inference",
            "FACEGATE_WORKER_GROUP: facegate-inference",
            "inference-worker: FACEGATE_WORKER_GROUP is not a FaceGate setting",
        ),
        (
            "      enroll-demo:\n        condition: service_completed_successfully",
            "      enroll-demo:\n        condition: service_healthy",
            "camera-simulator: waits for enroll-demo to be healthy, which has no check",
        ),
    ],
)
def test_consistency_check_fails_on_broken_copies(
    facegate_variables: set[str], tmp_path: Path, old: str, new: str, problem: str
) -> None:
    broken = _broken_copy(tmp_path, old, new)
    assert problem in checks.compose_problems(broken, facegate_variables)


def test_the_whole_system_is_there(compose: dict[str, dict[str, object]]) -> None:
    for service in (
        "kafka",
        "redis",
        "minio",
        "minio-buckets",
        "postgres",
        "mlflow",
        "prometheus",
        "grafana",
        "kafka-topics",
        "stream-processor",
        "inference-worker",
        "console",
        "feedback-consumer",
        "drift-monitor",
        "canary-controller",
        "trainer",
        "camera-simulator",
    ):
        assert service in compose, service
    kafka = compose["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # type: ignore[index]
    assert "postgresql://" in " ".join(compose["mlflow"]["command"])  # type: ignore[arg-type]
    for scaled in ("stream-processor", "inference-worker"):
        assert compose[scaled]["deploy"]["replicas"] >= 2  # type: ignore[index]
    # One drift monitor (its windows), one canary controller (it acts on the registry), one
    # trainer (one run at a time).
    for single in ("drift-monitor", "canary-controller", "trainer"):
        assert compose[single]["deploy"]["replicas"] == 1  # type: ignore[index]


def test_lifecycle_services_have_health_checks_limits_and_storage(
    compose: dict[str, dict[str, object]],
) -> None:
    commands = {"drift-monitor": "drift run", "canary-controller": "rollout run"}
    commands["trainer"] = "train serve"
    for name, command in commands.items():
        service = compose[name]
        assert " ".join(service["command"]) == command  # type: ignore[arg-type]
        test = service["healthcheck"]["test"]  # type: ignore[index]
        assert test == ["CMD", "python", "/app/docker/healthcheck.py"], name
        assert service["deploy"]["resources"]["limits"]["memory"]  # type: ignore[index]
    trainer = compose["trainer"]
    assert trainer["deploy"]["resources"]["limits"]["memory"] == "4G"  # type: ignore[index]
    environment: dict[str, str] = trainer["environment"]  # type: ignore[assignment]
    mounts = {str(v).split(":")[1] for v in trainer["volumes"]}  # type: ignore[attr-defined]
    assert {"/var/lib/facegate-train", "/opt/facegate/models/trained"} <= mounts
    for setting in ("FACEGATE_TRAIN_CACHE_DIR", "FACEGATE_TRAIN_CHECKPOINT_DIR"):
        assert environment[setting].startswith("/var/lib/facegate-train/")


def test_every_metrics_endpoint_is_scraped() -> None:
    prometheus = checks.PROMETHEUS_DIR / "prometheus.yml"
    assert checks.scrape_problems(checks.COMPOSE_FILE, prometheus) == []


def test_an_unscraped_service_is_caught(tmp_path: Path) -> None:
    prometheus = tmp_path / "prometheus.yml"
    text = (checks.PROMETHEUS_DIR / "prometheus.yml").read_text()
    prometheus.write_text(text.replace("names: [trainer]", "names: [training]"))
    assert checks.scrape_problems(checks.COMPOSE_FILE, prometheus) == [
        "facegate-trainer: scrapes training, which is no service",
        "trainer: serves metrics on 9100, which no scrape job reads",
    ]


def test_services_run_facegate_commands_that_exist() -> None:
    commands = dict(checks.compose_commands(checks.COMPOSE_FILE))
    assert commands["trainer"] == ["train", "serve"]
    assert checks.cli_problems(commands.items()) == []


def test_a_command_facegate_does_not_have_is_caught(tmp_path: Path) -> None:
    broken = _broken_copy(tmp_path, 'command: ["drift", "run"]', 'command: ["drift", "serve"]')
    broken.write_text(broken.read_text().replace('["rollout", "run"]', '["rollout", "--port"]'))
    assert checks.cli_problems(checks.compose_commands(broken)) == [
        "drift-monitor: `facegate drift` has no command 'serve'",
        "canary-controller: `facegate rollout` needs a subcommand",
    ]


def test_named_volumes_are_writable_by_the_service_user() -> None:
    assert checks.volume_problems(checks.COMPOSE_FILE, checks.DOCKERFILE) == []


def test_a_volume_the_user_cannot_write_is_caught(tmp_path: Path) -> None:
    broken = _broken_copy(
        tmp_path, "trainer-data:/var/lib/facegate-train", "trainer-data:/var/lib/train"
    )
    assert checks.volume_problems(broken, checks.DOCKERFILE) == [
        "trainer: volume trainer-data on /var/lib/train, not writable by the user"
    ]


def test_topic_job_creates_every_topic_with_its_partitions(
    compose: dict[str, dict[str, object]],
) -> None:
    """The job calls ensure_topics, which creates ALL_TOPICS with their partition counts."""
    script = compose["kafka-topics"]["command"][0]  # type: ignore[index]
    assert "ensure_topics(load_settings(KafkaSettings))" in script
    assert {t.name for t in ALL_TOPICS} >= {"frames", "faces", "verdicts", "frames.dlq"}
    compile(script, "kafka-topics", "exec")
    for job in ("minio-buckets", "enroll-demo"):
        compile(compose[job]["command"][0], job, "exec")  # type: ignore[index]
