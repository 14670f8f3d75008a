"""What one broker hop costs on its own: the floor under the pipeline's ``frames_hop`` and
``faces_hop``.

One record at a time (the JPEG of the benchmark's median-size frame) goes from a producer to a
consumer of a scratch topic with as many partitions as ``frames``, through the stack's broker,
with the clients and settings the services use (``make_producer``, ``make_consumer``:
kafka-python, the hot-path fetch wait).  Nothing else runs on the broker meanwhile, so this is
what a hop costs before any service competes for the cores.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kafka import TopicPartition
from kafka.admin import NewTopic

from bench.stats import latency_summary
from facegate.kafka_clients import make_admin, make_consumer, make_producer
from facegate.settings import KafkaSettings
from schemas.topics import FRAMES


def broker_hop_ms(
    kafka: KafkaSettings, payload: bytes, records: int = 100, gap_s: float = 0.02
) -> dict[str, Any]:
    """Producer acknowledgement and produce-to-consume latency of ``records`` single records.

    ``gap_s`` between records leaves the consumer idle with a fetch held by the broker when the
    next record is produced, as at a gate.
    """
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    admin = make_admin(kafka)
    try:
        admin.create_topics([NewTopic(topic, FRAMES.partitions, 1)])
    finally:
        admin.close()
    producer = make_producer(kafka)
    consumer = make_consumer(kafka, None)
    partitions = [TopicPartition(topic, p) for p in range(FRAMES.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    acks: list[float] = []
    hops: list[float] = []
    try:
        consumer.poll(timeout_ms=500)  # connected, positions known, a fetch in flight
        for number in range(records):
            started = time.perf_counter()
            producer.send(topic, payload, partition=number % FRAMES.partitions).get(30)
            acks.append((time.perf_counter() - started) * 1000)
            deadline = started + 10
            while not consumer.poll(timeout_ms=200):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"record {number} not consumed after 10 s")
            hops.append((time.perf_counter() - started) * 1000)
            time.sleep(gap_s)
    finally:
        consumer.close()
        producer.close()
    return {
        "records": records,
        "record_bytes": len(payload),
        "partitions": FRAMES.partitions,
        "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
        "produce_ack_ms": latency_summary(acks),
        "hop_ms": latency_summary(hops),
    }
