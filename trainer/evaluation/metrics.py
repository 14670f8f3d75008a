"""Verification metrics from genuine and impostor similarity scores (pure NumPy, no I/O).

Conventions used throughout:

* A pair is accepted as a match when ``score >= threshold``.
* FAR (false accept rate) is the share of impostor pairs accepted; TAR (true accept rate) the
  share of genuine pairs accepted; FNR = 1 - TAR.
* TAR at a target FAR uses the smallest threshold whose FAR does not exceed the target: with
  ``n`` impostor scores, at most ``k = floor(far * n)`` impostors may be accepted, so the threshold
  sits just above the (k+1)-th highest impostor score.
* A FAR is only reported when the impostor set is large enough to measure it: at least
  ``MIN_FALSE_ACCEPTS / far`` impostor scores (10 false accepts at that FAR).  Below that the
  value is ``None``, because a threshold set by a handful of impostors says little.

Impostor scores are held as an :class:`ImpostorTail` (the highest scores, descending, plus the
total count), so that the all-pairs protocol can measure FAR 1e-4 over tens of millions of
impostor pairs while keeping only the top few thousand (:func:`all_pairs_scores`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_FARS: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
MIN_FALSE_ACCEPTS = 10
# Bins of the impostor-score histogram kept by the all-pairs protocol (cosine lies in [-1, 1]).
HISTOGRAM_BINS = 200


def far_key(far: float) -> str:
    """The JSON key of a FAR: ``1e-3`` -> ``"1e-3"``."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _scores(values: Iterable[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} scores contain NaN or infinity")
    return array


@dataclass(frozen=True)
class ImpostorTail:
    """The highest impostor scores (descending) out of ``n_total`` impostor scores."""

    top: np.ndarray
    n_total: int

    @classmethod
    def from_scores(cls, impostor: Iterable[float] | np.ndarray) -> ImpostorTail:
        """Every impostor score, kept whole (fine for pair lists of thousands)."""
        scores = _scores(impostor, "impostor")
        return cls(top=np.sort(scores)[::-1], n_total=int(scores.size))

    def measurable(self, far: float) -> bool:
        """Whether ``far`` can be measured: at least MIN_FALSE_ACCEPTS / far impostors."""
        return self.n_total * far >= MIN_FALSE_ACCEPTS

    def allowed_false_accepts(self, far: float) -> int:
        """How many impostors a threshold may accept and stay at or below ``far``."""
        # The epsilon keeps 1e-4 * 55_000_000 from rounding down to 5499.
        return math.floor(far * self.n_total + 1e-9)

    def threshold(self, far: float) -> float | None:
        """Smallest threshold with FAR <= ``far``; None when ``far`` is not measurable."""
        if not self.measurable(far):
            return None
        k = self.allowed_false_accepts(far)
        if k >= self.n_total:
            return float(self.top[-1])
        if k >= self.top.size:
            raise ValueError(
                f"the impostor tail keeps {self.top.size} scores; FAR {far} needs {k + 1}"
            )
        # Just above the (k+1)-th highest impostor, so that ">= threshold" accepts at most k.
        return float(np.nextafter(self.top[k], np.inf))

    def false_accept_rate(self, threshold: float) -> float:
        """FAR at ``threshold``, exact when the tail holds every impostor above it."""
        accepted = int(np.count_nonzero(self.top >= threshold))
        if accepted == self.top.size and self.top.size < self.n_total:
            raise ValueError("threshold lies below the kept impostor tail")
        return accepted / self.n_total


def as_tail(impostor: ImpostorTail | Iterable[float] | np.ndarray) -> ImpostorTail:
    """Accept either an :class:`ImpostorTail` or plain impostor scores."""
    return impostor if isinstance(impostor, ImpostorTail) else ImpostorTail.from_scores(impostor)


@dataclass(frozen=True)
class RocCurve:
    """ROC points from the strictest threshold (+inf: nothing accepted) to the loosest."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(
    genuine: np.ndarray | Sequence[float], impostor: np.ndarray | Sequence[float]
) -> RocCurve:
    """ROC over every distinct score used as a threshold."""
    gen, imp = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    if gen.size == 0 or imp.size == 0:
        raise ValueError("ROC needs at least one genuine and one impostor score")
    scores = np.concatenate([gen, imp])
    is_genuine = np.concatenate([np.ones(gen.size, bool), np.zeros(imp.size, bool)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_genuine = scores[order], is_genuine[order]
    # Last index of each run of equal scores: tied pairs are accepted together.
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_accepts = np.cumsum(is_genuine)[last_of_run]
    false_accepts = last_of_run + 1 - true_accepts
    return RocCurve(
        fpr=np.r_[0.0, false_accepts / imp.size],
        tpr=np.r_[0.0, true_accepts / gen.size],
        thresholds=np.r_[np.inf, scores[last_of_run]],
    )


def roc_auc(curve: RocCurve) -> float:
    """Area under the ROC curve (trapezoids: tied scores count half)."""
    return float(np.trapezoid(curve.tpr, curve.fpr))


def equal_error_rate(curve: RocCurve) -> tuple[float, float]:
    """(EER, threshold): where FAR equals FNR, interpolated between the two ROC points around it."""
    fnr = 1.0 - curve.tpr
    gap = fnr - curve.fpr  # starts at 1 (nothing accepted), ends at -1 (everything accepted)
    i = int(np.argmax(gap <= 0))
    before, after = gap[i - 1], gap[i]
    share = before / (before - after)
    eer = curve.fpr[i - 1] + share * (curve.fpr[i] - curve.fpr[i - 1])
    return float(eer), float(curve.thresholds[i])


@dataclass(frozen=True)
class FarOperatingPoints:
    """TAR and threshold per target FAR, keyed by :func:`far_key`; None where not measurable."""

    tar: dict[str, float | None]
    threshold: dict[str, float | None]


def tar_at_far(
    genuine: np.ndarray | Sequence[float],
    impostor: ImpostorTail | np.ndarray | Sequence[float],
    fars: Sequence[float] = DEFAULT_FARS,
) -> FarOperatingPoints:
    """TAR at each target FAR (see the module docstring for the threshold and the None rule)."""
    gen = _scores(genuine, "genuine")
    tail = as_tail(impostor)
    tar: dict[str, float | None] = {}
    thresholds: dict[str, float | None] = {}
    for far in fars:
        threshold = tail.threshold(far)
        thresholds[far_key(far)] = threshold
        tar[far_key(far)] = None if threshold is None else float(np.mean(gen >= threshold))
    return FarOperatingPoints(tar=tar, threshold=thresholds)


def threshold_at_far(
    impostor: ImpostorTail | np.ndarray | Sequence[float], far: float
) -> float | None:
    """Smallest threshold with FAR <= ``far``; None below MIN_FALSE_ACCEPTS / far impostors."""
    return as_tail(impostor).threshold(far)


@dataclass(frozen=True)
class ThresholdCalibration:
    """An operating threshold chosen for a target FAR, with what it achieved where it was set."""

    target_far: float
    threshold: float
    far: float
    tar: float
    n_genuine: int
    n_impostor: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready fields."""
        return {
            "target_far": self.target_far,
            "threshold": self.threshold,
            "far": self.far,
            "tar": self.tar,
            "n_genuine": self.n_genuine,
            "n_impostor": self.n_impostor,
        }


def calibrate_threshold(
    genuine: np.ndarray | Sequence[float],
    impostor: ImpostorTail | np.ndarray | Sequence[float],
    target_far: float,
) -> ThresholdCalibration:
    """The operating threshold for ``target_far``; ValueError when too few impostors measure it."""
    gen = _scores(genuine, "genuine")
    tail = as_tail(impostor)
    threshold = tail.threshold(target_far)
    if threshold is None:
        raise ValueError(
            f"{tail.n_total} impostor scores cannot calibrate FAR {target_far}: "
            f"need at least {math.ceil(MIN_FALSE_ACCEPTS / target_far)}"
        )
    return ThresholdCalibration(
        target_far=target_far,
        threshold=threshold,
        far=tail.false_accept_rate(threshold),
        tar=float(np.mean(gen >= threshold)),
        n_genuine=int(gen.size),
        n_impostor=tail.n_total,
    )


# --- 10-fold accuracy --------------------------------------------------------------------------


@dataclass(frozen=True)
class KFoldAccuracy:
    """Accuracy per test fold with the threshold chosen on the other folds."""

    mean: float
    std: float  # population standard deviation over folds (as the LFW literature reports it)
    fold_accuracies: list[float]
    fold_thresholds: list[float]


def best_accuracy_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that classifies ``scores`` best; the first of equally good ones."""
    values = _scores(scores, "pair")
    same = np.asarray(same, dtype=bool)
    distinct = np.unique(values)
    # Below every score, between each two neighbours, and above every score.
    candidates = np.r_[distinct[0] - 1.0, (distinct[:-1] + distinct[1:]) / 2, distinct[-1] + 1.0]
    genuine, impostor = np.sort(values[same]), np.sort(values[~same])
    accepted_genuine = genuine.size - np.searchsorted(genuine, candidates, side="left")
    rejected_impostor = np.searchsorted(impostor, candidates, side="left")
    correct = accepted_genuine + rejected_impostor
    return float(candidates[int(np.argmax(correct))])


def kfold_accuracy(
    scores: np.ndarray | Sequence[float],
    same: np.ndarray | Sequence[bool],
    folds: np.ndarray | Sequence[int] | None = None,
    n_folds: int = 10,
    seed: int = 0,
) -> KFoldAccuracy:
    """The LFW accuracy protocol: per fold, threshold from the other folds, accuracy on this one.

    ``folds`` gives each pair's fold (the View 2 column); without it the pairs are split into
    ``n_folds`` folds by a permutation drawn from ``seed``.
    """
    values = _scores(scores, "pair")
    labels = np.asarray(same, dtype=bool)
    if values.shape != labels.shape:
        raise ValueError("scores and labels differ in length")
    if folds is None:
        if values.size < n_folds:
            raise ValueError(f"{values.size} pairs cannot be split into {n_folds} folds")
        fold_of = np.empty(values.size, dtype=np.int64)
        fold_of[np.random.default_rng(seed).permutation(values.size)] = (
            np.arange(values.size) % n_folds
        )
    else:
        fold_of = np.asarray(folds)
        if fold_of.shape != values.shape:
            raise ValueError("folds and scores differ in length")
    accuracies: list[float] = []
    thresholds: list[float] = []
    for fold in np.unique(fold_of):
        test = fold_of == fold
        train = ~test
        if not train.any():
            raise ValueError("k-fold accuracy needs at least two folds")
        threshold = best_accuracy_threshold(values[train], labels[train])
        accuracies.append(float(np.mean((values[test] >= threshold) == labels[test])))
        thresholds.append(threshold)
    return KFoldAccuracy(
        mean=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
    )


# --- all pairs of a labelled embedding set -----------------------------------------------------


def count_pairs(identities: np.ndarray | Sequence[int]) -> tuple[int, int]:
    """(genuine, impostor) pair counts among items labelled by ``identities``."""
    _, sizes = np.unique(np.asarray(identities), return_counts=True)
    n = int(sizes.sum())
    genuine = int(np.sum(sizes * (sizes - 1) // 2))
    return genuine, n * (n - 1) // 2 - genuine


@dataclass(frozen=True)
class AllPairsScores:
    """Scores of every pair of a labelled embedding set, with the impostor side kept as a tail."""

    genuine: np.ndarray  # every genuine score
    genuine_pairs: np.ndarray  # (G, 2) item indices of those scores
    impostor: ImpostorTail  # the highest impostor scores out of all of them
    impostor_pairs: np.ndarray  # (K, 2) item indices of the tail's scores, same order
    impostor_histogram: np.ndarray  # counts of all impostor scores over histogram_edges
    histogram_edges: np.ndarray
    counted_thresholds: np.ndarray  # thresholds asked for in ``count_at``
    impostors_accepted: np.ndarray  # exact number of impostor scores >= each of them

    def false_accept_rate(self, threshold: float) -> float:
        """Exact FAR at a threshold passed in ``count_at``, else from the kept tail."""
        hits = np.flatnonzero(self.counted_thresholds == threshold)
        if hits.size:
            return int(self.impostors_accepted[hits[0]]) / self.impostor.n_total
        return self.impostor.false_accept_rate(threshold)


def tail_size(n_impostor: int, fars: Sequence[float], at_least: int = 0) -> int:
    """How many top impostor scores measure every measurable FAR in ``fars``."""
    tail = ImpostorTail(top=np.empty(0), n_total=n_impostor)
    needed = [tail.allowed_false_accepts(f) + 1 for f in fars if tail.measurable(f)]
    return min(n_impostor, max([at_least, *needed]))


def _keep_highest(values: np.ndarray, pairs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if values.size > k:
        keep = np.argpartition(values, values.size - k)[values.size - k :]
        values, pairs = values[keep], pairs[keep]
    return values, pairs


def all_pairs_scores(
    embeddings: np.ndarray,
    identities: np.ndarray | Sequence[int],
    fars: Sequence[float] = DEFAULT_FARS,
    keep_at_least: int = 0,
    valid: np.ndarray | None = None,
    chunk_rows: int = 256,
    count_at: Sequence[float] = (),
) -> AllPairsScores:
    """Cosine scores of all pairs i < j, computed a block of rows at a time.

    Genuine scores (same identity) are kept whole; of the impostor scores only the highest ones
    needed for ``fars`` (and at least ``keep_at_least``, for hard-pair review) are kept, merged
    chunk by chunk with ``np.argpartition``, plus a histogram of all of them and exact counts of
    impostors at or above each threshold in ``count_at`` (e.g. an operating threshold).  Items whose
    ``valid`` flag is False (no face) score -1 against everything: they count as non-matches.
    """
    labels = np.asarray(identities)
    n = labels.size
    if embeddings.shape[0] != n:
        raise ValueError("embeddings and identities differ in length")
    ok = np.ones(n, bool) if valid is None else np.asarray(valid, dtype=bool)
    vectors = np.zeros((n, max(embeddings.shape[1], 1)), np.float32)
    if embeddings.shape[1]:
        norms = np.linalg.norm(embeddings[ok], axis=1, keepdims=True)
        vectors[ok] = embeddings[ok] / np.maximum(norms, 1e-12)
    _, n_impostor = count_pairs(labels)
    keep = tail_size(n_impostor, fars, keep_at_least)
    edges = np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1)
    histogram = np.zeros(HISTOGRAM_BINS, np.int64)
    # float64 so that float32 scores compare with the thresholds exactly as the tail does.
    counted = np.asarray(count_at, dtype=np.float64)
    accepted = np.zeros(counted.size, np.int64)
    genuine_parts: list[np.ndarray] = []
    genuine_pair_parts: list[np.ndarray] = []
    top_values = np.empty(0, np.float32)
    top_pairs = np.empty((0, 2), np.int64)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        # Only columns >= start can be above the diagonal for these rows.
        block = vectors[start:stop] @ vectors[start:].T
        block[~ok[start:stop], :] = -1.0
        block[:, ~ok[start:]] = -1.0
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start, n)[None, :]
        upper = cols > rows
        same = labels[start:stop, None] == labels[None, start:]
        gen_r, gen_c = np.nonzero(upper & same)
        genuine_parts.append(block[gen_r, gen_c])
        genuine_pair_parts.append(np.stack([gen_r + start, gen_c + start], axis=1))
        impostor_mask = upper & ~same
        imp_scores = block[impostor_mask]
        bins = ((np.clip(imp_scores, -1.0, 1.0) + 1.0) * (HISTOGRAM_BINS / 2)).astype(np.int64)
        histogram += np.bincount(np.minimum(bins, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
        for t, threshold in enumerate(counted):
            accepted[t] += np.count_nonzero(imp_scores.astype(np.float64) >= threshold)
        take = min(keep, imp_scores.size)
        if take:
            # Non-impostor cells become -inf so that the top `take` cells are all impostors.
            candidates = np.where(impostor_mask, block, -np.inf).ravel()
            best = np.argpartition(candidates, candidates.size - take)[candidates.size - take :]
            best_r, best_c = np.unravel_index(best, block.shape)
            top_values, top_pairs = _keep_highest(
                np.concatenate([top_values, candidates[best]]),
                np.concatenate([top_pairs, np.stack([best_r + start, best_c + start], axis=1)]),
                keep,
            )
    # Descending by score; ties in pair order so that runs are reproducible.
    order = np.lexsort((top_pairs[:, 1], top_pairs[:, 0], -top_values.astype(np.float64)))
    genuine = np.concatenate(genuine_parts) if genuine_parts else np.empty(0, np.float32)
    genuine_pairs = (
        np.concatenate(genuine_pair_parts) if genuine_pair_parts else np.empty((0, 2), np.int64)
    )
    return AllPairsScores(
        genuine=genuine,
        genuine_pairs=genuine_pairs,
        impostor=ImpostorTail(top=top_values[order].astype(np.float64), n_total=n_impostor),
        impostor_pairs=top_pairs[order],
        impostor_histogram=histogram,
        histogram_edges=edges,
        counted_thresholds=counted,
        impostors_accepted=accepted,
    )
