"""The camera client without Kafka: sources, pacing, card readers and the --dry-run command.

Images and a video are written into tmp_path with OpenCV.  ``ListSink`` collects frames in
place of Kafka, and ``FakeClock`` makes pacing exact and instant (fakes, said so); one test
paces on the real clock.  The live-camera test uses a scripted stand-in for a webcam.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facegate.errors import FacegateError
from producers.camera import (
    FixedCard,
    FolderSource,
    ScheduledCards,
    StreamCardReader,
    open_source,
    paced_frames,
    run_camera,
)
from producers.cli import camera_command
from schemas.messages import Frame


class ListSink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def publish(self, frame: Frame) -> None:
        self.frames.append(frame)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def _gray(level: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.full((*size, 3), level, dtype=np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    # Written out of order, with a non-image among them.
    for k in (3, 0, 4, 1, 2):
        cv2.imwrite(str(images / f"img_{k}.png"), _gray(40 * k + 20))
    (images / "notes.txt").write_text("not an image")
    return images


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (64, 48))
    assert writer.isOpened()
    for k in range(30):  # one second; frame k has gray level 8k
        writer.write(_gray(8 * k))
    writer.release()
    return path


def test_folder_frames_come_in_file_name_order(folder: Path) -> None:
    clock = FakeClock()
    frames = list(paced_frames(open_source(str(folder)), fps=4, clock=clock, sleep=clock.sleep))
    levels = [int(f.rgb.mean()) for f in frames]
    assert levels == [20, 60, 100, 140, 180]
    assert [f.stream_time_s for f in frames] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert clock.slept == pytest.approx(1.0)


def test_images_are_rgb(tmp_path: Path) -> None:
    bgr_red = np.zeros((8, 8, 3), dtype=np.uint8)
    bgr_red[..., 2] = 255
    cv2.imwrite(str(tmp_path / "red.png"), bgr_red)
    source = FolderSource(tmp_path)
    assert source.grab()
    rgb = source.retrieve()
    assert rgb is not None and rgb[0, 0].tolist() == [255, 0, 0]


def test_a_video_file_is_read_at_the_chosen_rate(video: Path) -> None:
    clock = FakeClock()
    source = open_source(str(video))
    assert not source.live and source.frame_period_s == pytest.approx(1 / 30)
    frames = list(paced_frames(source, fps=5, clock=clock, sleep=clock.sleep))
    # Every sixth frame of a 30 fps second, at 0.2 s intervals.
    assert [f.index for f in frames] == [0, 6, 12, 18, 24]
    assert [round(f.stream_time_s, 3) for f in frames] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert [round(f.rgb.mean() / 8) for f in frames] == [0, 6, 12, 18, 24]
    assert clock.slept == pytest.approx(0.8)
    source.close()


def test_pacing_on_the_real_clock(folder: Path) -> None:
    started = time.monotonic()
    frames = list(paced_frames(open_source(str(folder)), fps=20))
    elapsed = time.monotonic() - started
    assert len(frames) == 5
    assert 0.19 <= elapsed < 1.0  # four periods of 50 ms


class ScriptedWebcam:
    """A live source delivering 30 frames per second on the fake clock."""

    live = True
    frame_period_s: float | None = None
    description = "scripted webcam"

    def __init__(self, clock: FakeClock, frames: int) -> None:
        self.clock, self.left = clock, frames

    def grab(self) -> bool:
        self.clock.now += 1 / 30
        self.left -= 1
        return self.left >= 0

    def retrieve(self) -> np.ndarray:
        return _gray(100)

    def close(self) -> None:
        pass


def test_a_live_camera_is_throttled_by_dropping_frames() -> None:
    clock = FakeClock()
    frames = list(paced_frames(ScriptedWebcam(clock, 59), fps=3, clock=clock, sleep=clock.sleep))
    assert clock.slept == 0  # a live camera is never waited for
    assert len(frames) == 6  # just under two seconds at 3 fps: ticks 0, 1/3, ... 5/3
    gaps = np.diff([f.stream_time_s for f in frames])
    assert np.allclose(gaps, 1 / 3, atol=1 / 30 + 1e-9)


def test_frames_are_tagged(folder: Path) -> None:
    clock = FakeClock()
    sink = ListSink()
    before = time.time()
    sent = run_camera(
        open_source(str(folder)),
        sink,
        gate_id="gate-7",
        exam_id="chem-2",
        card=FixedCard("s123"),
        fps=10,
        max_frames=3,
        clock=clock,
        sleep=clock.sleep,
    )
    assert sent == 3 and len(sink.frames) == 3
    for frame in sink.frames:
        assert (frame.gate_id, frame.exam_id, frame.claimed_student_id) == (
            "gate-7",
            "chem-2",
            "s123",
        )
        assert frame.source == "camera" and frame.image[:2] == b"\xff\xd8"
        assert before <= frame.captured_at <= time.time()
    assert len({f.frame_id for f in sink.frames}) == 3


def test_card_swipes_from_a_schedule(folder: Path, tmp_path: Path) -> None:
    schedule = tmp_path / "swipes.csv"
    schedule.write_text("at_seconds,student_id\n1.0,s-bob\n0,s-ann\n2.5,\n3,s-cy\n")
    card = ScheduledCards.from_csv(schedule)
    clock = FakeClock()
    sink = ListSink()
    run_camera(
        open_source(str(folder)), sink, "g", "e", card, fps=1, clock=clock, sleep=clock.sleep
    )
    # Images are at 0, 1, 2, 3, 4 s on the stream's clock.
    assert [f.claimed_student_id for f in sink.frames] == [
        "s-ann",
        "s-bob",
        "s-bob",
        "s-cy",
        "s-cy",
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("time,student\n1,x\n")
    with pytest.raises(FacegateError, match="at_seconds,student_id"):
        ScheduledCards.from_csv(bad)
    bad.write_text("at_seconds,student_id\nsoon,x\n")
    with pytest.raises(FacegateError, match=r"bad.csv:2"):
        ScheduledCards.from_csv(bad)


def _wait_for(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_card_swipes_from_a_stream_apply_to_the_following_frames(folder: Path) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "r") as incoming, os.fdopen(write_end, "w") as swipes:
        reader = StreamCardReader(incoming)
        assert reader.claimed(0.0) is None
        swipes.write("s-ann\n")
        swipes.flush()
        _wait_for(lambda: reader.claimed(0.0) == "s-ann")
        sink = ListSink()
        run_camera(FolderSource(folder), sink, "g", "e", reader, fps=1000, max_frames=2)
        swipes.write("\n-\n")  # a stray Enter is ignored; "-" takes the card away
        swipes.flush()
        _wait_for(lambda: reader.swipes == 2)
        run_camera(FolderSource(folder), sink, "g", "e", reader, fps=1000, max_frames=1)
        swipes.write("s-bob\n")
        swipes.flush()
        _wait_for(lambda: reader.claimed(0.0) == "s-bob")
        run_camera(FolderSource(folder), sink, "g", "e", reader, fps=1000, max_frames=1)
    assert [f.claimed_student_id for f in sink.frames] == ["s-ann", "s-ann", None, "s-bob"]
    assert reader.wait_closed(5.0)


def test_dry_run_prints_frames_without_kafka(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: a connection attempt would fail after a long timeout.
    monkeypatch.setenv("FACEGATE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    started = time.monotonic()
    result = CliRunner().invoke(
        camera_command,
        [
            str(folder),
            "--gate",
            "gate-1",
            "--exam",
            "bio-1",
            "--student",
            "s42",
            "--fps",
            "50",
            "--max-frames",
            "3",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("frame ")]
    assert len(lines) == 3
    assert all("gate=gate-1 exam=bio-1 claimed=s42" in line for line in lines)
    assert "sent 3 frames" in result.output
    assert time.monotonic() - started < 5


def test_stdin_card_reader_through_the_command(folder: Path) -> None:
    result = CliRunner().invoke(
        camera_command,
        [str(folder), "--gate", "g", "--exam", "e", "--stdin", "--fps", "50", "--dry-run"],
        input="",
    )
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("frame ") for line in result.output.splitlines()) == 5


def test_bad_sources_and_options(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(FacegateError, match="neither"):
        open_source(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FacegateError, match="no images"):
        open_source(str(empty))
    result = CliRunner().invoke(
        camera_command,
        [str(folder), "--gate", "g", "--exam", "e", "--student", "s", "--stdin", "--dry-run"],
    )
    assert result.exit_code != 0 and "at most one" in result.output
