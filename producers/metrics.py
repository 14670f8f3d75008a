"""Prometheus metrics of the frame producers (camera, simulator, replay)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PUBLISHED = Counter(
    "facegate_producer_frames_total",
    "Frames a producer handled, by gate and outcome (published, refused: over the size "
    "limit, failed: the broker did not acknowledge).",
    ["gate_id", "outcome"],
)
PUBLISH_SECONDS = Histogram(
    "facegate_producer_publish_seconds",
    "From sending a frame to the broker's acknowledgement.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
