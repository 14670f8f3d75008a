"""Prometheus metrics of the embedding worker (one module, so that every metric is found here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from facegate.metrics import CONSUMER_LAG, DEAD_LETTERS, LagReporter, partition_lags
from schemas.messages import Verdict

__all__ = [
    "BATCH_SIZE",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "EMBEDDER_FALLBACKS",
    "EMBEDDER_PROVIDER",
    "GALLERY_STUDENTS",
    "GATE_VERDICTS",
    "MODEL_INFO",
    "STAGE_SECONDS",
    "UNREADABLE_TEMPLATES",
    "VERDICTS",
    "VERDICT_LATENCY",
    "VERDICT_SCORE",
    "KafkaLag",
    "describe_serving_model",
    "record_verdict",
]

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)

EMBEDDER_PROVIDER = Gauge(
    "facegate_embedder_provider_info",
    "Execution provider an embedder session really uses (1 for the active one).",
    ["model", "provider"],
)
EMBEDDER_FALLBACKS = Counter(
    "facegate_embedder_provider_fallback_total",
    "Embedder sessions that asked for OpenVINO and fell back to the CPU provider.",
    ["model"],
)
STAGE_SECONDS = Histogram(
    "facegate_worker_stage_seconds",
    "Time per stage of the embedding worker.",
    ["stage", "model_version"],
    buckets=STAGE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "facegate_worker_batch_size",
    "Faces per embedding batch.",
    ["model_version"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
VERDICTS = Counter(
    "facegate_verdicts_total",
    "Verdicts published, by decision, reason and the model version that decided.",
    ["decision", "reason", "model_version"],
)
# Gates are a venue's fixed cameras (tens to hundreds), so a label per gate stays bounded; it
# is what tells an active gate whose verdicts stopped from a quiet one.
GATE_VERDICTS = Counter(
    "facegate_gate_verdicts_total",
    "Verdicts published, by the gate the frame came from.",
    ["gate_id"],
)
VERDICT_SCORE = Histogram(
    "facegate_verdict_score",
    "1:1 similarity of a face with the claimed student's templates (verdicts that have one).",
    ["model_version", "decision"],
    buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
VERDICT_LATENCY = Histogram(
    "facegate_verdict_latency_seconds",
    "From the frame's capture to its verdict's decision (end to end through the pipeline).",
    ["model_version"],
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0),
)
GALLERY_STUDENTS = Gauge(
    "facegate_gallery_students",
    "Students in the worker's in-memory gallery for the model version it serves.",
    ["model_version"],
)
UNREADABLE_TEMPLATES = Gauge(
    "facegate_gallery_unreadable_templates",
    "Students left out of the worker's gallery at start because their templates could not be "
    "read (tampered, or sealed with a key the worker does not have); see the worker's log.",
    ["model_version"],
)
MODEL_INFO = Gauge(
    "facegate_model_info",
    "The embedder a worker serves (always 1): its name, version and the alias it follows.",
    ["model", "model_version", "alias"],
)


def record_verdict(verdict: Verdict) -> None:
    """Count one published verdict and observe its score and end-to-end latency."""
    version = verdict.model_version
    VERDICTS.labels(verdict.decision, verdict.reason, version).inc()
    GATE_VERDICTS.labels(verdict.gate_id).inc()
    if verdict.score is not None:
        VERDICT_SCORE.labels(version, verdict.decision).observe(verdict.score)
    VERDICT_LATENCY.labels(version).observe(max(0.0, verdict.decided_at - verdict.captured_at))


def describe_serving_model(
    name: str, version: str, alias: str, gallery_size: Callable[[], int]
) -> None:
    """Publish which model this worker serves and let the gallery size be read at scrape time."""
    MODEL_INFO.labels(name, version, alias).set(1)
    GALLERY_STUDENTS.labels(version).set_function(lambda: float(gallery_size()))


class KafkaLag:
    """Consumer lag of a consumer (librdkafka or kafka-python), from what its last fetches
    reported."""

    def __init__(self, consumer: Any, group: str) -> None:
        self.consumer = consumer
        self.reporter = LagReporter(group)

    def update(self) -> None:
        """Refresh ``facegate_consumer_lag`` for every partition the consumer holds now."""
        assignment = list(self.consumer.assignment())
        keys = [(tp.topic, tp.partition) for tp in assignment]
        highwater: dict[tuple[str, int], int | None] = {}
        position: dict[tuple[str, int], int | None] = {}
        for tp, key in zip(assignment, keys, strict=True):
            try:
                highwater[key] = self.consumer.highwater(tp)
                # Known positions come from memory; only a partition without one would ask
                # the coordinator, and that is bounded here.
                position[key] = self.consumer.position(tp, timeout_ms=1000)
            except Exception:  # a rebalance took the partition between the two calls
                continue
        self.reporter.report(partition_lags(keys, highwater, position))
