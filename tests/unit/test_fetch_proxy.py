"""The fetch proxy's bookkeeping (facegate/stack/fetch_proxy.py): which fetches a produce
wakes, and when a fetch can have nothing to read. tests/unit/test_kafka_wire.py covers its
reading of the protocol, tests/integration/test_fetch_proxy.py the proxy with real clients.
"""

from __future__ import annotations

import asyncio
import time

from facegate.stack.fetch_proxy import RECHECK_EMPTY_S, PartitionEnds, ProduceSignal


def test_a_produce_wakes_only_the_fetches_of_its_partitions() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        signal = ProduceSignal()
        frames = frozenset({("frames", 0), ("frames", 1)})
        others = frozenset({("frames", 2), ("verdicts", 0)})
        waiting_frames = asyncio.create_task(signal.wait_beyond(frames, 0, 5.0))
        waiting_others = asyncio.create_task(signal.wait_beyond(others, 0, 0.2))
        await asyncio.sleep(0.01)
        signal.produced({("frames", 1)})
        woken = await waiting_frames
        timed_out = not await waiting_others
        # A produce before the wait began (the version moved past ``seen``) does not wait.
        signal.produced({("verdicts", 0)})
        at_once = await asyncio.wait_for(signal.wait_beyond(others, 0, 5.0), 0.1)
        return woken, timed_out, at_once

    assert asyncio.run(scenario()) == (True, True, True)


def test_a_fetch_at_the_end_of_partitions_nobody_produced_to_has_nothing_new() -> None:
    ends = PartitionEnds()
    frames, faces = ("frames", 0), ("faces", 2)
    ends.note({frames: 18, faces: 5}, {frames: 4, faces: 9})
    now = time.monotonic()
    assert ends.nothing_new({frames: 18, faces: 5}, {frames: 4, faces: 9}, now)
    assert not ends.nothing_new({frames: 17, faces: 5}, {frames: 4, faces: 9}, now)  # behind
    assert not ends.nothing_new({frames: 18, faces: 5}, {frames: 5, faces: 9}, now)  # produced
    assert not ends.nothing_new({frames: 18, ("faces", 3): 0}, {frames: 4}, now)  # unknown
    assert not ends.nothing_new({frames: 18}, {frames: 4}, now + RECHECK_EMPTY_S)  # too old
    # A partition only noted with the produce count of the fetch that saw it.
    ends.note({("verdicts", 1): 3}, {})
    assert not ends.nothing_new({("verdicts", 1): 3}, {("verdicts", 1): 0}, now)
