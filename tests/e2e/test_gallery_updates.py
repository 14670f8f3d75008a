"""Workers follow enrolments and removals without a restart."""

from __future__ import annotations

import time

import pytest

from inference_worker.enrollment import RosterEntry
from inference_worker.enrollment_service import enroll_roster, unenroll_students
from producers.publisher import FramePublisher
from producers.settings import ProducerSettings
from schemas.messages import Frame, Verdict, new_id, now
from tests.e2e.conftest import RunningPipeline

pytestmark = pytest.mark.e2e


def _check_in(pipeline: RunningPipeline, student_id: str, photo: bytes) -> Verdict:
    frame = Frame(
        frame_id=new_id(),
        gate_id="gate-enrol",
        exam_id="enrol-exam",
        claimed_student_id=student_id,
        captured_at=now(),
        published_at=now(),
        source="test",
        image=photo,
    )
    with FramePublisher(ProducerSettings()) as publisher:
        publisher.publish(frame)
    assert not pipeline.collector.wait_for({frame.frame_id}, timeout_s=60)
    return next(v for v in pipeline.collector.verdicts if v.frame_id == frame.frame_id)


def _eventually(
    pipeline: RunningPipeline, student_id: str, photo: bytes, expected: tuple[str, str]
) -> Verdict:
    # The event reaches the worker asynchronously (its own consumer thread): check in again
    # until the verdict changes, as a student at the gate would, within a bound.
    deadline = time.monotonic() + 20
    while True:
        verdict = _check_in(pipeline, student_id, photo)
        if (verdict.decision, verdict.reason) == expected or time.monotonic() > deadline:
            return verdict
        time.sleep(0.5)


def test_enrolment_and_removal_reach_running_workers(pipeline: RunningPipeline) -> None:
    # A person with photos enough to enrol, who is not in the gallery yet.
    newcomer = next(p for p in pipeline.roster.outsiders if len(p.probe_photos) >= 3)
    probe = newcomer.probe_photos[-1].read_bytes()
    before = _check_in(pipeline, newcomer.student_id, probe)
    assert (before.decision, before.reason) == ("review", "unknown_student")

    entry = RosterEntry(newcomer.student_id, newcomer.name, newcomer.probe_photos[:-1])
    summary = enroll_roster([entry])
    assert summary.enrolled == [newcomer.student_id]
    after = _eventually(pipeline, newcomer.student_id, probe, ("accept", "match"))
    assert (after.decision, after.reason) == ("accept", "match"), after.score

    assert unenroll_students([newcomer.student_id]) == [newcomer.student_id]
    removed = _eventually(pipeline, newcomer.student_id, probe, ("review", "unknown_student"))
    assert (removed.decision, removed.reason) == ("review", "unknown_student")
