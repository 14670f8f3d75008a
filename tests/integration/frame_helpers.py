"""Helpers of the producer integration tests: frames of a test's own exam, read back by id."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import TopicPartition

from facegate.kafka_clients import make_consumer
from facegate.settings import KafkaSettings
from schemas.codec import SchemaError, decode
from schemas.messages import Frame, new_id, now
from schemas.topics import FRAMES


def make_frame(exam_id: str, gate_id: str, image: bytes, captured_at: float | None = None) -> Frame:
    """A frame of the test's own exam, so that it can be told from other tests' frames."""
    at = now() if captured_at is None else captured_at
    return Frame(
        frame_id=new_id(),
        gate_id=gate_id,
        exam_id=exam_id,
        claimed_student_id="s-test",
        captured_at=at,
        published_at=at,
        source="test",
        image=image,
    )


def read_frames(
    settings: KafkaSettings, frame_ids: Iterable[str], timeout_s: float = 20.0
) -> dict[str, tuple[int, bytes | None, Frame]]:
    """Frames with these ids, read from the start of the topic: id -> (partition, key, frame)."""
    wanted = set(frame_ids)
    consumer = make_consumer(settings, group_id=None)
    try:
        partitions = [TopicPartition(FRAMES.name, p) for p in range(FRAMES.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: dict[str, tuple[int, bytes | None, Frame]] = {}
        deadline = time.monotonic() + timeout_s
        while not wanted <= found.keys() and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    # Other tests of the session share the topic, bad frames included.
                    try:
                        frame = decode(record.value, Frame)
                    except SchemaError:
                        continue
                    if frame.frame_id in wanted:
                        found[frame.frame_id] = (tp.partition, record.key, frame)
        return found
    finally:
        consumer.close()
