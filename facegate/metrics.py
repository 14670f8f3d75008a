"""Metrics shared by several services (each service's own metrics live in its package)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge

DEAD_LETTERS = Counter(
    "facegate_dead_letters_total",
    "Records sent to the dead-letter topic, by service and reason.",
    ["service", "reason"],
)
CONSUMER_LAG = Gauge(
    "facegate_consumer_lag",
    "Records between a consumer group's position and the partition's high watermark.",
    ["group", "topic", "partition"],
)


class LagReporter:
    """Keeps ``facegate_consumer_lag`` of one consumer group in step with its assignment.

    Lag is ``highwater - position`` per assigned partition, both as the consumer last saw them
    in a fetch response: tansu answers ListOffsets with a wrong end offset (ENVIRONMENT.md), so
    the end offset is never asked for separately.  Partitions that a rebalance took away lose
    their series, so a revoked partition does not report its last lag for ever.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self._reported: set[tuple[str, int]] = set()

    def report(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set the gauge for each (topic, partition) in ``lags``; drop the ones not there."""
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.group, topic, str(partition)).set(max(0, lag))
        for topic, partition in self._reported - set(lags):
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.group, topic, str(partition))
        self._reported = set(lags)


def partition_lags(
    assignment: Iterable[tuple[str, int]],
    highwater: Mapping[tuple[str, int], int | None],
    position: Mapping[tuple[str, int], int | None],
) -> dict[tuple[str, int], int]:
    """Lag per partition where both the high watermark and the position are known."""
    lags: dict[tuple[str, int], int] = {}
    for key in assignment:
        high, pos = highwater.get(key), position.get(key)
        if high is not None and pos is not None:
            lags[key] = max(0, high - pos)
    return lags
