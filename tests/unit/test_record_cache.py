"""The fetch proxy's record cache (facegate/stack/record_cache.py): which batches it holds, and
which fetches it answers without the broker.

Batches are built by aiokafka's record builder. tests/integration/test_record_cache.py checks
its answers against tansu's, byte for byte.
"""

from __future__ import annotations

import struct

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from facegate.stack.kafka_wire import FetchRequest, Partition, PartitionAnswer
from facegate.stack.record_cache import RecordCache, readable_batch

P0: Partition = ("frames", 0)
P1: Partition = ("frames", 1)


def batch(*values: bytes, transactional: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=int(transactional),
        producer_id=7 if transactional else -1,
        producer_epoch=0 if transactional else -1,
        base_sequence=0 if transactional else -1,
        batch_size=1 << 20,
    )
    for offset, value in enumerate(values):
        builder.append(offset=offset, timestamp=1, key=None, value=value, headers=[])
    return bytes(builder.build())


def fetch(
    offsets: dict[Partition, int], max_bytes: int = 1 << 20, partition_max_bytes: int = 1 << 20
) -> FetchRequest:
    return FetchRequest(
        max_wait_ms=500,
        wait_offset=0,
        session_id=0,
        offsets=offsets,
        max_bytes=max_bytes,
        partition_max_bytes=dict.fromkeys(offsets, partition_max_bytes),
    )


def base_offsets(answer: PartitionAnswer) -> list[int]:
    """The base offsets of the batches in an answer's records."""
    found, at = [], 0
    while at < len(answer.records):
        base, length = struct.unpack_from(">qi", answer.records, at)
        found.append(base)
        at += 12 + length
    return found


def test_a_fetch_is_answered_from_the_batch_holding_its_offset_and_those_after_it() -> None:
    cache = RecordCache(1 << 20)
    cache.appended(P0, batch(b"a", b"b", b"c"), 10)
    cache.appended(P0, batch(b"d"), 13)
    answer = cache.answer(fetch({P0: 11}))
    assert answer is not None
    assert base_offsets(answer["frames"][0]) == [10, 13]
    assert answer["frames"][0].high_watermark == 14
    assert cache.answered == 1


def test_the_broker_is_asked_for_what_the_cache_cannot_vouch_for() -> None:
    cache = RecordCache(1 << 20)
    cache.appended(P0, batch(b"a"), 10)
    assert cache.answer(fetch({P0: 9})) is None  # before what it holds
    assert cache.answer(fetch({P0: 12})) is None  # past the end
    assert cache.answer(fetch({P0: 11})) is None  # at the end: nothing to answer with
    assert cache.answer(fetch({P0: 10, P1: 0})) is None  # a partition it knows nothing of
    cache.reported({P1: 4})  # the broker says where partition 1 ends
    both = cache.answer(fetch({P0: 10, P1: 4}))
    assert both is not None
    assert both["frames"][1] == PartitionAnswer(4, 0, b"")
    assert base_offsets(both["frames"][0]) == [10]


def test_only_the_first_partition_with_records_may_go_over_the_fetchs_limits() -> None:
    cache = RecordCache(1 << 20)
    first, second = batch(b"x" * 1000), batch(b"y" * 1000)
    cache.appended(P0, first, 0)
    cache.appended(P0, batch(b"z"), 1)
    cache.appended(P1, second, 0)
    answer = cache.answer(fetch({P0: 0, P1: 0}, max_bytes=1500, partition_max_bytes=500))
    assert answer is not None
    assert base_offsets(answer["frames"][0]) == [0]  # over 500 bytes, but the first
    assert answer["frames"][1].records == b""  # the fetch's 1,500 bytes are used up
    assert answer["frames"][1].high_watermark == 1


def test_the_oldest_batches_go_first_when_the_cache_is_full() -> None:
    one = batch(b"x" * 400)
    cache = RecordCache(3 * len(one))
    for offset in range(4):
        cache.appended(P0, batch(b"x" * 400), offset)
    assert cache.size <= cache.max_bytes
    assert cache.answer(fetch({P0: 0})) is None
    answer = cache.answer(fetch({P0: 1}))
    assert answer is not None
    assert base_offsets(answer["frames"][0]) == [1, 2, 3]


def test_batches_it_cannot_vouch_for_make_it_forget_the_partition() -> None:
    cache = RecordCache(1 << 20)
    cache.appended(P0, batch(b"a"), 0)
    cache.appended(P0, batch(b"b", transactional=True), 1)
    assert cache.answer(fetch({P0: 0})) is None
    assert readable_batch(batch(b"a") + batch(b"b")) is None  # two batches in one produce
    stamped = bytearray(batch(b"a"))
    stamped[22] |= 0x08  # log append time: the broker rewrote the timestamps
    assert readable_batch(bytes(stamped)) is None
    old_magic = bytearray(batch(b"a"))
    old_magic[16] = 1
    assert readable_batch(bytes(old_magic)) is None
    assert readable_batch(batch(b"a", b"b")) == 2


def test_offsets_given_again_mean_the_partition_was_recreated() -> None:
    cache = RecordCache(1 << 20)
    cache.appended(P0, batch(b"old-0", b"old-1"), 0)
    cache.appended(P0, batch(b"new-0"), 0)
    answer = cache.answer(fetch({P0: 0}))
    assert answer is not None
    assert b"new-0" in answer["frames"][0].records
    assert b"old-0" not in answer["frames"][0].records
    assert answer["frames"][0].high_watermark == 1


def test_a_recreated_partitions_old_batches_leave_without_taking_its_new_ones() -> None:
    one = batch(b"x" * 400)
    cache = RecordCache(3 * len(one))
    cache.appended(P0, batch(b"x" * 400), 0)
    cache.appended(P0, batch(b"y" * 400), 0)  # offset 0 again: recreated, the old batch forgotten
    # Its entry in the eviction queue does not keep the forgotten batch's bytes alive.
    assert cache._order[0][0].batches == []
    cache.appended(P1, batch(b"z" * 400), 0)
    cache.appended(P1, batch(b"z" * 400), 1)  # over budget: the oldest entry (the old 0) goes
    assert cache.size <= cache.max_bytes
    answer = cache.answer(fetch({P0: 0}))
    assert answer is not None  # the new batch at offset 0 is still held
    assert b"y" * 400 in answer["frames"][0].records


def test_an_acknowledgement_arriving_late_fills_the_gap_before_a_later_batch() -> None:
    cache = RecordCache(1 << 20)
    cache.appended(P0, batch(b"c"), 12)  # answered first, on another connection
    assert cache.answer(fetch({P0: 10})) is None
    cache.appended(P0, batch(b"a", b"b"), 10)
    answer = cache.answer(fetch({P0: 10}))
    assert answer is not None
    assert base_offsets(answer["frames"][0]) == [10, 12]


def test_a_forgotten_cache_asks_the_broker_and_a_disabled_one_holds_nothing() -> None:
    cache = RecordCache(1 << 20)
    cache.appended(P0, batch(b"a"), 0)
    cache.forget(None)
    assert cache.answer(fetch({P0: 0})) is None
    assert cache.line() == (
        "record cache: 0.0 of 1 MB held, 0 fetches answered, a partition forgotten 1 times"
    )
    off = RecordCache(0)
    off.appended(P0, batch(b"a"), 0)
    off.reported({P0: 1})
    assert off.answer(fetch({P0: 0})) is None
    assert off.size == 0
