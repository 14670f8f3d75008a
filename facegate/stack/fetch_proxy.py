"""A Kafka-protocol proxy in front of the local broker that answers a waiting fetch as soon as a
record for it is produced.

Apache Kafka keeps a consumer's fetch waiting (up to its ``fetch.max.wait.ms``) only until data
arrives for one of its partitions. tansu, the local stack's broker, sleeps out the whole wait
whatever arrives in the meantime, so every hop through it costs up to a full wait (README,
Performance: the hop sweep). This proxy restores Kafka's behaviour on the local stack: tansu
advertises the proxy's address, every client connects here, and

- a fetch that asks to wait is sent on with a 1 ms wait; if tansu has nothing for it, the
  proxy holds it (not tansu) until a produce to one of its partitions is acknowledged or the
  client's wait runs out, then fetches again (letting tansu wait up to ``WOKEN_WAIT_MS`` for
  the records a produce announced) and answers;
- an answer without records whose high watermarks say tansu has records for the fetch is not
  passed on: tansu 0.6.0 stops reading when a fetch's wait has run out, and with 1 ms it may
  answer before reading records it has (the more partitions a fetch names, the more often;
  measured: such a fetch, sent again unchanged, came back empty for a minute, with 500 ms at
  once with its records). The proxy asks again with the client's own wait and passes that on;
- a fetch whose records were produced through the proxy moments ago is answered from its record
  cache (``record_cache.py``: the batches tansu acknowledged, as tansu would send them back),
  at once or when a produce wakes it, without asking tansu;
- every other request (produce, metadata, group coordination, ...) passes through unchanged, in
  order, on the client's own upstream connection.

Fetch is capped at version 12 in the ApiVersions answer, so that fetches name their topics (13
and later name topic ids) and a produce can be matched to the fetches it wakes. Responses go
back in request order, as the protocol requires. Production deployments use Apache Kafka and do
not run this proxy. What it reads of requests and responses is in ``kafka_wire.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import uvloop

from facegate.stack.kafka_wire import (
    API_VERSIONS,
    CREATE_TOPICS,
    DELETE_RECORDS,
    DELETE_TOPICS,
    FETCH,
    MAX_FETCH_VERSION,
    MIN_WRITTEN_FETCH_VERSION,
    PRODUCE,
    FetchRequest,
    Partition,
    ProduceRequest,
    ProtocolError,
    RequestHeader,
    cap_fetch_version,
    fetch_response,
    framed,
    read_fetch_request,
    read_fetch_response,
    read_frame,
    read_produce_request,
    read_produce_response,
    read_request_header,
    with_wait,
)
from facegate.stack.record_cache import RecordCache

log = logging.getLogger(__name__)

# The wait the proxy's own fetches ask of tansu: a fetch with no wait at all is answered with no
# topics, records or not (measured with tansu 0.6.0); one of 1 ms mostly as expected, but it may
# come back without records tansu has (``FetchAnswer.left_behind``), and is then asked again
# with the client's wait.
UPSTREAM_WAIT_MS = 1
# How long the broker may take to listen after it is started, and how often the counts are logged.
BROKER_START_TIMEOUT_S = 30.0
REPORT_EVERY_S = 60.0
# How long a fetch known to be empty is answered without asking the broker (``KnownEmpty``).
RECHECK_EMPTY_S = 1.0
# A fetch a produce woke that finds nothing is asked again after these pauses (see ``_woken``).
WOKEN_RETRY_S = (0.001, 0.003)
# The wait a woken fetch asks of the broker (at most what is left of the client's): a produce
# says records are there, and tansu answers as soon as it has read them; with 1 ms it often ran
# out of time first on a loaded machine and left them behind (an extra fetch each time).
# Measured with 2,500 online check-ins: 2,239 answers left records behind with 1 ms, 289 with
# 10 ms; woken fetches that found nothing stayed at 0.
WOKEN_WAIT_MS = 10
# The record cache's budget unless ``--record-cache-mb`` says otherwise: at the `online` load's
# ~3 MB of frames a second, the last ~20 s of records.
DEFAULT_RECORD_CACHE_MB = 64


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ProduceSignal:
    """Per partition, how many produces have been acknowledged; wakes the fetches waiting on
    them."""

    def __init__(self) -> None:
        self._versions: dict[Partition, int] = {}
        self._waiters: dict[Partition, list[asyncio.Future[None]]] = {}

    def version(self, partitions: Iterable[Partition]) -> int:
        return sum(self._versions.get(partition, 0) for partition in partitions)

    def versions(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        return {partition: self._versions.get(partition, 0) for partition in partitions}

    def produced(self, partitions: Iterable[Partition]) -> None:
        """A produce to ``partitions`` was acknowledged: wake the fetches waiting on them."""
        for partition in partitions:
            self._versions[partition] = self._versions.get(partition, 0) + 1
            for waiter in self._waiters.pop(partition, []):
                _wake(waiter)

    async def wait_beyond(
        self, partitions: frozenset[Partition], seen: int, timeout_s: float
    ) -> bool:
        """Wait for a produce to ``partitions`` beyond ``seen``; False if ``timeout_s`` ran out."""
        if self.version(partitions) != seen:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        for partition in partitions:
            self._waiters.setdefault(partition, []).append(waiter)
        # A timer ends the wait (``asyncio.wait_for`` adds a future and a coroutine per wait).
        timer = loop.call_later(timeout_s, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            for partition in partitions:
                waiters = self._waiters.get(partition)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
        return self.version(partitions) != seen


@dataclass
class InFlight:
    """A request sent upstream, waiting for its response."""

    header: RequestHeader
    answer: asyncio.Future[bytes]
    frame: bytes = b""
    fetch: FetchRequest | None = None
    deadline: float = 0.0
    produce: ProduceRequest | None = None
    # The fetch after its header, and when the broker last answered it (see ``KnownEmpty``).
    body: bytes = b""
    checked_at: float = 0.0
    # The produce count of each partition when the fetch was last sent (see ``PartitionEnds``).
    versions: dict[Partition, int] = field(default_factory=dict)
    # Nothing to read: held without asking the broker; its answer if known.
    hold_here: bool = False
    known_empty: bytes | None = None
    # The broker's last answer had no records, though it has some for the fetch.
    left_behind: bool = False


@dataclass(frozen=True)
class KnownEmpty:
    """The connection's last fetch that waited out its wait with nothing to read.

    A consumer with nothing to read sends the same fetch again and again. While nothing has
    been produced to its partitions since the broker answered it, the answer is the same: the
    proxy holds the fetch without asking the broker (re-asking at least every
    ``RECHECK_EMPTY_S``), so idle consumers cost the broker nothing.
    """

    body: bytes
    version: int
    answer: bytes
    checked_at: float


@dataclass
class ProxyCounts:
    """What the proxy did with the fetches that asked to wait (logged every minute)."""

    answered_at_once: int = 0
    answered_on_produce: int = 0
    waited_out: int = 0
    woken_for_nothing: int = 0
    held_without_asking: int = 0
    left_behind: int = 0
    # Of those answered at once or on a produce: how many from the record cache (the broker
    # was not asked).
    from_cache: int = 0

    def line(self) -> str:
        return (
            f"waiting fetches: {self.answered_at_once} answered at once, "
            f"{self.answered_on_produce} on a produce, {self.waited_out} waited out "
            f"({self.held_without_asking} of them held without asking the broker); "
            f"{self.from_cache} answered from the record cache; "
            f"{self.woken_for_nothing} woken by a produce they had already read; "
            f"{self.left_behind} asked again with the client's wait (the broker's answer "
            "left records behind)"
        )


@dataclass
class Connection:
    """One client connection: its upstream connection, and a second one for held fetches."""

    proxy: FetchProxy
    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    upstream_reader: asyncio.StreamReader
    upstream_writer: asyncio.StreamWriter
    in_flight: deque[InFlight] = field(default_factory=deque)
    answers: asyncio.Queue[asyncio.Future[bytes]] = field(default_factory=asyncio.Queue)
    refetch: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    refetch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    known_empty: KnownEmpty | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pumps = [
            loop.create_task(self._from_client()),
            loop.create_task(self._from_upstream()),
            loop.create_task(self._to_client()),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None and not isinstance(
                    error, asyncio.IncompleteReadError | ConnectionError
                ):
                    log.warning("connection closed: %s: %s", type(error).__name__, error)
        finally:
            for item in self.in_flight:
                if item.produce is not None:
                    # Unanswered: the broker may have written records the cache never sees.
                    self.proxy.cache.forget(item.produce.partitions)
            for task in [*pumps, *self.tasks]:
                task.cancel()
            writers = [self.client_writer, self.upstream_writer]
            if self.refetch is not None:
                writers.append(self.refetch[1])
            for writer in writers:
                writer.close()

    def _classify(self, frame: bytes, item: InFlight) -> bytes:
        """Mark a fetch that asks to wait or a produce; the frame to send upstream."""
        header = item.header
        try:
            if header.api_key == FETCH and header.api_version <= MAX_FETCH_VERSION:
                fetch = read_fetch_request(frame, header)
                # A fetch of an incremental session (KIP-227) cannot be sent twice.
                if fetch.max_wait_ms > 0 and fetch.session_id == 0 and fetch.partitions:
                    now = time.monotonic()
                    item.fetch = fetch
                    item.frame = with_wait(frame, fetch, UPSTREAM_WAIT_MS)
                    item.deadline = now + fetch.max_wait_ms / 1000
                    item.body, item.checked_at = frame[header.body_offset :], now
                    item.versions = self.proxy.signal.versions(fetch.partitions)
                    item.hold_here = self.proxy.ends.nothing_new(fetch.offsets, item.versions, now)
                    known = self.known_empty
                    if (
                        item.hold_here
                        and known is not None
                        and known.body == item.body
                        and known.version == sum(item.versions.values())
                        and now - known.checked_at < RECHECK_EMPTY_S
                    ):
                        item.checked_at = known.checked_at
                        item.known_empty = frame[4:8] + known.answer[4:]
                    return item.frame
            elif header.api_key == PRODUCE:
                item.produce = read_produce_request(frame, header)
            elif header.api_key in (CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS):
                self.proxy.cache.forget()  # offsets may be given again, or records gone
        except ProtocolError as error:  # passed on as it is: the broker answers it
            log.debug("request api %d v%d not read: %s", header.api_key, header.api_version, error)
            if header.api_key == PRODUCE:
                self.proxy.cache.forget()  # records the cache cannot place
        return frame

    def _cached(self, item: InFlight) -> bytes | None:
        """The fetch's answer from the record cache, or None if the broker must be asked."""
        fetch, version = item.fetch, item.header.api_version
        if fetch is None or version < MIN_WRITTEN_FETCH_VERSION:
            return None
        topics = self.proxy.cache.answer(fetch)
        if topics is None:
            return None
        # The ends it answered with: the consumer's next fetch from there is held here.
        item.versions = self.proxy.signal.versions(fetch.partitions)
        self.proxy.ends.note(
            {
                (name, index): a.high_watermark
                for name, ps in topics.items()
                for index, a in ps.items()
            },
            item.versions,
        )
        self.known_empty = None
        self.proxy.counts.from_cache += 1
        return fetch_response(item.header.correlation_id, version, topics)

    async def _from_client(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await read_frame(self.client_reader)
            item = InFlight(read_request_header(frame), loop.create_future())
            frame = self._classify(frame, item)
            cached = self._cached(item)
            if cached is not None:  # records produced moments ago: the broker is not asked
                self.proxy.counts.answered_at_once += 1
                item.answer.set_result(cached)
                await self.answers.put(item.answer)
                continue
            if item.hold_here:  # nothing to read: held here, the broker is not asked
                self.proxy.counts.held_without_asking += 1
                await self.answers.put(item.answer)
                self._start_hold(item, item.known_empty)
                continue
            if item.produce is not None and item.produce.acks == 0:
                # No response will come: the records are on their way once written.
                self.upstream_writer.write(framed(frame))
                await self.upstream_writer.drain()
                # No offsets come back to place them.
                self.proxy.cache.forget(item.produce.partitions)
                self.proxy.signal.produced(item.produce.partitions)
                continue
            self.in_flight.append(item)
            await self.answers.put(item.answer)
            self.upstream_writer.write(framed(frame))
            await self.upstream_writer.drain()

    async def _from_upstream(self) -> None:
        while True:
            frame = await read_frame(self.upstream_reader)
            if not self.in_flight:
                raise ProtocolError("the broker answered a request nobody sent")
            item = self.in_flight.popleft()
            if struct.unpack(">i", frame[:4])[0] != item.header.correlation_id:
                raise ProtocolError("the broker answered out of order")
            if item.header.api_key == API_VERSIONS:
                try:
                    frame = cap_fetch_version(frame, item.header.api_version)
                except ProtocolError as error:  # e.g. an error answered in version 0
                    log.debug("ApiVersions response not read: %s", error)
            elif item.produce is not None:
                self.proxy.appended(item.produce, frame, item.header.api_version)
                self.proxy.signal.produced(item.produce.partitions)
            elif item.fetch is not None:
                if not self._read_answer(frame, item):
                    self._start_hold(item, frame)
                    continue
                self.known_empty = None
                self.proxy.counts.answered_at_once += 1
            item.answer.set_result(frame)

    def _read_answer(self, frame: bytes, item: InFlight, note_if_empty: bool = True) -> bool:
        """Whether the fetch response ``frame`` answers ``item``; notes its high watermarks and
        whether it left records behind (``item.left_behind``)."""
        assert item.fetch is not None
        try:
            answer = read_fetch_response(frame, item.header.api_version)
        except ProtocolError as error:  # passed on as it is: the client reads it
            log.debug("fetch response v%d not read: %s", item.header.api_version, error)
            return True
        if answer.has_answer or note_if_empty:
            self.proxy.ends.note(answer.high_watermarks, item.versions)
        self.proxy.cache.reported(answer.high_watermarks)
        item.left_behind = answer.left_behind(item.fetch.offsets)
        return answer.has_answer

    async def _ask_patiently(self, item: InFlight) -> bytes:
        """Ask the broker again for a fetch whose answer left records behind, with the client's
        own wait (tansu then reads what it has; measured: at once): its answer, whatever it is,
        as the client would have had it without the proxy."""
        assert item.fetch is not None
        self.proxy.counts.left_behind += 1
        self.known_empty = None
        return await self._fetch_again(item, item.fetch.max_wait_ms)

    def _start_hold(self, item: InFlight, empty: bytes | None) -> None:
        task = asyncio.get_running_loop().create_task(self._hold(item, empty))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _hold(self, item: InFlight, empty: bytes | None) -> None:
        """Answer ``item``'s fetch when a produce to its partitions gives it records, or with an
        empty answer when its wait runs out (``empty``, or the broker's if that is None)."""
        assert item.fetch is not None
        signal, counts = self.proxy.signal, self.proxy.counts
        # Nothing was re-sent yet: ``versions`` are still those of the fetch's first sending.
        partitions, seen, answer = item.fetch.partitions, sum(item.versions.values()), empty
        checked_at = item.checked_at
        try:
            if item.left_behind:  # the first answer came back without records tansu has
                item.answer.set_result(await self._ask_patiently(item))
                return
            while (remaining := item.deadline - time.monotonic()) > 0:
                if not await signal.wait_beyond(partitions, seen, remaining):
                    break
                seen = signal.version(partitions)
                checked_at = time.monotonic()
                answer = await self._woken(item)
                if answer is not None:
                    self.known_empty = None
                    counts.answered_on_produce += 1
                    item.answer.set_result(answer)
                    return
                counts.woken_for_nothing += 1
            if answer is None:  # held without asking: the broker's answer, whatever it is
                checked_at = time.monotonic()
                answer = await self._fetch_again(item)
                if self._read_answer(answer, item):
                    self.known_empty = None
                    item.answer.set_result(answer)
                    return
                if item.left_behind:
                    item.answer.set_result(await self._ask_patiently(item))
                    return
            counts.waited_out += 1
            self.known_empty = KnownEmpty(item.body, seen, answer, checked_at)
            item.answer.set_result(answer)
        except Exception as error:  # the client's connection closes with it
            item.answer.set_exception(error)

    async def _woken(self, item: InFlight) -> bytes | None:
        """Ask the broker again for a fetch a produce woke: its answer, or None if it has still
        nothing to read.

        Nothing can mean the consumer had already read the record (its previous fetch reached
        the broker after the record, before the proxy saw the acknowledgement), or the record
        is acknowledged but not yet readable: the broker is asked again shortly, and an empty
        answer's high watermarks are not trusted to hold later fetches (``PartitionEnds``).
        Each ask lets the broker wait ``WOKEN_WAIT_MS`` (less if the client's wait ends sooner).
        """
        pauses = iter(WOKEN_RETRY_S)
        while True:
            cached = self._cached(item)
            if cached is not None:
                return cached
            left_ms = int((item.deadline - time.monotonic()) * 1000)
            wait_ms = max(UPSTREAM_WAIT_MS, min(WOKEN_WAIT_MS, left_ms))
            answer = await self._fetch_again(item, wait_ms)
            if self._read_answer(answer, item, note_if_empty=False):
                return answer
            if item.left_behind:
                return await self._ask_patiently(item)
            pause_s = next(pauses, None)
            if pause_s is None or time.monotonic() + pause_s >= item.deadline:
                return None
            await asyncio.sleep(pause_s)

    async def _fetch_again(self, item: InFlight, wait_ms: int = 0) -> bytes:
        """Send ``item``'s fetch to the broker again (with ``UPSTREAM_WAIT_MS``, or ``wait_ms``
        if given); its answer."""
        item.versions = self.proxy.signal.versions(item.versions)
        frame = item.frame
        if wait_ms and item.fetch is not None:
            frame = with_wait(frame, item.fetch, wait_ms)
        async with self.refetch_lock:
            if self.refetch is None:
                self.refetch = await asyncio.open_connection(*self.proxy.upstream)
            reader, writer = self.refetch
            writer.write(framed(frame))
            await writer.drain()
            return await read_frame(reader)

    async def _to_client(self) -> None:
        while True:
            answer = await self.answers.get()
            self.client_writer.write(framed(await answer))
            await self.client_writer.drain()


class PartitionEnds:
    """The high watermark the broker last reported for each partition, with the partition's
    produce count when that fetch was sent and when it was.

    A fetch from at or past the high watermark of every partition it reads, none of which has
    been produced to since, has nothing to read: the proxy holds it without asking the broker
    (what it knows is at most ``RECHECK_EMPTY_S`` old). Under load this saves a broker round
    trip for most fetches: the one a consumer sends right after reading what there was."""

    def __init__(self) -> None:
        self._ends: dict[Partition, tuple[int, int, float]] = {}

    def note(self, high_watermarks: dict[Partition, int], versions: dict[Partition, int]) -> None:
        now = time.monotonic()
        for partition, high_watermark in high_watermarks.items():
            if partition in versions:
                self._ends[partition] = (high_watermark, versions[partition], now)

    def nothing_new(
        self, offsets: dict[Partition, int], versions: dict[Partition, int], now: float
    ) -> bool:
        for partition, offset in offsets.items():
            end = self._ends.get(partition)
            if (
                end is None
                or offset < end[0]
                or versions.get(partition) != end[1]
                or now - end[2] >= RECHECK_EMPTY_S
            ):
                return False
        return True


class FetchProxy:
    """Accepts clients' connections and forwards them to the broker at ``upstream``."""

    def __init__(
        self, upstream: tuple[str, int], cache_bytes: int = DEFAULT_RECORD_CACHE_MB << 20
    ) -> None:
        self.upstream = upstream
        self.signal = ProduceSignal()
        self.counts = ProxyCounts()
        self.ends = PartitionEnds()
        self.cache = RecordCache(cache_bytes)

    def appended(self, produce: ProduceRequest, frame: bytes, version: int) -> None:
        """The broker answered ``produce`` with ``frame``: hold what it appended."""
        if not self.cache.enabled:
            return
        try:
            appended = read_produce_response(frame, version)
        except ProtocolError as error:
            log.debug("produce response v%d not read: %s", version, error)
            self.cache.forget(produce.partitions)
            return
        for partition, records in produce.records.items():
            where = appended.get(partition)
            if (
                where is None
                or where.error != 0
                or where.log_append_time_ms != -1
                or produce.transactional
            ):
                # Not appended (or not as sent): whatever the broker holds, ask it.
                self.cache.forget([partition])
            else:
                self.cache.appended(partition, records, where.base_offset, where.log_start_offset)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError as error:
            log.warning("broker at %s:%d unreachable: %s", *self.upstream, error)
            writer.close()
            return
        await Connection(self, reader, writer, upstream_reader, upstream_writer).run()


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def wait_for_broker(host: str, port: int, broker: asyncio.subprocess.Process) -> None:
    """Wait until the broker accepts connections; raise if it exits first."""
    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while True:
        if broker.returncode is not None:
            raise RuntimeError(f"broker exited with code {broker.returncode} during start")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker not listening on {port} after start") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def relay_output(broker: asyncio.subprocess.Process, last_line: list[str]) -> None:
    """Copy the broker's output to ours (the service log), keeping its last line."""
    assert broker.stdout is not None
    while line := await broker.stdout.readline():
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        if line.strip():
            last_line[0] = line.decode("utf-8", "replace").strip()


async def serve(
    listen: tuple[str, int],
    upstream_host: str,
    command: list[str],
    cache_bytes: int = DEFAULT_RECORD_CACHE_MB << 20,
) -> int:
    """Start the broker ``command`` (``{upstream}`` in it replaced by its HOST:PORT), proxy
    ``listen`` to it; stop it on SIGTERM; the broker's exit code."""
    port = free_port(upstream_host)
    argv = [part.replace("{upstream}", f"{upstream_host}:{port}") for part in command]
    broker = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, broker.terminate)
    last_line: list[str] = [""]
    relay = loop.create_task(relay_output(broker, last_line))
    try:
        await wait_for_broker(upstream_host, port, broker)
    except RuntimeError as error:
        if broker.returncode is None:
            broker.terminate()
        code = await broker.wait() or 1
        await relay
        log.error("%s: %s", error, last_line[0])
        return code
    proxy = FetchProxy((upstream_host, port), cache_bytes)
    server = await asyncio.start_server(proxy.handle, *listen)
    log.info(
        "fetch proxy on %s:%d in front of the broker on %s:%d (pid %d), record cache %d MB",
        *listen,
        upstream_host,
        port,
        broker.pid,
        cache_bytes >> 20,
    )

    def counts() -> str:
        return f"{proxy.counts.line()}; {proxy.cache.line()}"

    def log_counts() -> None:
        log.info("%s", counts())

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            log_counts()

    # `kill -USR1 <pid>`: the counts now, not at the next minute.
    loop.add_signal_handler(signal.SIGUSR1, log_counts)

    reporter = loop.create_task(report())
    try:
        code = await broker.wait()
        await relay
    finally:
        reporter.cancel()
        server.close()
    log.info("broker exited with code %d (%s); %s", code, last_line[0], counts())
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=(
            "Run a Kafka-protocol broker behind a proxy that answers a waiting fetch as soon "
            "as a record for it is produced (the local stack's tansu sleeps out every wait)."
        ),
        epilog="example: python -m facegate.stack.fetch_proxy --listen 127.0.0.1:19092 -- "
        "tansu broker --listener-url tcp://{upstream} "
        "--advertised-listener-url tcp://127.0.0.1:19092 --storage-engine memory://tansu/",
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT clients connect to")
    parser.add_argument(
        "--upstream-host", default="127.0.0.1", help="where the broker listens (a free port)"
    )
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the proxy's event loop (uvloop spends less CPU a request)",
    )
    parser.add_argument(
        "--record-cache-mb",
        type=int,
        default=DEFAULT_RECORD_CACHE_MB,
        help="recently produced records kept to answer fetches without the broker (0: none)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    parser.add_argument("command", nargs="+", help="the broker's command; {upstream} = HOST:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s fetch-proxy %(message)s",
    )
    host, port = args.listen.rsplit(":", 1)
    run = uvloop.run if args.event_loop == "uvloop" else asyncio.run
    cache_bytes = max(0, args.record_cache_mb) << 20
    sys.exit(run(serve((host, int(port)), args.upstream_host, args.command, cache_bytes)))


if __name__ == "__main__":
    main()
