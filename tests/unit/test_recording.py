"""The recording file format and replay's timing, without a broker.

``ListSink`` stands in for the publisher and ``FakeClock`` for time (fakes, said so); replay
against the real broker is tested in tests/integration/test_replay.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facegate.errors import FacegateError
from producers.replay import RecordingWriter, iter_recording, read_header, replay
from schemas.codec import encode
from schemas.messages import Frame


class ListSink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.raw: list[tuple[bytes | None, bytes]] = []

    def publish(self, frame: Frame) -> None:
        self.frames.append(frame)

    def publish_raw(self, key: bytes | None, value: bytes) -> None:
        self.raw.append((key, value))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _frame(k: int, captured_at: float) -> Frame:
    return Frame(
        frame_id=f"f{k}",
        gate_id="gate-1",
        exam_id="e",
        claimed_student_id="s1",
        captured_at=captured_at,
        published_at=captured_at,
        source="simulator",
        image=b"\xff\xd8jpeg",
    )


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "day.rec"
    with RecordingWriter(path, source="simulator") as writer:
        for k, t in enumerate([1000.0, 1002.0, 1003.0]):
            writer.write(t, b"gate-1", encode(_frame(k, t)))
        writer.write(1004.0, b"gate-1", b"not a frame envelope")
    return path


def test_the_format_is_a_json_header_then_msgpack_records(recording: Path) -> None:
    with open(recording, "rb") as handle:
        header = json.loads(handle.readline())
    assert header["format"] == "facegate-frames-recording" and header["version"] == 1
    assert read_header(recording)["source"] == "simulator"
    records = list(iter_recording(recording))
    assert [r.t for r in records] == [1000.0, 1002.0, 1003.0, 1004.0]
    assert records[-1].value == b"not a frame envelope"


def test_a_recording_cut_short_reads_up_to_its_last_whole_record(recording: Path) -> None:
    data = recording.read_bytes()
    recording.write_bytes(data[:-5])
    assert [r.t for r in iter_recording(recording)] == [1000.0, 1002.0, 1003.0]


def test_a_file_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"frame_id": "x"}\n')
    with pytest.raises(FacegateError, match="not a FaceGate frames recording"):
        read_header(other)


def test_replay_keeps_the_timing_divided_by_speed(recording: Path) -> None:
    clock, sink = FakeClock(), ListSink()
    report = replay(recording, sink, speed=2.0, clock=clock, sleep=clock.sleep)
    # Records at 0, 2, 3, 4 s; at twice the speed they go at 0, 1, 1.5, 2 s.
    assert clock.sleeps == pytest.approx([1.0, 0.5, 0.5])
    assert report.frames == 3 and report.raw_records == 1
    assert sink.raw == [(b"gate-1", b"not a frame envelope")]
    assert [f.frame_id for f in sink.frames] != ["f0", "f1", "f2"]
    assert list(report.new_ids) == ["f0", "f1", "f2"]
    assert [f.frame_id for f in sink.frames] == list(report.new_ids.values())
    assert all(f.source == "replay" and f.captured_at > 1e9 for f in sink.frames)


def test_replay_at_speed_zero_and_with_the_original_ids(recording: Path) -> None:
    clock, sink = FakeClock(), ListSink()
    report = replay(recording, sink, speed=0, new_ids=False, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []
    assert [f.frame_id for f in sink.frames] == ["f0", "f1", "f2"]
    assert report.new_ids == {"f0": "f0", "f1": "f1", "f2": "f2"}
