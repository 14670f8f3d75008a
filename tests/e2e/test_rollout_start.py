"""`facegate rollout start` on the running pipeline: a version without a gallery is enrolled
from the stored enrolment photos before it becomes the canary, and the canary is stopped
again with `facegate models rollback --canary`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from facegate.cli import cli
from facegate.paths import models_dir
from facegate.redis_client import make_redis
from facegate.settings import MlflowSettings, RedisSettings
from inference_worker.gallery import GalleryStore
from tests.e2e.conftest import RunningPipeline
from trainer.registry import champion_version, register_embedder

pytestmark = pytest.mark.e2e


def test_rollout_start_enrols_the_versions_gallery_then_rollback_stops_it(
    pipeline: RunningPipeline,
) -> None:
    settings = MlflowSettings()
    # Another real embedder (dlib's, 128-d): a version with no gallery of its own yet.
    version = register_embedder(models_dir() / "dlib_resnet_v1", 0.5, settings)
    assert version != pipeline.model_version
    client = make_redis(RedisSettings())
    assert GalleryStore(client, version).students() == []
    runner = CliRunner()
    try:
        started = runner.invoke(cli, ["rollout", "start", version, "--share", "0.1"])
        assert started.exit_code == 0, started.output
        enrolled = len(pipeline.enrolled)
        assert f"gallery v{version}: {enrolled}/{enrolled} students enrolled" in started.output
        assert GalleryStore(client, version).students() == sorted(pipeline.enrolled)
        assert champion_version(settings, "canary") == version
    finally:
        stopped = runner.invoke(cli, ["models", "rollback", "--canary", "--reason", "test done"])
        client.close()
    assert stopped.exit_code == 0, stopped.output
    assert champion_version(settings, "canary") is None
    assert champion_version(settings) == pipeline.model_version
