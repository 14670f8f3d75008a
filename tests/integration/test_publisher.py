"""FramePublisher against the real broker: frames go out keyed by gate and come back whole."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from prometheus_client import REGISTRY

from facegate.errors import FacegateError
from facegate.settings import KafkaSettings, load_settings
from facegate.stack import LocalStack
from producers.publisher import FramePublisher, encode_image
from producers.settings import ProducerSettings
from schemas.topics import FRAMES
from tests.integration.frame_helpers import make_frame, read_frames

pytestmark = pytest.mark.integration


def test_published_frames_come_back_whole(local_stack: LocalStack) -> None:
    exam = f"exam-{uuid.uuid4().hex[:8]}"
    rgb = np.random.default_rng(0).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    jpeg = encode_image(rgb, quality=85)
    frames = [make_frame(exam, gate, jpeg) for gate in ("gate-a", "gate-b", "gate-a")]
    with FramePublisher(load_settings(ProducerSettings)) as publisher:
        landed = [publisher.publish(frame) for frame in frames]
    assert all(meta.topic == FRAMES.name for meta in landed)
    # Keyed by gate: one gate's frames share a partition.
    assert landed[0].partition == landed[2].partition

    found = read_frames(KafkaSettings(), [f.frame_id for f in frames])
    for frame, meta in zip(frames, landed, strict=True):
        partition, key, back = found[frame.frame_id]
        assert partition == meta.partition
        assert key == frame.gate_id.encode()
        assert back.image == jpeg
        assert (back.gate_id, back.exam_id, back.claimed_student_id) == (
            frame.gate_id,
            exam,
            "s-test",
        )
        assert back.published_at >= frame.captured_at


def test_an_oversized_frame_is_refused_and_not_published(local_stack: LocalStack) -> None:
    exam = f"exam-{uuid.uuid4().hex[:8]}"
    settings = load_settings(ProducerSettings, max_frame_bytes=2000)
    oversized = make_frame(exam, "gate-big", b"\xff\xd8" + bytes(2000))
    sentinel = make_frame(exam, "gate-big", b"\xff\xd8" + bytes(100))

    def frames(outcome: str) -> float:
        labels = {"gate_id": "gate-big", "outcome": outcome}
        return REGISTRY.get_sample_value("facegate_producer_frames_total", labels) or 0.0

    before = {outcome: frames(outcome) for outcome in ("refused", "published")}
    with FramePublisher(settings) as publisher:
        with pytest.raises(FacegateError, match=r"image is 2002 bytes, over the limit of 2000"):
            publisher.publish(oversized)
        publisher.publish(sentinel)
    assert frames("refused") == before["refused"] + 1
    assert frames("published") == before["published"] + 1
    # The sentinel went after it on the same partition: once it is read, nothing else is coming.
    found = read_frames(KafkaSettings(), [sentinel.frame_id])
    assert sentinel.frame_id in found
    assert oversized.frame_id not in found
