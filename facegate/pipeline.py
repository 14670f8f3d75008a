"""Run the streaming pipeline on a local stack: its services, the champion, and a verdict reader.

Shared by ``facegate demo`` and the end-to-end tests, so that the tests exercise the same
start-up path a user runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from facegate.errors import FacegateError
from facegate.paths import home_dir, models_dir
from facegate.rdkafka_clients import RdConsumer
from facegate.settings import KafkaSettings, MlflowSettings, load_settings
from facegate.stack import LocalStack
from schemas.codec import SchemaError, decode
from schemas.messages import DeadLetter, Frame, Verdict, new_id, now
from schemas.topics import FRAMES_DLQ, VERDICTS

SERVICES = ("stream-processor", "worker")


class VerdictCollector:
    """Reads verdicts and dead letters back from Kafka in a thread, from the beginning."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = RdConsumer(
            kafka, f"facegate-reader-{new_id()[:8]}", [VERDICTS.name, FRAMES_DLQ.name]
        )
        self.verdicts: list[Verdict] = []
        self.dead_letters: list[DeadLetter] = []
        self.unreadable = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def start(self) -> VerdictCollector:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    self._add(record.topic, record.value)
        self.consumer.close()

    def _add(self, topic: str, value: bytes) -> None:
        try:
            if topic == VERDICTS.name:
                verdict = decode(value, Verdict)
                with self._lock:
                    self.verdicts.append(verdict)
            else:
                letter = decode(value, DeadLetter)
                with self._lock:
                    self.dead_letters.append(letter)
        except SchemaError:
            self.unreadable += 1

    def answered(self) -> set[str]:
        """Frame ids with a verdict or a dead letter so far."""
        with self._lock:
            ids = {v.frame_id for v in self.verdicts}
            ids |= {d.frame_id for d in self.dead_letters if d.frame_id}
        return ids

    def wait_for(self, frame_ids: set[str], timeout_s: float) -> set[str]:
        """Wait until every frame id is answered or the time is up; return those missing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            missing = frame_ids - self.answered()
            if not missing:
                return set()
            time.sleep(0.2)
        return frame_ids - self.answered()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def ensure_champion(mlflow: MlflowSettings) -> str:
    """The champion's version; on a registry without one, register the calibrated champion.

    A champion that is already set is left alone: promotions and roll-backs made through the
    registry are never undone here.
    """
    from trainer.calibration import load_calibration
    from trainer.registry import champion_version, find_version, register_embedder, set_alias

    current = champion_version(mlflow)
    if current is not None:
        return current

    calibration = load_calibration()
    model_dir = models_dir() / calibration.champion
    card = json.loads((model_dir / "card.json").read_text())
    version = find_version(mlflow, card["onnx_sha256"])
    if version is None:
        version = register_embedder(
            model_dir,
            calibration.threshold_for(calibration.champion),
            mlflow,
            extra_tags={
                "calibration": json.dumps(calibration.models[calibration.champion].__dict__)
            },
        )
    set_alias(mlflow, "champion", version)
    return version


def service_env(endpoints: dict[str, str]) -> dict[str, str]:
    """Environment of a pipeline service: the stack's endpoints and this run's absolute home."""
    return {
        **endpoints,
        "FACEGATE_HOME": str(home_dir()),
        "FACEGATE_MODELS_DIR": str(models_dir()),
    }


# Each service's metrics port variable: a second instance of a service serves its metrics 10
# ports above the first, a third 20 above, and so on.
_METRICS_PORT_VARIABLES = {
    "stream-processor": "FACEGATE_STREAM_METRICS_PORT",
    "worker": "FACEGATE_WORKER_METRICS_PORT",
}


def metrics_port(name: str, env: dict[str, str], instance: int = 1) -> int | None:
    """The port a service's ``instance`` serves its metrics on; None when none is set.

    The first instance's port may be set in ``env`` or in this process's environment, which
    the service inherits; each further instance serves 10 ports above the previous one.
    """
    variable = _METRICS_PORT_VARIABLES.get(name)
    port = (env.get(variable) or os.environ.get(variable)) if variable else None
    return int(port) + 10 * (instance - 1) if port else None


def instance_env(name: str, env: dict[str, str], instance: int) -> dict[str, str]:
    """``env`` for a service's ``instance``, with its own metrics port (:func:`metrics_port`):
    a second instance must not try to bind the first one's."""
    port = metrics_port(name, env, instance)
    if instance == 1 or port is None:
        return env
    return {**env, _METRICS_PORT_VARIABLES[name]: str(port)}


def instance_name(name: str, instance: int) -> str:
    """The process name of a service's ``instance`` (1: the service's own name)."""
    return name if instance == 1 else f"{name}-{instance}"


def start_service(
    stack: LocalStack,
    name: str,
    env: dict[str, str],
    profile: str = "online",
    instance: int = 1,
) -> None:
    """Start one pipeline service as its own process, tracked with the stack's processes.

    ``instance`` > 1 starts another process of the same service (same consumer group, so the
    partitions are shared), named ``<name>-<instance>``.
    """
    commands = {
        "stream-processor": [sys.executable, "-m", "facegate", "stream-processor"],
        "worker": [sys.executable, "-m", "facegate", "worker", "--profile", profile],
        # The training loop's services (drift monitor, canary controller, training service).
        "drift": [sys.executable, "-m", "facegate", "drift", "run"],
        "canary-controller": [sys.executable, "-m", "facegate", "rollout", "run"],
        "retrain": [sys.executable, "-m", "facegate", "train", "serve"],
    }
    process = instance_name(name, instance)
    if stack.table.running(process) is None:
        env = instance_env(name, env, instance)
        stack.table.start(process, commands[name], env, stack.state_dir / process)


def wait_until_serving(
    collector: VerdictCollector, stack: LocalStack, photo: Path, timeout_s: float
) -> float:
    """Publish a warm-up frame until its verdict comes back; return the seconds it took."""
    from producers.publisher import FramePublisher
    from producers.settings import ProducerSettings

    started = time.monotonic()
    frame_id = new_id()
    with FramePublisher(load_settings(ProducerSettings)) as publisher:
        publisher.publish(
            Frame(
                frame_id=frame_id,
                gate_id="warmup",
                exam_id="warmup",
                claimed_student_id=None,
                captured_at=now(),
                published_at=now(),
                source="test",
                image=photo.read_bytes(),
            )
        )
    while frame_id not in collector.answered():
        for name in SERVICES:
            if stack.table.running(name) is None:
                raise FacegateError(f"{name} exited during start; see {stack.table.log_file(name)}")
        if time.monotonic() - started > timeout_s:
            raise FacegateError(
                f"no verdict for the warm-up frame after {timeout_s:.0f} s; see "
                f"{stack.table.log_file('stream-processor')} and {stack.table.log_file('worker')}"
            )
        time.sleep(0.2)
    return time.monotonic() - started
