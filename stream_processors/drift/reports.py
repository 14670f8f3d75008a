"""Reading drift reports back from the ``drift`` topic and printing them as a table."""

from __future__ import annotations

import time
from collections.abc import Sequence

from facegate.kafka_clients import read_whole_topic
from facegate.settings import KafkaSettings
from schemas.codec import SchemaError, decode
from schemas.messages import DriftReport
from schemas.topics import DRIFT
from stream_processors.drift.reference import gate_label

# Statistics shown in the table, with their column headings.
KEY_STATISTICS = (
    ("genuine_score_mean", "score"),
    ("brightness_mean", "bright"),
    ("low_quality_rate", "lowq"),
    ("no_face_rate", "noface"),
    ("mmd", "mmd"),
    ("mean_sketch_distance", "sketch"),
    ("false_reject_rate", "FRR"),
)


def read_reports(
    settings: KafkaSettings, limit: int | None = None, idle_s: float = 2.0, timeout_s: float = 30.0
) -> list[DriftReport]:
    """The latest ``limit`` reports (all when None), oldest first.

    The topic is read from its beginning without a consumer group until nothing new arrives
    for ``idle_s`` (:func:`read_whole_topic`).
    """
    reports: list[DriftReport] = []
    for value in read_whole_topic(settings, DRIFT.name, idle_s, timeout_s):
        try:
            reports.append(decode(value, DriftReport))
        except SchemaError:
            continue
    reports.sort(key=lambda r: r.window_end)
    return reports if limit is None else reports[-limit:] if limit > 0 else []


def _clock(epoch: float) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(epoch))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def format_table(reports: Sequence[DriftReport]) -> list[str]:
    """One line per report: gate, model, window, samples, key statistics, breached."""
    headings = ["gate", "model", "window", "n", *(h for _, h in KEY_STATISTICS), "breached"]
    rows = [
        [
            gate_label(r.gate_id),
            r.model_version,
            f"{_clock(r.window_start)}+{r.window_end - r.window_start:.0f}s",
            str(r.samples),
            *(_number(r.statistics.get(name)) for name, _ in KEY_STATISTICS),
            ",".join(r.breached) or "-",
        ]
        for r in reports
    ]
    widths = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings) - 1)]
    lines = []
    for row in [headings, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return lines
