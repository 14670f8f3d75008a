"""Prometheus metrics of the stream processor."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram

from facegate.metrics import CONSUMER_LAG, DEAD_LETTERS, LagReporter, partition_lags

__all__ = [
    "ATTENDANCE_UPDATES",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "FRAMES",
    "GATE_FRAMES",
    "STAGE_SECONDS",
    "FaustLag",
]

log = logging.getLogger(__name__)

STAGE_SECONDS = Histogram(
    "facegate_stream_stage_seconds",
    "Time per stage of the stream processor (decode, detect, align, quality, total).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
)
FRAMES = Counter("facegate_stream_frames_total", "Frames processed, by face outcome.", ["outcome"])
# Gates are a venue's fixed cameras, so a label per gate stays bounded; with the workers'
# facegate_gate_verdicts_total it shows an active gate whose verdicts stopped.
GATE_FRAMES = Counter(
    "facegate_stream_gate_frames_total",
    "Frames turned into faces, by the gate they came from.",
    ["gate_id"],
)
ATTENDANCE_UPDATES = Counter(
    "facegate_attendance_updates_total", "Verdicts recorded in the attendance table.", ["decision"]
)


def processed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset Faust last committed for ``tp`` (the next one to process), if any."""
    committed = getattr(consumer, "_committed_offset", None)
    if not isinstance(committed, Mapping):
        return None
    value = committed.get(tp)
    return int(value) if value is not None else None


class FaustLag:
    """Consumer lag of a Faust app's consumer, from the high watermarks its fetches saw.

    The end offset is never asked for separately: tansu answers ListOffsets wrongly
    (ENVIRONMENT.md), while the high watermark of a fetch response is right.  The other end is
    the offset Faust committed (events processed and acknowledged), not the fetch position:
    Faust reads ahead into buffers of thousands of events per partition, so the position says
    nothing of the frames that wait in this process (the soak showed a lag of 0 while 1,300
    frames waited).  Before the first commit of a partition the position stands in.
    """

    def __init__(self, app: Any, group: str) -> None:
        # The app, not its consumer: Faust creates the consumer when the worker starts.
        self.app = app
        self.reporter = LagReporter(group)

    async def update(self) -> None:
        """Refresh ``facegate_consumer_lag`` for every partition the app's consumer holds."""
        consumer = self.app.consumer
        # Faust's own leader-election topic is not work waiting to be done.
        assignment = [tp for tp in consumer.assignment() if "__assignor" not in tp.topic]
        keys = [(tp.topic, tp.partition) for tp in assignment]
        highwater: dict[tuple[str, int], int | None] = {}
        position: dict[tuple[str, int], int | None] = {}
        for tp, key in zip(assignment, keys, strict=True):
            try:
                highwater[key] = consumer.highwater(tp)
                committed = processed_offset(consumer, tp)
                position[key] = committed if committed is not None else await consumer.position(tp)
            except Exception as exc:  # a rebalance took the partition, or no fetch yet
                log.debug("no lag for %s: %s", key, exc)
        self.reporter.report(partition_lags(keys, highwater, position))
