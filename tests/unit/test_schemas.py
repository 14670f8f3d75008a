"""Message contract: round trips, previous versions still readable, bad input refused."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from schemas.codec import Message, SchemaError, decode, encode, encode_version, peek_schema
from schemas.messages import (
    ALL_MESSAGES,
    DeadLetter,
    DriftReport,
    Enrollment,
    Face,
    FaceCrop,
    Feedback,
    Frame,
    Match,
    ModelEvent,
    Verdict,
)
from schemas.topics import ALL_TOPICS, message_type

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


def current_examples() -> list[Message]:
    """One filled-in message of every kind, at the current version."""
    return [
        Frame(
            frame_id="f1",
            gate_id="g1",
            exam_id="e1",
            claimed_student_id="s1",
            captured_at=1.5,
            published_at=1.6,
            source="simulator",
            image=JPEG,
        ),
        Face(
            frame_id="f1",
            gate_id="g1",
            exam_id="e1",
            claimed_student_id="s1",
            captured_at=1.5,
            outcome="face",
            face_count=1,
            box=[1, 2, 3, 4],
            landmarks=[[1.0, 2.0]] * 5,
            detection_score=0.99,
            quality_ok=True,
            quality={"blur": 120.0},
            crops=[FaceCrop(template="dlib150", width=2, height=1, pixels=bytes(6))],
            timings_ms={"detect": 20.0},
        ),
        Verdict(
            frame_id="f1",
            gate_id="g1",
            exam_id="e1",
            claimed_student_id="s1",
            captured_at=1.5,
            decided_at=1.7,
            decision="accept",
            reason="match",
            score=0.8,
            threshold=0.5,
            top_matches=[Match(student_id="s1", score=0.8)],
            model_name="m",
            model_version="1",
            thumbnail=JPEG,
        ),
        Feedback(
            feedback_id="b1",
            frame_id="f1",
            exam_id="e1",
            gate_id="g1",
            student_id="s1",
            proctor="alice",
            action="impostor",
            verdict_decision="accept",
            model_version="1",
            decided_at=2.0,
        ),
        DriftReport(
            report_id="r1",
            gate_id="g1",
            model_version="1",
            window_start=0,
            window_end=60,
            samples=10,
            statistics={"genuine_score_mean": 0.7},
            thresholds={"x": 1.0},
        ),
        Enrollment(student_id="s1", action="enrolled", model_version="1", template_count=3, at=1),
        ModelEvent(
            model_name="m", version="2", alias="canary", action="set", canary_share=0.1, at=1
        ),
        DeadLetter(
            source_topic="frames",
            partition=0,
            offset=5,
            key=b"g1",
            reason="undecodable",
            detail="x",
            service="stream",
            failed_at=1.0,
            payload=b"junk",
            frame_id=None,
        ),
    ]


def previous_version(message: Message) -> dict[str, Any]:
    """The same message as the previous schema version wrote it (the inverse of UPGRADES)."""
    data = message.model_dump(mode="python")
    if isinstance(message, Frame):
        data["student_id"] = data.pop("claimed_student_id")
        data.pop("source")
    elif isinstance(message, Face):
        data.pop("timings_ms")
    elif isinstance(message, Verdict):
        data.pop("thumbnail")
    elif isinstance(message, Feedback):
        data["user"] = data.pop("proctor")
    elif isinstance(message, DriftReport | Enrollment):
        data.pop("model_version")
    elif isinstance(message, ModelEvent):
        data.pop("canary_share")
    elif isinstance(message, DeadLetter):
        data.pop("frame_id")
    return data


def test_every_message_kind_has_an_example() -> None:
    assert {type(m) for m in current_examples()} == set(ALL_MESSAGES)
    assert {message_type(t) for t in ALL_TOPICS} == set(ALL_MESSAGES)


@pytest.mark.parametrize("message", current_examples(), ids=lambda m: m.SCHEMA)
def test_round_trip(message: Message) -> None:
    raw = encode(message)
    assert decode(raw, type(message)) == message
    assert peek_schema(raw) == (message.SCHEMA, message.VERSION)


@pytest.mark.parametrize("message", current_examples(), ids=lambda m: m.SCHEMA)
def test_previous_version_is_still_readable(message: Message) -> None:
    old = encode_version(message.SCHEMA, message.VERSION - 1, previous_version(message))
    upgraded = decode(old, type(message))
    expected = message
    if isinstance(message, Frame):
        expected = message.model_copy(update={"source": "camera"})
    elif isinstance(message, Face):
        expected = message.model_copy(update={"timings_ms": {}})
    elif isinstance(message, Verdict):
        expected = message.model_copy(update={"thumbnail": None})
    elif isinstance(message, DriftReport | Enrollment):
        expected = message.model_copy(update={"model_version": "unknown"})
    elif isinstance(message, ModelEvent):
        expected = message.model_copy(update={"canary_share": None})
    assert upgraded == expected


def test_image_bytes_travel_without_inflation() -> None:
    frame = current_examples()[0]
    assert isinstance(frame, Frame)
    # msgpack bin: the image costs its own size plus a few header bytes, not 4/3 of it.
    assert len(encode(frame)) < len(frame.image) + 300


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty_message"),
        (b"\x00\x01garbage\xff", "undecodable"),
        (msgpack.packb([1, 2, 3]), "bad_envelope"),
        (encode_version("verdict", 2, {}), "wrong_schema"),
        (encode_version("frame", 3, {}), "unsupported_version"),
        (encode_version("frame", 0, {}), "bad_version"),
        (encode_version("frame", 2, {"frame_id": "x"}), "invalid"),
        (b"\x00" * (17 * 1024 * 1024), "oversized"),
    ],
)
def test_bad_input_is_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(SchemaError) as error:
        decode(raw, Frame)
    assert error.value.reason == reason


def test_missing_field_names_the_field() -> None:
    data = current_examples()[0].model_dump()
    del data["gate_id"]
    with pytest.raises(SchemaError, match="gate_id"):
        decode(encode_version("frame", 2, data), Frame)


def test_unknown_fields_are_refused() -> None:
    data = {**current_examples()[0].model_dump(), "surprise": 1}
    with pytest.raises(SchemaError) as error:
        decode(encode_version("frame", 2, data), Frame)
    assert error.value.reason == "invalid"
