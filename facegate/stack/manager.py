"""``facegate stack up | down | status | logs``: the lifecycle of the local stack."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis
from minio.error import S3Error

from facegate.errors import StackError
from facegate.kafka_clients import ensure_topics
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, StackSettings
from facegate.stack.binaries import prometheus_binary
from facegate.stack.process import ProcessTable, wait_for_free_port
from facegate.stack.services import (
    ServiceSpec,
    object_store_client,
    stack_services,
    state_file,
)

log = logging.getLogger(__name__)

# How long `up` waits for a port that a just-stopped (or crashed) server is still releasing.
PORT_RELEASE_WAIT_S = 3.0
# The hot path's fetch wait that `up` exports when the fetch proxy runs (unless
# FACEGATE_KAFKA_FETCH_MAX_WAIT_MS is set): Apache Kafka's default. Measured in README, Performance.
PROXIED_FETCH_MAX_WAIT_MS = 500


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``facegate stack status``."""

    name: str
    pid: int | None
    healthy: bool
    endpoint: str
    detail: str


class LocalStack:
    """The local stack under one state directory."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.settings.state_dir = self.state_dir
        self.table = ProcessTable(self.state_dir)
        if not settings.with_monitoring and self.table.running("prometheus") is not None:
            # Started by an earlier `up --with-monitoring`: status, logs and down include it.
            self.settings.with_monitoring = True
        self.services = stack_services(settings)

    # ---- up -------------------------------------------------------------------------------

    def up(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, str]:
        """Start every service not yet running, wait until all are healthy, set them up.

        Returns the endpoints as ``FACEGATE_*`` variables for clients.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_gallery_key()
        if self.settings.with_monitoring:
            prometheus_binary()  # the one optional binary: say it is missing before starting
        to_start = [s for s in self.services if self.table.running(s.name) is None]
        self._check_ports(to_start)
        try:
            self._start_all(to_start, progress)
        except BaseException:
            # Leave nothing half-started behind: stop what this call started.
            for spec in reversed(to_start):
                self.table.stop(spec.name)
            raise
        if self.settings.redis_mode == "external":
            self._check_external_redis()
        ensure_topics(self._kafka_settings())
        endpoints = self.endpoints()
        state_file(self.state_dir).write_text(
            "".join(f"{key}={value}\n" for key, value in endpoints.items())
        )
        return endpoints

    def _start_all(self, to_start: list[ServiceSpec], progress: Callable[[str], None]) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        ready: set[str] = {s.name for s in self.services} - {s.name for s in to_start}
        pending = list(to_start)
        started: dict[str, ServiceSpec] = {}
        while pending or started:
            for spec in [s for s in pending if set(s.after) <= ready]:
                progress(f"starting {spec.name}")
                self.table.start(spec.name, spec.argv(), spec.env, self.state_dir / spec.name)
                started[spec.name] = spec
                pending.remove(spec)
            for name, spec in list(started.items()):
                if self._is_healthy(spec, deadline):
                    self._after_healthy(spec)
                    progress(f"{name} healthy at {spec.endpoint}")
                    ready.add(name)
                    del started[name]
            if pending and not started and not any(set(s.after) <= ready for s in pending):
                raise StackError(f"cannot order start of {[s.name for s in pending]}")
            time.sleep(0.2)

    def _check_ports(self, to_start: list[ServiceSpec]) -> None:
        deadline = time.monotonic() + PORT_RELEASE_WAIT_S
        for spec in to_start:
            for port in spec.ports:
                left = max(0.0, deadline - time.monotonic())
                if not wait_for_free_port(self.settings.host, port, left):
                    raise StackError(
                        f"port {port} needed by {spec.name} is in use: stop what uses it "
                        f"(`ss -ltnp | grep {port}`) or choose other ports with "
                        "FACEGATE_STACK_*_PORT"
                    )

    def _is_healthy(self, spec: ServiceSpec, deadline: float) -> bool:
        self._check_running(spec)
        try:
            spec.health()
        except Exception as exc:  # any failure of the probe means "not yet"
            # A probe can take seconds to fail: a service that exited meanwhile says so.
            self._check_running(spec)
            log_file = self.table.log_file(spec.name)
            if time.monotonic() > deadline:
                self.table.stop(spec.name)
                raise StackError(
                    f"{spec.name} not healthy after {self.settings.startup_timeout_s:.0f} s "
                    f"({type(exc).__name__}); see its log: {log_file}"
                ) from None
            return False
        return True

    def _check_running(self, spec: ServiceSpec) -> None:
        if self.table.running(spec.name) is None:
            log_file = self.table.log_file(spec.name)
            raise StackError(
                f"{spec.name} exited during start; see its log: {log_file} "
                f"(last line: {_last_line(log_file)})"
            )

    def _after_healthy(self, spec: ServiceSpec) -> None:
        if spec.name == "s3":
            client = object_store_client(self.settings)
            for bucket in self.settings.s3.buckets():
                try:
                    if not client.bucket_exists(bucket):
                        client.make_bucket(bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def _check_external_redis(self) -> None:
        client = make_redis(self.settings.redis)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise StackError(
                f"external Redis at {self.settings.redis.url} does not answer ({exc}); "
                "start it or set FACEGATE_STACK_REDIS_MODE=embedded"
            ) from None
        finally:
            client.close()

    def gallery_key_file(self) -> Path:
        """The key file sealing this stack's face templates and stored face images (kept by
        ``down``: without it they could not be read again)."""
        from inference_worker.template_crypto import KEY_FILE_NAME

        return self.state_dir / KEY_FILE_NAME

    def _ensure_gallery_key(self) -> None:
        from inference_worker.template_crypto import ensure_key_file

        ensure_key_file(self.gallery_key_file())

    def _kafka_settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=f"{self.settings.host}:{self.settings.broker_port}")

    def endpoints(self) -> dict[str, str]:
        """Client settings that reach this stack, as environment variables."""
        host = self.settings.host
        result = {
            "FACEGATE_KAFKA_BOOTSTRAP_SERVERS": f"{host}:{self.settings.broker_port}",
            "FACEGATE_REDIS_URL": (
                f"redis://{host}:{self.settings.redis_port}/0"
                if self.settings.redis_mode == "embedded"
                else self.settings.redis.url
            ),
            "FACEGATE_S3_ENDPOINT": f"{host}:{self.settings.s3_port}",
            # Templates are encrypted at rest on the local stack (up creates the key, 0600).
            "FACEGATE_GALLERY_KEY_FILE": str(self.gallery_key_file()),
        }
        if self.settings.with_mlflow:
            result["FACEGATE_MLFLOW_TRACKING_URI"] = f"http://{host}:{self.settings.mlflow_port}"
        chosen = self.settings.kafka.model_fields_set
        if self.settings.broker_fetch_proxy and "fetch_max_wait_ms" not in chosen:
            # Behind the fetch proxy a record ends a consumer's wait, so the hot path can wait
            # as long as on Apache Kafka: idle consumers stop polling 50 times a second.
            result["FACEGATE_KAFKA_FETCH_MAX_WAIT_MS"] = str(PROXIED_FETCH_MAX_WAIT_MS)
        if self.settings.with_monitoring:
            # The ports the local Prometheus scrapes: services started from this shell use them.
            for variable, port in self.settings.service_metrics_ports().values():
                result[variable] = str(port)
        return result

    # ---- down, status, logs -----------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop what ``up`` started under this state directory; return the names stopped."""
        stopped = [s.name for s in reversed(self.services) if self.table.stop(s.name)]
        # Anything else with this stack's marker (a server's children that left its group).
        self.table.kill_stragglers()
        for pid_file in self.table.pid_dir.glob("*.pid") if self.table.pid_dir.is_dir() else []:
            if self.table.stop(pid_file.stem):
                stopped.append(pid_file.stem)
        state_file(self.state_dir).unlink(missing_ok=True)
        return stopped

    def status(self) -> list[ServiceStatus]:
        """Each service: its process and whether it answers its health check now."""

        def check(spec: ServiceSpec) -> ServiceStatus:
            record = self.table.running(spec.name)
            if record is None:
                return ServiceStatus(spec.name, None, False, spec.endpoint, "not running")
            try:
                spec.health()
            except Exception as exc:
                return ServiceStatus(spec.name, record.pid, False, spec.endpoint, str(exc)[:80])
            return ServiceStatus(spec.name, record.pid, True, spec.endpoint, "ok")

        with ThreadPoolExecutor(max_workers=len(self.services)) as pool:
            return list(pool.map(check, self.services))

    def log_path(self, name: str) -> Path:
        """The log file of a service, checked to be one of this stack's."""
        names = [s.name for s in self.services]
        if name not in names:
            raise StackError(f"no service {name!r}; the stack has {', '.join(names)}")
        return self.table.log_file(name)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"
