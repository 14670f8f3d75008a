"""Gate frames of real photos, published through the producers' own publisher."""

from __future__ import annotations

from pathlib import Path

from producers.publisher import FramePublisher
from producers.settings import ProducerSettings
from schemas.messages import Frame, new_id, now


def frames_of(photos: list[tuple[str, Path]], exam_id: str, gates: int = 3) -> list[Frame]:
    """Gate frames of real photos, each claiming the student in the photo."""
    return [
        Frame(
            frame_id=new_id(),
            gate_id=f"gate-{i % gates}",
            exam_id=exam_id,
            claimed_student_id=student,
            captured_at=now(),
            published_at=now(),
            source="test",
            image=path.read_bytes(),
        )
        for i, (student, path) in enumerate(photos)
    ]


def publish(frames: list[Frame]) -> set[str]:
    """Publish frames and wait for the broker's acknowledgements; return their ids."""
    with FramePublisher(ProducerSettings()) as publisher:
        for frame in frames:
            publisher.publish(frame)
    return {f.frame_id for f in frames}
