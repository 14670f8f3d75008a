"""The in-memory gallery: 1:1 verification and 1:N search on known vectors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from inference_worker import gallery as gallery_module
from inference_worker.gallery import GalleryIndex, normalise
from inference_worker.gallery_scan import Int8Scan


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


def test_enrolments_one_by_one_match_a_gallery_loaded_at_once() -> None:
    """Appended rows (past the first buffer's capacity), a replacement and a removal leave the
    index answering exactly as one loaded in a single step with the same students."""
    dim = 16
    gallery = _random_gallery(2500, dim, seed=6)
    grown = GalleryIndex(dim)
    for student, templates in gallery.items():
        grown.upsert(student, templates)
    changed = normalise(np.random.default_rng(7).normal(size=(2, dim)).astype(np.float32))
    grown.upsert("s00010", changed)
    grown.remove("s00020")
    expected = {**gallery, "s00010": changed}
    del expected["s00020"]
    loaded = GalleryIndex(dim)
    loaded.replace_all(expected)
    assert len(grown) == len(loaded) == 2499
    assert list(grown.students()) == sorted(expected)
    probes = normalise(np.random.default_rng(8).normal(size=(30, dim)).astype(np.float32))
    probes = np.concatenate([probes, gallery["s00020"], changed[:1]])
    for want, got in zip(loaded.search(probes, k=5), grown.search(probes, k=5), strict=True):
        assert [c.student_id for c in got] == [c.student_id for c in want]
        assert [c.score for c in got] == pytest.approx([c.score for c in want], abs=1e-6)
    assert grown.verify(changed[1], "s00010") == pytest.approx(1.0, abs=1e-6)


def test_a_replayed_enrolment_keeps_the_int8_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The enrolment replay at every worker start re-applies unchanged templates: it must not
    throw away (and rebuild) the int8 copy of the gallery each time."""
    builds: list[int] = []

    def counting_scan(means: np.ndarray) -> Int8Scan:
        builds.append(len(means))
        return Int8Scan(means)

    monkeypatch.setattr(gallery_module, "Int8Scan", counting_scan)
    dim = 32
    gallery = _random_gallery(2000, dim, seed=9)
    index = GalleryIndex(dim, int8_from=100)
    index.replace_all(gallery)
    assert index.wait_for_int8(60) and builds == [2000]
    for student in list(gallery)[:50]:
        index.upsert(student, gallery[student])
    time.sleep(0.3)  # time for a rebuild to start, had one been asked for
    assert builds == [2000] and index.wait_for_int8(0)
    index.upsert("s00000", normalise(np.ones((1, dim), dtype=np.float32)))
    assert index.wait_for_int8(60) and builds == [2000, 2000]


def test_templates_of_another_size_are_refused_and_change_nothing() -> None:
    index, centres = _gallery(n=5, dim=16)
    with pytest.raises(ValueError, match=r"shape \(1, 8\), want \(k, 16\)"):
        index.upsert("s001", np.ones((1, 8), dtype=np.float32))
    assert len(index) == 5
    assert index.search(centres[[1]], k=1)[0][0].student_id == "s001"
