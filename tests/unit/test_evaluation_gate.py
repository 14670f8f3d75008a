"""The evaluation gate's scoring and judgement on known scores (no models involved)."""

from __future__ import annotations

import numpy as np

from trainer.evaluation_gate import SliceResult, all_pair_scores, judge, measurable_far


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
