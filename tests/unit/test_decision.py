"""The verdict policy, case by case."""

from __future__ import annotations

import pytest

from inference_worker.decision import decide


@pytest.mark.parametrize(
    ("outcome", "claim", "enrolled", "quality_ok", "score", "expected"),
    [
        ("stale", "s1", True, False, None, ("review", "stale")),
        ("no_face", "s1", True, False, None, ("review", "no_face")),
        ("several_faces", "s1", True, True, None, ("review", "several_faces")),
        ("face", None, True, True, None, ("review", "no_claim")),
        ("face", "s1", False, True, None, ("review", "unknown_student")),
        ("face", "s1", True, False, 0.9, ("review", "low_quality")),
        ("face", "s1", True, True, 0.9, ("accept", "match")),
        ("face", "s1", True, True, 0.5, ("accept", "match")),
        ("face", "s1", True, True, 0.49, ("reject", "mismatch")),
    ],
)
def test_policy(
    outcome: str,
    claim: str | None,
    enrolled: bool,
    quality_ok: bool,
    score: float | None,
    expected: tuple[str, str],
) -> None:
    result = decide(outcome, claim, enrolled, quality_ok, score, threshold=0.5)
    assert (result.decision, result.reason) == expected
