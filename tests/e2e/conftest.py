"""The streaming pipeline on the real local stack: a stream processor and an embedding worker
as their own processes, the calibrated champion registered in MLflow, LFW people enrolled."""

from __future__ import annotations

import os
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
from inference_worker.enrollment import RosterEntry
from inference_worker.enrollment_service import enroll_roster
from producers.roster import Roster, load_roster


@dataclass
class RunningPipeline:
    """What the end-to-end tests work with."""

    stack: LocalStack
    env: dict[str, str]
    roster: Roster
    enrolled: list[str]
    collector: VerdictCollector
    model_version: str

    def enrolled_probe_photos(self, limit: int) -> list[tuple[str, Path]]:
        """Up to ``limit`` (student id, probe photo) pairs of the enrolled students."""
        students = [s for s in self.roster.students if s.student_id in self.enrolled]
        return [(s.student_id, p) for s in students for p in s.probe_photos][:limit]


@pytest.fixture(scope="session")
def pipeline(local_stack: LocalStack, lfw_dir: Path) -> Iterator[RunningPipeline]:
    """Champion registered, 8 LFW people enrolled, services serving (a warm-up verdict came)."""
    endpoints = {key: os.environ[key] for key in local_stack.endpoints()}
    # The stream processor looks the registry's templates up every 2 s (not 15): the rollout
    # test waits for it to align faces for a new canary.
    env = {**service_env(endpoints), "FACEGATE_STREAM_ALIGN_REFRESH_S": "2"}
    version = ensure_champion(MlflowSettings())
    roster = load_roster(lfw_dir / "images", max_students=8, enroll_per_student=3, seed=3)
    summary = enroll_roster(
        [RosterEntry(s.student_id, s.name, s.enrollment_photos) for s in roster.students]
    )
    collector = VerdictCollector(KafkaSettings()).start()
    for name in SERVICES:
        start_service(local_stack, name, env)
    wait_until_serving(collector, local_stack, roster.students[0].probe_photos[0], 240)
    try:
        yield RunningPipeline(local_stack, env, roster, summary.enrolled, collector, version)
    finally:
        collector.stop()
        for name in SERVICES:
            local_stack.table.stop(name)
