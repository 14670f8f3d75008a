"""What the fetch proxy reads and writes of Kafka requests and responses
(facegate/stack/kafka_wire.py).

The frames are written here field by field after the protocol's message definitions (Kafka's
``FetchRequest.json``, ``FetchResponse.json``, ``ProduceRequest.json``,
``ApiVersionsResponse.json``), independently of the reader under test. Two responses are bytes
tansu 0.6.0 sent. tests/integration/test_fetch_proxy.py runs the proxy with real clients.
"""

from __future__ import annotations

import struct

import pytest

from facegate.stack.kafka_wire import (
    FETCH,
    MAX_FETCH_VERSION,
    PRODUCE,
    ProtocolError,
    cap_fetch_version,
    read_fetch_request,
    read_fetch_response,
    read_produce_request,
    read_request_header,
    with_wait,
)


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
    version: int, max_wait_ms: int, topics: dict[str, list[int]], offset: int = 17
) -> bytes:
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
            writer.i64(offset)
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


def has_answer(frame: bytes, version: int) -> bool:
    """Whether the fetch response carries records or an error (anything but "nothing yet")."""
    return read_fetch_response(frame, version).has_answer


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_a_fetch_request_is_read_and_its_wait_rewritten(version: int) -> None:
    frame = fetch_request(version, 500, {"frames": [0, 3], "verdicts": [1]})
    header = read_request_header(frame)
    assert (header.api_key, header.api_version, header.correlation_id) == (FETCH, version, 42)
    fetch = read_fetch_request(frame, header)
    assert (fetch.max_wait_ms, fetch.session_id) == (500, 0)
    assert fetch.partitions == {("frames", 0), ("frames", 3), ("verdicts", 1)}
    shorter = with_wait(frame, fetch, 1)
    assert len(shorter) == len(frame)
    assert read_fetch_request(shorter, header).max_wait_ms == 1
    assert shorter == fetch_request(version, 1, {"frames": [0, 3], "verdicts": [1]})


def test_a_fetch_naming_topic_ids_is_refused() -> None:
    frame = request_header(FETCH, 13, flexible=True).out + b"\0" * 40
    with pytest.raises(ProtocolError, match="topic ids"):
        read_fetch_request(frame, read_request_header(frame))


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_a_fetch_response_with_records_or_an_error_is_an_answer(version: int) -> None:
    assert not has_answer(fetch_response(version, [(0, None), (0, b"")]), version)
    assert has_answer(fetch_response(version, [(0, None), (0, b"batch")]), version)
    assert has_answer(fetch_response(version, [(6, None)]), version)  # not leader


def test_an_answer_without_records_below_its_high_watermark_left_records_behind() -> None:
    # One partition, number 3 of "frames", high watermark 18.
    empty = read_fetch_response(fetch_response(12, [(0, None)]), 12)
    assert empty.left_behind({("frames", 3): 17})
    assert not empty.left_behind({("frames", 3): 18})  # at the end: nothing to read
    assert not empty.left_behind({("frames", 2): 0})  # a partition it did not answer
    with_records = read_fetch_response(fetch_response(12, [(0, b"batch")]), 12)
    assert not with_records.left_behind({("frames", 3): 17})
    with_error = read_fetch_response(fetch_response(12, [(6, None)]), 12)
    assert not with_error.left_behind({("frames", 3): 17})


def test_fetch_responses_tansu_sent_are_read() -> None:
    # Fetch v12 answers of tansu 0.6.0 to librdkafka: no topics (what a fetch asking for no
    # wait at all gets), and topic "t" with two partitions and no records.
    no_topics = bytes.fromhex("0000000800000000000000000000000100")
    no_records = bytes.fromhex(
        "0000000800000000000000000000000202740300000001000000000000000000010000000000000001"
        "000000000000000001ffffffff01000000000000000000000000000000000000000000000000000000"
        "0000000001ffffffff01000000"
    )
    assert not has_answer(no_topics, 12)
    assert not has_answer(no_records, 12)
    with pytest.raises(ProtocolError):
        read_fetch_response(no_records[:40], 12)


@pytest.mark.parametrize("version", [3, 7, 9, 11])
def test_a_produce_request_names_its_topics(version: int) -> None:
    flexible = version >= 9
    writer = request_header(PRODUCE, version, flexible).string(None).i16(-1).i32(30000)
    writer.array(2)
    for topic, partition in (("frames", 5), ("frames.dlq", 0)):
        writer.string(topic).array(1).i32(partition).records(b"a record batch").tags().tags()
    frame = writer.tags().out
    produce = read_produce_request(frame, read_request_header(frame))
    assert produce.acks == -1
    assert produce.partitions == {("frames", 5), ("frames.dlq", 0)}


@pytest.mark.parametrize("version", [0, 2, 3])
def test_api_versions_caps_fetch_and_nothing_else(version: int) -> None:
    compact = version >= 3
    writer = Writer(compact).i32(42).i16(0).array(3)
    for key, highest in ((PRODUCE, 11), (FETCH, 17), (18, 4)):
        writer.i16(key).i16(0).i16(highest).tags()
    tail = Writer(compact).i32(0).tags().out if version >= 1 else b""
    frame = writer.out + tail
    capped = cap_fetch_version(frame, version)
    assert len(capped) == len(frame)
    expected = Writer(compact).i32(42).i16(0).array(3)
    for key, highest in ((PRODUCE, 11), (FETCH, MAX_FETCH_VERSION), (18, 4)):
        expected.i16(key).i16(0).i16(highest).tags()
    assert capped == expected.out + tail


def test_high_watermarks_are_read_from_partitions_without_an_error() -> None:
    answer = read_fetch_response(fetch_response(12, [(0, None), (6, None)]), 12)
    # Both partitions are number 3 of "frames" here: the one with an error is left out.
    assert answer.has_answer and answer.high_watermarks == {("frames", 3): 18}
    assert read_fetch_response(fetch_response(12, [(0, None)]), 12).high_watermarks == {
        ("frames", 3): 18
    }
