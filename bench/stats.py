"""The pure parts of the benchmark: latency summaries and the targets of issue 8.

Kept free of I/O so that they are unit-tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation); NaN for no values."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """count, mean and p50/p95/p99 of latencies in milliseconds, rounded to 0.01 ms."""
    summary: dict[str, float] = {"count": float(len(values_ms))}
    summary["mean"] = round(float(np.mean(values_ms)), 2) if values_ms else float("nan")
    for q in PERCENTILES:
        summary[f"p{q}"] = round(percentile(values_ms, q), 2)
    return summary


def stage_summary(timings: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """p50/p95/p99 of each stage named in any of ``timings`` (verdict ``timings_ms``)."""
    stages = sorted({name for row in timings for name in row})
    return {name: latency_summary([row[name] for row in timings if name in row]) for name in stages}


def bracketing_mean(before: float, after: float) -> float:
    """What the pipeline is compared with, for a model-only figure (the bound, one frame's
    compute): the mean of the figure measured before and after the pipeline. The same node's
    speed drifts by tens of percent within minutes (shared hardware), so one measurement a
    few minutes away from the pipeline's can be far from what the cores could do while it ran."""
    return round((before + after) / 2, 2)


def target(value: float, goal: float, met: bool, description: str) -> dict[str, Any]:
    """One entry under ``targets``: the measured figure, its goal, and whether it is met."""
    clean = None if value != value else round(value, 3)  # NaN (not measured) becomes null
    return {
        "value": clean,
        "goal": goal,
        "met": bool(met and clean is not None),
        "what": description,
    }


def compute_targets(
    *,
    online_fps: float,
    model_bound_fps: float,
    naive_fps: float,
    gate_p50_ms: float,
    model_frame_ms: float,
    search_p99_ms: dict[int, float],
    search_p50_ms: dict[int, float],
    peak_rss_mb: dict[str, float],
) -> dict[str, dict[str, Any]]:
    """The five targets of issue 8 from this run's figures.

    ``model_bound_fps``: the model-only throughput on the cores the pipeline has, measured on all
    of them at once;
    ``model_frame_ms``: the model compute of one frame at batch 1 (decode, detect, align, embed);
    ``search_*``: per-query 1:N times by gallery size; ``peak_rss_mb``: per service.
    """
    sizes = sorted(search_p50_ms)
    smallest, largest = sizes[0], sizes[-1]
    # Linear growth: the time ratio is at most the size ratio (what linear or better means).
    growth = search_p50_ms[largest] / search_p50_ms[smallest] / (largest / smallest)
    gate_goal = 1.3 * model_frame_ms + 10.0
    worst_service = max(peak_rss_mb, key=lambda name: peak_rss_mb[name])
    worst_rss = peak_rss_mb[worst_service]
    nan = float("nan")
    return {
        "online_vs_model_bound": target(
            online_fps / model_bound_fps if model_bound_fps > 0 else nan,
            0.8,
            online_fps >= 0.8 * model_bound_fps > 0,
            "online throughput / model-only bound on the same cores",
        ),
        "online_vs_naive": target(
            online_fps / naive_fps if naive_fps > 0 else nan,
            3.0,
            online_fps >= 3.0 * naive_fps > 0,
            "online throughput / naive one-at-a-time HTTP service, concurrency 8",
        ),
        "gate_p50_latency_ms": target(
            gate_p50_ms,
            round(gate_goal, 2),
            gate_p50_ms <= gate_goal,
            "gate median end-to-end latency <= 1.3 x model compute of one frame + 10 ms",
        ),
        "search_p99_ms_at_largest": target(
            search_p99_ms[largest], 5.0, search_p99_ms[largest] < 5.0, f"1:N p99 at {largest}"
        ),
        "search_growth_vs_linear": target(
            growth,
            1.0,
            growth <= 1.0,
            f"(p50 at {largest} / p50 at {smallest}) / ({largest} / {smallest}); <= 1 is linear",
        ),
        "max_service_rss_mb": target(
            worst_rss,
            1024.0,
            worst_rss < 1024.0,
            f"peak RSS of the largest service ({worst_service})",
        ),
    }
