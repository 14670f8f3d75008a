"""Two stream processors in one Faust app; one is killed mid-stream and the other takes over.

Both run with the same ``FACEGATE_STREAM_APP_ID`` (the default), so they share the frames
topic's 8 partitions.  The second one is killed with SIGKILL while frames are in flight: the
group rebalances, the survivor takes its partitions over from their last committed offsets, and
every frame still ends with a verdict; frames the killed one had already sent on are processed
again and their repeated verdicts carry the same frame id and the same decision.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tests.faults.conftest import FaultPipeline, one_verdict_each
from tests.gate_frames import frames_of, publish

pytestmark = [pytest.mark.faults]

SECOND = "stream-processor-2"
FRAMES_SEEN = "facegate_stream_frames_total"


def _frames_seen(pipeline: FaultPipeline, service: str) -> float:
    """Frames a processor has handled (0 while its metrics endpoint is not up yet)."""
    try:
        return pipeline.metric(service, FRAMES_SEEN)
    except OSError:
        return 0.0


def test_killed_stream_processor_is_taken_over_by_its_peer(fault_pipeline: FaultPipeline) -> None:
    pipeline = fault_pipeline
    table = pipeline.stack.table
    photos = [(s.student_id, p) for s in pipeline.students() for p in s.probe_photos[:2]]
    env = {**pipeline.env, "FACEGATE_STREAM_METRICS_PORT": str(pipeline.metrics_ports[SECOND])}
    table.start(
        SECOND,
        [sys.executable, "-m", "facegate", "stream-processor"],
        env,
        pipeline.stack.state_dir / SECOND,
    )
    try:
        # Until the group has rebalanced and the second processor owns some partitions.
        deadline = time.monotonic() + 90
        while True:
            ids = publish(frames_of(photos[:8], "takeover-warmup", gates=8))
            assert not pipeline.collector.wait_for(ids, timeout_s=60)
            if _frames_seen(pipeline, SECOND) > 0:
                break
            assert table.running(SECOND) is not None, f"see {table.log_file(SECOND)}"
            assert time.monotonic() < deadline, "the second processor never got a partition"
        first_before = pipeline.metric("stream-processor", FRAMES_SEEN)

        frames = frames_of(photos * 4, "takeover", gates=8)
        ids = {f.frame_id for f in frames}
        started = time.monotonic()
        publish(frames)
        while len(ids & pipeline.collector.answered()) < 3:
            assert time.monotonic() - started < 60, "no verdicts before the kill"
            time.sleep(0.01)
        second = table.running(SECOND)
        assert second is not None
        os.kill(second.pid, signal.SIGKILL)
        assert len(ids & pipeline.collector.answered()) < len(ids), "finished before the kill"

        missing = pipeline.collector.wait_for(ids, timeout_s=90)
        assert not missing, f"{len(missing)} frames without a verdict after the takeover"
        print(f"all {len(ids)} verdicts {time.monotonic() - started:.1f} s after publishing")
        one_verdict_each(pipeline.collector, ids)
        # The survivor took over: it processed frames it would not have had otherwise.
        assert table.running("stream-processor") is not None
        assert pipeline.metric("stream-processor", FRAMES_SEEN) > first_before
    finally:
        table.stop(SECOND)
