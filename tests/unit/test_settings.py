"""Settings: typed, overridable by FACEGATE_* variables and env files, secrets kept secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from facegate.settings import (
    KafkaSettings,
    MlflowSettings,
    ObjectStoreSettings,
    RedisSettings,
    StackSettings,
    load_settings,
)


@pytest.fixture(autouse=True)
def _no_facegate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other tests of the session export their stack's endpoints; these tests start clean.
    for key in list(os.environ):
        if key.startswith("FACEGATE_"):
            monkeypatch.delenv(key)


def test_defaults_reach_the_local_stack() -> None:
    stack = StackSettings()
    assert KafkaSettings().bootstrap_servers == f"127.0.0.1:{stack.broker_port}"
    assert RedisSettings().url.endswith(f":{stack.redis_port}/0")
    assert ObjectStoreSettings().endpoint == f"127.0.0.1:{stack.s3_port}"
    assert MlflowSettings().tracking_uri == f"http://127.0.0.1:{stack.mlflow_port}"


def test_every_field_is_overridable_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGATE_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("FACEGATE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FACEGATE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FACEGATE_KAFKA_SASL_USERNAME", "gate")
    monkeypatch.setenv("FACEGATE_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("FACEGATE_REDIS_URL", "redis://redis:6379/3")
    monkeypatch.setenv("FACEGATE_S3_SECURE", "true")
    monkeypatch.setenv("FACEGATE_STACK_BROKER_PORT", "29092")
    monkeypatch.setenv("FACEGATE_STACK_BROKER_STORAGE", "s3")
    kafka = KafkaSettings()
    config = kafka.common_config()
    assert config["bootstrap_servers"] == ["kafka-1:9092", "kafka-2:9092"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "hunter2"
    assert RedisSettings().url == "redis://redis:6379/3"
    assert ObjectStoreSettings().endpoint_url().startswith("https://")
    stack = StackSettings()
    assert (stack.broker_port, stack.broker_storage) == (29092, "s3")
    # Nested connection settings of a service read their own prefixes.
    assert stack.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGATE_STACK_BROKER_STORAGE", "postgres")
    with pytest.raises(ValidationError, match="broker_storage"):
        StackSettings()


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGATE_S3_SECRET_KEY", "very-secret-value")
    monkeypatch.setenv("FACEGATE_KAFKA_SASL_PASSWORD", "another-secret")
    text = repr(ObjectStoreSettings()) + str(KafkaSettings()) + repr(StackSettings())
    assert "very-secret-value" not in text and "another-secret" not in text


def test_env_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "site.env"
    env_file.write_text(
        "FACEGATE_MLFLOW_EXPERIMENT=from-file\nFACEGATE_REDIS_URL=redis://file:1/0\n"
    )
    monkeypatch.setenv("FACEGATE_ENV_FILE", str(env_file))
    monkeypatch.setenv("FACEGATE_REDIS_URL", "redis://env:2/0")
    assert load_settings(MlflowSettings).experiment == "from-file"
    assert load_settings(RedisSettings).url == "redis://env:2/0"


def test_secret_files_are_read_from_the_secrets_dir_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "FACEGATE_KAFKA_SASL_PASSWORD").write_text("from-a-secret-file\n")
    (secrets / "FACEGATE_S3_SECRET_KEY").write_text("s3-from-file")
    monkeypatch.setenv("FACEGATE_SECRETS_DIR", str(secrets))
    kafka = load_settings(KafkaSettings)
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == "from-a-secret-file"
    assert "from-a-secret-file" not in repr(kafka)
    monkeypatch.setenv("FACEGATE_S3_SECRET_KEY", "s3-from-env")
    assert load_settings(ObjectStoreSettings).secret_key.get_secret_value() == "s3-from-env"
    # A service's connections read the same folder.
    assert load_settings(StackSettings).kafka.sasl_password is not None
