"""The fetch proxy's record cache (facegate/stack/record_cache.py) answers a fetch as tansu does.

A proxy runs in this process in front of the local stack's tansu (the stack's own proxy keeps
its cache to itself), so that the test can tell whether an answer came from the cache. Record
batches are built by aiokafka's record builder, requests and responses written and compared
byte for byte: the cache's answer to a fetch is the broker's answer to the same fetch.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from facegate.settings import KafkaSettings, load_settings
from facegate.stack import LocalStack
from facegate.stack.fetch_proxy import FetchProxy
from facegate.stack.kafka_wire import CREATE_TOPICS, DELETE_TOPICS, PRODUCE
from tests.kafka_frames import fetch_request, request_header
from tests.topic_reader import create_scratch_topic

pytestmark = pytest.mark.integration


def tansu_address(stack: LocalStack) -> tuple[str, int]:
    """Where the stack's tansu listens behind its own proxy (from the proxy's log line)."""
    log = stack.log_path("broker").read_text()
    found = re.search(r"in front of the broker on ([\d.]+):(\d+)", log)
    assert found, "the broker's log names no upstream address"
    return found.group(1), int(found.group(2))


@contextmanager
def proxy_in_thread(upstream: tuple[str, int]) -> Iterator[tuple[FetchProxy, int]]:
    """A fetch proxy in front of ``upstream`` on a free port, on an event loop of its own."""
    loop = asyncio.new_event_loop()
    proxy = FetchProxy(upstream)
    server = loop.run_until_complete(asyncio.start_server(proxy.handle, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def shut_down() -> None:
        server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        yield proxy, port
    finally:
        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class Proxied:
    """A proxy in this process in front of the stack's tansu, a connection to each."""

    proxy: FetchProxy
    client: socket.socket  # to the proxy
    broker: socket.socket  # to tansu itself


@contextmanager
def proxied(stack: LocalStack) -> Iterator[Proxied]:
    upstream = tansu_address(stack)
    with proxy_in_thread(upstream) as (proxy, port):
        client = socket.create_connection(("127.0.0.1", port))
        broker = socket.create_connection(upstream)
        try:
            yield Proxied(proxy, client, broker)
        finally:
            client.close()
            broker.close()


def call(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))
    return sock.recv(size, socket.MSG_WAITALL)


def record_batch(values: list[bytes]) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset, value in enumerate(values):
        builder.append(
            offset=offset, timestamp=int(time.time() * 1000), key=None, value=value, headers=[]
        )
    return bytes(builder.build())


def produce(sock: socket.socket, topic: str, partition: int, batch: bytes) -> None:
    request = request_header(PRODUCE, 7, flexible=False).string(None).i16(-1).i32(10000)
    request.array(1).string(topic).array(1).i32(partition).records(batch)
    answer = call(sock, request.out)
    # correlation id, 1 topic, its name, 1 partition, the partition's index, its error code
    error_at = 4 + 4 + 2 + len(topic) + 4 + 4
    assert answer[error_at : error_at + 2] == b"\0\0", answer.hex()


@pytest.mark.parametrize("version", [4, 11, 12])
def test_a_fetch_answered_from_the_record_cache_is_what_the_broker_answers(
    local_stack: LocalStack, version: int
) -> None:
    topic = create_scratch_topic("record-cache", load_settings(KafkaSettings), 3)
    with proxied(local_stack) as through:
        proxy, client, broker = through.proxy, through.client, through.broker
        produce(client, topic, 0, record_batch([b"a0", b"a1", b"a2"]))
        produce(client, topic, 0, record_batch([b"a3"]))
        produce(client, topic, 1, record_batch([b"b0", b"b1"]))
        for offsets in ({0: 0, 1: 0}, {0: 1, 1: 2}, {0: 3}):
            request = fetch_request(version, 500, {topic: list(offsets)}, offsets=offsets)
            answered = proxy.cache.answered
            cached = call(client, request)
            assert proxy.cache.answered == answered + 1, "not answered from the cache"
            assert cached == call(broker, request)


def test_a_partition_nobody_produced_to_is_learnt_from_the_brokers_answer(
    local_stack: LocalStack,
) -> None:
    topic = create_scratch_topic("record-cache-idle", load_settings(KafkaSettings), 2)
    with proxied(local_stack) as through:
        proxy, client, broker = through.proxy, through.client, through.broker
        produce(client, topic, 0, record_batch([b"a0"]))
        both = fetch_request(12, 200, {topic: [0, 1]}, offsets={0: 0, 1: 0})
        # Partition 1's end is unknown to the cache: the broker answers, and says where it is.
        call(client, both)
        assert proxy.cache.answered == 0
        answered = proxy.cache.answered
        assert call(client, both) == call(broker, both)
        assert proxy.cache.answered == answered + 1


def test_a_topic_deleted_and_created_again_is_not_answered_from_the_old_records(
    local_stack: LocalStack,
) -> None:
    topic = create_scratch_topic("record-cache-again", load_settings(KafkaSettings), 1)
    with proxied(local_stack) as through:
        proxy, client, broker = through.proxy, through.client, through.broker
        produce(client, topic, 0, record_batch([b"old-0", b"old-1"]))
        from_start = fetch_request(12, 100, {topic: [0]}, offset=0)
        assert b"old-0" in call(client, from_start)
        answered = proxy.cache.answered
        # Through the proxy, as an admin client would: DeleteTopics v1, then CreateTopics v2.
        delete = request_header(DELETE_TOPICS, 1, flexible=False).array(1).string(topic)
        call(client, delete.i32(10000).out)
        create = request_header(CREATE_TOPICS, 2, flexible=False).array(1).string(topic)
        create.i32(1).i16(1).array(0).array(0).i32(10000).i8(0)
        call(client, create.out)
        again = call(client, from_start)
        assert b"old-0" not in call(broker, from_start)  # tansu really starts afresh
        assert b"old-0" not in again
        assert proxy.cache.answered == answered
