"""Bounds on drift statistics: which statistics of a report are breached, and which of those
call for retraining (rather than for fixing a camera at a gate).

A report's ``thresholds`` maps each bounded statistic to its limit.  Limits are maxima except
for the statistics of ``stream_processors.drift.settings.LOWER_BOUNDED`` (``genuine_score_mean``,
``genuine_score_p10``, ``brightness_mean``), which are minima; a statistic has one bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from schemas.messages import DriftReport

Direction = Literal["above", "below"]


@dataclass(frozen=True)
class Bound:
    """A limit on one statistic: breached when the value is above (or below) ``limit``."""

    statistic: str
    limit: float
    direction: Direction = "above"

    @property
    def setting(self) -> str:
        """The settings field (and ``FACEGATE_DRIFT_`` variable) of the bound."""
        return f"{self.statistic}_{'max' if self.direction == 'above' else 'min'}"

    def breached_by(self, value: float) -> bool:
        """Whether ``value`` lies beyond the limit."""
        return value > self.limit if self.direction == "above" else value < self.limit


def breaches(statistics: Mapping[str, float], bounds: Iterable[Bound]) -> list[str]:
    """Statistics beyond their bound, in the order of ``bounds`` (absent statistics never are)."""
    found: list[str] = []
    for bound in bounds:
        value = statistics.get(bound.statistic)
        if value is not None and bound.breached_by(value) and bound.statistic not in found:
            found.append(bound.statistic)
    return found


# Breaches that call for retraining: the embeddings or the genuine scores moved, proctors
# overrule the model, or the faces the embedder sees changed (covariate shift: light, contrast,
# focus, distance to the camera), which retraining on recent proctor-labelled faces can adapt
# to; the evaluation gate refuses a candidate that is not better.  Detection failures and
# quality-gate rejections are not: the detector and the quality policy are not what is
# retrained, and an operator fixes the camera.  (On LFW, darkening to 0.35 of the light moves
# brightness and contrast far beyond their bounds but barely moves MobileFaceNet's embeddings
# or genuine scores.)
RETRAINING_STATISTICS: frozenset[str] = frozenset(
    {
        "mmd",
        "mean_sketch_distance",
        "genuine_score_mean_drop",
        "genuine_score_mean",
        "genuine_score_p10",
        "genuine_below_threshold_rate",
        "false_reject_rate",
        "false_accept_rate",
        "brightness_mean_drop",
        "brightness_mean",
        "contrast_mean_drop",
        "sharpness_mean_drop",
        "face_size_mean_drop",
    }
)


def retraining_reasons(
    report: DriftReport, statistics: Iterable[str] = RETRAINING_STATISTICS
) -> list[str]:
    """The breached statistics of ``report`` that should trigger retraining (may be empty)."""
    wanted = set(statistics)
    return [name for name in report.breached if name in wanted]
