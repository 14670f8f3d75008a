"""The one place that knows FaceGate's topic names, partition counts and partition keys."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.codec import Message


@dataclass(frozen=True)
class Topic:
    """A Kafka topic: its name, partition count and what its messages are keyed by."""

    name: str
    partitions: int
    key: str
    description: str
    # How long the broker keeps records (retention.ms); None: the broker's default. Topics that
    # carry faces (frames, crops, verdicts' thumbnails) keep them only as long as the pipeline
    # and the proctors need them.
    retention_ms: int | None = None


DAY_MS = 24 * 3600 * 1000


FRAMES = Topic(
    "frames", 8, "gate_id", "camera frames (JPEG + gate, exam, claimed student, time)", DAY_MS
)
FRAMES_DLQ = Topic(
    "frames.dlq",
    1,
    "source topic",
    "messages that could not be processed, with the reason",
    7 * DAY_MS,
)
FACES = Topic("faces", 8, "gate_id", "aligned face crops with landmarks and quality", DAY_MS)
VERDICTS = Topic(
    "verdicts", 4, "exam_id", "accept / reject / review with scores and reasons", 14 * DAY_MS
)
FEEDBACK = Topic("feedback", 2, "exam_id", "proctor decisions on verdicts")
DRIFT = Topic("drift", 1, "gate_id", "windowed drift reports")
ENROLLMENTS = Topic("enrollments", 2, "student_id", "gallery changes: enrolments and removals")
MODEL_EVENTS = Topic(
    "model-events", 1, "model name", "registry alias changes: canary, promote, roll back"
)

ALL_TOPICS: tuple[Topic, ...] = (
    FRAMES,
    FRAMES_DLQ,
    FACES,
    VERDICTS,
    FEEDBACK,
    DRIFT,
    ENROLLMENTS,
    MODEL_EVENTS,
)


def message_type(topic: Topic) -> type[Message]:
    """The message definition a topic carries."""
    from schemas import messages

    types: dict[str, type[Message]] = {
        FRAMES.name: messages.Frame,
        FRAMES_DLQ.name: messages.DeadLetter,
        FACES.name: messages.Face,
        VERDICTS.name: messages.Verdict,
        FEEDBACK.name: messages.Feedback,
        DRIFT.name: messages.DriftReport,
        ENROLLMENTS.name: messages.Enrollment,
        MODEL_EVENTS.name: messages.ModelEvent,
    }
    return types[topic.name]
