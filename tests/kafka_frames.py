"""Kafka requests and responses written field by field after the protocol's message definitions
(Kafka's ``FetchRequest.json``, ``FetchResponse.json``, ``ProduceRequest.json``, ...),
independently of the proxy's reader and writer under test (``facegate/stack/kafka_wire.py``)."""

from __future__ import annotations

import struct

from facegate.stack.kafka_wire import FETCH


class Writer:
    """Kafka primitives, classic or compact (flexible versions)."""

    def __init__(self, compact: bool) -> None:
        self.compact = compact
        self.out = b""

    def i8(self, value: int) -> Writer:
        self.out += struct.pack(">b", value)
        return self

    def i16(self, value: int) -> Writer:
        self.out += struct.pack(">h", value)
        return self

    def i32(self, value: int) -> Writer:
        self.out += struct.pack(">i", value)
        return self

    def i64(self, value: int) -> Writer:
        self.out += struct.pack(">q", value)
        return self

    def uvarint(self, value: int) -> Writer:
        while value >= 0x80:
            self.out += bytes([value & 0x7F | 0x80])
            value >>= 7
        self.out += bytes([value])
        return self

    def string(self, text: str | None) -> Writer:
        data = None if text is None else text.encode()
        if self.compact:
            return self.uvarint(0 if data is None else len(data) + 1).raw(data or b"")
        return self.i16(-1 if data is None else len(data)).raw(data or b"")

    def records(self, data: bytes | None) -> Writer:
        if self.compact:
            return self.uvarint(0 if data is None else len(data) + 1).raw(data or b"")
        return self.i32(-1 if data is None else len(data)).raw(data or b"")

    def array(self, count: int) -> Writer:
        return self.uvarint(count + 1) if self.compact else self.i32(count)

    def tags(self) -> Writer:
        return self.uvarint(0) if self.compact else self

    def raw(self, data: bytes) -> Writer:
        self.out += data
        return self


def request_header(api_key: int, version: int, flexible: bool) -> Writer:
    # The client id is a classic nullable string in every request header.
    writer = Writer(compact=False).i16(api_key).i16(version).i32(42).string("facegate-test")
    if flexible:
        writer.uvarint(0)
    writer.compact = flexible
    return writer


def fetch_request(
    version: int,
    max_wait_ms: int,
    topics: dict[str, list[int]],
    offset: int = 17,
    offsets: dict[int, int] | None = None,
) -> bytes:
    """A sessionless fetch of ``topics``' partitions from ``offset`` (or each partition's
    entry in ``offsets``)."""
    writer = request_header(FETCH, version, flexible=version >= 12)
    writer.i32(-1).i32(max_wait_ms).i32(1).i32(52428800).i8(0)  # ... isolation level (v4+)
    if version >= 7:
        writer.i32(0).i32(-1)  # no fetch session
    writer.array(len(topics))
    for name, partitions in topics.items():
        writer.string(name).array(len(partitions))
        for partition in partitions:
            writer.i32(partition)
            if version >= 9:
                writer.i32(-1)
            writer.i64((offsets or {}).get(partition, offset))
            if version >= 12:
                writer.i32(-1)
            if version >= 5:
                writer.i64(0)
            writer.i32(1048576).tags()
        writer.tags()
    if version >= 7:
        writer.array(0)  # forgotten topics
    if version >= 11:
        writer.string("")  # rack id
    return writer.tags().out


def fetch_response(version: int, partitions: list[tuple[int, bytes | None]]) -> bytes:
    compact = version >= 12
    writer = Writer(compact).i32(42).tags().i32(0)
    if version >= 7:
        writer.i16(0).i32(0)
    writer.array(1).string("frames").array(len(partitions))
    for error, records in partitions:
        writer.i32(3).i16(error).i64(18).i64(18)  # ..., high watermark, last stable offset
        if version >= 5:
            writer.i64(0)  # log start offset
        writer.array(1).i64(7).i64(2).tags()  # one aborted transaction
        if version >= 11:
            writer.i32(-1)
        writer.records(records).tags()
    return writer.tags().tags().out


def produce_response(version: int, partitions: list[tuple[int, int, int]]) -> bytes:
    """A ProduceResponse for topic ``frames``: (partition, error code, base offset) each."""
    compact = version >= 9
    writer = Writer(compact).i32(42).tags().array(1).string("frames").array(len(partitions))
    for index, error, base_offset in partitions:
        writer.i32(index).i16(error).i64(base_offset)
        if version >= 2:
            writer.i64(-1)  # log append time: none (create time)
        if version >= 5:
            writer.i64(3)  # log start offset
        if version >= 8:
            writer.array(1).i32(0).string("bad record")  # one record error
            writer.tags().string(None if error == 0 else "refused")
        writer.tags()
    writer.tags()
    if version >= 1:
        writer.i32(0)  # throttle time
    return writer.tags().out
