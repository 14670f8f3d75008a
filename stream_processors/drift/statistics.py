"""Pure statistics of a drift window: score, quality, detection, feedback and embedding drift.

Everything here is NumPy on plain values, so it is tested without Kafka or Redis.  A window's
statistics are named floats (the keys of ``DriftReport.statistics``); a statistic that cannot
be computed from the window (no genuine attempt, no sketch, too little feedback) is left out
rather than reported as zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.messages import Feedback, Verdict

FloatArray = npt.NDArray[np.float64]

# Reasons of verdicts on a claimed, enrolled student whose face was found: their scores are the
# genuine score distribution (gates see few impostors, so almost all of these are genuine).
GENUINE_REASONS = frozenset({"match", "mismatch", "low_quality"})
NO_FACE_REASONS = frozenset({"no_face", "several_faces"})
# The quality scores averaged per window (keys of the Face message's quality dict) and the
# statistic each one becomes.  Face size is the distance between the eyes in frame pixels.
QUALITY_MEANS = {
    "brightness": "brightness_mean",
    "contrast": "contrast_mean",
    "sharpness": "sharpness_mean",
    "interocular_px": "face_size_mean",
}
GENUINE_PERCENTILE = 10.0
# Statistics compared with the reference window as a relative drop: (reference - now) / reference.
RELATIVE_DROPS = ("brightness_mean", "contrast_mean", "sharpness_mean", "face_size_mean")
# Compared as an absolute drop (scores are cosine similarities, already on a common scale).
ABSOLUTE_DROPS = ("genuine_score_mean",)


@dataclass(frozen=True)
class VerdictSample:
    """What a window keeps of one verdict (no thumbnail, no matches)."""

    reason: str
    decision: str
    score: float | None
    threshold: float | None
    quality: Mapping[str, float]
    quality_failed: bool
    sketch: tuple[float, ...] | None

    @classmethod
    def from_verdict(cls, verdict: Verdict) -> VerdictSample:
        """The sample of a verdict message."""
        return cls(
            reason=verdict.reason,
            decision=verdict.decision,
            score=verdict.score,
            threshold=verdict.threshold,
            quality={k: v for k, v in verdict.quality.items() if k in QUALITY_MEANS},
            quality_failed=bool(verdict.quality_reasons) or verdict.reason == "low_quality",
            sketch=tuple(verdict.embedding_sketch) if verdict.embedding_sketch else None,
        )


@dataclass
class FeedbackCounts:
    """Proctors' decisions on a window's verdicts, as counts.

    A false reject is a student the proctor accepted (confirm or accept_manual) whom the
    pipeline did not accept; a false accept is an accepted verdict the proctor found to be an
    impostor (the definitions of ``console.dataset``).  Retries say nothing about the face.
    """

    genuine: int = 0
    impostor: int = 0
    on_accepts: int = 0
    false_rejects: int = 0
    false_accepts: int = 0
    retries: int = 0

    def add(self, feedback: Feedback) -> None:
        """Count one proctor decision."""
        if feedback.action == "retry":
            self.retries += 1
            return
        accepted = feedback.verdict_decision == "accept"
        self.on_accepts += accepted
        if feedback.action == "impostor":
            self.impostor += 1
            self.false_accepts += accepted
        else:
            self.genuine += 1
            self.false_rejects += not accepted

    @property
    def total(self) -> int:
        """Decisions that say who the student was (retries excluded)."""
        return self.genuine + self.impostor


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def window_statistics(
    samples: Sequence[VerdictSample], feedback: FeedbackCounts, min_feedback: int = 20
) -> dict[str, float]:
    """The statistics of one window that need no reference.

    Rates of faces (``low_quality_rate``, quality means) are over verdicts where a face was
    found; detection rates over all verdicts; genuine-score statistics over verdicts with a
    claimed, enrolled student and a face.  Feedback rates need ``min_feedback`` decisions in
    their denominator: ``false_reject_rate`` is the share of students the proctor took as
    genuine that the pipeline did not accept; ``false_accept_rate`` the share of accepted
    verdicts the proctor judged that were impostors (gates see too few impostors for a rate
    over impostors; ``false_accepts`` counts them all the same).
    """
    stats: dict[str, float] = {}
    total = len(samples)
    if total == 0:
        return stats
    stats["no_face_rate"] = sum(s.reason == "no_face" for s in samples) / total
    stats["several_faces_rate"] = sum(s.reason == "several_faces" for s in samples) / total
    faces = [s for s in samples if s.reason not in NO_FACE_REASONS]
    stats["face_samples"] = float(len(faces))
    if faces:
        stats["low_quality_rate"] = sum(s.quality_failed for s in faces) / len(faces)
        for key, name in QUALITY_MEANS.items():
            values = [s.quality[key] for s in faces if key in s.quality]
            if values:
                stats[name] = _mean(values)
    genuine = [s for s in samples if s.reason in GENUINE_REASONS and s.score is not None]
    stats["genuine_samples"] = float(len(genuine))
    if genuine:
        scores = np.asarray([s.score for s in genuine], dtype=np.float64)
        stats["genuine_score_mean"] = float(scores.mean())
        stats["genuine_score_p10"] = float(np.percentile(scores, GENUINE_PERCENTILE))
        pairs = [(s.score, s.threshold) for s in genuine if s.threshold is not None]
        if pairs:
            below = sum(score is not None and score < limit for score, limit in pairs)
            stats["genuine_below_threshold_rate"] = below / len(pairs)
    stats["feedback_samples"] = float(feedback.total)
    stats["false_rejects"] = float(feedback.false_rejects)
    stats["false_accepts"] = float(feedback.false_accepts)
    if feedback.genuine >= min_feedback:
        stats["false_reject_rate"] = feedback.false_rejects / feedback.genuine
    if feedback.on_accepts >= min_feedback:
        stats["false_accept_rate"] = feedback.false_accepts / feedback.on_accepts
    return stats


def sketch_matrix(samples: Sequence[VerdictSample]) -> FloatArray:
    """The sketches of a window's verdicts as rows (verdicts without one are skipped)."""
    rows = [s.sketch for s in samples if s.sketch is not None]
    if not rows:
        return np.zeros((0, 0), dtype=np.float64)
    width = len(rows[0])
    return np.asarray([r for r in rows if len(r) == width], dtype=np.float64)


def _squared_distances(x: FloatArray, y: FloatArray) -> FloatArray:
    sq: FloatArray = (
        np.sum(x * x, axis=1)[:, None] + np.sum(y * y, axis=1)[None, :] - 2.0 * (x @ y.T)
    )
    return np.maximum(sq, 0.0)


def median_bandwidth(reference: FloatArray) -> float:
    """The median heuristic: the median distance between distinct reference points.

    Returns 1.0 when it is undefined (fewer than two points, or all points equal).
    """
    if reference.shape[0] < 2:
        return 1.0
    sq = _squared_distances(reference, reference)
    upper = sq[np.triu_indices(reference.shape[0], k=1)]
    median = float(np.sqrt(np.median(upper)))
    return median if median > 1e-12 else 1.0


def mmd2_rbf(x: FloatArray, y: FloatArray, bandwidth: float) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy with an RBF kernel.

    ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``.  Its expectation is 0 when ``x`` and ``y``
    come from the same distribution (single estimates scatter slightly around it, below zero
    included) and grows towards 2 as the distributions separate.  Needs two rows in each.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 samples on each side, got {n} and {m}")
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)
    k_xx = np.exp(-gamma * _squared_distances(x, x))
    k_yy = np.exp(-gamma * _squared_distances(y, y))
    k_xy = np.exp(-gamma * _squared_distances(x, y))
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def mean_distance(x: FloatArray, y: FloatArray) -> float:
    """Euclidean distance between the means of two sets of rows."""
    return float(np.linalg.norm(x.mean(axis=0) - y.mean(axis=0)))


@dataclass(frozen=True)
class Reference:
    """The window a gate and model are compared with: its sketches and statistics."""

    sketches: FloatArray
    bandwidth: float
    statistics: dict[str, float]
    samples: int
    created_at: float
    report_id: str = ""

    @classmethod
    def from_window(
        cls,
        samples: Sequence[VerdictSample],
        statistics: Mapping[str, float],
        created_at: float,
        report_id: str = "",
    ) -> Reference:
        """The reference made of a closed window."""
        sketches = sketch_matrix(samples)
        return cls(
            sketches=sketches,
            bandwidth=median_bandwidth(sketches),
            statistics=dict(statistics),
            samples=len(samples),
            created_at=created_at,
            report_id=report_id,
        )

    def to_json(self) -> str:
        """Serialise (for Redis)."""
        return json.dumps(
            {
                "sketches": self.sketches.tolist(),
                "bandwidth": self.bandwidth,
                "statistics": self.statistics,
                "samples": self.samples,
                "created_at": self.created_at,
                "report_id": self.report_id,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Reference:
        """Read what :meth:`to_json` wrote."""
        raw = json.loads(text)
        sketches = np.asarray(raw["sketches"], dtype=np.float64)
        if sketches.ndim != 2:
            sketches = np.zeros((0, 0), dtype=np.float64)
        return cls(
            sketches=sketches,
            bandwidth=float(raw["bandwidth"]),
            statistics={str(k): float(v) for k, v in raw["statistics"].items()},
            samples=int(raw["samples"]),
            created_at=float(raw["created_at"]),
            report_id=str(raw.get("report_id", "")),
        )


def drift_statistics(
    statistics: Mapping[str, float], sketches: FloatArray, reference: Reference
) -> dict[str, float]:
    """Statistics of a window against its reference.

    ``mmd`` (unbiased squared MMD, RBF kernel with the reference's median-heuristic
    bandwidth) and ``mean_sketch_distance`` need two sketches of the same width on each side;
    ``<stat>_drop`` is relative for the quality means and absolute for the genuine score mean,
    positive when the window is worse than the reference.
    """
    result: dict[str, float] = {"reference_samples": float(reference.samples)}
    ref = reference.sketches
    if sketches.shape[0] >= 2 and ref.shape[0] >= 2 and sketches.shape[1] == ref.shape[1]:
        result["mmd"] = mmd2_rbf(ref, sketches, reference.bandwidth)
        result["mean_sketch_distance"] = mean_distance(ref, sketches)
    for name in RELATIVE_DROPS:
        before, now = reference.statistics.get(name), statistics.get(name)
        if before is not None and now is not None and abs(before) > 1e-12:
            result[f"{name}_drop"] = (before - now) / before
    for name in ABSOLUTE_DROPS:
        before, now = reference.statistics.get(name), statistics.get(name)
        if before is not None and now is not None:
            result[f"{name}_drop"] = before - now
    return result
