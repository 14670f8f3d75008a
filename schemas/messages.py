"""One typed, versioned definition per topic message.

Version history (each reader upgrades the previous version; see ``UPGRADES``):
- frame v2: ``student_id`` renamed ``claimed_student_id``; ``source`` added.
- face v2: per-stage ``timings_ms`` added.
- verdict v2: ``thumbnail`` (the aligned face as JPEG, for the proctor console) added.
- verdict v3: ``model_alias`` (champion or canary) and ``embedding_sketch`` (for drift) added.
- feedback v2: ``user`` renamed ``proctor``.
- drift v2: ``model_version`` added.
- enrollment v2: ``model_version`` added.
- model_event v2: ``canary_share`` added.
- model_event v3: ``run_id`` added; action ``refused`` (a candidate the gate turned down).
- dead_letter v2: ``frame_id`` added.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.codec import Message

Decision = Literal["accept", "reject", "review"]
VerdictReason = Literal[
    "match",
    "mismatch",
    "unknown_student",
    "no_claim",
    "no_face",
    "several_faces",
    "low_quality",
    "stale",
]
# "stale": the frame waited longer than the stream processor's limit and was not analysed.
FaceOutcome = Literal["face", "no_face", "several_faces", "stale"]


def new_id() -> str:
    """A random id for frames, feedback and reports."""
    return uuid.uuid4().hex


def now() -> float:
    """Wall-clock time in seconds since the epoch (what every timestamp field holds)."""
    return time.time()


def _rename(old: str, new: str) -> Any:
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        data[new] = data.pop(old)
        return data

    return upgrade


def _add(**defaults: Any) -> Any:
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        for key, value in defaults.items():
            data.setdefault(key, value)
        return data

    return upgrade


class Frame(Message):
    """A camera frame at a gate: the image and who the student's card says they are."""

    SCHEMA = "frame"
    VERSION = 2
    UPGRADES = {
        1: lambda d: _add(source="camera")(_rename("student_id", "claimed_student_id")(d)),
    }

    frame_id: str = Field(min_length=1, max_length=64)
    gate_id: str = Field(min_length=1, max_length=64)
    exam_id: str = Field(min_length=1, max_length=64)
    claimed_student_id: str | None = Field(default=None, max_length=64)
    captured_at: float
    published_at: float
    source: Literal["camera", "simulator", "replay", "test"] = "camera"
    content_type: Literal["image/jpeg", "image/png"] = "image/jpeg"
    image: bytes = Field(min_length=1)


class FaceCrop(BaseModel):
    """A face aligned to one embedder template, as raw RGB pixels (exact and cheap to read)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    width: int = Field(gt=0, le=512)
    height: int = Field(gt=0, le=512)
    pixels: bytes


class Face(Message):
    """What the stream processor found in a frame: the chosen face, aligned, with its quality."""

    SCHEMA = "face"
    VERSION = 3
    # v3 added the outcome "stale" (a v2 face is a valid v3 face).
    UPGRADES = {1: _add(timings_ms={}), 2: _add()}

    frame_id: str
    gate_id: str
    exam_id: str
    claimed_student_id: str | None
    captured_at: float
    outcome: FaceOutcome
    face_count: int = Field(ge=0)
    box: list[float] | None = None
    landmarks: list[list[float]] | None = None
    detection_score: float | None = None
    quality_ok: bool = False
    quality: dict[str, float] = Field(default_factory=dict)
    quality_reasons: list[str] = Field(default_factory=list)
    crops: list[FaceCrop] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    # When the stream processor sent it (epoch seconds): the worker measures the hop from it.
    sent_at: float | None = None


class Match(BaseModel):
    """One gallery candidate of a 1:N search."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    student_id: str
    score: float


class Verdict(Message):
    """The recommendation to the proctor for one frame, with its reason and evidence."""

    SCHEMA = "verdict"
    VERSION = 4
    # v4 added the reason "stale" (a v3 verdict is a valid v4 verdict).
    UPGRADES = {
        1: _add(thumbnail=None),
        2: _add(model_alias="champion", embedding_sketch=None),
        3: _add(),
    }

    frame_id: str
    gate_id: str
    exam_id: str
    claimed_student_id: str | None
    captured_at: float
    decided_at: float
    decision: Decision
    reason: VerdictReason
    score: float | None = None
    threshold: float | None = None
    top_matches: list[Match] = Field(default_factory=list)
    model_name: str
    model_version: str
    quality: dict[str, float] = Field(default_factory=dict)
    quality_reasons: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    thumbnail: bytes | None = None
    # Which rollout arm decided: the champion, or the canary for its share of students.
    model_alias: Literal["champion", "canary"] = "champion"
    # A fixed random projection of the face's embedding to a few dimensions: enough for the
    # drift monitor to compare embedding distributions, far too little to match a face with.
    embedding_sketch: list[float] | None = Field(default=None, max_length=64)


class Feedback(Message):
    """A proctor's decision on a verdict: the ground truth that retraining learns from."""

    SCHEMA = "feedback"
    VERSION = 2
    UPGRADES = {1: _rename("user", "proctor")}

    feedback_id: str
    frame_id: str
    exam_id: str
    gate_id: str
    student_id: str | None
    proctor: str
    action: Literal["confirm", "accept_manual", "impostor", "retry"]
    verdict_decision: Decision
    model_version: str
    decided_at: float
    note: str = ""


class DriftReport(Message):
    """Windowed statistics of one gate and model, with the thresholds they are held to."""

    SCHEMA = "drift"
    VERSION = 2
    UPGRADES = {1: _add(model_version="unknown")}

    report_id: str
    gate_id: str | None
    model_version: str
    window_start: float
    window_end: float
    samples: int = Field(ge=0)
    statistics: dict[str, float]
    thresholds: dict[str, float]
    breached: list[str] = Field(default_factory=list)


class Enrollment(Message):
    """A change to the gallery: a student enrolled (templates stored) or removed."""

    SCHEMA = "enrollment"
    VERSION = 2
    UPGRADES = {1: _add(model_version="unknown")}

    student_id: str
    action: Literal["enrolled", "removed"]
    model_version: str
    template_count: int = Field(ge=0)
    at: float
    by: str = "facegate"


class ModelEvent(Message):
    """A registry alias change that serving workers follow (canary, promotion, roll-back),
    or a candidate the evaluation gate refused (``refused``: never registered, so ``version``
    names the training run)."""

    SCHEMA = "model_event"
    VERSION = 3
    UPGRADES = {1: _add(canary_share=None), 2: _add(run_id=None)}

    model_name: str
    version: str
    alias: Literal["champion", "canary", "challenger"]
    action: Literal["set", "removed", "promoted", "rolled_back", "refused"]
    canary_share: float | None = Field(default=None, ge=0.0, le=1.0)
    at: float
    reason: str = ""
    # The MLflow run that produced the model (training, evaluation gate), when known.
    run_id: str | None = None


class DeadLetter(Message):
    """A record that could not be processed, kept whole with the reason."""

    SCHEMA = "dead_letter"
    VERSION = 2
    UPGRADES = {1: _add(frame_id=None)}

    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    reason: str
    detail: str
    service: str
    failed_at: float
    payload: bytes | None
    frame_id: str | None = None


ALL_MESSAGES: tuple[type[Message], ...] = (
    Frame,
    Face,
    Verdict,
    Feedback,
    DriftReport,
    Enrollment,
    ModelEvent,
    DeadLetter,
)
