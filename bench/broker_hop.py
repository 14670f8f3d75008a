"""What one broker hop costs on its own: the floor under the pipeline's ``frames_hop`` and
``faces_hop``.

One record at a time (the JPEG of the benchmark's median-size frame) goes from a producer to a
consumer of a scratch topic with as many partitions as ``frames``, through the stack's broker,
with the hot path's clients and settings (``RdProducer``, ``RdConsumer``: librdkafka, the
hot-path fetch wait; in the pipeline the stream processor's end of each hop is Faust's
aiokafka).  The consumer polls all the time in its own thread, as the services' consumers do,
so a fetch is already waiting at the broker when each record arrives, as at a gate between two
students.  Nothing else runs on the broker meanwhile, so this is what a hop costs before any
service competes for the cores.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from kafka import TopicPartition
from kafka.admin import NewTopic

from bench.stats import latency_summary
from facegate.kafka_clients import make_admin
from facegate.rdkafka_clients import RdConsumer, RdProducer
from facegate.settings import KafkaSettings
from schemas.topics import FRAMES


class _Receiver:
    """A consumer polling in its own thread; when each record (partition, offset) came in."""

    def __init__(self, consumer: RdConsumer) -> None:
        self.consumer = consumer
        self.received: dict[tuple[int, int], float] = {}
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._poll, name="hop-consumer", daemon=True)

    def start(self) -> _Receiver:
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self.stopping.is_set():
            batches = self.consumer.poll(timeout_ms=200)
            at = time.perf_counter()
            self.ready.set()  # connected, positions known; the next fetch is waiting
            if batches:
                with self._arrived:
                    for partition, records in batches.items():
                        for record in records:
                            self.received[(partition.partition, record.offset)] = at
                    self._arrived.notify_all()

    def wait_for(self, key: tuple[int, int], timeout_s: float) -> float:
        """When the record ``key`` came in; raises TimeoutError if it did not."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: key in self.received, timeout_s):
                raise TimeoutError(f"record {key} not consumed after {timeout_s:.0f} s")
            return self.received[key]

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(10)


def broker_hop_ms(
    kafka: KafkaSettings, payload: bytes, records: int = 100, gap_s: float = 0.02
) -> dict[str, Any]:
    """Producer acknowledgement and produce-to-consume latency of ``records`` single records,
    ``gap_s`` apart (the consumer is idle, its fetch held by the broker, when each is sent)."""
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    admin = make_admin(kafka)
    try:
        admin.create_topics([NewTopic(topic, FRAMES.partitions, 1)])
    finally:
        admin.close()
    producer = RdProducer(kafka)
    consumer = RdConsumer(kafka, f"{topic}-reader")
    consumer.assign(TopicPartition(topic, p) for p in range(FRAMES.partitions))
    receiver = _Receiver(consumer).start()
    acks: list[float] = []
    hops: list[float] = []
    try:
        if not receiver.ready.wait(10):
            raise TimeoutError("the hop consumer did not start polling within 10 s")
        time.sleep(gap_s)
        for number in range(records):
            started = time.perf_counter()
            sent = producer.send(topic, payload, partition=number % FRAMES.partitions).get(30)
            acks.append((time.perf_counter() - started) * 1000)
            arrived = receiver.wait_for((sent.partition, sent.offset), 10)
            hops.append((arrived - started) * 1000)
            time.sleep(gap_s)
    finally:
        receiver.stop()
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
