"""`facegate rollout start` on the running pipeline: a version without a gallery is enrolled
from the stored enrolment photos before it becomes the canary, and the canary is stopped
again with `facegate models rollback --canary`."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from facegate.cli import cli
from facegate.paths import models_dir
from facegate.redis_client import make_redis
from facegate.settings import MlflowSettings, RedisSettings
from inference_worker.gallery import GalleryStore
from inference_worker.rollout import in_canary
from producers.publisher import FramePublisher
from producers.roster import Student
from producers.settings import ProducerSettings
from schemas.messages import Frame, new_id, now
from tests.e2e.conftest import RunningPipeline
from trainer.registry import champion_version, register_embedder

pytestmark = pytest.mark.e2e


def test_rollout_start_enrols_the_versions_gallery_then_rollback_stops_it(
    pipeline: RunningPipeline,
) -> None:
    settings = MlflowSettings()
    enrolled = pipeline.enrolled
    # Another real embedder (dlib's, 128-d): a version with no gallery of its own yet.
    version = register_embedder(models_dir() / "dlib_resnet_v1", 0.5, settings)
    assert version != pipeline.model_version
    client = make_redis(RedisSettings())
    assert GalleryStore(client, version).students() == []
    # The smallest share that routes at least one enrolled student to the canary.
    share = next(s for s in (0.1, 0.2, 0.35, 0.5, 1.0) if any(in_canary(x, s) for x in enrolled))
    student = next(s for s in pipeline.roster.students if in_canary(s.student_id, share))
    runner = CliRunner()
    try:
        started = runner.invoke(cli, ["rollout", "start", version, "--share", str(share)])
        assert started.exit_code == 0, started.output
        count = len(enrolled)
        assert f"gallery v{version}: {count}/{count} students enrolled" in started.output
        assert GalleryStore(client, version).students() == sorted(enrolled)
        assert champion_version(settings, "canary") == version
        # dlib aligns to its own 150 px template: the running stream processor picks the
        # canary's template up from the registry (no restart), and from then on the canary
        # decides its students' faces instead of the champion.
        decided_by = _decided_by_canary(pipeline, student, version, timeout_s=90)
        assert decided_by == version, f"still decided by v{decided_by} after 90 s"
    finally:
        stopped = runner.invoke(cli, ["models", "rollback", "--canary", "--reason", "test done"])
        client.close()
    assert stopped.exit_code == 0, stopped.output
    assert champion_version(settings, "canary") is None
    assert champion_version(settings) == pipeline.model_version


def _decided_by_canary(
    pipeline: RunningPipeline, student: Student, version: str, timeout_s: float
) -> str | None:
    """Publish the student's photo every 2 s until a verdict comes from ``version``; return the
    version that decided the last verdict seen."""
    photo = student.probe_photos[0].read_bytes()
    deadline = time.monotonic() + timeout_s
    last: str | None = None
    with FramePublisher(ProducerSettings()) as publisher:
        while time.monotonic() < deadline:
            frame = Frame(
                frame_id=new_id(),
                gate_id="gate-e2e",
                exam_id="e2e-canary",
                claimed_student_id=student.student_id,
                captured_at=now(),
                published_at=now(),
                source="test",
                image=photo,
            )
            publisher.publish(frame)
            if not pipeline.collector.wait_for({frame.frame_id}, timeout_s=30):
                verdicts = [v for v in pipeline.collector.verdicts if v.frame_id == frame.frame_id]
                last = verdicts[0].model_version if verdicts else None
                if last == version:
                    return last
            time.sleep(2)
    return last
