"""The fetch proxy's record cache: recently produced record batches, served to fetches without
asking the broker.

Under the `online` load most of tansu's CPU went on fetches (README, Performance: 0.25-0.55 ms
for an empty fetch, ~1.2 ms for a record's produce and the fetches that read it), and nearly
every fetch that carries records reads what was produced a few milliseconds earlier through the
same proxy. The proxy already sees each produce's record batch and, in the broker's answer, the
offset the broker gave it; tansu sends a batch back byte for byte as it was produced, with only
its base offset filled in (checked against tansu 0.6.0: ``tests/integration/test_record_cache.py``
compares the two answers for the same fetch). So the proxy keeps the batches it saw
acknowledged, up to a byte budget, and answers a fetch from them when it can, as Apache Kafka
answers recent reads from the page cache:

- a partition's batches are held only while the cache has seen every produce to it since it
  started holding them, and only batches it can vouch for: magic 2, one batch per produce, not
  transactional, not stamped with the broker's time; anything else (a produce it cannot read,
  ``acks=0``, a topic deleted or recreated) makes it forget the partition, and fetches of it go
  to the broker again;
- a fetch is answered here only if every partition it names is either readable here from its
  offset (a held batch contains it) or read to the end (its offset is where the last
  acknowledged produce ended, or the high watermark the broker last reported for it), and at
  least one has records; otherwise it goes to the broker.

tansu stays the broker of record: it stores every record, gives the offsets, keeps the groups
and their committed offsets. The cache only spares it the reads of what it just acknowledged.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from facegate.stack.kafka_wire import (
    INT16,
    INT32,
    INT64,
    FetchRequest,
    Partition,
    PartitionAnswer,
)

# Record batch v2 (magic 2) header: base offset (8 bytes), batch length (4), partition leader
# epoch (4), magic (1), crc (4), attributes (2), last offset delta (4), ...; 61 bytes in all.
BATCH_HEADER_BYTES = 61
_MAGIC_AT, _ATTRIBUTES_AT, _LAST_DELTA_AT = 16, 21, 23
# Attributes: bit 3 timestamp type (1: log append time), bit 4 transactional, bit 5 control.
_NOT_CACHED_ATTRIBUTES = 0x08 | 0x10 | 0x20


def readable_batch(records: bytes | None) -> int | None:
    """How many offsets the record set ``records`` spans if it is one plain record batch of
    magic 2 the cache may hold; None if not."""
    if records is None or len(records) < BATCH_HEADER_BYTES:
        return None
    (length,) = INT32.unpack_from(records, 8)
    if 12 + length != len(records) or records[_MAGIC_AT] != 2:
        return None
    (attributes,) = INT16.unpack_from(records, _ATTRIBUTES_AT)
    if attributes & _NOT_CACHED_ATTRIBUTES:
        return None
    (last_offset_delta,) = INT32.unpack_from(records, _LAST_DELTA_AT)
    return last_offset_delta + 1 if last_offset_delta >= 0 else None


def at_offset(batch: bytes, base_offset: int) -> bytes:
    """The batch with the base offset the broker gave it (outside the batch's CRC, which covers
    the bytes from the attributes on)."""
    return INT64.pack(base_offset) + batch[8:]


@dataclass(frozen=True)
class HeldBatch:
    base: int
    end: int  # the offset after its last record
    data: bytes


def _base(batch: HeldBatch) -> int:
    return batch.base


@dataclass
class HeldPartition:
    """A partition's held batches, ordered by base offset, and where its records end."""

    batches: list[HeldBatch] = field(default_factory=list)
    end: int = 0
    log_start_offset: int = 0

    def records_from(self, offset: int, max_bytes: int) -> bytes | None:
        """The held batches from the one containing ``offset`` on, as long as they follow each
        other and fit in ``max_bytes`` (the first always: a fetch must make progress); None if
        no held batch contains ``offset``."""
        at = bisect.bisect_right(self.batches, offset, key=_base) - 1
        if at < 0 or self.batches[at].end <= offset:
            return None
        first = self.batches[at]
        parts, size, end = [first.data], len(first.data), first.end
        for batch in self.batches[at + 1 :]:
            if batch.base != end or size + len(batch.data) > max_bytes:
                break
            parts.append(batch.data)
            size, end = size + len(batch.data), batch.end
        return b"".join(parts)


class RecordCache:
    """Recently acknowledged record batches per partition, at most ``max_bytes`` of them (the
    oldest go first)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._partitions: dict[Partition, HeldPartition] = {}
        # Held batches, oldest first: (the partition's holder, base offset, size). An entry
        # names the holder, not the partition, so that once a partition is forgotten (or
        # recreated) its old entries can no longer evict a newer batch at the same offset.
        self._order: deque[tuple[HeldPartition, int, int]] = deque()
        self.answered = 0
        self.forgotten = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def line(self) -> str:
        return (
            f"record cache: {self.size / (1 << 20):.1f} of {self.max_bytes >> 20} MB held, "
            f"{self.answered} fetches answered, a partition forgotten {self.forgotten} times"
        )

    def appended(
        self, partition: Partition, records: bytes | None, base_offset: int, log_start: int = -1
    ) -> None:
        """The broker acknowledged ``records`` for ``partition`` at ``base_offset``."""
        if not self.enabled:
            return
        count = readable_batch(records)
        if count is None or records is None or base_offset < 0:
            self.forget([partition])
            return
        held = self._partitions.get(partition)
        end = base_offset + count
        if held is None:
            held = self._partitions[partition] = HeldPartition(end=base_offset)
        batches = held.batches
        at = bisect.bisect_left(batches, base_offset, key=_base)
        overlaps = (at > 0 and batches[at - 1].end > base_offset) or (
            at < len(batches) and batches[at].base < end
        )
        if overlaps or (base_offset < held.end and at == len(batches)):
            # Offsets given twice: the partition was recreated behind the cache's back.
            self.forget([partition])
            held = self._partitions[partition] = HeldPartition(end=base_offset)
            at = 0
        batch = HeldBatch(base_offset, end, at_offset(records, base_offset))
        held.batches.insert(at, batch)
        held.end = max(held.end, end)
        if log_start >= 0:
            held.log_start_offset = log_start
        self._order.append((held, base_offset, len(batch.data)))
        self.size += len(batch.data)
        while self.size > self.max_bytes and self._order:
            self._evict(*self._order.popleft())

    def _evict(self, held: HeldPartition, base_offset: int, size: int) -> None:
        self.size -= size
        at = bisect.bisect_left(held.batches, base_offset, key=_base)
        if at < len(held.batches) and held.batches[at].base == base_offset:
            del held.batches[at]

    def forget(self, partitions: Iterable[Partition] | None = None) -> None:
        """Stop answering for ``partitions`` (every partition if None) until produces to them
        are seen again."""
        for name in list(self._partitions) if partitions is None else partitions:
            held = self._partitions.pop(name, None)
            if held is not None:
                held.batches.clear()  # their memory goes now
                self.forgotten += 1
        if partitions is None:
            self._order.clear()
            self.size = 0
        # Batches of a forgotten partition stay counted in ``size`` until their entries' turn
        # to be evicted comes (``_evict`` finds nothing left to delete): that keeps ``_order``
        # bounded, as every entry is popped once the budget is spent.

    def answer(self, fetch: FetchRequest) -> dict[str, dict[int, PartitionAnswer]] | None:
        """The answer to ``fetch`` from held batches (topic -> partition -> answer, in the
        fetch's order), or None if the broker must be asked."""
        if not self.enabled:
            return None
        topics: dict[str, dict[int, PartitionAnswer]] = {}
        budget, with_records = fetch.max_bytes, False
        for partition, offset in fetch.offsets.items():
            held = self._partitions.get(partition)
            if held is None:
                return None
            records = b""
            if offset != held.end:
                limit = min(fetch.partition_max_bytes.get(partition, budget), budget)
                found = held.records_from(offset, limit)
                if found is None:
                    return None
                # Only the first partition with records may go over the limits (as in Kafka:
                # a fetch must make progress); a later one is answered empty this time.
                if not with_records or len(found) <= limit:
                    records, with_records = found, True
                    budget -= len(found)
            topics.setdefault(partition[0], {})[partition[1]] = PartitionAnswer(
                held.end, held.log_start_offset, records
            )
        if not with_records:
            return None
        self.answered += 1
        return topics

    def reported(self, high_watermarks: dict[Partition, int]) -> None:
        """The broker answered a fetch with these high watermarks: a partition's records end
        at least there. This is how the cache learns the end of a partition nobody produced
        to since the proxy started (a fetch naming it is then answered here too); an end past
        what the cache saw acknowledged leaves the batches it holds before it, and a fetch
        from between goes to the broker."""
        if not self.enabled:
            return
        for partition, high_watermark in high_watermarks.items():
            held = self._partitions.get(partition)
            if held is None:
                self._partitions[partition] = HeldPartition(end=high_watermark)
            elif high_watermark > held.end:
                held.end = high_watermark
