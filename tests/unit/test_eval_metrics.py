"""Verification metrics on score distributions whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluation import metrics


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_perfect_separation_gives_auc_one_and_eer_zero() -> None:
    genuine = np.linspace(0.6, 0.9, 50)
    impostor = np.linspace(-0.2, 0.4, 500)
    curve = metrics.roc_curve(genuine, impostor)
    eer, threshold = metrics.equal_error_rate(curve)
    assert metrics.roc_auc(curve) == 1.0
    assert eer == 0.0
    assert 0.4 < threshold <= 0.6


def test_identical_distributions_give_auc_half() -> None:
    scores = np.random.default_rng(1).normal(size=4000)
    tied = metrics.roc_curve(scores, scores)
    assert metrics.roc_auc(tied) == pytest.approx(0.5, abs=1e-12)
    rng = np.random.default_rng(2)
    drawn = metrics.roc_curve(rng.normal(size=5000), rng.normal(size=5000))
    assert metrics.roc_auc(drawn) == pytest.approx(0.5, abs=0.03)
    assert metrics.equal_error_rate(drawn)[0] == pytest.approx(0.5, abs=0.03)


def test_gaussian_scores_match_the_closed_forms() -> None:
    # Unit-variance normals two apart: AUC = Phi(2 / sqrt 2), EER = Phi(-1).
    rng = np.random.default_rng(3)
    genuine, impostor = rng.normal(2.0, 1.0, 40_000), rng.normal(0.0, 1.0, 40_000)
    curve = metrics.roc_curve(genuine, impostor)
    assert metrics.roc_auc(curve) == pytest.approx(_normal_cdf(math.sqrt(2.0)), abs=0.005)
    eer, threshold = metrics.equal_error_rate(curve)
    assert eer == pytest.approx(_normal_cdf(-1.0), abs=0.005)
    assert threshold == pytest.approx(1.0, abs=0.03)


def test_roc_curve_runs_from_nothing_to_everything_accepted() -> None:
    curve = metrics.roc_curve([0.9, 0.5, 0.5], [0.5, 0.1])
    assert curve.thresholds.tolist() == [np.inf, 0.9, 0.5, 0.1]
    assert curve.tpr.tolist() == pytest.approx([0, 1 / 3, 1, 1])
    assert curve.fpr.tolist() == pytest.approx([0, 0, 0.5, 1])


def test_threshold_at_far_accepts_at_most_the_allowed_impostors() -> None:
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    threshold = metrics.threshold_at_far(impostor, 1e-2)
    assert threshold is not None
    assert np.count_nonzero(impostor >= threshold) == 10  # 0.990 .. 0.999
    assert np.count_nonzero(impostor >= np.nextafter(0.989, -1.0)) == 11


def test_tar_at_far_is_none_when_impostors_are_too_few() -> None:
    genuine = np.full(100, 0.8)
    few = metrics.tar_at_far(genuine, np.linspace(0, 0.5, 999))
    assert few.tar == {"1e-2": None, "1e-3": None, "1e-4": None}
    assert few.threshold["1e-2"] is None
    enough = metrics.tar_at_far(genuine, np.linspace(0, 0.5, 1000))
    assert enough.tar == {"1e-2": 1.0, "1e-3": None, "1e-4": None}


def test_tar_at_far_counts_genuine_scores_at_or_above_the_threshold() -> None:
    impostor = np.arange(10_000) / 10_000.0
    genuine = np.array([0.5, 0.9985, 0.9995, 1.2])
    points = metrics.tar_at_far(genuine, impostor, (1e-3,))
    # 10 impostors may pass: threshold just above 0.9989.
    assert points.threshold["1e-3"] == pytest.approx(0.9989)
    assert points.tar["1e-3"] == 0.5


def test_calibration_reports_the_far_it_achieves() -> None:
    impostor = np.arange(10_000) / 10_000.0
    calibration = metrics.calibrate_threshold([0.95, 0.9995], impostor, 1e-3)
    assert calibration.far == 1e-3
    assert calibration.tar == 0.5
    with pytest.raises(ValueError, match="cannot calibrate"):
        metrics.calibrate_threshold([0.9], impostor[:5000], 1e-3)


def test_kfold_accuracy_on_a_constructed_example() -> None:
    # Ten folds of two genuine (0.8, 0.9) and two impostor (0.1, 0.2) pairs; in fold 0 one
    # impostor scores 0.95.  Trained on any nine folds the best threshold lies between 0.2 and
    # 0.8, so fold 0 scores 3/4 and the other folds 1: mean 0.975, population std 0.075.
    scores, same, folds = [], [], []
    for fold in range(10):
        impostor_high = 0.95 if fold == 0 else 0.2
        scores += [0.8, 0.9, 0.1, impostor_high]
        same += [True, True, False, False]
        folds += [fold] * 4
    result = metrics.kfold_accuracy(scores, same, folds)
    assert result.fold_accuracies == [0.75] + [1.0] * 9
    assert result.mean == pytest.approx(0.975)
    assert result.std == pytest.approx(0.075)
    assert all(0.2 < t < 0.8 for t in result.fold_thresholds)


def test_kfold_accuracy_without_folds_is_a_seeded_split() -> None:
    rng = np.random.default_rng(4)
    scores = np.r_[rng.normal(1.0, 0.5, 300), rng.normal(0.0, 0.5, 300)]
    same = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    first = metrics.kfold_accuracy(scores, same, seed=7)
    again = metrics.kfold_accuracy(scores, same, seed=7)
    other = metrics.kfold_accuracy(scores, same, seed=8)
    assert first == again
    assert len(first.fold_accuracies) == 10
    assert first.fold_accuracies != other.fold_accuracies
    # Two normals one apart, sd 0.5: the best threshold errs Phi(-1) of the time.
    assert first.mean == pytest.approx(1 - _normal_cdf(-1.0), abs=0.04)
    separable = metrics.kfold_accuracy(
        np.r_[np.ones(20), np.zeros(20)], np.r_[same[:20], same[-20:]]
    )
    assert separable.mean == 1.0


def _brute_force(
    embeddings: np.ndarray, identities: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    similarity[~valid, :] = -1.0
    similarity[:, ~valid] = -1.0
    upper = np.triu(np.ones_like(similarity, dtype=bool), k=1)
    same = identities[:, None] == identities[None, :]
    return similarity[upper & same], similarity[upper & ~same]


@pytest.mark.parametrize("with_failures", [False, True])
def test_chunked_all_pairs_matches_brute_force(with_failures: bool) -> None:
    rng = np.random.default_rng(5)
    identities = rng.integers(0, 40, size=160)
    centres = rng.normal(size=(40, 8))
    embeddings = (centres[identities] + 0.8 * rng.normal(size=(160, 8))).astype(np.float32)
    valid = np.ones(160, bool)
    if with_failures:
        valid[[3, 77, 150]] = False
    genuine, impostor = _brute_force(embeddings, identities, valid)
    fars = (1e-2, 1e-3, 1e-4)

    chunked = metrics.all_pairs_scores(
        embeddings, identities, fars, keep_at_least=5, valid=valid, chunk_rows=17, count_at=(0.3,)
    )

    assert (chunked.genuine.size, chunked.impostor.n_total) == metrics.count_pairs(identities)
    assert chunked.impostor.n_total == impostor.size
    np.testing.assert_allclose(np.sort(chunked.genuine), np.sort(genuine), atol=1e-6)
    expected = metrics.tar_at_far(genuine, impostor, fars)
    got = metrics.tar_at_far(chunked.genuine, chunked.impostor, fars)
    assert got.tar == expected.tar
    assert expected.tar["1e-3"] is not None and expected.tar["1e-4"] is None
    for key, value in expected.threshold.items():
        assert got.threshold[key] == (None if value is None else pytest.approx(value, abs=1e-6))
    # The kept tail is the true top of the impostor scores, and its pairs are impostor pairs.
    top = np.sort(impostor)[::-1][: chunked.impostor.top.size]
    np.testing.assert_allclose(chunked.impostor.top, top, atol=1e-6)
    i, j = chunked.impostor_pairs[0]
    assert i < j and identities[i] != identities[j]
    assert chunked.impostor_histogram.sum() == impostor.size
    # Exact FAR at a threshold far below the kept tail (an operating threshold, say).
    assert chunked.false_accept_rate(0.3) == np.count_nonzero(impostor >= 0.3) / impostor.size
    assert chunked.false_accept_rate(0.3) > 0.01


def test_tail_keeps_what_the_smallest_far_needs() -> None:
    # FAR 1e-4 of 55M impostors allows 5,500 false accepts: the threshold is the 5,501st score.
    assert metrics.tail_size(55_000_000, (1e-3, 1e-4)) == 55_001
    assert metrics.tail_size(55_000_000, (1e-4,), at_least=16) == 5_501
    assert metrics.tail_size(50_000, (1e-4,), at_least=16) == 16


def test_count_pairs_and_far_keys() -> None:
    assert metrics.count_pairs([0, 0, 0, 1, 1, 2]) == (4, 11)
    assert [metrics.far_key(f) for f in (1e-2, 1e-3, 1e-4)] == ["1e-2", "1e-3", "1e-4"]
