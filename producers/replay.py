"""Record the ``frames`` topic to a file and replay it, with its original timing or faster.

Recording file format (version 1):

- line 1: a JSON header ending in ``\\n``:
  ``{"format": "facegate-frames-recording", "version": 1, "topic": "frames",
  "source": "topic" | "simulator", "created_at": <epoch seconds>}``;
- then, until the end of the file, msgpack maps one after another, one per record:
  ``{"t": <captured_at, epoch seconds, float>, "key": <bytes or nil>, "value": <bytes>}``
  where ``value`` is the record's raw value exactly as on the topic (a Frame envelope,
  ``schemas.codec``), and ``t`` is the frame's ``captured_at`` (the broker timestamp for a
  record that does not decode).

Records are appended and flushed one at a time, so a recording cut short (Ctrl+C, a crash) is
readable up to its last whole record.  Replay takes the time between records from ``t``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol

import msgpack
from kafka import TopicPartition

from facegate.errors import FacegateError
from facegate.kafka_clients import make_consumer
from producers.settings import ProducerSettings
from schemas.codec import SchemaError, decode
from schemas.messages import Frame, new_id, now
from schemas.topics import FRAMES

log = logging.getLogger(__name__)

RECORDING_FORMAT = "facegate-frames-recording"
RECORDING_VERSION = 1


@dataclass(frozen=True)
class RecordedFrame:
    """One record of a recording."""

    t: float
    key: bytes | None
    value: bytes


class RecordingWriter:
    """Writes a recording: the header at once, then one record per ``write``."""

    def __init__(self, path: Path, source: Literal["topic", "simulator"]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.count = 0
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 (closed by close())
        header = {
            "format": RECORDING_FORMAT,
            "version": RECORDING_VERSION,
            "topic": FRAMES.name,
            "source": source,
            "created_at": now(),
        }
        self._file.write(json.dumps(header).encode() + b"\n")
        self._file.flush()

    def write(self, t: float, key: bytes | None, value: bytes) -> None:
        """Append one record."""
        self._file.write(msgpack.packb({"t": t, "key": key, "value": value}, use_bin_type=True))
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_header(path: Path) -> dict[str, Any]:
    """A recording's header; FacegateError if the file is not a recording."""
    with open(path, "rb") as handle:
        return _header(handle, path)


def _header(handle: IO[bytes], path: Path) -> dict[str, Any]:
    line = handle.readline(64 * 1024)
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != RECORDING_FORMAT:
        raise FacegateError(f"{path} is not a FaceGate frames recording")
    if header.get("version") != RECORDING_VERSION:
        raise FacegateError(f"{path}: recording version {header.get('version')} is not supported")
    return header


def iter_recording(path: Path) -> Iterator[RecordedFrame]:
    """The records of a recording in file order; a cut-off last record is dropped."""
    with open(path, "rb") as handle:
        _header(handle, path)
        # Iteration ends at the end of the file; an incomplete last record is never yielded.
        unpacker = msgpack.Unpacker(handle, raw=False, max_buffer_size=64 * 1024 * 1024)
        for item in unpacker:
            if not isinstance(item, dict) or not {"t", "key", "value"} <= item.keys():
                raise FacegateError(f"{path}: a record is not a {{t, key, value}} map")
            yield RecordedFrame(float(item["t"]), item["key"], item["value"])


# ---- recording the topic --------------------------------------------------------------------


def record_topic(
    settings: ProducerSettings,
    path: Path,
    duration_s: float | None = None,
    max_frames: int | None = None,
    gate_id: str | None = None,
    exam_id: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Copy ``frames`` from its beginning into a recording; return the number of records.

    Stops after ``duration_s`` seconds or ``max_frames`` records, whichever comes first (with
    neither, at Ctrl+C).  The consumer joins no group: it is assigned every partition and
    reads from the start, so recording never moves any service's offsets.  With ``gate_id``
    or ``exam_id``, only frames of that gate or exam are kept (and records that do not decode
    are left out).
    """
    consumer = make_consumer(settings.kafka, group_id=None)
    start = clock()
    try:
        partitions = _partitions(consumer, start, clock)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        with RecordingWriter(path, source="topic") as writer:
            while max_frames is None or writer.count < max_frames:
                remaining = None if duration_s is None else duration_s - (clock() - start)
                if remaining is not None and remaining <= 0:
                    break
                timeout_ms = 500 if remaining is None else max(1, int(min(remaining, 0.5) * 1000))
                batches = consumer.poll(timeout_ms=timeout_ms)
                records = [r for batch in batches.values() for r in batch]
                kept = [k for k in (_keep(r, gate_id, exam_id) for r in records) if k is not None]
                # Partitions interleave: order each poll's records by capture time.
                for recorded in sorted(kept, key=lambda k: k.t):
                    writer.write(recorded.t, recorded.key, recorded.value)
                    if max_frames is not None and writer.count >= max_frames:
                        break
            log.info("recorded %d records of %s to %s", writer.count, FRAMES.name, path)
            return writer.count
    finally:
        consumer.close()


def _partitions(consumer: Any, start: float, clock: Callable[[], float]) -> list[TopicPartition]:
    while True:
        ids = consumer.partitions_for_topic(FRAMES.name)
        if ids:
            return [TopicPartition(FRAMES.name, p) for p in sorted(ids)]
        if clock() - start > 30:
            raise FacegateError(f"topic {FRAMES.name} not found; has the stack been started?")
        time.sleep(0.2)


def _keep(record: Any, gate_id: str | None, exam_id: str | None) -> RecordedFrame | None:
    try:
        frame = decode(record.value, Frame)
    except SchemaError:
        if gate_id or exam_id:
            return None
        return RecordedFrame(record.timestamp / 1000.0, record.key, record.value)
    if (gate_id and frame.gate_id != gate_id) or (exam_id and frame.exam_id != exam_id):
        return None
    return RecordedFrame(frame.captured_at, record.key, record.value)


# ---- replay ---------------------------------------------------------------------------------


class ReplaySink(Protocol):
    """Where replay sends frames (a FramePublisher or a dry run)."""

    def publish(self, frame: Frame) -> object:
        """Send a frame."""

    def publish_raw(self, key: bytes | None, value: bytes) -> object:
        """Send a record that does not decode, as it is."""


@dataclass
class ReplayReport:
    """What a replay sent, and the new id of every frame (old id -> new id)."""

    frames: int = 0
    raw_records: int = 0
    elapsed_s: float = 0.0
    new_ids: dict[str, str] = field(default_factory=dict)


def replay(
    path: Path,
    publisher: ReplaySink,
    speed: float = 1.0,
    new_ids: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayReport:
    """Publish a recording again, keeping the time between records divided by ``speed``.

    ``speed`` 1 is the original timing, 10 ten times faster, 0 as fast as possible.  Each frame
    gets ``captured_at`` now and ``source`` "replay", and by default a new ``frame_id`` so that
    its verdicts can be told from the original's; records that do not decode go out unchanged.
    """
    if speed < 0:
        raise ValueError("speed must be >= 0")
    report = ReplayReport()
    start = clock()
    first_t: float | None = None
    for recorded in iter_recording(path):
        if first_t is None:
            first_t = recorded.t
        if speed > 0:
            # A record earlier than the one before (partitions interleaved) goes at once.
            delay = start + (recorded.t - first_t) / speed - clock()
            if delay > 0:
                sleep(delay)
        try:
            frame = decode(recorded.value, Frame)
        except SchemaError as exc:
            log.warning("replaying a record that is not a readable frame as it is (%s)", exc)
            publisher.publish_raw(recorded.key, recorded.value)
            report.raw_records += 1
            continue
        update: dict[str, Any] = {"captured_at": now(), "source": "replay"}
        if new_ids:
            update["frame_id"] = new_id()
        publisher.publish(frame.model_copy(update=update))
        report.new_ids[frame.frame_id] = update.get("frame_id", frame.frame_id)
        report.frames += 1
    report.elapsed_s = clock() - start
    return report
