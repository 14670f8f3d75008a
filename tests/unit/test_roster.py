"""Rosters from a folder of <Person>/*.jpg: LFW for the rules, the demo photos when cached."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from producers.roster import demo_photo_folder, load_roster, student_id_for


def test_a_roster_of_ten_lfw_people(lfw_dir: Path) -> None:
    images = lfw_dir / "images"
    roster = load_roster(images, max_students=10, enroll_per_student=3, seed=7)
    assert len(roster.students) == 10
    ids = [s.student_id for s in roster.students]
    assert len(set(ids)) == 10
    for student in roster.students:
        assert re.fullmatch(r"s[0-9a-f]{10}", student.student_id)
        assert student.student_id == student_id_for(student.name)
        assert len(student.enrollment_photos) == 3
        assert len(student.probe_photos) >= 1
        assert not set(student.enrollment_photos) & set(student.probe_photos)
        own = sorted((images / student.name).glob("*.jpg"))
        assert sorted((*student.enrollment_photos, *student.probe_photos)) == own
    # Everyone with fewer than 3 + 1 photos is an outsider, with all photos as probes.
    assert roster.outsiders
    for outsider in roster.outsiders[:200]:
        assert outsider.enrollment_photos == ()
        assert 1 <= len(outsider.probe_photos) < 4
    assert not {o.student_id for o in roster.outsiders} & set(ids)


def test_rosters_are_reproducible(lfw_dir: Path) -> None:
    images = lfw_dir / "images"
    first = load_roster(images, max_students=10, seed=7, max_outsiders=5)
    assert first == load_roster(images, max_students=10, seed=7, max_outsiders=5)
    assert len(first.outsiders) == 5
    other = load_roster(images, max_students=10, seed=8, max_outsiders=5)
    assert {s.name for s in other.students} != {s.name for s in first.students}


def test_fewer_enrolment_photos_when_allowed(lfw_dir: Path) -> None:
    roster = load_roster(lfw_dir / "images", max_students=30, seed=1, min_enroll=1)
    counts = {len(s.enrollment_photos) for s in roster.students}
    assert counts <= {1, 2, 3} and 1 in counts
    assert all(len(o.probe_photos) == 1 for o in roster.outsiders[:200])


def test_demo_photos() -> None:
    from trainer.sources import FACE_PHOTOS, FACE_RECOGNITION_PHOTOS, _cached

    if _cached(FACE_PHOTOS) is None or _cached(FACE_RECOGNITION_PHOTOS) is None:
        pytest.skip("demo photo packages not fetched yet (`facegate simulate` fetches them)")
    folder = demo_photo_folder()
    people = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert people == [
        "barack_obama",
        "ben_afflek",
        "elton_john",
        "jerry_seinfeld",
        "joe_biden",
        "madonna",
        "mindy_kaling",
    ]
    roster = load_roster(folder, max_students=50, min_enroll=2)
    assert len(roster.students) == 6
    assert [o.name for o in roster.outsiders] == ["joe_biden"]
    celebrities = [s for s in roster.students if s.name != "barack_obama"]
    # train and val merged: 19 to 25 photos each.
    assert all(len(s.enrollment_photos) + len(s.probe_photos) >= 19 for s in celebrities)
