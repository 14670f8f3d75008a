"""A second worker joins the group mid-stream and leaves again: no frame is lost or repeated.

A worker commits a batch's offsets as soon as the broker acknowledged its verdicts, before it
polls again, so when the group hands partitions over (on a poll) nothing answered is still
uncommitted, and a graceful scale-out or scale-in re-delivers nothing.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from kafka import KafkaAdminClient

from facegate.pipeline import start_service
from facegate.settings import KafkaSettings
from inference_worker.settings import InferenceWorkerSettings
from tests.e2e.conftest import RunningPipeline
from tests.gate_frames import frames_of, publish

pytestmark = pytest.mark.e2e

SECOND = "worker-2"


class GroupAdmin(KafkaAdminClient):  # type: ignore[misc]
    """kafka-python's admin client, reading DescribeGroups answers from tansu.

    tansu fills a group's authorized-operations field although it was not asked for, with a
    bit set (15) that kafka-python cannot name, and ``describe_groups`` raises ValueError.
    """

    def _process_acl_operations(self, obj: dict[str, object]) -> dict[str, object]:
        obj.pop("authorized_operations", None)
        return obj


def group_members() -> int:
    admin = GroupAdmin(**KafkaSettings().common_config())
    try:
        group_id = InferenceWorkerSettings().group_id
        return len(admin.describe_groups([group_id])[group_id]["members"])
    finally:
        admin.close()


def wait_for_members(count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (members := group_members()) != count:
        assert time.monotonic() < deadline, f"{members} workers in the group, expected {count}"
        time.sleep(0.5)


def test_a_worker_joining_and_leaving_repeats_no_verdict(pipeline: RunningPipeline) -> None:
    photos = pipeline.enrolled_probe_photos(12)
    wait_for_members(1, 30)

    before = publish(frames_of(photos * 2, "rebalance-exam", gates=4))
    deadline = time.monotonic() + 120
    while len(before & pipeline.collector.answered()) < 3:
        assert time.monotonic() < deadline, "no verdicts before the second worker started"
        time.sleep(0.01)
    start_service(pipeline.stack, "worker", pipeline.env, instance=2)
    try:
        wait_for_members(2, 120)
        during = publish(frames_of(photos * 2, "rebalance-exam", gates=4))
        assert not pipeline.collector.wait_for(before | during, timeout_s=180)
    finally:
        assert pipeline.stack.table.stop(SECOND)
    wait_for_members(1, 60)
    after = publish(frames_of(photos, "rebalance-exam", gates=4))
    assert not pipeline.collector.wait_for(after, timeout_s=180)

    ids = before | during | after
    counts = Counter(v.frame_id for v in pipeline.collector.verdicts if v.frame_id in ids)
    assert set(counts) == ids
    repeated = {frame: n for frame, n in counts.items() if n > 1}
    assert not repeated, f"{len(repeated)} frames answered more than once: {repeated}"
