"""The in-memory gallery: 1:1 verification and 1:N search on known vectors."""

from __future__ import annotations

import numpy as np

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
