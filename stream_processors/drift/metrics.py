"""Prometheus metrics of the drift monitor (one module, so that every metric is found here).

Labels: ``gate`` (``all`` for the all-gates window), ``model_version`` and ``statistic``
(a bounded set: the keys of ``DriftReport.statistics``).
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

from facegate.metrics import DEAD_LETTERS
from schemas.messages import DriftReport
from stream_processors.drift.reference import gate_label

__all__ = [
    "DEAD_LETTERS",
    "DRIFT_BREACHES",
    "DRIFT_REPORTS",
    "DRIFT_STATISTIC",
    "DRIFT_WINDOW_SAMPLES",
    "record_report",
]

DRIFT_STATISTIC = Gauge(
    "facegate_drift_statistic",
    "Value of a drift statistic in the last closed window of a gate and model version.",
    ["gate", "model_version", "statistic"],
)
DRIFT_BREACHES = Counter(
    "facegate_drift_breaches_total",
    "Closed windows in which a statistic was beyond its bound.",
    ["gate", "model_version", "statistic"],
)
DRIFT_REPORTS = Counter(
    "facegate_drift_reports_total",
    "Drift reports published (one per closed window).",
    ["gate", "model_version"],
)
DRIFT_WINDOW_SAMPLES = Gauge(
    "facegate_drift_window_samples",
    "Verdicts in the last closed window of a gate and model version.",
    ["gate", "model_version"],
)

# The statistics last set per (gate, model version): one missing from the next report (say,
# no feedback in that window) loses its series instead of showing a stale value.
_last_statistics: dict[tuple[str, str], set[str]] = {}


def record_report(report: DriftReport) -> None:
    """Reflect a published report in the metrics."""
    gate = gate_label(report.gate_id)
    version = report.model_version
    for statistic, value in report.statistics.items():
        DRIFT_STATISTIC.labels(gate, version, statistic).set(value)
    for statistic in _last_statistics.get((gate, version), set()) - report.statistics.keys():
        with contextlib.suppress(KeyError):
            DRIFT_STATISTIC.remove(gate, version, statistic)
    _last_statistics[(gate, version)] = set(report.statistics)
    for statistic in report.breached:
        DRIFT_BREACHES.labels(gate, version, statistic).inc()
    DRIFT_REPORTS.labels(gate, version).inc()
    DRIFT_WINDOW_SAMPLES.labels(gate, version).set(report.samples)
