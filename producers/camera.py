"""The gate camera client: frames from a camera, a file or a folder, tagged and paced.

Sources (``open_source``), all read through OpenCV except folders:
- a webcam device index (``0``), an RTSP/HTTP URL (``rtsp://...``): live; frames come at the
  camera's rate and those that arrive before the next tick of ``fps`` are dropped (a live
  camera cannot be made to wait, and its buffer must be drained to stay current);
- a video file: read at the chosen ``fps`` in real time, frames between ticks skipped (a 30 fps
  video at ``--fps 2`` gives every 15th frame, one every 0.5 s);
- a folder of images: every image, in sorted file-name order, one per tick.

The claimed student comes from a card reader (``CardReader``): a fixed student, a schedule
CSV, or swipes read line by line from stdin.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import cv2
import numpy as np
import numpy.typing as npt

from facegate.errors import FacegateError
from producers.publisher import FrameSink, encode_image
from schemas.messages import Frame, new_id, now

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Some containers do not say their frame rate; PAL's is the commonest guess.
FALLBACK_VIDEO_FPS = 25.0
# Float frame times (15 * 1/30) land a hair below the tick they belong to.
_TICK_EPSILON_S = 1e-6

RGBImage = npt.NDArray[np.uint8]


class FrameSource(Protocol):
    """Frames one at a time, like ``cv2.VideoCapture``: ``grab`` advances, ``retrieve`` decodes.

    ``live`` sources run on their own clock; recorded ones (files, folders) are paced by the
    reader.  ``frame_period_s`` is the time between a recorded source's frames, or None when
    each frame is one tick (folders).
    """

    live: bool
    frame_period_s: float | None
    description: str

    def grab(self) -> bool:
        """Advance to the next frame; False at the end."""

    def retrieve(self) -> RGBImage | None:
        """The current frame as RGB, or None when it cannot be read."""

    def close(self) -> None:
        """Release the device or file."""


class VideoCaptureSource:
    """A webcam, an RTSP/HTTP stream or a video file, through ``cv2.VideoCapture``."""

    def __init__(self, target: int | str, live: bool) -> None:
        self.description = f"camera {target}" if isinstance(target, int) else str(target)
        self._capture = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            raise FacegateError(f"cannot open video source {self.description}")
        self.live = live
        self.frame_period_s: float | None = None
        if not live:
            fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
            self.frame_period_s = 1.0 / (
                fps if fps > 0 and np.isfinite(fps) else FALLBACK_VIDEO_FPS
            )

    def grab(self) -> bool:
        return bool(self._capture.grab())

    def retrieve(self) -> RGBImage | None:
        ok, bgr = self._capture.retrieve()
        if not ok or bgr is None:
            return None
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)

    def close(self) -> None:
        self._capture.release()


class FolderSource:
    """The images of a folder in sorted file-name order, one frame each."""

    live = False
    frame_period_s: float | None = None

    def __init__(self, folder: Path) -> None:
        self.description = str(folder)
        self.paths = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.paths:
            raise FacegateError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        self._position = -1

    def grab(self) -> bool:
        self._position += 1
        return self._position < len(self.paths)

    def retrieve(self) -> RGBImage | None:
        path = self.paths[self._position]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            log.warning("skipping %s: not a readable image", path)
            return None
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)

    def close(self) -> None:
        pass


def open_source(spec: str) -> FrameSource:
    """A source from its command-line form: device index, URL, video file or image folder."""
    if spec.isdigit():
        return VideoCaptureSource(int(spec), live=True)
    if "://" in spec:
        return VideoCaptureSource(spec, live=True)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return VideoCaptureSource(str(path), live=False)
    raise FacegateError(
        f"source {spec!r} is neither a device index, a URL, a video file nor a folder"
    )


@dataclass(frozen=True)
class CapturedFrame:
    """A frame as read from a source: pixels and where it sits in the stream."""

    rgb: RGBImage
    index: int  # position in the source, counting skipped frames
    stream_time_s: float  # video position, elapsed time (live) or tick time (folder)


def paced_frames(
    source: FrameSource,
    fps: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[CapturedFrame]:
    """Frames from ``source`` at most ``fps`` per second, paced in real time (see module doc)."""
    if fps <= 0:
        raise ValueError("fps must be positive")
    period = 1.0 / fps
    start = clock()
    next_due = 0.0
    index = -1
    while source.grab():
        index += 1
        if source.live:
            stream_time = clock() - start
            if stream_time + _TICK_EPSILON_S < next_due:
                continue
            # After a stall, restart the ticks from now instead of bursting to catch up.
            next_due = max(next_due + period, stream_time + period / 2)
        else:
            if source.frame_period_s is None:
                stream_time = next_due
            else:
                stream_time = index * source.frame_period_s
                if stream_time + _TICK_EPSILON_S < next_due:
                    continue
            delay = start + stream_time - clock()
            if delay > 0:
                sleep(delay)
            next_due += period
        rgb = source.retrieve()
        if rgb is not None:
            yield CapturedFrame(rgb=rgb, index=index, stream_time_s=stream_time)


# ---- card readers ---------------------------------------------------------------------------


class CardReader(Protocol):
    """Who the student's card says they are, at a moment of the stream."""

    def claimed(self, stream_time_s: float) -> str | None:
        """The claimed student id, or None when no card has been read."""


@dataclass(frozen=True)
class FixedCard:
    """The same claimed student for every frame (``--student``), or none."""

    student_id: str | None

    def claimed(self, stream_time_s: float) -> str | None:
        return self.student_id


class ScheduledCards:
    """Swipes at known stream times, from a CSV with the columns ``at_seconds,student_id``.

    ``at_seconds`` is measured on the stream's clock (video position, seconds since the camera
    started, or tick time of a folder: image ``i`` is at ``i / fps``).  Each row holds from its
    time until the next row; an empty ``student_id`` means the card was taken away.
    """

    def __init__(self, swipes: list[tuple[float, str | None]]) -> None:
        self.swipes = sorted(swipes, key=lambda swipe: swipe[0])

    @classmethod
    def from_csv(cls, path: Path) -> ScheduledCards:
        """Read a schedule file; errors name the line."""
        swipes: list[tuple[float, str | None]] = []
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            if not {"at_seconds", "student_id"} <= columns:
                raise FacegateError(
                    f"{path}: expected the header at_seconds,student_id, got {sorted(columns)}"
                )
            for row in reader:
                try:
                    at = float(row["at_seconds"])
                except (TypeError, ValueError):
                    raise FacegateError(
                        f"{path}:{reader.line_num}: at_seconds {row['at_seconds']!r} is not a "
                        "number"
                    ) from None
                student = (row["student_id"] or "").strip() or None
                swipes.append((at, student))
        return cls(swipes)

    def claimed(self, stream_time_s: float) -> str | None:
        current: str | None = None
        for at, student in self.swipes:
            if at > stream_time_s + _TICK_EPSILON_S:
                break
            current = student
        return current


class StreamCardReader:
    """Card swipes typed or piped in, one per line: each applies to the frames that follow.

    A keyboard-wedge card reader types the card number and Enter, so a line is a swipe.  Blank
    lines are ignored; a line ``-`` means the card was taken away.  Lines are read on a
    background thread so that the camera never waits for a swipe.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._current: str | None = None
        self.swipes = 0
        self._thread = threading.Thread(target=self._read, name="card-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in iter(self._stream.readline, ""):
            value = line.strip()
            if not value:
                continue
            with self._lock:
                self._current = None if value == "-" else value
                self.swipes += 1
            log.info("card swipe: %s", value)

    def claimed(self, stream_time_s: float) -> str | None:
        with self._lock:
            return self._current

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait until the input has ended; True if it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


# ---- the camera loop ------------------------------------------------------------------------


def run_camera(
    source: FrameSource,
    sink: FrameSink,
    gate_id: str,
    exam_id: str,
    card: CardReader,
    fps: float,
    jpeg_quality: int = 90,
    max_frames: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send frames from ``source`` to ``sink`` until it ends or ``max_frames``; return the count."""
    sent = 0
    if max_frames is not None and max_frames <= 0:
        return sent
    for captured in paced_frames(source, fps, clock=clock, sleep=sleep):
        captured_at = now()
        frame = Frame(
            frame_id=new_id(),
            gate_id=gate_id,
            exam_id=exam_id,
            claimed_student_id=card.claimed(captured.stream_time_s),
            captured_at=captured_at,
            published_at=captured_at,
            source="camera",
            image=encode_image(captured.rgb, jpeg_quality),
        )
        sink.publish(frame)
        sent += 1
        if max_frames is not None and sent >= max_frames:
            break
    return sent
