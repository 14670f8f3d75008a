"""The fetch proxy's bookkeeping (facegate/stack/fetch_proxy.py): which fetches a produce
wakes, and when a fetch can have nothing to read. tests/unit/test_kafka_wire.py covers its
reading of the protocol, tests/integration/test_fetch_proxy.py the proxy with real clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from facegate.stack.fetch_proxy import (
    RECHECK_EMPTY_S,
    WOKEN_WAIT_MS,
    FetchProxy,
    PartitionEnds,
    ProduceSignal,
)
from facegate.stack.kafka_wire import (
    framed,
    read_fetch_request,
    read_fetch_response,
    read_frame,
    read_request_header,
)
from tests.kafka_frames import fetch_request, fetch_response


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
        # A wait cancelled (its client went away) leaves nothing registered either.
        cancelled = asyncio.create_task(signal.wait_beyond(frames, 1, 5.0))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        assert not any(signal._waiters.values())  # woken, timed out or cancelled: all gone
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


async def through_proxy_to_a_scripted_broker(
    request: bytes,
    records_for: Callable[[list[int]], bytes | None],
    meanwhile: Callable[[FetchProxy, list[int]], Awaitable[None]] | None = None,
) -> tuple[bytes, float, list[int]]:
    """Send the fetch ``request`` through a proxy in front of a scripted broker, a fake for
    these unit tests only (tests/integration/test_fetch_proxy.py runs the proxy in front of a
    real tansu). The broker notes the wait of each fetch it gets and answers it with
    ``records_for(the waits so far)`` (None: no records; the high watermark is always 18);
    ``meanwhile`` runs while the client waits. The client's answer, how long it took, and the
    waits the broker saw."""
    waits: list[int] = []

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                frame = await read_frame(reader)
            except asyncio.IncompleteReadError:
                writer.close()
                return
            waits.append(read_fetch_request(frame, read_request_header(frame)).max_wait_ms)
            writer.write(framed(fetch_response(12, [(0, records_for(waits))])))
            await writer.drain()

    upstream = await asyncio.start_server(broker, "127.0.0.1", 0)
    proxy = FetchProxy(upstream.sockets[0].getsockname()[:2])
    front = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*front.sockets[0].getsockname()[:2])
    started = time.monotonic()
    writer.write(framed(request))
    if meanwhile is not None:
        await meanwhile(proxy, waits)
    answer = await asyncio.wait_for(read_frame(reader), 5.0)
    elapsed = time.monotonic() - started
    writer.close()
    for server in (front, upstream):
        server.close()
    return answer, elapsed, waits


def test_an_answer_that_left_records_behind_is_asked_again_with_the_clients_wait() -> None:
    """The scripted broker answers as tansu 0.6.0 was measured to: a fetch sent on with the
    proxy's 1 ms wait comes back without records although the high watermark (18) is past the
    fetch's offset (17); the same fetch with the client's own wait (500 ms) comes back at once
    with them."""
    answer, elapsed_s, waits = asyncio.run(
        through_proxy_to_a_scripted_broker(
            fetch_request(12, 500, {"frames": [3]}),
            lambda waits: b"a record batch" if waits[-1] == 500 else None,
        )
    )
    assert read_fetch_response(answer, 12).has_answer
    assert waits == [1, 500]
    # Answered when the broker sent the records, not held out to the client's wait.
    assert elapsed_s < 0.4


def test_a_fetch_woken_by_a_produce_lets_the_broker_wait_for_its_records() -> None:
    """The first ask of a fetch at the end of its partition (offset 18 = high watermark 18)
    comes back empty from the scripted broker, so the proxy holds it; a produce to the
    partition wakes it, and the proxy asks again with ``WOKEN_WAIT_MS`` (not its 1 ms, with
    which tansu 0.6.0 often ran out of time before reading the new records)."""

    async def produce(proxy: FetchProxy, waits: list[int]) -> None:
        await asyncio.sleep(0.1)
        assert waits == [1]  # asked once, and held
        proxy.signal.produced({("frames", 3)})  # as when a produce's acknowledgement passes

    answer, elapsed_s, waits = asyncio.run(
        through_proxy_to_a_scripted_broker(
            fetch_request(12, 2000, {"frames": [3]}, offset=18),
            lambda waits: b"a record batch" if len(waits) > 1 else None,
            produce,
        )
    )
    assert read_fetch_response(answer, 12).has_answer
    assert waits == [1, WOKEN_WAIT_MS]
    assert elapsed_s < 1.0  # answered on the produce, not at the client's 2 s
