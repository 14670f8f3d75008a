"""Prometheus metrics of the feedback consumer: what proctors see the system get wrong."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

FEEDBACK_ACTIONS = Counter(
    "facegate_proctor_feedback_total",
    "Proctors' decisions, by action and by the pipeline's verdict they judged.",
    ["action", "verdict_decision", "model_version"],
)
FALSE_REJECTS = Counter(
    "facegate_proctor_false_rejects_total",
    "Students the pipeline did not accept whom a proctor accepted as who they claimed.",
    ["model_version"],
)
FALSE_ACCEPTS = Counter(
    "facegate_proctor_false_accepts_total",
    "Check-ins the pipeline accepted that a proctor marked as impostors.",
    ["model_version"],
)
RETRIES = Counter(
    "facegate_proctor_retries_total", "Retries proctors asked for.", ["model_version"]
)
RETRIES_PER_STUDENT = Histogram(
    "facegate_proctor_retries_per_student",
    "Retries a student needed before the proctor's final decision.",
    buckets=(0, 1, 2, 3, 5, 8),
)
CHECKIN_SECONDS = Histogram(
    "facegate_proctor_checkin_seconds",
    "Per student: from the first captured frame to the proctor's final decision.",
    buckets=(2, 5, 10, 20, 30, 60, 120, 300, 600),
)
SAMPLES = Counter(
    "facegate_feedback_samples_total", "Training samples written, by label.", ["label"]
)
