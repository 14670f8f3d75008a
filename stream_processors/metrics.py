"""Prometheus metrics of the stream processor."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from facegate.metrics import DEAD_LETTERS

__all__ = ["ATTENDANCE_UPDATES", "DEAD_LETTERS", "FRAMES", "STAGE_SECONDS"]

STAGE_SECONDS = Histogram(
    "facegate_stream_stage_seconds",
    "Time per stage of the stream processor (decode, detect, align, quality, total).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
)
FRAMES = Counter("facegate_stream_frames_total", "Frames processed, by face outcome.", ["outcome"])
ATTENDANCE_UPDATES = Counter(
    "facegate_attendance_updates_total", "Verdicts recorded in the attendance table.", ["decision"]
)
