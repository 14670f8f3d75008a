"""Metrics shared by several services (each service's own metrics live in its package)."""

from __future__ import annotations

from prometheus_client import Counter

DEAD_LETTERS = Counter(
    "facegate_dead_letters_total",
    "Records sent to the dead-letter topic, by service and reason.",
    ["service", "reason"],
)
