"""The few Kafka protocol fields the fetch proxy (``fetch_proxy.py``) reads and writes.

Requests and responses are read field by field after Kafka's message definitions
(``FetchRequest.json``, ``FetchResponse.json``, ``ProduceRequest.json``,
``ProduceResponse.json``, ``ApiVersionsResponse.json``), classic and flexible versions, as far
as the proxy needs them: a fetch's wait, partitions, offsets and byte limits, whether its answer
carries records, a produce's record batches and the offsets the broker gave them, and Fetch's
highest version in an ApiVersions answer. Fetch responses the proxy answers from its record
cache (``record_cache.py``) are written by ``fetch_response``.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

PRODUCE, FETCH, API_VERSIONS = 0, 1, 18
# Requests that remove or recreate records: the proxy's record cache forgets what it holds.
CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS = 19, 20, 21
# The highest Fetch version whose requests name topics (13 and later use topic ids).
MAX_FETCH_VERSION = 12
# Requests larger than this are refused (the broker's own limit is lower).
MAX_FRAME_BYTES = 256 * 1024 * 1024


# A topic's partition: (topic name, partition index).
Partition = tuple[str, int]


class ProtocolError(ValueError):
    """A request or response this proxy cannot read."""


INT8, INT16, INT32, INT64 = (struct.Struct(f) for f in (">b", ">h", ">i", ">q"))


class Reader:
    """Reads Kafka protocol primitives from a frame, classic and flexible ("compact") forms.

    Fixed-size fields are unpacked in place (``struct.Struct.unpack_from``, no slice): the
    proxy reads every fetch and produce on the hot path, and a fetch names each partition of a
    consumer's topics (8 of ``faces``), so ``fields`` reads a partition's fixed part at once.
    """

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

    def fields(self, layout: struct.Struct) -> tuple[int, ...]:
        """The fixed-size fields of ``layout``, read at once."""
        try:
            values: tuple[int, ...] = layout.unpack_from(self.data, self.offset)
        except struct.error:
            end = self.offset + layout.size
            raise ProtocolError(f"frame ends at {len(self.data)}, field needs {end}") from None
        self.offset += layout.size
        return values

    def int8(self) -> int:
        return self.fields(INT8)[0]

    def int16(self) -> int:
        return self.fields(INT16)[0]

    def int32(self) -> int:
        return self.fields(INT32)[0]

    def int64(self) -> int:
        return self.fields(INT64)[0]

    def uvarint(self) -> int:
        data, at = self.data, self.offset
        if at < len(data) and data[at] < 0x80:  # one byte: lengths and tags mostly are
            self.offset = at + 1
            return data[at]
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

    def nullable_bytes(self, compact: bool) -> bytes | None:
        size = self.uvarint() - 1 if compact else self.int32()
        return None if size < 0 else self.take(size)

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
    # How many bytes of records the answer may carry, in all and per partition.
    max_bytes: int = 0x7FFFFFFF
    partition_max_bytes: dict[Partition, int] = field(default_factory=dict)

    @property
    def partitions(self) -> frozenset[Partition]:
        return frozenset(self.offsets)


def _fetch_partition(version: int) -> tuple[struct.Struct, int]:
    """A fetch request partition's fixed fields in ``version``: index, current leader epoch
    (9+), fetch offset, last fetched epoch (12+), log start offset (5+), max bytes."""
    layout = ">i" + ("i" if version >= 9 else "") + "q"
    layout += ("i" if version >= 12 else "") + ("q" if version >= 5 else "") + "i"
    return struct.Struct(layout), 2 if version >= 9 else 1


FETCH_PARTITION = {version: _fetch_partition(version) for version in range(MAX_FETCH_VERSION + 1)}


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
    max_bytes = 0x7FFFFFFF
    if version >= 3:
        max_bytes = reader.int32()
    if version >= 4:
        reader.int8()  # isolation level
    session_id = 0
    if version >= 7:
        session_id = reader.int32()
        reader.int32()  # session epoch
    # Each partition's fixed fields, and where its fetch offset is among them (see
    # ``FETCH_PARTITION``); the partition's index comes first and its max bytes last.
    layout, at_offset = FETCH_PARTITION[version]
    offsets, partition_max_bytes = {}, {}
    for _ in range(max(0, reader.array_length(compact))):
        name = reader.string(compact) or ""
        for _ in range(max(0, reader.array_length(compact))):
            values = reader.fields(layout)
            partition = (name, values[0])
            offsets[partition] = values[at_offset]
            partition_max_bytes[partition] = values[-1]
            if compact:
                reader.tagged_fields()
        if compact:
            reader.tagged_fields()
    return FetchRequest(
        max_wait_ms, wait_offset, session_id, offsets, max_bytes, partition_max_bytes
    )


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


# A fetch response partition's fixed fields, by version up to 5 (the same from there on).
ANSWERED_PARTITION = {
    version: struct.Struct(">ihq" + "q" * max(0, version - 3)) for version in range(6)
}


def read_fetch_response(frame: bytes, version: int) -> FetchAnswer:
    compact = version >= 12
    layout = ANSWERED_PARTITION[min(version, 5)]
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
            # Index, error, high watermark, last stable offset (4+), log start offset (5+).
            index, error, high_watermark, *_ = reader.fields(layout)
            if error != 0:
                answer.has_answer = True
            else:
                answer.high_watermarks[(name, index)] = high_watermark
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
    transactional: bool
    # Each partition's records (the record batches as the client sent them; None if null).
    records: dict[Partition, bytes | None]

    @property
    def partitions(self) -> frozenset[Partition]:
        return frozenset(self.records)


def read_produce_request(frame: bytes, header: RequestHeader) -> ProduceRequest:
    version = header.api_version
    compact = version >= 9
    reader = Reader(frame, header.body_offset)
    transactional = False
    if version >= 3:
        transactional = reader.string(compact) is not None
    acks = reader.int16()
    reader.int32()  # timeout
    records: dict[Partition, bytes | None] = {}
    for _ in range(max(0, reader.array_length(compact))):
        name = reader.string(compact) or ""
        for _ in range(max(0, reader.array_length(compact))):
            partition = (name, reader.int32())
            records[partition] = reader.nullable_bytes(compact)
            if compact:
                reader.tagged_fields()
        if compact:
            reader.tagged_fields()
    return ProduceRequest(acks, transactional, records)


@dataclass(frozen=True)
class Appended:
    """Where the broker appended a produce's records to one partition, or why it did not."""

    error: int
    base_offset: int
    # Not -1: the broker stamped the records with its own time (they differ from the request's).
    log_append_time_ms: int = -1
    log_start_offset: int = -1


def read_produce_response(frame: bytes, version: int) -> dict[Partition, Appended]:
    compact = version >= 9
    reader = Reader(frame)
    reader.int32()  # correlation id
    if compact:
        reader.tagged_fields()
    appended = {}
    for _ in range(max(0, reader.array_length(compact))):
        name = reader.string(compact) or ""
        for _ in range(max(0, reader.array_length(compact))):
            partition = (name, reader.int32())
            error, base_offset = reader.int16(), reader.int64()
            append_time = reader.int64() if version >= 2 else -1
            log_start = reader.int64() if version >= 5 else -1
            if version >= 8:
                for _ in range(max(0, reader.array_length(compact))):
                    reader.int32()  # batch index
                    reader.string(compact)  # its error message
                    if compact:
                        reader.tagged_fields()
                reader.string(compact)  # error message
            if compact:
                reader.tagged_fields()
            appended[partition] = Appended(error, base_offset, append_time, log_start)
        if compact:
            reader.tagged_fields()
    return appended


class Writer:
    """Kafka protocol primitives, classic or flexible ("compact"), into a growing buffer."""

    def __init__(self, compact: bool) -> None:
        self.compact = compact
        self.parts: list[bytes] = []

    def pack(self, fmt: str, *values: int) -> Writer:
        self.parts.append(struct.pack(fmt, *values))
        return self

    def uvarint(self, value: int) -> Writer:
        out = bytearray()
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
        self.parts.append(bytes(out))
        return self

    def length(self, size: int) -> Writer:
        """An array's or nullable field's length (-1: null)."""
        return self.uvarint(size + 1) if self.compact else self.pack(">i", size)

    def string(self, text: str) -> Writer:
        data = text.encode()
        if self.compact:
            self.uvarint(len(data) + 1)
        else:
            self.pack(">h", len(data))
        self.parts.append(data)
        return self

    def tags(self) -> Writer:
        return self.uvarint(0) if self.compact else self

    def raw(self, data: bytes) -> Writer:
        self.parts.append(data)
        return self

    def out(self) -> bytes:
        return b"".join(self.parts)


@dataclass(frozen=True)
class PartitionAnswer:
    """One partition of a fetch response written by the proxy: no error, no aborted
    transactions (the cache holds no transactional records)."""

    high_watermark: int
    log_start_offset: int
    records: bytes


# The Fetch versions ``fetch_response`` writes: 4 is the first that carries record batches of
# magic 2 (the only kind the cache holds) and the last stable offset; 12 is the proxy's cap.
MIN_WRITTEN_FETCH_VERSION = 4


def _written_partition(version: int) -> struct.Struct:
    """The fixed fields ``fetch_response`` writes for a partition: index, error, high watermark,
    last stable offset, log start offset (5+), the aborted transactions' length (a one-byte
    varint in compact versions), preferred read replica (11+)."""
    layout = ">ihqq" + ("q" if version >= 5 else "") + ("B" if version >= 12 else "i")
    return struct.Struct(layout + ("i" if version >= 11 else ""))


WRITTEN_PARTITION = {
    version: _written_partition(version)
    for version in range(MIN_WRITTEN_FETCH_VERSION, MAX_FETCH_VERSION + 1)
}


def fetch_response(
    correlation_id: int, version: int, topics: dict[str, dict[int, PartitionAnswer]]
) -> bytes:
    """A Fetch response of ``version`` (4 to 12) without a session or errors."""
    if not MIN_WRITTEN_FETCH_VERSION <= version <= MAX_FETCH_VERSION:
        raise ProtocolError(f"Fetch v{version} responses are not written by the proxy")
    compact = version >= 12
    layout = WRITTEN_PARTITION[version]
    writer = Writer(compact).pack(">i", correlation_id).tags().pack(">i", 0)  # throttle
    if version >= 7:
        writer.pack(">hi", 0, 0)  # error code, session id
    writer.length(len(topics))
    for name, partitions in topics.items():
        writer.string(name).length(len(partitions))
        for index, answer in partitions.items():
            # Index, error, high watermark, last stable offset (no open transactions), log
            # start offset (5+), no aborted transactions, no preferred read replica (11+).
            fixed = [index, 0, answer.high_watermark, answer.high_watermark]
            if version >= 5:
                fixed.append(answer.log_start_offset)
            fixed.append(1 if compact else 0)
            if version >= 11:
                fixed.append(-1)
            writer.raw(layout.pack(*fixed)).length(len(answer.records)).raw(answer.records)
            writer.tags()
        writer.tags()
    return writer.tags().out()


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
