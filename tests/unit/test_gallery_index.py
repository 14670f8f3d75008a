"""The in-memory gallery: 1:1 verification and 1:N search on known vectors."""

from __future__ import annotations

import numpy as np
import pytest

from inference_worker.gallery import GalleryIndex, normalise


def _gallery(n: int = 50, dim: int = 16, seed: int = 0) -> tuple[GalleryIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = normalise(rng.normal(size=(n, dim)).astype(np.float32))
    index = GalleryIndex(dim)
    index.replace_all(
        {
            f"s{i:03d}": centres[i] + 0.05 * rng.normal(size=(3, dim)).astype(np.float32)
            for i in range(n)
        }
    )
    return index, centres


def test_search_finds_the_enrolled_student_first() -> None:
    index, centres = _gallery()
    results = index.search(centres[[3, 17, 42]], k=5)
    assert [r[0].student_id for r in results] == ["s003", "s017", "s042"]
    for row in results:
        scores = [c.score for c in row]
        assert scores == sorted(scores, reverse=True) and len(row) == 5


def test_verify_is_the_best_template_score() -> None:
    index, centres = _gallery()
    own = index.verify(centres[5], "s005")
    other = index.verify(centres[5], "s006")
    assert own is not None and other is not None and own > 0.9 > other
    assert index.verify(centres[5], "nobody") is None


def test_updates_without_rebuilding_from_scratch() -> None:
    index, centres = _gallery(n=3)
    assert len(index) == 3
    index.remove("s001")
    assert "s001" not in index and len(index) == 2
    assert index.search(centres[[1]], k=3)[0][0].student_id != "s001"
    index.upsert("s001", centres[[1]])
    assert index.search(centres[[1]], k=1)[0][0].student_id == "s001"


def test_empty_gallery_returns_no_candidates() -> None:
    index = GalleryIndex(8)
    assert index.search(np.ones((2, 8), dtype=np.float32)) == [[], []]


def _random_gallery(n: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = normalise(rng.normal(size=(n, dim)).astype(np.float32))
    return {f"s{i:05d}": rows[i : i + 1] for i in range(n)}


def test_int8_shortlist_returns_the_exact_top_k_with_exact_scores() -> None:
    gallery = _random_gallery(5000, 64, seed=1)
    exact, shortlisted = GalleryIndex(64), GalleryIndex(64, int8_from=1000)
    exact.replace_all(gallery)
    shortlisted.replace_all(gallery)
    assert shortlisted.wait_for_int8(60), "the int8 copy was not built"
    probes = normalise(np.random.default_rng(2).normal(size=(20, 64)).astype(np.float32))
    for want, got in zip(exact.search(probes, k=5), shortlisted.search(probes, k=5), strict=True):
        assert [c.student_id for c in got] == [c.student_id for c in want]
        # Re-scored in float32: the scores are the exact ones, not the int8 approximations.
        assert [c.score for c in got] == pytest.approx([c.score for c in want], abs=1e-6)


def test_a_change_is_matched_at_once_not_against_the_old_int8_copy() -> None:
    dim = 32
    index = GalleryIndex(dim, int8_from=100)
    index.replace_all(_random_gallery(2000, dim, seed=3))
    assert index.wait_for_int8(60)
    newcomer = normalise(np.random.default_rng(4).normal(size=(1, dim)).astype(np.float32))
    index.upsert("newcomer", newcomer)
    # Searched before the copy is rebuilt: the float32 scan answers.
    assert index.search(newcomer, k=1)[0][0].student_id == "newcomer"
    index.remove("newcomer")
    assert index.search(newcomer, k=1)[0][0].student_id != "newcomer"
    assert index.wait_for_int8(60)
    assert "newcomer" not in {c.student_id for c in index.search(newcomer, k=5)[0]}


def test_small_galleries_keep_the_float32_scan() -> None:
    index = GalleryIndex(16, int8_from=1000)
    index.replace_all(_random_gallery(999, 16, seed=5))
    assert not index.wait_for_int8(0.2)
