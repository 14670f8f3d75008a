"""Typed settings: one object per service, every field overridable by ``FACEGATE_*`` variables.

Each connection has its own settings class with its own prefix (``FACEGATE_KAFKA_``,
``FACEGATE_REDIS_``, ``FACEGATE_S3_``, ``FACEGATE_MLFLOW_``); a service's settings object
composes the connections it needs.  Values come, in order of precedence, from the constructor,
the environment, the env file named by ``FACEGATE_ENV_FILE`` (default ``facegate.env`` in the
working directory, if present), then the defaults below.  The defaults match the ports of the
local stack (``facegate stack up``), so a fresh checkout needs no configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Default ports of the local stack: away from the well-known ones so that a Redis or Kafka
# already running on this machine is never touched by accident.
DEFAULT_BROKER_PORT = 19092
DEFAULT_REDIS_PORT = 16379
DEFAULT_S3_PORT = 18333
DEFAULT_MLFLOW_PORT = 15000

# Credentials of the local stack's object store.  Deployments set their own through
# FACEGATE_S3_ACCESS_KEY / FACEGATE_S3_SECRET_KEY (or files, see README); these exist so that a
# fresh checkout works offline and are never valid anywhere else.
LOCAL_S3_ACCESS_KEY = "facegate-local"
LOCAL_S3_SECRET_KEY = "facegate-local-secret"


def env_file() -> str | None:
    """The env file settings are read from, if it exists."""
    path = os.environ.get("FACEGATE_ENV_FILE", "facegate.env")
    return path if Path(path).is_file() else None


class _Settings(BaseSettings):
    # An empty variable means "not set": deployment files (docker-compose, Helm) pass every
    # optional setting, e.g. FACEGATE_KAFKA_SASL_MECHANISM, empty when it is not used.
    model_config = SettingsConfigDict(
        extra="ignore", env_file_encoding="utf-8", env_ignore_empty=True
    )


class BaseServiceSettings(_Settings):
    """Base of every service's settings object (one per service, ``FACEGATE_<SERVICE>_*``)."""

    metrics_port: int | None = None
    # Where the metrics endpoint listens: loopback on a workstation; 0.0.0.0 in containers,
    # where Prometheus and the orchestrator's probes reach it from outside the process.
    metrics_host: str = "127.0.0.1"
    # Added to the process's nice value at start (0-19): a service with a higher value yields
    # the CPU to the others when they compete for the same cores (one machine).  Containers with
    # their own CPU share are unaffected.
    niceness: int = Field(default=0, ge=0, le=19)


class KafkaSettings(_Settings):
    """Connection to the Kafka cluster (the local tansu broker or genuine Apache Kafka)."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_KAFKA_")

    bootstrap_servers: str = f"127.0.0.1:{DEFAULT_BROKER_PORT}"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "facegate"
    # tansu makes a group join wait half the session timeout: keep both short (ENVIRONMENT.md).
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    # How long the broker may hold a fetch when no data is there.  tansu answers a waiting fetch
    # late (aiokafka's 1500 ms default cost ~600 ms per hop); genuine Kafka answers as soon as
    # data arrives, so a short wait only adds idle fetch requests.
    fetch_max_wait_ms: int = 20
    # The same for consumers of low-rate control topics (enrolments, model events, drift,
    # feedback), whose records may arrive a fraction of a second late.  Every idle fetch costs
    # client and broker CPU: on tansu an idle kafka-python consumer of 8 partitions polling
    # every 20 ms used 12% of a core and the broker 11% (2-core node); every 500 ms, 1.4% and 1%.
    control_fetch_max_wait_ms: int = 500
    request_timeout_ms: int = 30000
    # kafka-python's idempotent producer (its default) loses records on tansu when the broker
    # crashes: the restarted broker answers a retried batch with DUPLICATE_SEQUENCE_NUMBER though
    # it never stored it, and the client counts that as delivered (offset -1).  Measured on
    # tansu's S3 engine, 10 SIGKILLs while sending: 3 of 1,802 acknowledged records missing with
    # it, none of 2,320 without (tests/faults/test_broker_restart.py checks it).  librdkafka's
    # idempotent producer (the hot path's) lost 1 of 465 the same way (2026-12-04).  Consumers
    # de-duplicate by frame id anyway, so off by default; genuine Kafka keeps sequence state
    # correctly (compose and Helm turn it on).
    idempotent_producer: bool = False

    def common_config(self) -> dict[str, Any]:
        """Options shared by kafka-python producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value:
                config[key] = value
        return config


class RedisSettings(_Settings):
    """Connection to the Redis server holding the gallery."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_REDIS_")

    url: str = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
    password: SecretStr | None = None
    socket_timeout_s: float = 5.0


class ObjectStoreSettings(_Settings):
    """Connection to the S3-compatible object store (SeaweedFS locally, MinIO or S3 deployed)."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_S3_")

    endpoint: str = f"127.0.0.1:{DEFAULT_S3_PORT}"
    access_key: str = LOCAL_S3_ACCESS_KEY
    secret_key: SecretStr = SecretStr(LOCAL_S3_SECRET_KEY)
    secure: bool = False
    region: str = "us-east-1"
    bucket_feedback: str = "facegate-feedback"
    bucket_datasets: str = "facegate-datasets"
    bucket_models: str = "facegate-models"
    bucket_frames: str = "facegate-frames"
    bucket_mlflow: str = "facegate-mlflow"
    bucket_broker: str = "facegate-broker"

    def buckets(self) -> list[str]:
        """Every bucket FaceGate uses."""
        return [
            self.bucket_feedback,
            self.bucket_datasets,
            self.bucket_models,
            self.bucket_frames,
            self.bucket_mlflow,
            self.bucket_broker,
        ]

    def endpoint_url(self) -> str:
        """The endpoint as a URL, for boto3 and MLflow."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


class MlflowSettings(_Settings):
    """Connection to the MLflow tracking server and model registry."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_MLFLOW_")

    tracking_uri: str = f"http://127.0.0.1:{DEFAULT_MLFLOW_PORT}"
    experiment: str = "facegate"
    registered_model: str = "facegate-embedder"


class StackSettings(_Settings):
    """The embedded local stack started by ``facegate stack up``."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_STACK_")

    state_dir: Path = Path(".facegate/stack")
    host: str = "127.0.0.1"
    broker_port: int = DEFAULT_BROKER_PORT
    broker_storage: Literal["memory", "s3"] = "memory"
    # Clients reach tansu through facegate/stack/fetch_proxy.py, which answers a waiting fetch
    # when a record arrives for it, as Apache Kafka does (tansu sleeps out every wait), on
    # either storage engine.
    broker_fetch_proxy: bool = True
    # The fetch proxy's record cache (facegate/stack/record_cache.py): the records produced
    # through it that it may hand to fetches without asking tansu; 0 turns it off.
    broker_record_cache_mb: int = Field(default=64, ge=0)
    redis_port: int = DEFAULT_REDIS_PORT
    # "embedded": start our own server; "external": use FACEGATE_REDIS_URL as it is.
    redis_mode: Literal["embedded", "external"] = "embedded"
    s3_port: int = DEFAULT_S3_PORT
    mlflow_port: int = DEFAULT_MLFLOW_PORT
    startup_timeout_s: float = 90.0
    with_mlflow: bool = True
    # `stack up --with-monitoring`: a Prometheus (Debian package) scraping FaceGate's services.
    with_monitoring: bool = False
    prometheus_port: int = 19090
    # The metrics ports FaceGate's services use beside the local stack (`stack up` exports
    # them as FACEGATE_<SERVICE>_METRICS_PORT for the shell; see ``service_metrics_ports``).
    stream_metrics_port: int = 19101
    worker_metrics_port: int = 19102
    feedback_metrics_port: int = 19103
    drift_metrics_port: int = 19104
    canary_metrics_port: int = 19105
    retrain_metrics_port: int = 19106

    def service_metrics_ports(self) -> dict[str, tuple[str, int]]:
        """Prometheus job -> (the service's metrics-port variable, its port on this stack)."""
        return {
            "facegate-stream-processor": ("FACEGATE_STREAM_METRICS_PORT", self.stream_metrics_port),
            "facegate-inference-worker": ("FACEGATE_WORKER_METRICS_PORT", self.worker_metrics_port),
            "facegate-feedback-consumer": (
                "FACEGATE_CONSOLE_METRICS_PORT",
                self.feedback_metrics_port,
            ),
            "facegate-drift-monitor": ("FACEGATE_DRIFT_METRICS_PORT", self.drift_metrics_port),
            "facegate-canary-controller": (
                "FACEGATE_CANARY_METRICS_PORT",
                self.canary_metrics_port,
            ),
            "facegate-trainer": ("FACEGATE_RETRAIN_METRICS_PORT", self.retrain_metrics_port),
        }

    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))
    s3: ObjectStoreSettings = Field(default_factory=lambda: load_settings(ObjectStoreSettings))
    mlflow: MlflowSettings = Field(default_factory=lambda: load_settings(MlflowSettings))


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def secrets_dir() -> str | None:
    """The folder of secret files (``FACEGATE_SECRETS_DIR``, e.g. ``/run/secrets``), if it exists.

    Each file is named like the variable it stands for (``FACEGATE_KAFKA_SASL_PASSWORD``) and
    holds its value: what Docker and Kubernetes mount for secrets.  The environment wins over a
    file, a file over the env file and the defaults.
    """
    path = os.environ.get("FACEGATE_SECRETS_DIR")
    return path if path and Path(path).is_dir() else None


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build a settings object from the environment, secret files and the env file, then
    ``overrides``."""
    return cls(  # type: ignore[call-arg]
        _env_file=env_file(), _secrets_dir=secrets_dir(), **overrides
    )
