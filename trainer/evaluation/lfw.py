"""The LFW evaluation: View 2 accuracy, all-pairs TAR at low FAR, slices, hard pairs, calibration.

Protocols (every clean image is embedded once and shared by all of them):

* **View 2** (``pairs_view2.csv``): 10 folds x 600 pairs; accuracy with the threshold chosen on
  the other nine folds, plus ROC AUC, EER and TAR at FAR over its 3,000 impostor pairs.
* **All pairs**: the first ``max_images_per_identity`` (10) images by file name of every person
  (10,489 images of 5,749 people); every pair of them: 14,508 genuine (same person) and
  54,989,808 impostor pairs.  TAR at FAR 1e-3 and 1e-4 from the top impostor scores, computed in
  blocks of the similarity matrix.
* **Calibration**: the operating threshold at a target FAR, set on View 1
  (``pairsDevTrain.csv`` + ``pairsDevTest.csv``): all pairs among its 4,992 images (3,192
  genuine, 12.45M impostor), because its 1,600 listed impostor pairs cannot measure FAR below
  about 6e-3.  Also reported: TAR/FAR of that threshold on the View 1 and View 2 pair lists.
* **Slices**: ``slice_identities`` people (seeded choice among those with two or more images in
  the all-pairs set); reference = their first image, clean; probe = their second image,
  degraded (blurred, darkened, small faces, occluded) or clean as the baseline.  Genuine pairs:
  probe vs own reference (n); impostor pairs: probe vs every other reference (n * (n - 1));
  TAR at ``slice_far`` with the slice's own threshold, and TAR/FAR at the operating threshold.
* **Hard pairs**: the highest-scoring impostor pairs of the all-pairs set, in a contact sheet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluation import metrics
from trainer.evaluation.degradations import SLICES
from trainer.evaluation.embedding import (
    EmbeddingTable,
    ProgressCallback,
    decode_image,
    embed_files,
    summarize_timings,
)
from trainer.evaluation.lfw_plan import CLEAN, LfwOptions, LfwPlan, plan_lfw
from trainer.evaluation.pairs import (
    FAILED_PAIRS_POLICY,
    failure_report,
    image_failures,
    pair_metrics,
    resolve_images,
    score_pairs,
    write_pair_plots,
)
from trainer.evaluation.pipeline_protocol import FacePipeline
from trainer.evaluation.plots import (
    SheetPair,
    contact_sheet,
    plot_det,
    plot_roc,
    plot_score_histograms,
    score_histogram,
)

LFW_SCHEMA = "facegate.eval.lfw/1"
# Planning lives in lfw_plan; callers get one entry point here.
__all__ = ["LFW_SCHEMA", "LfwOptions", "LfwPlan", "evaluate_lfw", "plan_lfw"]


def _identity_codes(keys: Sequence[str], identity_of: dict[str, str]) -> np.ndarray:
    _, codes = np.unique([identity_of[k] for k in keys], return_inverse=True)
    return codes.astype(np.int64)


def _scores_all_pairs(
    table: EmbeddingTable,
    identity_of: dict[str, str],
    fars: Sequence[float],
    keep: int,
    count_at: Sequence[float] = (),
) -> metrics.AllPairsScores:
    return metrics.all_pairs_scores(
        table.embeddings,
        _identity_codes(table.keys, identity_of),
        fars,
        keep,
        table.valid,
        count_at=count_at,
    )


def _at_threshold(
    genuine: np.ndarray,
    impostor: metrics.ImpostorTail | metrics.AllPairsScores,
    threshold: float | None,
) -> dict[str, float | None]:
    """TAR and FAR at a fixed threshold (the operating one)."""
    if threshold is None:
        return {"threshold": None, "tar": None, "far": None}
    far = impostor.false_accept_rate(threshold)
    return {"threshold": threshold, "tar": float(np.mean(genuine >= threshold)), "far": far}


def _all_pairs_report(
    table: EmbeddingTable,
    scores: metrics.AllPairsScores,
    options: LfwOptions,
    identity_of: dict[str, str],
) -> dict[str, Any]:
    points = metrics.tar_at_far(scores.genuine, scores.impostor, options.all_pairs_fars)
    return {
        "protocol": (
            f"first {options.max_images_per_identity} images (by file name) of every person; "
            "genuine = same person, impostor = different persons; every image embedded once"
        ),
        "images": len(table.keys),
        "identities": len({identity_of[key] for key in table.keys}),
        "genuine_pairs": int(scores.genuine.size),
        "impostor_pairs": scores.impostor.n_total,
        "tar_at_far": points.tar,
        "threshold_at_far": points.threshold,
        "failed_images": int(np.count_nonzero(~table.valid)),
        "detection_failure_rate": table.failure_rate,
        "failed_pairs_policy": FAILED_PAIRS_POLICY,
    }


def _calibration_report(
    view1_table: EmbeddingTable, plan: LfwPlan, clean: EmbeddingTable
) -> dict[str, Any]:
    far = plan.options.calibration_far
    scores = _scores_all_pairs(view1_table, plan.identity_of, (far,), 0)
    source = (
        "LFW View 1 (pairsDevTrain.csv + pairsDevTest.csv): all pairs among its images, "
        "genuine = same person, impostor = different persons"
    )
    try:
        calibration = metrics.calibrate_threshold(scores.genuine, scores.impostor, far)
    except ValueError as err:
        return {"source": source, "target_far": far, "threshold": None, "reason": str(err)}
    threshold = calibration.threshold
    report: dict[str, Any] = {
        "source": source,
        "images": len(view1_table.keys),
        **calibration.as_dict(),
    }
    for name, pairs in (("view1_pairs", plan.view1), ("view2_pairs", plan.view2)):
        pair_scores, _ = score_pairs(clean, pairs)
        genuine, impostor = pair_scores[pairs.same], pair_scores[~pairs.same]
        report[name] = {
            "tar": float(np.mean(genuine >= threshold)),
            "far": float(np.mean(impostor >= threshold)),
            "pairs": len(pairs),
        }
    return report


def _slice_scores(
    references: EmbeddingTable, probes: EmbeddingTable
) -> tuple[np.ndarray, np.ndarray, int]:
    """(genuine, impostor, failed probes): probe i vs reference j; no-face sides score -1."""
    dims = (probes.embeddings.shape[1], references.embeddings.shape[1])
    # A side with no embedding at all has width 0; its scores are all -1 below anyway.
    similarity = (
        probes.embeddings @ references.embeddings.T
        if dims[0] == dims[1]
        else np.zeros((len(probes.keys), len(references.keys)), np.float32)
    )
    similarity[~probes.valid, :] = -1.0
    similarity[:, ~references.valid] = -1.0
    own = np.eye(len(probes.keys), dtype=bool)
    return similarity[own], similarity[~own], int(np.count_nonzero(~probes.valid))


def _slice_report(
    references: EmbeddingTable,
    probe_tables: dict[str, EmbeddingTable],
    options: LfwOptions,
    operating_threshold: float | None,
) -> tuple[dict[str, Any], dict[str, metrics.RocCurve]]:
    n = len(references.keys)
    results: dict[str, Any] = {}
    curves: dict[str, metrics.RocCurve] = {}
    for name, probes in probe_tables.items():
        genuine, impostor, failed = _slice_scores(references, probes)
        points = metrics.tar_at_far(genuine, impostor, options.slice_fars)
        curves[name] = metrics.roc_curve(genuine, impostor)
        results[name] = {
            "tar_at_far": points.tar,
            "threshold_at_far": points.threshold,
            "roc_auc": metrics.roc_auc(curves[name]),
            "failed_probes": failed,
            "probe_failure_rate": failed / n if n else 0.0,
            "at_operating_threshold": _at_threshold(
                genuine, metrics.ImpostorTail.from_scores(impostor), operating_threshold
            ),
        }
    report = {
        "protocol": (
            "per person: first image clean as reference, second image degraded as probe; "
            "genuine = probe vs own reference, impostor = probe vs every other reference"
        ),
        "identities": n,
        "genuine_pairs": n,
        "impostor_pairs": n * (n - 1),
        "failed_references": int(np.count_nonzero(~references.valid)),
        "results": results,
    }
    return report, curves


def _hard_pairs(
    table: EmbeddingTable, scores: metrics.AllPairsScores, identity_of: dict[str, str], k: int
) -> list[dict[str, Any]]:
    rows = scores.impostor_pairs[:k]
    values = scores.impostor.top[:k]
    return [
        {
            "path1": table.keys[i],
            "path2": table.keys[j],
            "identity1": identity_of[table.keys[i]],
            "identity2": identity_of[table.keys[j]],
            "score": float(score),
        }
        for (i, j), score in zip(rows.tolist(), values.tolist(), strict=True)
    ]


def _write_plots(
    plots_dir: Path,
    plan: LfwPlan,
    view2: tuple[metrics.RocCurve, np.ndarray, dict[str, float | None]],
    all_pairs: metrics.AllPairsScores,
    all_pairs_thresholds: dict[str, float | None],
    slice_curves: dict[str, metrics.RocCurve],
    hard: list[dict[str, Any]],
    model: str,
) -> dict[str, str]:
    curve, scores, thresholds = view2
    plots = {
        f"view2_{kind}": path
        for kind, path in write_pair_plots(
            curve, scores, plan.view2.same, thresholds, plots_dir, "view2_", f"{model} LFW View 2"
        ).items()
    }
    plots["all_pairs_scores"] = str(
        plot_score_histograms(
            {
                "genuine": score_histogram(all_pairs.genuine, metrics.HISTOGRAM_BINS),
                "impostor": (all_pairs.impostor_histogram, all_pairs.histogram_edges),
            },
            plots_dir / "all_pairs_scores.png",
            {f"FAR {k}": v for k, v in all_pairs_thresholds.items()},
            f"{model}: LFW all pairs",
            log_y=True,
        )
    )
    if slice_curves:
        plots["slices_roc"] = str(
            plot_roc(slice_curves, plots_dir / "slices_roc.png", f"{model}: LFW slices")
        )
        plots["slices_det"] = str(
            plot_det(slice_curves, plots_dir / "slices_det.png", f"{model}: LFW slices")
        )
    if hard:
        sheet = [
            SheetPair(
                left=_read(plan.layout.images / h["path1"]),
                right=_read(plan.layout.images / h["path2"]),
                caption=f"{h['score']:.3f}\n{h['identity1'][:18]} | {h['identity2'][:18]}",
            )
            for h in hard
        ]
        plots["hard_impostor_pairs"] = str(
            contact_sheet(
                sheet,
                plots_dir / "hard_impostor_pairs.png",
                title=f"{model}: highest-scoring impostor pairs, LFW all pairs",
            )
        )
    return plots


def _read(path: Path) -> np.ndarray:
    image = decode_image(path)
    return np.zeros((8, 8, 3), np.uint8) if image is None else image


def evaluate_lfw(
    plan: LfwPlan,
    pipeline: FacePipeline,
    plots_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run every LFW protocol of ``plan`` through ``pipeline`` (JSON-ready dict)."""
    options = plan.options
    images = plan.layout.images
    keys = plan.clean_images
    clean = embed_files(
        keys, resolve_images(images, keys), pipeline, options.chunk_size, None, progress, CLEAN
    )
    probe_tables = {CLEAN: clean.select(plan.slice_probes)}
    for name, degrade in SLICES.items():
        probe_tables[name] = embed_files(
            plan.slice_probes,
            resolve_images(images, plan.slice_probes),
            pipeline,
            options.chunk_size,
            degrade,
            progress,
            name,
        )

    view2_scores, view2_failed = score_pairs(clean, plan.view2)
    view2_report, view2_curve = pair_metrics(view2_scores, plan.view2.same, plan.view2.fold)
    calibration = _calibration_report(clean.select(plan.view1.images()), plan, clean)
    operating = calibration.get("threshold")
    all_table = clean.select(plan.all_pairs_images)
    all_scores = _scores_all_pairs(
        all_table,
        plan.identity_of,
        options.all_pairs_fars,
        options.hard_pairs,
        count_at=() if operating is None else (operating,),
    )
    all_report = _all_pairs_report(all_table, all_scores, options, plan.identity_of)
    all_report["at_operating_threshold"] = _at_threshold(all_scores.genuine, all_scores, operating)
    slices, slice_curves = _slice_report(
        clean.select(plan.slice_references), probe_tables, options, operating
    )
    hard = _hard_pairs(all_table, all_scores, plan.identity_of, options.hard_pairs)
    result: dict[str, Any] = {
        "schema": LFW_SCHEMA,
        "model": pipeline.model_name,
        "lfw_dir": str(plan.layout.root),
        "options": asdict(options),
        "operating_threshold": operating,
        **image_failures(clean),
        "timing_ms": summarize_timings(clean.timings_ms),
        "view2": {
            **view2_report,
            **failure_report(clean.select(plan.view2.images()), view2_failed),
        },
        "all_pairs": all_report,
        "calibration": calibration,
        "slices": slices,
        "hard_impostor_pairs": hard,
        "plots": {},
    }
    if plots_dir is not None:
        result["plots"] = _write_plots(
            plots_dir,
            plan,
            (view2_curve, view2_scores, view2_report["threshold_at_far"]),
            all_scores,
            all_report["threshold_at_far"],
            slice_curves,
            hard,
            pipeline.model_name,
        )
    return result
