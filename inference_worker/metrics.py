"""Prometheus metrics of the embedding worker (one module, so that every metric is found here)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
