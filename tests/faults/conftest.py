"""A private stack and pipeline for the fault tests, which stop and restart its servers.

The e2e ``pipeline`` fixture runs on the session's shared stack; stopping one of its servers
would break every test that shares it.  So the fault tests start their own stack on a free port
block in a temporary state directory, their own stream processor and worker, and stop all of
it when the package is done.  While they run, the ``FACEGATE_*`` endpoint variables point at
this stack (and are put back afterwards), so that every settings object reaches it.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facegate.pipeline import (
    SERVICES,
    VerdictCollector,
    ensure_champion,
    service_env,
    start_service,
    wait_until_serving,
)
from facegate.settings import KafkaSettings, MlflowSettings
from facegate.stack import LocalStack
from facegate.stack.ports import free_port_block, private_stack_settings
from producers.roster import Roster, Student, load_roster
from schemas.messages import Verdict
from tests.stack_env import exported_stack

FACEGATE = [sys.executable, "-m", "facegate"]


@dataclass
class FaultStack:
    """A private stack and the environment its services and clients use."""

    stack: LocalStack
    endpoints: dict[str, str]

    def stop(self, name: str) -> None:
        """Stop one of the stack's servers and check that it is gone."""
        assert self.stack.table.stop(name), f"{name} was not running"
        assert self.stack.table.running(name) is None

    def restart(self) -> float:
        """Start what is stopped again and wait until it is healthy; return the seconds."""
        started = time.monotonic()
        self.stack.up()
        return time.monotonic() - started


@dataclass
class FaultPipeline:
    """The private stack with a stream processor and a worker serving enrolled LFW people."""

    fault: FaultStack
    env: dict[str, str]
    roster: Roster
    enrolled: list[str]
    collector: VerdictCollector
    model_version: str
    # Prometheus ports: the worker, the stream processor, a second stream processor.
    metrics_ports: dict[str, int]

    @property
    def stack(self) -> LocalStack:
        return self.fault.stack

    def students(self) -> list[Student]:
        return [s for s in self.roster.students if s.student_id in self.enrolled]

    def restart_service(self, name: str) -> None:
        """Stop a pipeline service and start it again; wait until it is serving."""
        self.stack.table.stop(name)
        start_service(self.stack, name, self.env)
        wait_until_serving(self.collector, self.stack, self.students()[0].probe_photos[0], 120)

    def metric(self, service: str, name: str) -> float:
        """The sum of a metric's samples (all labels) on a service's Prometheus endpoint."""
        url = f"http://127.0.0.1:{self.metrics_ports[service]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "{")
        )


@pytest.fixture(scope="package")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """A stack of the fault tests' own (free ports, temporary state), stopped at the end."""
    stack = LocalStack(private_stack_settings(tmp_path_factory.mktemp("fault-stack")))
    with exported_stack(stack) as endpoints:
        yield FaultStack(stack, endpoints)


@pytest.fixture(scope="package")
def fault_pipeline(fault_stack: FaultStack, lfw_dir: Path) -> Iterator[FaultPipeline]:
    """Champion registered, 4 LFW people enrolled, stream processor and worker serving."""
    from inference_worker.enrollment import RosterEntry
    from inference_worker.enrollment_service import enroll_roster

    stack = fault_stack.stack
    first = free_port_block(3, start=30000 + (os.getpid() % 200) * 10)
    ports = {"worker": first, "stream-processor": first + 1, "stream-processor-2": first + 2}
    env = {
        **service_env(fault_stack.endpoints),
        "FACEGATE_WORKER_METRICS_PORT": str(ports["worker"]),
        "FACEGATE_STREAM_METRICS_PORT": str(ports["stream-processor"]),
        # The follower re-reads the registry every 2 s: an outage shows within seconds.
        "FACEGATE_WORKER_MODEL_REFRESH_S": "2",
    }
    version = ensure_champion(MlflowSettings())
    roster = load_roster(lfw_dir / "images", max_students=5, enroll_per_student=3, seed=11)
    # The last student is kept out of the first enrolment: tests enrol them during a fault.
    summary = enroll_roster(
        [RosterEntry(s.student_id, s.name, s.enrollment_photos) for s in roster.students[:4]]
    )
    collector = VerdictCollector(KafkaSettings()).start()
    for name in SERVICES:
        start_service(stack, name, env)
    wait_until_serving(collector, stack, roster.students[0].probe_photos[0], 240)
    try:
        yield FaultPipeline(fault_stack, env, roster, summary.enrolled, collector, version, ports)
    finally:
        collector.stop()
        for name in SERVICES:
            stack.table.stop(name)


def one_verdict_each(collector: VerdictCollector, ids: set[str]) -> dict[str, Verdict]:
    """Every frame has a verdict, and repeats of one frame (at-least-once) are one verdict.

    Returns the verdict of each frame after de-duplication by frame id.
    """
    by_frame: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in list(collector.verdicts):
        if verdict.frame_id in ids:
            by_frame[verdict.frame_id].append(verdict)
    assert set(by_frame) == ids, f"{len(ids - set(by_frame))} frames without a verdict"
    for repeats in by_frame.values():
        assert len({(v.decision, v.reason, v.claimed_student_id) for v in repeats}) == 1
    dead = {d.frame_id for d in collector.dead_letters} & ids
    assert not dead, f"{len(dead)} frames were dead-lettered"
    return {frame: repeats[0] for frame, repeats in by_frame.items()}
