"""LFW protocols on the real LFW files; the embedding is a FAKE pipeline (tests/unit/eval_fakes.py:
a downscaled grey copy of each image), so the numbers test the protocol, not a face model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.unit.eval_fakes import PixelFacePipeline
from trainer.evaluation import degradations
from trainer.evaluation.lfw import LfwOptions, evaluate_lfw, plan_lfw
from trainer.evaluation.metrics import count_pairs
from trainer.evaluation.pipeline_protocol import EmbedOutcome


def _pair_counts(images: list[str], identity_of: dict[str, str]) -> tuple[int, int]:
    return count_pairs(np.unique([identity_of[i] for i in images], return_inverse=True)[1])


def test_full_protocol_sizes(lfw_dir: Path) -> None:
    plan = plan_lfw(lfw_dir, LfwOptions())
    people = {plan.identity_of[i] for i in plan.all_pairs_images}
    assert (len(plan.all_pairs_images), len(people)) == (10_489, 5_749)
    assert _pair_counts(plan.all_pairs_images, plan.identity_of) == (14_508, 54_989_808)
    assert (len(plan.view2), len(plan.view1)) == (6_000, 3_200)
    assert _pair_counts(plan.view1.images(), plan.identity_of) == (3_192, 12_454_344)
    assert len(plan.clean_images) == 11_111
    assert len(plan.slice_probes) == len(plan.slice_references) == 200
    assert all(
        plan.identity_of[r] == plan.identity_of[p] and r != p
        for r, p in zip(plan.slice_references, plan.slice_probes, strict=True)
    )


def test_reduced_run_reports_every_protocol(lfw_dir: Path, tmp_path: Path) -> None:
    options = LfwOptions(
        max_images=150, limit_pairs=40, slice_identities=12, hard_pairs=4, calibration_far=1e-2
    )
    plan = plan_lfw(lfw_dir, options)
    seen: dict[str, int] = {}
    result = evaluate_lfw(
        plan,
        PixelFacePipeline(),
        tmp_path / "plots",
        lambda label, done, total: seen.update({label: total}),
    )

    assert seen == {"clean": len(plan.clean_images), **{s: 12 for s in degradations.SLICES}}
    assert result["view2"]["pairs"] == 40 and len(result["view2"]["accuracy_folds"]) == 10
    all_pairs = result["all_pairs"]
    n = all_pairs["images"]
    assert n <= 150
    assert all_pairs["genuine_pairs"] + all_pairs["impostor_pairs"] == n * (n - 1) // 2
    assert set(all_pairs["tar_at_far"]) == {"1e-3", "1e-4"}
    calibration = result["calibration"]
    assert calibration["threshold"] == result["operating_threshold"]
    assert calibration["far"] <= 1e-2
    assert 0 <= all_pairs["at_operating_threshold"]["far"] <= 1
    slices = result["slices"]
    assert (slices["genuine_pairs"], slices["impostor_pairs"]) == (12, 132)
    assert set(slices["results"]) == {"clean", *degradations.SLICES}
    hard = result["hard_impostor_pairs"]
    assert len(hard) == 4
    assert all(h["identity1"] != h["identity2"] for h in hard)
    assert [h["score"] for h in hard] == sorted((h["score"] for h in hard), reverse=True)
    for name in ("view2_roc", "view2_det", "all_pairs_scores", "slices_roc", "hard_impostor_pairs"):
        assert Path(result["plots"][name]).stat().st_size > 5000
    json.dumps(result, allow_nan=False)


class DarkBlindPipeline(PixelFacePipeline):
    """FAKE: finds no face in dark images (mean below 50), like a detector at night."""

    def embed_images(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        outcomes = super().embed_images(images)
        for i, image in enumerate(images):
            if image.mean() < 50:
                outcomes[i] = EmbedOutcome(None, {"embed": 0.1}, "no_face")
        return outcomes


def test_small_run_without_calibration_and_with_a_blind_slice(lfw_dir: Path) -> None:
    plan = plan_lfw(lfw_dir, LfwOptions(max_images=40, limit_pairs=20, slice_identities=4))
    result = evaluate_lfw(plan, DarkBlindPipeline())
    assert result["operating_threshold"] is None
    assert "cannot calibrate FAR 0.001" in result["calibration"]["reason"]
    assert result["all_pairs"]["tar_at_far"]["1e-4"] is None
    darkened = result["slices"]["results"]["darkened"]
    assert darkened["probe_failure_rate"] == 1.0
    assert darkened["roc_auc"] == 0.5  # every probe scores -1: no better than chance
    assert result["slices"]["results"]["clean"]["failed_probes"] == 0
    json.dumps(result, allow_nan=False)
