"""Exam-day planning: reproducible, shaped like a morning, every kind with its expected verdicts.

Planning does no I/O, so the roster here is made of Students whose photo paths are never
opened (a stand-in for a real photo folder; rendering is tested on LFW in test_render.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from producers.roster import Student, student_id_for
from producers.simulator import (
    DEAD_LETTER,
    EXPECTED,
    KINDS,
    CheckinMix,
    PlannedCheckin,
    apportion,
    exam_morning,
    plan_exam_day,
)

GATES = ["gate-1", "gate-2", "gate-3"]


def _person(name: str, photos: int, enrol: int) -> Student:
    paths = [Path(f"/photos/{name}/{name}_{k:04d}.jpg") for k in range(photos)]
    return Student(student_id_for(name), name, tuple(paths[:enrol]), tuple(paths[enrol:]))


STUDENTS = [_person(f"student_{k:02d}", 6, 3) for k in range(40)]
OUTSIDERS = [_person(f"outsider_{k:02d}", 1, 0) for k in range(10)]


def _plan(seed: int = 3, **kwargs: object) -> list[PlannedCheckin]:
    return plan_exam_day(STUDENTS, OUTSIDERS, GATES, exam_morning(5), seed=seed, **kwargs)  # type: ignore[arg-type]


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert _plan(seed=3) == _plan(seed=3)
    assert _plan(seed=3) != _plan(seed=4)


def test_kinds_follow_the_mix() -> None:
    plan = _plan()
    assert len(plan) == 40 * 5
    counts = Counter(p.kind for p in plan)
    for kind, share in CheckinMix().shares().items():
        assert abs(counts[kind] - share * len(plan)) <= 1, kind
    only_two = Counter(p.kind for p in _plan(mix=CheckinMix.parse("genuine=3,impostor=1")))
    assert only_two == {"genuine": 150, "impostor": 50}


def test_a_short_day_still_has_every_kind() -> None:
    counts = apportion(CheckinMix().shares(), 12)
    assert sum(counts.values()) == 12
    assert all(counts[kind] >= 1 for kind in KINDS)


def test_every_kind_has_its_expected_outcomes() -> None:
    assert set(EXPECTED) == set(KINDS)
    assert EXPECTED["genuine"] == {"accept/match"}
    assert EXPECTED["no_face"] == {"review/no_face"}
    assert EXPECTED["several_faces"] == {"review/several_faces"}
    assert EXPECTED["corrupt"] == {DEAD_LETTER}
    assert EXPECTED["blurred"] == EXPECTED["dark"] == {"review/low_quality", "accept/match"}
    # An impostor is caught by any decision but accept.
    assert "reject/mismatch" in EXPECTED["impostor"]
    assert not any(outcome.startswith("accept/") for outcome in EXPECTED["impostor"])
    for planned in _plan():
        assert planned.expected == EXPECTED[planned.kind]


def test_each_kind_shows_the_camera_the_right_people() -> None:
    people = {p.student_id: p for p in (*STUDENTS, *OUTSIDERS)}
    for planned in _plan():
        claimed = people[planned.claimed_student_id]
        assert planned.claimed_student_id in {s.student_id for s in STUDENTS}
        for photo, person in zip(planned.photos, planned.true_identities, strict=False):
            # Only probe photos reach the camera, never an enrolment photo.
            assert photo in people[person].probe_photos
        if planned.kind == "no_face":
            assert planned.photos == () and planned.true_identity is None
        elif planned.kind == "impostor":
            assert len(planned.photos) == 1
            assert planned.true_identity != planned.claimed_student_id
        elif planned.kind == "several_faces":
            assert len(planned.photos) == 2 and len(set(planned.true_identities)) == 2
            assert planned.true_identity == claimed.student_id
        else:
            assert planned.true_identities == (claimed.student_id,)


def test_impostors_are_outsiders_and_other_students() -> None:
    impostors = [p.true_identity for p in _plan() if p.kind == "impostor"]
    outsider_ids = {o.student_id for o in OUTSIDERS}
    from_outside = sum(i in outsider_ids for i in impostors)
    assert 0 < from_outside < len(impostors)


def test_arrivals_are_mostly_in_the_half_hour_before_the_exam() -> None:
    plan = _plan()
    starts = {exam.exam_id: exam.starts_at_s for exam in exam_morning(5)}
    leads = [starts[p.exam_id] - p.offset_s for p in plan]
    within = sum(0 < lead <= 30 * 60 for lead in leads) / len(plan)
    late = sum(lead < 0 for lead in leads) / len(plan)
    assert within >= 0.75
    assert 0 < late <= 0.15
    assert all(p.offset_s >= 0 for p in plan)
    assert [p.offset_s for p in plan] == sorted(p.offset_s for p in plan)
    assert [p.index for p in plan] == list(range(len(plan)))
    assert {p.gate_id for p in plan} == set(GATES)


def test_cohorts_and_mix_parsing() -> None:
    plan = _plan(students_per_exam=10)
    assert Counter(p.exam_id for p in plan) == {f"exam-{k}": 10 for k in range(1, 6)}
    assert CheckinMix.parse("genuine=1").shares()["genuine"] == 1.0
    with pytest.raises(ValueError, match="unknown kind"):
        CheckinMix.parse("ghost=1")
    with pytest.raises(ValueError):
        CheckinMix(genuine=-1)
