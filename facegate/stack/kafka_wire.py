"""The few Kafka protocol fields the fetch proxy (``fetch_proxy.py``) reads and writes.

Requests and responses are read field by field after Kafka's message definitions
(``FetchRequest.json``, ``FetchResponse.json``, ``ProduceRequest.json``,
``ApiVersionsResponse.json``), classic and flexible versions, as far as the proxy needs them: a
fetch's wait, partitions and offsets, whether its answer carries records, a produce's
partitions, and Fetch's highest version in an ApiVersions answer.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

PRODUCE, FETCH, API_VERSIONS = 0, 1, 18
# The highest Fetch version whose requests name topics (13 and later use topic ids).
MAX_FETCH_VERSION = 12
# Requests larger than this are refused (the broker's own limit is lower).
MAX_FRAME_BYTES = 256 * 1024 * 1024


# A topic's partition: (topic name, partition index).
Partition = tuple[str, int]


class ProtocolError(ValueError):
    """A request or response this proxy cannot read."""


class Reader:
    """Reads Kafka protocol primitives from a frame, classic and flexible ("compact") forms."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise ProtocolError(f"frame ends at {len(self.data)}, field needs {end}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def int8(self) -> int:
        return int(struct.unpack(">b", self.take(1))[0])

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise ProtocolError("varint longer than 5 bytes")

    def string(self, compact: bool) -> str | None:
        size = self.uvarint() - 1 if compact else self.int16()
        return None if size < 0 else self.take(size).decode("utf-8", "replace")

    def bytes_length(self, compact: bool) -> int:
        """The length of a nullable byte field (-1 for null), its bytes skipped."""
        size = self.uvarint() - 1 if compact else self.int32()
        if size > 0:
            self.take(size)
        return size

    def array_length(self, compact: bool) -> int:
        return self.uvarint() - 1 if compact else self.int32()

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())


@dataclass(frozen=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    body_offset: int


def flexible_request(api_key: int, version: int) -> bool:
    """Whether a request of this API and version uses the flexible header (with tagged fields)."""
    first_flexible = {PRODUCE: 9, FETCH: 12, API_VERSIONS: 3}
    return api_key in first_flexible and version >= first_flexible[api_key]


def read_request_header(frame: bytes) -> RequestHeader:
    reader = Reader(frame)
    api_key, api_version, correlation_id = reader.int16(), reader.int16(), reader.int32()
    reader.string(compact=False)  # client id: a classic nullable string in every header
    if flexible_request(api_key, api_version):
        reader.tagged_fields()
    return RequestHeader(api_key, api_version, correlation_id, reader.offset)


@dataclass
class FetchRequest:
    """What the proxy needs of a fetch: its wait, its partitions and where the wait is written."""

    max_wait_ms: int
    wait_offset: int
    session_id: int
    # Where the fetch reads each partition from.
    offsets: dict[Partition, int]

    @property
    def partitions(self) -> frozenset[Partition]:
        return frozenset(self.offsets)


def read_fetch_request(frame: bytes, header: RequestHeader) -> FetchRequest:
    version = header.api_version
    if version > MAX_FETCH_VERSION:
        raise ProtocolError(f"Fetch v{version} names topic ids; the proxy caps Fetch at v12")
    compact = version >= 12
    reader = Reader(frame, header.body_offset)
    reader.int32()  # replica id
    wait_offset = reader.offset
    max_wait_ms = reader.int32()
    reader.int32()  # min bytes
    if version >= 3:
        reader.int32()  # max bytes
    if version >= 4:
        reader.int8()  # isolation level
    session_id = 0
    if version >= 7:
        session_id = reader.int32()
        reader.int32()  # session epoch
    offsets = {}
    for _ in range(max(0, reader.array_length(compact))):
        name = reader.string(compact) or ""
        for _ in range(max(0, reader.array_length(compact))):
            partition = (name, reader.int32())
            if version >= 9:
                reader.int32()  # current leader epoch
            offsets[partition] = reader.int64()
            if version >= 12:
                reader.int32()  # last fetched epoch
            if version >= 5:
                reader.int64()  # log start offset
            reader.int32()  # partition max bytes
            if compact:
                reader.tagged_fields()
        if compact:
            reader.tagged_fields()
    return FetchRequest(max_wait_ms, wait_offset, session_id, offsets)


def with_wait(frame: bytes, fetch: FetchRequest, wait_ms: int) -> bytes:
    """The fetch request ``frame`` asking the broker to wait at most ``wait_ms``."""
    at = fetch.wait_offset
    return frame[:at] + struct.pack(">i", wait_ms) + frame[at + 4 :]


@dataclass
class FetchAnswer:
    """What a fetch response says: whether it carries records or an error (anything but
    "nothing yet"), and the high watermark of each partition answered without an error."""

    has_answer: bool = False
    high_watermarks: dict[Partition, int] = field(default_factory=dict)

    def left_behind(self, offsets: dict[Partition, int]) -> bool:
        """Whether this answer has no records although a partition's high watermark is past
        the offset the fetch read it from: the broker has records it did not send (tansu 0.6.0
        answers so when its wait ran out before it read them; see ``facegate.stack.fetch_proxy``).
        """
        return not self.has_answer and any(
            self.high_watermarks.get(partition, -1) > offset
            for partition, offset in offsets.items()
        )


def read_fetch_response(frame: bytes, version: int) -> FetchAnswer:
    compact = version >= 12
    reader = Reader(frame)
    answer = FetchAnswer()
    reader.int32()  # correlation id
    if compact:
        reader.tagged_fields()
    if version >= 1:
        reader.int32()  # throttle time
    if version >= 7:
        if reader.int16() != 0:
            return FetchAnswer(has_answer=True)
        reader.int32()  # session id
    for _ in range(max(0, reader.array_length(compact))):
        name = reader.string(compact) or ""
        for _ in range(max(0, reader.array_length(compact))):
            partition = (name, reader.int32())
            error = reader.int16()
            high_watermark = reader.int64()
            if error != 0:
                answer.has_answer = True
            else:
                answer.high_watermarks[partition] = high_watermark
            if version >= 4:
                reader.int64()  # last stable offset
            if version >= 5:
                reader.int64()  # log start offset
            if version >= 4:
                for _ in range(max(0, reader.array_length(compact))):
                    reader.int64()
                    reader.int64()
                    if compact:
                        reader.tagged_fields()
            if version >= 11:
                reader.int32()  # preferred read replica
            if reader.bytes_length(compact) > 0:
                answer.has_answer = True
            if compact:
                reader.tagged_fields()
        if compact:
            reader.tagged_fields()
    return answer


@dataclass(frozen=True)
class ProduceRequest:
    acks: int
    partitions: frozenset[Partition]


def read_produce_request(frame: bytes, header: RequestHeader) -> ProduceRequest:
    version = header.api_version
    compact = version >= 9
    reader = Reader(frame, header.body_offset)
    if version >= 3:
        reader.string(compact)  # transactional id
    acks = reader.int16()
    reader.int32()  # timeout
    partitions = set()
    for _ in range(max(0, reader.array_length(compact))):
        name = reader.string(compact) or ""
        for _ in range(max(0, reader.array_length(compact))):
            partitions.add((name, reader.int32()))
            reader.bytes_length(compact)
            if compact:
                reader.tagged_fields()
        if compact:
            reader.tagged_fields()
    return ProduceRequest(acks, frozenset(partitions))


def cap_fetch_version(frame: bytes, version: int) -> bytes:
    """The ApiVersions response ``frame`` with Fetch's highest version at most 12."""
    data = bytearray(frame)
    reader = Reader(frame)
    reader.int32()  # correlation id (ApiVersions answers with a classic response header)
    reader.int16()  # error code
    compact = version >= 3
    for _ in range(max(0, reader.array_length(compact))):
        api_key = reader.int16()
        reader.int16()  # min version
        at = reader.offset
        highest = reader.int16()
        if api_key == FETCH and highest > MAX_FETCH_VERSION:
            data[at : at + 2] = struct.pack(">h", MAX_FETCH_VERSION)
        if compact:
            reader.tagged_fields()
    return bytes(data)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    if not 0 <= size <= MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes")
    return await reader.readexactly(size)


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload
