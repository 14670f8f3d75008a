"""Evaluate a face pipeline on a list of image pairs (``path1,path2,same[,fold]`` CSV).

Each distinct image is embedded once; a pair scores the cosine of its two embeddings.  A pair
with an image that has no embedding (no face found, or unreadable) is never dropped: it scores
-1, below any threshold, so it counts as a non-match (``"failed_pairs_policy":
"scored_as_nonmatch"``), and the share of such images is reported as the detection failure rate.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegate.errors import FacegateError
from trainer.evaluation import metrics
from trainer.evaluation.embedding import (
    EmbeddingTable,
    ProgressCallback,
    embed_files,
    summarize_timings,
)
from trainer.evaluation.pipeline_protocol import DEFAULT_CHUNK_SIZE, FacePipeline
from trainer.evaluation.plots import plot_det, plot_roc, plot_score_histograms, score_histogram

FAILED_PAIR_SCORE = -1.0
FAILED_PAIRS_POLICY = "scored_as_nonmatch"
PAIRS_SCHEMA = "facegate.eval.pairs/1"


@dataclass(frozen=True)
class PairList:
    """Pairs of image paths (relative to an images folder), their labels and optional folds."""

    path1: list[str]
    path2: list[str]
    same: np.ndarray  # bool
    fold: np.ndarray | None  # int fold per pair, when the list defines folds

    def __len__(self) -> int:
        return len(self.path1)

    def subset(self, index: np.ndarray) -> PairList:
        """The pairs at ``index``, in that order."""
        return PairList(
            path1=[self.path1[i] for i in index],
            path2=[self.path2[i] for i in index],
            same=self.same[index],
            fold=None if self.fold is None else self.fold[index],
        )

    def images(self) -> list[str]:
        """Distinct image paths in order of first appearance."""
        return list(
            dict.fromkeys(p for pair in zip(self.path1, self.path2, strict=True) for p in pair)
        )


def _truthy(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "same"}:
        return True
    if lowered in {"0", "false", "no", "different"}:
        return False
    raise FacegateError(f"{where}: 'same' must be 1 or 0, not {value!r}")


def read_pairs_csv(path: Path) -> PairList:
    """Read a pairs CSV with columns path1, path2, same and optionally fold."""
    if not path.is_file():
        raise FacegateError(f"pairs file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {"path1", "path2", "same"} - columns
        if missing:
            raise FacegateError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    if not rows:
        raise FacegateError(f"{path}: no pairs")
    has_fold = "fold" in columns
    try:
        folds = np.array([int(r["fold"]) for r in rows]) if has_fold else None
    except ValueError as err:
        raise FacegateError(f"{path}: fold must be an integer ({err})") from err
    return PairList(
        path1=[r["path1"] for r in rows],
        path2=[r["path2"] for r in rows],
        same=np.array([_truthy(r["same"], f"{path} line {i + 2}") for i, r in enumerate(rows)]),
        fold=folds,
    )


def limit_pairs(pairs: PairList, limit: int | None) -> PairList:
    """At most ``limit`` pairs, taken in turn from each (fold, same) group, kept in file order.

    Taking the first rows instead would keep one fold and one label in files sorted that way.
    """
    if limit is None or limit >= len(pairs):
        return pairs
    folds = pairs.fold if pairs.fold is not None else np.zeros(len(pairs), np.int64)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, key in enumerate(zip(folds.tolist(), pairs.same.tolist(), strict=True)):
        groups.setdefault(key, []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for members in groups.values():
            if depth < len(members) and len(chosen) < limit:
                chosen.append(members[depth])
        depth += 1
    return pairs.subset(np.array(sorted(chosen), dtype=np.int64))


def check_evaluable(pairs: PairList, name: str) -> None:
    """A one-line error unless the pairs hold both labels and enough pairs for 10 folds."""
    if pairs.same.all() or not pairs.same.any():
        raise FacegateError(f"{name}: needs both same-person and different-person pairs")
    if pairs.fold is None and len(pairs) < 10:
        raise FacegateError(f"{name}: {len(pairs)} pairs are too few for 10-fold accuracy")
    if pairs.fold is not None and np.unique(pairs.fold).size < 2:
        raise FacegateError(f"{name}: fold column has a single fold; need two or more")


def resolve_images(images_dir: Path, relpaths: Sequence[str]) -> list[Path]:
    """Paths under ``images_dir``; a one-line error naming a few that are missing."""
    paths = [images_dir / rel for rel in relpaths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FacegateError(
            f"{len(missing)} of {len(paths)} images not found under {images_dir}, "
            f"e.g. {', '.join(missing[:3])}"
        )
    return paths


def score_pairs(table: EmbeddingTable, pairs: PairList) -> tuple[np.ndarray, np.ndarray]:
    """(cosine score per pair, whether the pair failed); failed pairs score -1."""
    rows1, rows2 = table.rows(pairs.path1), table.rows(pairs.path2)
    scores = np.einsum("ij,ij->i", table.embeddings[rows1], table.embeddings[rows2])
    failed = ~(table.valid[rows1] & table.valid[rows2])
    scores = np.where(failed, FAILED_PAIR_SCORE, np.clip(scores, -1.0, 1.0))
    return scores.astype(np.float64), failed


def pair_metrics(
    scores: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray | None,
    fars: Sequence[float] = metrics.DEFAULT_FARS,
    seed: int = 0,
) -> tuple[dict[str, Any], metrics.RocCurve]:
    """Accuracy (10-fold), ROC AUC, EER and TAR at FAR of scored pairs, and the ROC curve."""
    genuine, impostor = scores[same], scores[~same]
    curve = metrics.roc_curve(genuine, impostor)
    eer, eer_threshold = metrics.equal_error_rate(curve)
    accuracy = metrics.kfold_accuracy(scores, same, folds, seed=seed)
    points = metrics.tar_at_far(genuine, impostor, fars)
    return {
        "pairs": int(scores.size),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "accuracy_mean": accuracy.mean,
        "accuracy_std": accuracy.std,
        "accuracy_folds": accuracy.fold_accuracies,
        "fold_thresholds": accuracy.fold_thresholds,
        "folds_from": "csv" if folds is not None else f"random 10-fold split (seed {seed})",
        "roc_auc": metrics.roc_auc(curve),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "tar_at_far": points.tar,
        "threshold_at_far": points.threshold,
        "far_rule": f"null when impostor_pairs < {metrics.MIN_FALSE_ACCEPTS}/FAR",
    }, curve


def write_pair_plots(
    curve: metrics.RocCurve,
    scores: np.ndarray,
    same: np.ndarray,
    thresholds: dict[str, float | None],
    plots_dir: Path,
    prefix: str,
    label: str,
) -> dict[str, str]:
    """ROC, DET and score histograms of one scored pair list; returns their paths."""
    return {
        "roc": str(plot_roc({label: curve}, plots_dir / f"{prefix}roc.png", f"ROC: {label}")),
        "det": str(plot_det({label: curve}, plots_dir / f"{prefix}det.png", f"DET: {label}")),
        "histogram": str(
            plot_score_histograms(
                {
                    "genuine": score_histogram(scores[same]),
                    "impostor": score_histogram(scores[~same]),
                },
                plots_dir / f"{prefix}scores.png",
                {f"FAR {k}": v for k, v in thresholds.items()},
                f"Scores: {label}",
            )
        ),
    }


def image_failures(table: EmbeddingTable) -> dict[str, Any]:
    """Images without an embedding: how many, their share, and why."""
    return {
        "images": len(table.keys),
        "failed_images": int(np.count_nonzero(~table.valid)),
        "detection_failure_rate": table.failure_rate,
        "failure_reasons": table.failure_reasons(),
    }


def failure_report(table: EmbeddingTable, failed_pairs: np.ndarray) -> dict[str, Any]:
    """Detection failures over images and the pairs they touched."""
    return {
        **image_failures(table),
        "failed_pairs": int(np.count_nonzero(failed_pairs)),
        "failed_pairs_policy": FAILED_PAIRS_POLICY,
    }


def evaluate_pairs(
    pairs_csv: Path,
    images_dir: Path,
    pipeline: FacePipeline,
    plots_dir: Path | None = None,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    fars: Sequence[float] = metrics.DEFAULT_FARS,
) -> dict[str, Any]:
    """Embed every image of the pair list once, score the pairs, and report (JSON-ready dict)."""
    pairs = limit_pairs(read_pairs_csv(pairs_csv), limit)
    check_evaluable(pairs, str(pairs_csv))
    relpaths = pairs.images()
    table = embed_files(
        relpaths, resolve_images(images_dir, relpaths), pipeline, chunk_size, progress=progress
    )
    scores, failed = score_pairs(table, pairs)
    report, curve = pair_metrics(scores, pairs.same, pairs.fold, fars)
    result: dict[str, Any] = {
        "schema": PAIRS_SCHEMA,
        "model": pipeline.model_name,
        "pairs_csv": str(pairs_csv),
        "images_dir": str(images_dir),
        "limit": limit,
        **report,
        **failure_report(table, failed),
        "timing_ms": summarize_timings(table.timings_ms),
        "plots": {},
    }
    if plots_dir is not None:
        result["plots"] = write_pair_plots(
            curve,
            scores,
            pairs.same,
            report["threshold_at_far"],
            plots_dir,
            "",
            pipeline.model_name,
        )
    return result
