"""A worker killed mid-stream and restarted: every frame ends with exactly one verdict."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict

import pytest

from facegate.pipeline import start_service
from tests.e2e.conftest import RunningPipeline
from tests.gate_frames import frames_of, publish

pytestmark = pytest.mark.e2e


def test_sigkill_mid_stream_loses_nothing_and_repeats_are_recognised(
    pipeline: RunningPipeline,
) -> None:
    frames = frames_of(pipeline.enrolled_probe_photos(12) * 4, "crash-exam", gates=4)
    worker = pipeline.stack.table.running("worker")
    assert worker is not None
    ids = publish(frames)

    # Kill the worker as soon as some, but not all, of these frames have verdicts.
    deadline = time.monotonic() + 120
    while len(ids & pipeline.collector.answered()) < 3:
        assert time.monotonic() < deadline, "no verdicts before the kill"
        time.sleep(0.01)
    answered_at_kill = len(ids & pipeline.collector.answered())
    os.kill(worker.pid, signal.SIGKILL)
    assert answered_at_kill < len(ids), "the stream finished before the kill: use more frames"

    while pipeline.stack.table.running("worker") is not None:
        time.sleep(0.05)
    start_service(pipeline.stack, "worker", pipeline.env)

    missing = pipeline.collector.wait_for(ids, timeout_s=180)
    assert not missing, f"{len(missing)} frames without a verdict after the restart"
    by_frame = defaultdict(list)
    for verdict in pipeline.collector.verdicts:
        if verdict.frame_id in ids:
            by_frame[verdict.frame_id].append(verdict)
    # After de-duplication by frame id: exactly one verdict per published frame...
    assert set(by_frame) == ids
    # ...and a repeated delivery is the same verdict, recognisable by its frame id.
    for repeats in by_frame.values():
        assert len({(v.decision, v.reason, v.claimed_student_id) for v in repeats}) == 1
