"""The evaluation gate's scoring and judgement on known scores (no models involved)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trainer.evaluation_gate import (
    SliceResult,
    all_pair_scores,
    compare_slice,
    judge,
    measurable_far,
    plot_gate,
)


def test_all_pair_scores_split_genuine_and_impostor_pairs() -> None:
    embeddings = np.eye(4, dtype=np.float32)
    embeddings[1] = embeddings[0]
    valid = np.array([True, True, True, False])
    genuine, impostor = all_pair_scores(embeddings, valid, ["a", "a", "b", "b"])
    assert sorted(genuine.tolist()) == [-1.0, 1.0]  # (0,1) identical; (2,3) has a failed image
    assert impostor.size == 4 and impostor.max() == 0.0 and impostor.min() == -1.0


def test_measurable_far_widens_to_what_the_impostors_can_measure() -> None:
    assert measurable_far(1e-3, 100_000) == 1e-3
    assert measurable_far(1e-3, 1_000) == 1e-2
    assert measurable_far(1e-3, 20) is None


def _slice(name: str, champion: float | None, candidate: float | None) -> SliceResult:
    return SliceResult(name, 100, 50, 5000, 2e-3, champion, candidate, 0.0, 0.0)


def test_judge_names_every_slice_beyond_tolerance() -> None:
    result = judge(
        [
            _slice("lfw/clean", 0.95, 0.94),
            _slice("lfw/darkened", 0.90, 0.80),
            _slice("feedback", None, None),
        ],
        tolerance=0.02,
    )
    assert not result.passed
    assert len(result.failures) == 1 and result.failures[0].startswith("lfw/darkened")
    assert "-0.100" in result.failures[0]
    assert result.skipped == ["feedback"]


def test_judge_passes_within_tolerance_and_refuses_when_nothing_was_measured() -> None:
    assert judge([_slice("lfw/clean", 0.95, 0.94)], tolerance=0.02).passed
    empty = judge([_slice("feedback", None, None)], tolerance=0.02)
    assert not empty.passed and "no slice" in empty.failures[0]


def test_a_noisier_candidate_loses_tar_and_the_figures_show_both_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    identities = [f"p{i // 4}" for i in range(200)]
    centres = rng.normal(size=(50, 32))

    def embed(noise: float) -> tuple[np.ndarray, np.ndarray]:
        points = np.stack([centres[i // 4] + noise * rng.normal(size=32) for i in range(200)])
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        return points.astype(np.float32), np.ones(200, bool)

    result = compare_slice("lfw/clean", identities, embed(0.3), embed(1.5), 1e-3)
    assert result.delta is not None and result.delta < -0.1
    assert set(result.curves) == {"champion", "candidate"}
    gate = judge([result], tolerance=0.02)
    assert not gate.passed and gate.failures[0].startswith("lfw/clean:")
    (figure,) = plot_gate(gate, tmp_path)
    assert figure.name == "roc_lfw_clean.png"
    image = cv2.imread(str(figure))
    assert image is not None and image.shape[0] > 200 and image.std() > 10
