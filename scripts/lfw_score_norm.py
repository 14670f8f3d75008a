"""Experiment: does cohort score normalisation (AS-norm) lift the champion on LFW?

Adaptive symmetric normalisation rescales a pair's cosine ``s`` by how each face scores against
a cohort of other people's faces: with ``mu`` and ``sigma`` the mean and standard deviation of
an image's ``k`` highest cohort cosines,

    s' = ((s - mu_a) / sigma_a + (s - mu_b) / sigma_b) / 2

so a face that resembles many strangers (a common look, a poor photo) needs more to match.  In
a deployment the cohort would be the enrolled students other than the claimed one (the 1:N
search already scores the probe against all of them).

No test person's face is in the cohort of their own pairs:

- View 2: each fold's pairs are normalised against the images of people outside that fold (the
  folds share no people); the threshold is chosen on the nine other folds, as the protocol asks;
- TAR at FAR 1e-3 / 1e-4 over the all-pairs images: grouped as ``scripts/lfw_whitening.py``
  does (each person's View 2 fold, or a hash of the name), only pairs within a group scored,
  each group normalised against the images of the other groups' people.

An experiment, not a product command: its results are quoted in the README (issue 3, "What was
tried").  Embeddings come from ``scripts/lfw_fusion.py``'s cache (computed there if missing).

    .venv/bin/python scripts/lfw_score_norm.py --top 50 100 300
"""

from __future__ import annotations

import argparse

import numpy as np
import numpy.typing as npt

from scripts.lfw_whitening import Evaluation, common_arguments, evaluation_for, print_row
from trainer.evaluation import metrics

Matrix = npt.NDArray[np.float64]


def cohort_stats(probes: Matrix, cohort: Matrix, top: int | None) -> tuple[Matrix, Matrix]:
    """Mean and standard deviation of each probe's ``top`` highest cosines with the cohort
    (``None``: all of them, plain symmetric normalisation)."""
    scores = probes @ cohort.T
    if top is not None and top < scores.shape[1]:
        scores = np.partition(scores, -top, axis=1)[:, -top:]
    return scores.mean(axis=1), np.maximum(scores.std(axis=1), 1e-6)


def normalised(
    raw: Matrix, stats_a: tuple[Matrix, Matrix], stats_b: tuple[Matrix, Matrix]
) -> Matrix:
    """AS-norm of cosines ``raw`` (pairs elementwise, or a matrix with a row per ``a``)."""
    (mu_a, sd_a), (mu_b, sd_b) = stats_a, stats_b
    if raw.ndim == 2:
        mu_a, sd_a = mu_a[:, None], sd_a[:, None]
        mu_b, sd_b = mu_b[None, :], sd_b[None, :]
    result: Matrix = ((raw - mu_a) / sd_a + (raw - mu_b) / sd_b) / 2
    return result


class Normalisation:
    """AS-norm measurements over one model's embeddings of the LFW protocol images."""

    def __init__(self, evaluation: Evaluation) -> None:
        self.e = evaluation

    def _cohort(self, test_people: set[str]) -> Matrix:
        e = self.e
        return e.vectors[~np.isin(e.person, list(test_people)) & e.valid]

    def view2_accuracy(self, top: int | None) -> tuple[float, float]:
        e = self.e
        scores = np.full(e.same.shape, -1e9)
        for fold, people in e.fold_people.items():
            pairs = np.flatnonzero(e.fold == fold)
            a, b = e.first[pairs], e.second[pairs]
            raw = np.sum(e.vectors[a] * e.vectors[b], axis=1)
            if top == 0:
                fold_scores = raw
            else:
                cohort = self._cohort(people)
                stats_a = cohort_stats(e.vectors[a], cohort, top)
                stats_b = cohort_stats(e.vectors[b], cohort, top)
                fold_scores = normalised(raw, stats_a, stats_b)
            ok = e.valid[a] & e.valid[b]
            scores[pairs] = np.where(ok, fold_scores, -1e9)  # a missed face matches nothing
        accuracies = []
        for fold in e.fold_people:
            test, train = np.flatnonzero(e.fold == fold), np.flatnonzero(e.fold != fold)
            threshold = metrics.best_accuracy_threshold(scores[train], e.same[train])
            accuracies.append(float(np.mean((scores[test] >= threshold) == e.same[test])))
        return float(np.mean(accuracies)), float(np.std(accuracies))

    def tar_within_groups(self, top: int | None) -> tuple[dict[str, float | None], int, int]:
        e = self.e
        fars = (1e-3, 1e-4)
        genuine, impostor = [], []
        for members in e.all_pairs_groups():
            vectors = e.vectors[members]
            raw = vectors @ vectors.T
            if top == 0:
                scores = raw
            else:
                stats = cohort_stats(vectors, self._cohort(set(e.person[members])), top)
                scores = normalised(raw, stats, stats)
            missed = ~e.valid[members]  # a missed face matches nothing
            scores[missed, :] = -1e9
            scores[:, missed] = -1e9
            upper = np.triu_indices(len(members), k=1)
            same = e.person[members][upper[0]] == e.person[members][upper[1]]
            genuine.append(scores[upper][same])
            impostor.append(scores[upper][~same])
        pooled_genuine, pooled_impostor = np.concatenate(genuine), np.concatenate(impostor)
        ranked = np.sort(pooled_impostor)[::-1]
        tar: dict[str, float | None] = {}
        for far in fars:
            allowed = int(far * ranked.size)
            threshold = ranked[allowed] if allowed < ranked.size else -np.inf
            tar[f"{far:.0e}".replace("e-0", "e-")] = float(np.mean(pooled_genuine > threshold))
        return tar, int(pooled_genuine.size), int(pooled_impostor.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    parser.add_argument(
        "--top",
        type=int,
        nargs="+",
        default=[50, 100, 300],
        help="cohort cosines per face (0: plain cosine, -1: the whole cohort)",
    )
    args = parser.parse_args()
    runs = Normalisation(evaluation_for(args))
    for top in [0, *args.top]:
        k = None if top < 0 else top
        label = {0: "plain cosine", None: "S-norm, whole cohort"}.get(k, f"AS-norm top {k}")
        print_row(args, label, runs.view2_accuracy(k), runs.tar_within_groups(k))


if __name__ == "__main__":
    main()
