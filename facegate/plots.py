"""Plots shared by reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def latency_histogram(latencies_ms: Sequence[float], path: Path, title: str) -> Path:
    """A latency histogram with p50/p95/p99 marked, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(latencies_ms, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.hist(data, bins=min(60, max(10, data.size // 5)), color="#4C72B0", alpha=0.85)
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        value = float(np.percentile(data, q))
        ax.axvline(value, color="#C44E52", linestyle=style, label=f"p{q} {value:.0f} ms")
    ax.set_xlabel("milliseconds")
    ax.set_ylabel("frames")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
