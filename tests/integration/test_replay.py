"""Record the frames topic, replay it as fast as possible and sped up, on the real broker."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from facegate.settings import KafkaSettings, load_settings
from facegate.stack import LocalStack
from producers.publisher import FramePublisher, encode_image
from producers.replay import iter_recording, read_header, record_topic, replay
from producers.settings import ProducerSettings
from schemas.codec import decode
from schemas.messages import Frame, now
from tests.integration.frame_helpers import make_frame, read_frames

pytestmark = pytest.mark.integration

# Captured 0.6 s apart: 1.8 s from first to last.
GAPS_S = [0.0, 0.6, 1.2, 1.8]


def test_record_then_replay(local_stack: LocalStack, tmp_path: Path) -> None:
    exam = f"exam-{uuid.uuid4().hex[:8]}"
    settings = load_settings(ProducerSettings)
    jpeg = encode_image(np.full((60, 80, 3), 128, dtype=np.uint8))
    base = now() - 60
    originals = [
        make_frame(exam, f"gate-{k % 2}", jpeg, captured_at=base + gap)
        for k, gap in enumerate(GAPS_S)
    ]
    with FramePublisher(settings) as publisher:
        for frame in originals:
            publisher.publish(frame)

    path = tmp_path / "frames.rec"
    count = record_topic(settings, path, duration_s=30, max_frames=4, exam_id=exam)
    assert count == 4
    assert read_header(path)["source"] == "topic"
    recorded = list(iter_recording(path))
    assert [r.t - base for r in recorded] == pytest.approx(GAPS_S)
    assert {decode(r.value, Frame).frame_id for r in recorded} == {f.frame_id for f in originals}

    with FramePublisher(settings) as publisher:
        fast = replay(path, publisher, speed=0)
        sped_up = replay(path, publisher, speed=3)
    assert fast.frames == sped_up.frames == 4
    assert fast.elapsed_s < 1.0
    # 1.8 s at three times the speed: 0.6 s, plus a few publish round trips.
    assert 0.6 * 0.95 <= sped_up.elapsed_s < 0.6 + 0.5

    # New ids, distinct between the two replays and from the originals.
    new_ids = [*fast.new_ids.values(), *sped_up.new_ids.values()]
    assert len(set(new_ids)) == 8
    assert not set(new_ids) & {f.frame_id for f in originals}

    found = read_frames(KafkaSettings(), new_ids)
    by_original = {f.frame_id: f for f in originals}
    for report in (fast, sped_up):
        replayed = [found[report.new_ids[f.frame_id]][2] for f in originals]
        for original, again in zip(originals, replayed, strict=True):
            assert again.source == "replay"
            assert (again.gate_id, again.exam_id, again.image) == (
                original.gate_id,
                exam,
                by_original[original.frame_id].image,
            )
            assert again.captured_at > original.captured_at + 30
        if report is sped_up:
            gaps = np.diff([f.captured_at for f in replayed])
            assert gaps == pytest.approx(np.diff(GAPS_S) / 3, abs=0.1)
