"""Publish frames to the ``frames`` topic: the one way every producer sends a frame.

A frame is keyed by its gate, so that one gate's frames stay in order on one partition, and its
value is the versioned msgpack envelope of :class:`schemas.messages.Frame`.  Frames whose image
is over ``max_frame_bytes`` are refused here, at the source, with an error that says the size
and the limit, instead of failing later in the broker or a consumer.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol, TextIO

import cv2
import numpy as np
import numpy.typing as npt
from kafka.errors import KafkaError
from kafka.producer.future import RecordMetadata

from facegate.errors import FacegateError
from facegate.rdkafka_clients import RdProducer
from producers.metrics import PUBLISH_SECONDS, PUBLISHED
from producers.settings import ProducerSettings
from schemas.codec import encode
from schemas.messages import Frame, now
from schemas.topics import FRAMES


def encode_image(rgb: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image (H, W, 3) uint8 at the given quality (1-100)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {rgb.shape}")
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("the JPEG encoder refused the image")
    return bytes(buffer.tobytes())


class FrameSink(Protocol):
    """Where producers send frames: Kafka (:class:`FramePublisher`) or a dry run."""

    def publish(self, frame: Frame) -> object:
        """Send one frame."""


def check_frame_size(frame: Frame, max_frame_bytes: int) -> None:
    """Refuse a frame whose image is over the limit, naming both sizes."""
    size = len(frame.image)
    if size > max_frame_bytes:
        raise FacegateError(
            f"frame {frame.frame_id} from gate {frame.gate_id}: image is {size} bytes, over the "
            f"limit of {max_frame_bytes} bytes (FACEGATE_PRODUCER_MAX_FRAME_BYTES); lower the "
            "camera resolution or the JPEG quality"
        )


class FramePublisher:
    """Sends frames to Kafka and waits for the broker's acknowledgement of each one."""

    def __init__(self, settings: ProducerSettings, producer: RdProducer | None = None) -> None:
        self.settings = settings
        if producer is None:
            try:
                producer = RdProducer(settings.kafka)
                producer.check_reachable(min(settings.send_timeout_s, 10.0))
            except KafkaError as exc:
                raise FacegateError(
                    f"cannot reach Kafka at {settings.kafka.bootstrap_servers} ({exc}); "
                    "start the local stack with `facegate stack up` or set "
                    "FACEGATE_KAFKA_BOOTSTRAP_SERVERS"
                ) from None
        self._producer = producer

    def publish(self, frame: Frame) -> RecordMetadata:
        """Publish one frame (``published_at`` is stamped now) and return where it landed."""
        try:
            check_frame_size(frame, self.settings.max_frame_bytes)
        except FacegateError:
            PUBLISHED.labels(frame.gate_id, "refused").inc()
            raise
        stamped = frame.model_copy(update={"published_at": now()})
        try:
            metadata = self.publish_raw(frame.gate_id.encode(), encode(stamped))
        except FacegateError:
            PUBLISHED.labels(frame.gate_id, "failed").inc()
            raise
        PUBLISHED.labels(frame.gate_id, "published").inc()
        return metadata

    def publish_raw(self, key: bytes | None, value: bytes) -> RecordMetadata:
        """Publish an already encoded record as it is (replay of records that do not decode)."""
        # The envelope adds a few hundred bytes to the image; the limit is on the image.
        limit = self.settings.max_frame_bytes + 64 * 1024
        if len(value) > limit:
            raise FacegateError(
                f"record of {len(value)} bytes is over the limit of {limit} bytes "
                "(FACEGATE_PRODUCER_MAX_FRAME_BYTES plus the envelope)"
            )
        try:
            with PUBLISH_SECONDS.time():
                future = self._producer.send(FRAMES.name, key=key, value=value)
                metadata: RecordMetadata = future.get(timeout=self.settings.send_timeout_s)
        except KafkaError as exc:
            raise FacegateError(
                f"could not publish to {FRAMES.name} at {self.settings.kafka.bootstrap_servers}: "
                f"{exc}"
            ) from None
        return metadata

    def close(self) -> None:
        """Flush what is in flight and close the connection."""
        self._producer.flush(timeout=self.settings.send_timeout_s)
        self._producer.close(timeout=self.settings.send_timeout_s)

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class DryRunSink:
    """Prints one line per frame instead of publishing it (``--dry-run``)."""

    def __init__(self, max_frame_bytes: int, out: TextIO | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.out = out if out is not None else sys.stdout
        self.count = 0

    def publish(self, frame: Frame) -> None:
        """Check the frame as the publisher would, then describe it."""
        check_frame_size(frame, self.max_frame_bytes)
        self.count += 1
        print(describe_frame(frame), file=self.out, flush=True)

    def publish_raw(self, key: bytes | None, value: bytes) -> None:
        """Describe a record that is not a readable frame."""
        self.count += 1
        print(f"raw record key={key!r} {len(value)} bytes", file=self.out, flush=True)


def describe_frame(frame: Frame) -> str:
    """One line saying what a frame holds (dry runs and logs)."""
    return (
        f"frame {frame.frame_id} gate={frame.gate_id} exam={frame.exam_id} "
        f"claimed={frame.claimed_student_id or '-'} captured_at={frame.captured_at:.3f} "
        f"source={frame.source} {frame.content_type} {len(frame.image)} bytes"
    )
