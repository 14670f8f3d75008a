"""Experiment: does a linear head fitted on other people's faces lift the champion on LFW?

The head is within-class whitening (WCCN): the unit embeddings are centred and multiplied by
``S_w^-1/2``, where ``S_w`` is the covariance of each image's offset from its person's mean,
shrunk toward a multiple of the identity by ``alpha``; scores are cosines after it.  It is fitted
for each test group on the images of the *other* groups' people only, so no test person's face
shapes it:

- View 2: the groups are its 10 folds (which share no people), the threshold is chosen on the
  nine training folds scored with the same head, as the LFW protocol asks;
- TAR at FAR 1e-3 / 1e-4 over the images of the all-pairs set: each person's group is their View 2
  fold, or a hash of their name for people in no View 2 pair, and only pairs within a group are
  scored (every genuine pair, about a tenth of the impostor pairs).

An experiment, not a product command: its results are quoted in the README (issue 3, "What was
tried").  Embeddings come from ``scripts/lfw_fusion.py``'s cache (computed there if missing).

    .venv/bin/python scripts/lfw_whitening.py --alphas 0.3 0.6
    .venv/bin/python scripts/lfw_whitening.py --flip --alphas 0.6
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from scripts.lfw_fusion import embed
from trainer.evaluation import metrics
from trainer.evaluation.cli import default_lfw_dir
from trainer.evaluation.lfw_plan import LfwOptions, LfwPlan, plan_lfw

Matrix = npt.NDArray[np.float64]
GROUPS = 10


def unit(rows: Matrix) -> Matrix:
    scaled: Matrix = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return scaled


class Head:
    """Centring and a linear map; ``alpha`` None is no head at all (plain cosine)."""

    def __init__(self, mean: Matrix, matrix: Matrix) -> None:
        self.mean = mean
        self.matrix = matrix

    @classmethod
    def fit(cls, rows: Matrix, people: npt.NDArray[np.str_], alpha: float | None) -> Head:
        dim = rows.shape[1]
        if alpha is None:
            return cls(np.zeros(dim), np.eye(dim))
        _, index, counts = np.unique(people, return_inverse=True, return_counts=True)
        means = np.zeros((counts.size, dim))
        np.add.at(means, index, rows)
        means /= counts[:, None]
        offsets = (rows - means[index])[counts[index] >= 2]
        within = offsets.T @ offsets / offsets.shape[0]
        within = (1 - alpha) * within + alpha * np.trace(within) / dim * np.eye(dim)
        values, vectors = np.linalg.eigh(within)
        return cls(rows.mean(axis=0), vectors @ np.diag(values**-0.5) @ vectors.T)

    def apply(self, rows: Matrix) -> Matrix:
        return unit((rows - self.mean) @ self.matrix)


class Evaluation:
    """One model's embeddings of the LFW protocol images, and the two measurements."""

    def __init__(self, plan: LfwPlan, embeddings: Matrix, valid: npt.NDArray[np.bool_]) -> None:
        self.plan = plan
        self.vectors = unit(embeddings.astype(np.float64))
        self.valid = valid
        keys = plan.clean_images
        self.row = {key: i for i, key in enumerate(keys)}
        self.person = np.array([plan.identity_of[k] for k in keys])
        view2 = plan.view2
        assert view2.fold is not None, "View 2 defines its folds"
        self.first = np.array([self.row[k] for k in view2.path1])
        self.second = np.array([self.row[k] for k in view2.path2])
        self.same = view2.same
        self.fold = view2.fold
        self.fold_people = {
            int(f): set(self.person[self.first[self.fold == f]])
            | set(self.person[self.second[self.fold == f]])
            for f in np.unique(self.fold)
        }

    def _head(self, test_people: set[str], alpha: float | None) -> Head:
        train = np.flatnonzero(~np.isin(self.person, list(test_people)) & self.valid)
        return Head.fit(self.vectors[train], self.person[train], alpha)

    def _pair_scores(self, head: Head, pairs: npt.NDArray[np.int64]) -> Matrix:
        a, b = self.first[pairs], self.second[pairs]
        scores: Matrix = np.sum(head.apply(self.vectors[a]) * head.apply(self.vectors[b]), axis=1)
        scores[~(self.valid[a] & self.valid[b])] = -1.0  # a missed face matches nothing
        return scores

    def view2_accuracy(self, alpha: float | None) -> tuple[float, float]:
        accuracies = []
        for fold, people in self.fold_people.items():
            head = self._head(people, alpha)
            test, train = np.flatnonzero(self.fold == fold), np.flatnonzero(self.fold != fold)
            threshold = metrics.best_accuracy_threshold(
                self._pair_scores(head, train), self.same[train]
            )
            correct = (self._pair_scores(head, test) >= threshold) == self.same[test]
            accuracies.append(float(np.mean(correct)))
        return float(np.mean(accuracies)), float(np.std(accuracies))

    def all_pairs_groups(self) -> list[npt.NDArray[np.int64]]:
        """The rows of the all-pairs images, grouped: each person's View 2 fold, or a hash of
        their name for people in no View 2 pair.  Groups share no people."""
        rows = np.array([self.row[k] for k in self.plan.all_pairs_images])
        group_of = {p: f for f, people in self.fold_people.items() for p in people}
        groups = np.array(
            [group_of.get(p, zlib.crc32(p.encode()) % GROUPS + 1) for p in self.person[rows]]
        )
        return [rows[groups == group] for group in np.unique(groups)]

    def tar_within_groups(self, alpha: float | None) -> tuple[dict[str, float | None], int, int]:
        fars = (1e-3, 1e-4)
        members_of = self.all_pairs_groups()
        # Each group keeps as many top impostors as the pooled FARs need: a group may hold
        # more of the pooled tail than its own share.
        keep = metrics.tail_size(
            sum(metrics.count_pairs(self.person[m])[1] for m in members_of), fars
        )
        genuine, tops, impostors = [], [], 0
        for members in members_of:
            head = self._head(set(self.person[members]), alpha)
            _, codes = np.unique(self.person[members], return_inverse=True)
            scores = metrics.all_pairs_scores(
                head.apply(self.vectors[members]).astype(np.float32),
                codes,
                fars,
                keep_at_least=keep,
                valid=self.valid[members],
            )
            genuine.append(scores.genuine)
            tops.append(scores.impostor.top)
            impostors += scores.impostor.n_total
        tail = metrics.ImpostorTail(top=np.sort(np.concatenate(tops))[::-1], n_total=impostors)
        pooled = np.concatenate(genuine)
        return metrics.tar_at_far(pooled, tail, fars).tar, int(pooled.size), impostors


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every LFW experiment over cached embeddings takes."""
    parser.add_argument("--lfw", type=Path, default=None, help="LFW folder (default: shared)")
    parser.add_argument("--model", default="mobilefacenet")
    parser.add_argument("--flip", action="store_true", help="mirror test-time augmentation")
    parser.add_argument("--cache", type=Path, default=Path("reports/fusion"))


def evaluation_for(args: argparse.Namespace) -> Evaluation:
    """The embeddings the options name (cached by ``scripts/lfw_fusion.py``)."""
    plan = plan_lfw(args.lfw or default_lfw_dir(), LfwOptions())
    table = embed(plan, args.model, args.cache, args.flip)
    return Evaluation(plan, table.embeddings, table.valid)


def print_row(
    args: argparse.Namespace,
    label: str,
    view2: tuple[float, float],
    within: tuple[dict[str, float | None], int, int],
) -> None:
    """One measured variant: View 2 accuracy and TAR within groups."""
    (mean, std), (tar, genuine, impostors) = view2, within
    print(
        f"{args.model}{' + mirror' if args.flip else ''}, {label}: View 2 {mean * 100:.3f}% "
        f"± {std * 100:.2f}, TAR@1e-3 {_percent(tar['1e-3'])}, TAR@1e-4 "
        f"{_percent(tar['1e-4'])} ({genuine} genuine, {impostors} impostor pairs "
        "within groups)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.3, 0.6], help="shrinkage values to try"
    )
    args = parser.parse_args()
    evaluation = evaluation_for(args)
    for alpha in [None, *args.alphas]:
        label = "no head" if alpha is None else f"WCCN alpha {alpha:.2f}"
        print_row(
            args, label, evaluation.view2_accuracy(alpha), evaluation.tar_within_groups(alpha)
        )


if __name__ == "__main__":
    main()
