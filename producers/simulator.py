"""Exam-day traffic: who arrives at which gate when, showing what, and what FaceGate should say.

Planning (``plan_exam_day``) is pure: seeded, no I/O, so a plan is reproducible and testable on
its own.  Rendering (``producers.render``) turns a planned check-in into JPEG bytes.
Publishing (``publish_exam_day``) renders each check-in at its scaled time, publishes it,
and writes the ground truth.

The day: exams start at given offsets (by default 1 h after the doors open, then hourly);
each student of an exam's cohort arrives once, mostly in the half hour before the start
(lead time ~ Gamma(shape 2, scale 8 min): mode 8 min, mean 16 min, 89 % within 30 min), and
a few (5 %) arrive late (Exponential, mean 5 min).  Each check-in gets a kind, with counts
apportioned exactly to the mix and then shuffled:

- ``genuine``: the claimed student's own probe photo -> accept/match;
- ``impostor``: someone else holding the student's card: an outsider (never enrolled) half of
  the time when there are any, otherwise another student.  It counts as *caught* when the
  decision is anything but accept, so every reject and review outcome is expected;
- ``no_face``: an empty scene -> review/no_face;
- ``several_faces``: the student next to another person -> review/several_faces;
- ``blurred`` / ``dark``: the student's photo, Gaussian blur (sigma 6) or 0.2x brightness ->
  review/low_quality, or accept/match when the model copes;
- ``corrupt``: the Frame envelope is valid but its JPEG is cut in half -> a dead letter.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, get_args

from tqdm import tqdm

from facegate.errors import FacegateError
from producers.publisher import FrameSink
from producers.render import render_checkin
from producers.replay import RecordingWriter
from producers.roster import Student
from schemas.codec import encode
from schemas.messages import Frame, new_id, now

Kind = Literal["genuine", "impostor", "no_face", "several_faces", "blurred", "dark", "corrupt"]
KINDS: tuple[Kind, ...] = get_args(Kind)

DEAD_LETTER = "dead_letter"


def outcome_label(decision: str, reason: str) -> str:
    """How a verdict's outcome is written in ``expected``: ``"decision/reason"``."""
    return f"{decision}/{reason}"


_EVERY_NOT_ACCEPT = frozenset(
    {
        "reject/mismatch",
        "review/no_face",
        "review/several_faces",
        "review/no_claim",
        "review/unknown_student",
        "review/low_quality",
    }
)
# The verdict outcomes (or "dead_letter") that count as right for each kind.
EXPECTED: dict[Kind, frozenset[str]] = {
    "genuine": frozenset({"accept/match"}),
    "impostor": _EVERY_NOT_ACCEPT,
    "no_face": frozenset({"review/no_face"}),
    "several_faces": frozenset({"review/several_faces"}),
    "blurred": frozenset({"review/low_quality", "accept/match"}),
    "dark": frozenset({"review/low_quality", "accept/match"}),
    "corrupt": frozenset({DEAD_LETTER}),
}


@dataclass(frozen=True)
class CheckinMix:
    """Shares of each kind of check-in (need not sum to 1: they are normalised)."""

    genuine: float = 0.70
    impostor: float = 0.10
    no_face: float = 0.05
    several_faces: float = 0.05
    blurred: float = 0.04
    dark: float = 0.04
    corrupt: float = 0.02

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        if any(v < 0 for v in values) or sum(values) <= 0:
            raise ValueError("mix shares must be >= 0 and not all 0")

    def shares(self) -> dict[Kind, float]:
        """Each kind's share of all check-ins, summing to 1."""
        total = sum(getattr(self, kind) for kind in KINDS)
        return {kind: getattr(self, kind) / total for kind in KINDS}

    @classmethod
    def parse(cls, text: str) -> CheckinMix:
        """From ``"genuine=0.8,impostor=0.2"``; kinds not named get 0."""
        values: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in values:
                raise ValueError(f"unknown kind {name!r}; kinds are {', '.join(KINDS)}")
            values[name.strip()] = float(value)
        return cls(**values)


@dataclass(frozen=True)
class Exam:
    """An exam and when it starts, in seconds after the simulation starts (doors open)."""

    exam_id: str
    starts_at_s: float


def exam_morning(
    count: int, first_start_s: float = 3600.0, spacing_s: float = 3600.0
) -> list[Exam]:
    """``count`` exams named exam-1..N, the first an hour after the doors open, then hourly."""
    return [Exam(f"exam-{k + 1}", first_start_s + k * spacing_s) for k in range(count)]


@dataclass(frozen=True)
class Arrivals:
    """How long before their exam students arrive (see module doc)."""

    lead_shape: float = 2.0
    lead_scale_s: float = 480.0
    late_share: float = 0.05
    late_mean_s: float = 300.0


@dataclass(frozen=True)
class PlannedCheckin:
    """One student at one gate: what the camera will see and what FaceGate should answer."""

    index: int
    offset_s: float
    gate_id: str
    exam_id: str
    claimed_student_id: str
    kind: Kind
    photos: tuple[Path, ...]
    # Who is really in front of the camera: the first is the one at the desk; empty for no_face.
    true_identities: tuple[str, ...]
    expected: frozenset[str]
    # Seeds the rendering's randomness (the empty scene's noise).
    render_seed: int = 0

    @property
    def true_identity(self) -> str | None:
        """The person at the desk, or None when nobody is in the frame."""
        return self.true_identities[0] if self.true_identities else None


def apportion(shares: dict[Kind, float], total: int) -> dict[Kind, int]:
    """Whole counts per kind summing to ``total``, as close to the shares as can be.

    Largest-remainder rounding, then every kind with a share gets at least one when there are
    enough check-ins for all of them.
    """
    exact = {kind: share * total for kind, share in shares.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    # Largest remainders first; ties broken by the order of KINDS so the result is stable.
    by_remainder = sorted(KINDS, key=lambda k: (-(exact[k] - counts[k]), KINDS.index(k)))
    for kind in by_remainder[: total - sum(counts.values())]:
        counts[kind] += 1
    # A short day still shows every kind asked for: each gets at least one check-in, taken
    # from the most frequent kind.
    wanted = [kind for kind in KINDS if shares.get(kind, 0.0) > 0]
    if total >= len(wanted):
        for kind in wanted:
            if counts[kind] == 0:
                counts[max(KINDS, key=lambda k: counts[k])] -= 1
                counts[kind] = 1
    return counts


@dataclass
class _PhotoDealer:
    """Hands out each person's probe photos in a shuffled cycle, so repeats come last."""

    rng: random.Random
    decks: dict[str, list[Path]] = field(default_factory=dict)
    dealt: Counter[str] = field(default_factory=Counter)

    def next(self, person: Student) -> Path:
        deck = self.decks.get(person.student_id)
        if deck is None:
            if not person.probe_photos:
                raise FacegateError(f"{person.name} has no probe photos to show the camera")
            deck = list(person.probe_photos)
            self.rng.shuffle(deck)
            self.decks[person.student_id] = deck
        photo = deck[self.dealt[person.student_id] % len(deck)]
        self.dealt[person.student_id] += 1
        return photo


def plan_exam_day(
    roster: Sequence[Student],
    outsiders: Sequence[Student],
    gates: Sequence[str],
    exams: Sequence[Exam],
    seed: int,
    mix: CheckinMix | None = None,
    students_per_exam: int | None = None,
    arrivals: Arrivals | None = None,
) -> list[PlannedCheckin]:
    """Every check-in of the day, sorted by arrival; the same inputs give the same plan."""
    mix = mix or CheckinMix()
    arrivals = arrivals or Arrivals()
    if not roster or not gates or not exams:
        raise FacegateError("an exam day needs students, gates and exams")
    rng = random.Random(seed)
    students = sorted(roster, key=lambda s: s.student_id)
    slots: list[tuple[Exam, Student]] = []
    for exam in exams:
        size = len(students) if students_per_exam is None else min(students_per_exam, len(students))
        cohort = sorted(rng.sample(students, size), key=lambda s: s.student_id)
        slots.extend((exam, student) for student in cohort)

    counts = apportion(mix.shares(), len(slots))
    kinds: list[Kind] = [kind for kind in KINDS for _ in range(counts[kind])]
    rng.shuffle(kinds)
    needs_other = counts["impostor"] + counts["several_faces"] > 0
    if needs_other and len(students) + len(outsiders) < 2:
        raise FacegateError("impostor and several_faces check-ins need at least two people")

    dealer = _PhotoDealer(random.Random(rng.random()))
    planned: list[PlannedCheckin] = []
    for (exam, student), kind in zip(slots, kinds, strict=True):
        photos, present = _what_the_camera_sees(kind, student, students, outsiders, dealer, rng)
        planned.append(
            PlannedCheckin(
                index=0,
                offset_s=_arrival(exam, arrivals, rng),
                gate_id=rng.choice(list(gates)),
                exam_id=exam.exam_id,
                claimed_student_id=student.student_id,
                kind=kind,
                photos=photos,
                true_identities=present,
                expected=EXPECTED[kind],
                render_seed=rng.randrange(2**31),
            )
        )
    planned.sort(key=lambda p: (p.offset_s, p.gate_id, p.claimed_student_id))
    return [replace(p, index=i) for i, p in enumerate(planned)]


def _arrival(exam: Exam, arrivals: Arrivals, rng: random.Random) -> float:
    if rng.random() < arrivals.late_share:
        return exam.starts_at_s + rng.expovariate(1.0 / arrivals.late_mean_s)
    lead = rng.gammavariate(arrivals.lead_shape, arrivals.lead_scale_s)
    return max(0.0, exam.starts_at_s - lead)


def _what_the_camera_sees(
    kind: Kind,
    student: Student,
    students: Sequence[Student],
    outsiders: Sequence[Student],
    dealer: _PhotoDealer,
    rng: random.Random,
) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    others = [s for s in students if s.student_id != student.student_id]
    if kind == "no_face":
        return (), ()
    if kind == "impostor":
        use_outsider = bool(outsiders) and (not others or rng.random() < 0.5)
        impostor = rng.choice(list(outsiders) if use_outsider else others)
        return (dealer.next(impostor),), (impostor.student_id,)
    if kind == "several_faces":
        bystander = rng.choice([*others, *outsiders])
        return (dealer.next(student), dealer.next(bystander)), (
            student.student_id,
            bystander.student_id,
        )
    return (dealer.next(student),), (student.student_id,)


# ---- publishing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationReport:
    """What a simulation sent."""

    frames: int
    by_kind: dict[str, int]
    elapsed_s: float
    truth_path: Path


def publish_exam_day(
    plan: Sequence[PlannedCheckin],
    publisher: FrameSink,
    time_scale: float,
    truth_path: Path,
    record_path: Path | None = None,
    jpeg_quality: int = 90,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SimulationReport:
    """Render and publish each check-in at its time, writing the ground truth as JSONL.

    ``time_scale`` is simulated seconds per real second: 180 plays an hour in 20 s, 1 is real
    time, 0 sends as fast as possible.  The clock starts at the first arrival, so the first
    frame goes at once.  Each line of ``truth_path`` describes one frame (see ``truth_record``).
    """
    if time_scale < 0:
        raise ValueError("time_scale must be >= 0")
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    first = min((p.offset_s for p in plan), default=0.0)
    start = clock()
    by_kind: Counter[str] = Counter()
    recording = RecordingWriter(record_path, source="simulator") if record_path else None
    try:
        with open(truth_path, "w", encoding="utf-8") as truth:
            for planned in tqdm(plan, desc="exam day", unit="frame", disable=not progress):
                if time_scale > 0:
                    delay = start + (planned.offset_s - first) / time_scale - clock()
                    if delay > 0:
                        sleep(delay)
                frame = _frame_for(planned, render_checkin(planned, jpeg_quality))
                publisher.publish(frame)
                if recording is not None:
                    recording.write(frame.captured_at, frame.gate_id.encode(), encode(frame))
                truth.write(json.dumps(truth_record(planned, frame)) + "\n")
                truth.flush()  # an evaluator may follow the file while the day runs
                by_kind[planned.kind] += 1
    finally:
        if recording is not None:
            recording.close()
    return SimulationReport(sum(by_kind.values()), dict(by_kind), clock() - start, truth_path)


def _frame_for(planned: PlannedCheckin, jpeg: bytes) -> Frame:
    captured_at = now()
    return Frame(
        frame_id=new_id(),
        gate_id=planned.gate_id,
        exam_id=planned.exam_id,
        claimed_student_id=planned.claimed_student_id,
        captured_at=captured_at,
        published_at=captured_at,
        source="simulator",
        image=jpeg,
    )


def truth_record(planned: PlannedCheckin, frame: Frame) -> dict[str, object]:
    """The ground truth of one published frame, as written to the truth file."""
    return {
        "frame_id": frame.frame_id,
        "checkin": planned.index,
        "offset_s": round(planned.offset_s, 3),
        "captured_at": frame.captured_at,
        "gate_id": planned.gate_id,
        "exam_id": planned.exam_id,
        "kind": planned.kind,
        "claimed_student_id": planned.claimed_student_id,
        "true_identity": planned.true_identity,
        "true_identities": list(planned.true_identities),
        "photos": [str(p) for p in planned.photos],
        "expected": sorted(planned.expected),
    }
