"""What the fetch proxy reads and writes of Kafka requests and responses
(facegate/stack/kafka_wire.py).

The frames are written here field by field after the protocol's message definitions (Kafka's
``FetchRequest.json``, ``FetchResponse.json``, ``ProduceRequest.json``,
``ApiVersionsResponse.json``), independently of the reader under test. Two responses are bytes
tansu 0.6.0 sent. tests/integration/test_fetch_proxy.py runs the proxy with real clients.
"""

from __future__ import annotations

import pytest
from kafka.protocol.consumer import FetchResponse

from facegate.stack import kafka_wire
from facegate.stack.kafka_wire import (
    FETCH,
    MAX_FETCH_VERSION,
    PRODUCE,
    Appended,
    PartitionAnswer,
    ProtocolError,
    Reader,
    cap_fetch_version,
    read_fetch_request,
    read_fetch_response,
    read_produce_request,
    read_produce_response,
    read_request_header,
    with_wait,
)
from tests.kafka_frames import (
    Writer,
    fetch_request,
    fetch_response,
    produce_response,
    request_header,
)


def test_primitives_are_read_in_place_and_a_short_frame_is_an_error() -> None:
    # A one-byte varint, then 150 and 2**28 in two and five bytes (protobuf's examples), a
    # 16-bit and a 64-bit integer.
    data = b"\x05\x96\x01\x80\x80\x80\x80\x01" + b"\xff\xfe" + (2**40).to_bytes(8, "big")
    reader = Reader(data)
    values = reader.uvarint(), reader.uvarint(), reader.uvarint(), reader.int16(), reader.int64()
    assert values == (5, 150, 2**28, -2, 2**40)
    assert reader.offset == len(data)
    with pytest.raises(ProtocolError, match="field needs"):
        Reader(b"\x00\x01\x02", 1).int32()
    with pytest.raises(ProtocolError, match="field needs"):
        Reader(b"\x96").uvarint()  # its second byte is missing
    with pytest.raises(ProtocolError, match="longer than 5 bytes"):
        Reader(b"\x80" * 6).uvarint()


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
    assert produce.records[("frames", 5)] == b"a record batch"
    assert not produce.transactional


@pytest.mark.parametrize("version", [3, 7, 8, 9])
def test_a_produce_response_says_where_each_partitions_records_went(version: int) -> None:
    frame = produce_response(version, [(2, 0, 41), (5, 6, -1)])
    appended = read_produce_response(frame, version)
    assert appended[("frames", 2)] == Appended(0, 41, -1, 3 if version >= 5 else -1)
    assert appended[("frames", 5)].error == 6


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_a_fetch_response_written_by_the_proxy_is_read_by_a_kafka_client(version: int) -> None:
    topics = {"frames": {3: PartitionAnswer(18, 2, b"batches"), 4: PartitionAnswer(5, 0, b"")}}
    frame = kafka_wire.fetch_response(42, version, topics)
    # kafka-python's decoder, generated from Kafka's message definitions.
    decoded = FetchResponse.decode(frame, version=version, header=True)
    (topic,) = decoded.responses
    assert topic.topic == "frames"
    found = {
        p.partition_index: (p.error_code, p.high_watermark, p.last_stable_offset, p.records)
        for p in topic.partitions
    }
    assert found == {3: (0, 18, 18, b"batches"), 4: (0, 5, 5, b"")}
    if version >= 5:
        assert [p.log_start_offset for p in topic.partitions] == [2, 0]
    answer = read_fetch_response(frame, version)
    assert answer.has_answer
    assert answer.high_watermarks == {("frames", 3): 18, ("frames", 4): 5}


def test_fetch_responses_are_written_only_in_versions_carrying_record_batches() -> None:
    with pytest.raises(ProtocolError):
        kafka_wire.fetch_response(42, 3, {})
    with pytest.raises(ProtocolError):
        kafka_wire.fetch_response(42, MAX_FETCH_VERSION + 1, {})


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
