"""Drift statistics: MMD, bandwidth, window statistics, drift against a reference, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.messages import DriftReport, Feedback, Verdict
from stream_processors.drift.statistics import (
    FeedbackCounts,
    Reference,
    VerdictSample,
    drift_statistics,
    mean_distance,
    median_bandwidth,
    mmd2_rbf,
    sketch_matrix,
    window_statistics,
)
from stream_processors.drift.thresholds import Bound, breaches, retraining_reasons


def _sample(
    reason: str = "match",
    score: float | None = 0.7,
    brightness: float = 120.0,
    sketch: tuple[float, ...] | None = (1.0, 0.0),
    quality_failed: bool = False,
) -> VerdictSample:
    return VerdictSample(
        reason=reason,
        decision="accept" if reason == "match" else "review",
        score=score,
        threshold=0.45,
        quality={"brightness": brightness, "contrast": 50.0, "sharpness": 0.1},
        quality_failed=quality_failed,
        sketch=sketch,
    )


def _feedback(action: str, decision: str) -> Feedback:
    return Feedback(
        feedback_id="f",
        frame_id="fr",
        exam_id="e",
        gate_id="g",
        student_id="s",
        proctor="p",
        action=action,  # type: ignore[arg-type]
        verdict_decision=decision,  # type: ignore[arg-type]
        model_version="1",
        decided_at=0.0,
    )


def test_mmd_of_identical_samples_is_about_zero() -> None:
    x = np.random.default_rng(0).normal(size=(100, 16))
    assert abs(mmd2_rbf(x, x.copy(), median_bandwidth(x))) < 0.02


def test_mmd_separates_shifted_samples_from_samples_of_the_same_distribution() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(60, 16))
    bandwidth = median_bandwidth(reference)
    same = mmd2_rbf(reference, rng.normal(size=(60, 16)), bandwidth)
    shifted = mmd2_rbf(reference, rng.normal(loc=1.0, size=(60, 16)), bandwidth)
    assert abs(same) < 0.03
    assert shifted > 0.3
    assert shifted > 10 * abs(same)


def test_mmd_needs_two_samples_on_each_side() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_rbf(np.zeros((1, 3)), np.zeros((5, 3)), 1.0)


def test_median_bandwidth_is_the_median_pairwise_distance() -> None:
    points = np.array([[0.0], [1.0], [3.0]])  # distances 1, 3, 2
    assert median_bandwidth(points) == pytest.approx(2.0)
    assert median_bandwidth(np.zeros((4, 2))) == 1.0  # degenerate: all equal
    assert median_bandwidth(np.zeros((1, 2))) == 1.0


def test_mean_distance() -> None:
    assert mean_distance(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([[1.0, 3.0]])) == 3.0


def test_window_statistics_rates_means_and_genuine_scores() -> None:
    samples = [
        _sample("match", 0.8, brightness=100),
        _sample("mismatch", 0.3, brightness=120),
        _sample("low_quality", 0.5, brightness=140, quality_failed=True),
        _sample("no_claim", None, brightness=160),  # a face, but no genuine score
        _sample("no_face", None, sketch=None),
        _sample("several_faces", None, sketch=None),
    ]
    stats = window_statistics(samples, FeedbackCounts())
    assert stats["no_face_rate"] == pytest.approx(1 / 6)
    assert stats["several_faces_rate"] == pytest.approx(1 / 6)
    assert stats["face_samples"] == 4
    assert stats["low_quality_rate"] == pytest.approx(1 / 4)
    # quality means over the faces only (no_face samples carry a quality dict here, ignored)
    assert stats["brightness_mean"] == pytest.approx(130.0)
    assert stats["genuine_samples"] == 3
    assert stats["genuine_score_mean"] == pytest.approx(0.5333333)
    assert stats["genuine_score_p10"] == pytest.approx(0.34)
    assert stats["genuine_below_threshold_rate"] == pytest.approx(1 / 3)
    assert "false_reject_rate" not in stats  # no feedback


def test_feedback_rates_need_enough_decisions() -> None:
    counts = FeedbackCounts()
    for _ in range(3):
        counts.add(_feedback("accept_manual", "review"))  # false rejects
    for _ in range(7):
        counts.add(_feedback("confirm", "accept"))
    counts.add(_feedback("impostor", "accept"))  # a false accept
    counts.add(_feedback("impostor", "reject"))
    counts.add(_feedback("retry", "review"))
    assert (counts.genuine, counts.impostor, counts.on_accepts, counts.retries) == (10, 2, 8, 1)
    stats = window_statistics([_sample()], counts, min_feedback=8)
    assert stats["false_reject_rate"] == pytest.approx(0.3)
    assert stats["false_accept_rate"] == pytest.approx(1 / 8)
    assert stats["feedback_samples"] == 12
    assert (stats["false_rejects"], stats["false_accepts"]) == (3, 1)
    few = window_statistics([_sample()], counts, min_feedback=11)
    assert "false_reject_rate" not in few and "false_accept_rate" not in few
    assert few["false_accepts"] == 1


def test_drift_against_a_reference() -> None:
    rng = np.random.default_rng(2)
    ref_samples = [_sample(sketch=tuple(rng.normal(size=4))) for _ in range(40)]
    ref_stats = window_statistics(ref_samples, FeedbackCounts())
    reference = Reference.from_window(ref_samples, ref_stats, created_at=1.0)
    dark = [
        _sample(score=0.6, brightness=60.0, sketch=tuple(rng.normal(loc=1.5, size=4)))
        for _ in range(40)
    ]
    stats = window_statistics(dark, FeedbackCounts())
    drift = drift_statistics(stats, sketch_matrix(dark), reference)
    assert drift["brightness_mean_drop"] == pytest.approx(0.5)
    assert drift["genuine_score_mean_drop"] == pytest.approx(0.1)
    assert drift["mmd"] > 0.3
    assert drift["mean_sketch_distance"] > 2.0
    assert drift["reference_samples"] == 40
    same = drift_statistics(ref_stats, sketch_matrix(ref_samples), reference)
    assert abs(same["mmd"]) < 0.05 and same["mean_sketch_distance"] == 0.0
    # without sketches there is nothing to compare embeddings with
    blind = drift_statistics(stats, np.zeros((0, 0)), reference)
    assert "mmd" not in blind and "brightness_mean_drop" in blind


def test_reference_survives_json() -> None:
    samples = [_sample(sketch=(float(i), 1.0)) for i in range(5)]
    reference = Reference.from_window(samples, {"brightness_mean": 120.0}, 3.0, "r1")
    again = Reference.from_json(reference.to_json())
    np.testing.assert_allclose(again.sketches, reference.sketches)
    assert (again.bandwidth, again.statistics, again.samples, again.report_id) == (
        reference.bandwidth,
        {"brightness_mean": 120.0},
        5,
        "r1",
    )


def test_sample_of_a_verdict() -> None:
    verdict = Verdict(
        frame_id="f",
        gate_id="g",
        exam_id="e",
        claimed_student_id="s",
        captured_at=0.0,
        decided_at=0.0,
        decision="reject",
        reason="mismatch",
        score=0.2,
        threshold=0.45,
        model_name="m",
        model_version="1",
        quality={"brightness": 90.0, "yaw_deg": 3.0},
        quality_reasons=["too_dark"],
        embedding_sketch=[0.5, -0.5],
    )
    sample = VerdictSample.from_verdict(verdict)
    assert sample.quality == {"brightness": 90.0}
    assert sample.quality_failed and sample.sketch == (0.5, -0.5) and sample.score == 0.2


def test_bounds_and_retraining_reasons() -> None:
    bounds = [Bound("mmd", 0.1), Bound("genuine_score_mean", 0.5, "below")]
    assert [b.setting for b in bounds] == ["mmd_max", "genuine_score_mean_min"]
    assert breaches({"mmd": 0.2, "genuine_score_mean": 0.6}, bounds) == ["mmd"]
    assert breaches({"mmd": 0.1, "genuine_score_mean": 0.4}, bounds) == ["genuine_score_mean"]
    assert breaches({}, bounds) == []
    report = DriftReport(
        report_id="r",
        gate_id="g",
        model_version="1",
        window_start=0.0,
        window_end=1.0,
        samples=50,
        statistics={},
        thresholds={},
        breached=["brightness_mean_drop", "low_quality_rate", "mmd", "no_face_rate"],
    )
    # the camera's problems (no face found, faces failing quality) are not retraining reasons
    assert retraining_reasons(report) == ["brightness_mean_drop", "mmd"]
    assert retraining_reasons(report, {"no_face_rate"}) == ["no_face_rate"]
