"""Evaluation figures as PNG files: ROC, DET, score histograms and a contact sheet of hard pairs.

Figures are built with ``matplotlib.figure.Figure`` (the Agg canvas, no pyplot state), so that
plotting works headless and from worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure
from scipy.special import ndtri

from trainer.evaluation.metrics import RocCurve

# DET axes run on the normal-deviate scale, from the decade below the smallest measured error
# rate (between 1e-6 and 1e-2) up to this rate.
_DET_HIGHEST = 0.9
_DET_TICKS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.9)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_roc(curves: Mapping[str, RocCurve], path: Path, title: str = "ROC") -> Path:
    """TAR against FAR on a log FAR axis, one line per curve."""
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    smallest = 1.0
    for label, curve in curves.items():
        shown = curve.fpr > 0
        if shown.any():
            smallest = min(smallest, float(curve.fpr[shown].min()))
            axes.step(curve.fpr[shown], curve.tpr[shown], where="post", label=label)
    axes.set_xscale("log")
    # At least two decades wide, even when every pair ties (a pipeline that found no faces).
    axes.set_xlim(min(max(smallest, 1e-6), 1e-2), 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_det(curves: Mapping[str, RocCurve], path: Path, title: str = "DET") -> Path:
    """False reject rate against false accept rate, both on normal-deviate axes."""
    errors = np.concatenate([np.r_[c.fpr, 1.0 - c.tpr] for c in curves.values()] or [np.ones(1)])
    smallest = float(errors[errors > 0].min()) if np.any(errors > 0) else 1e-3
    low = min(max(1e-6, 10.0 ** np.floor(np.log10(smallest))), 1e-2)
    high = _DET_HIGHEST
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    for label, curve in curves.items():
        far = np.clip(curve.fpr, low, high)
        frr = np.clip(1.0 - curve.tpr, low, high)
        axes.plot(ndtri(far), ndtri(frr), label=label)
    shown = [t for t in _DET_TICKS if low <= t <= high]
    ticks = ndtri(np.array(shown))
    names = [f"{t:g}" for t in shown]
    axes.set_xticks(ticks, names)
    axes.set_yticks(ticks, names)
    axes.set_xlim(ndtri(low), ndtri(high))
    axes.set_ylim(ndtri(low), ndtri(high))
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("false reject rate (FRR)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    return _save(figure, path)


def score_histogram(scores: np.ndarray, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of cosine scores over [-1, 1]."""
    counts, edges = np.histogram(np.clip(scores, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    return counts, edges


def plot_score_histograms(
    histograms: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    thresholds: Mapping[str, float | None] | None = None,
    title: str = "Scores",
    log_y: bool = False,
) -> Path:
    """Densities of each (counts, edges) histogram, with vertical lines at named thresholds."""
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    for label, (counts, edges) in histograms.items():
        total = counts.sum()
        if total:
            density = counts / (total * np.diff(edges))
            axes.stairs(density, edges, label=f"{label} (n={int(total):,})")
    for name, value in (thresholds or {}).items():
        if value is not None:
            axes.axvline(value, linestyle="--", linewidth=1, color="grey")
            axes.text(
                value,
                1.0,
                f" {name}",
                transform=axes.get_xaxis_transform(),
                fontsize=7,
                rotation=90,
                va="top",
            )
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


@dataclass(frozen=True)
class SheetPair:
    """Two RGB images and the caption shown under them."""

    left: np.ndarray
    right: np.ndarray
    caption: str


def _thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def contact_sheet(
    pairs: Sequence[SheetPair], path: Path, columns: int = 4, thumb: int = 112, title: str = ""
) -> Path:
    """A grid of side-by-side pairs with their captions (e.g. the hardest impostor pairs)."""
    rows = max(1, -(-len(pairs) // columns))
    figure = Figure(figsize=(columns * 2.6, rows * 1.75 + 0.4))
    for slot in range(rows * columns):
        axes = figure.add_subplot(rows, columns, slot + 1)
        axes.axis("off")
        if slot < len(pairs):
            pair = pairs[slot]
            axes.imshow(np.hstack([_thumbnail(pair.left, thumb), _thumbnail(pair.right, thumb)]))
            axes.set_title(pair.caption, fontsize=6)
    if title:
        figure.suptitle(title, fontsize=9)
    return _save(figure, path)
