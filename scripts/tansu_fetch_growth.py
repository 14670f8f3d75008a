"""Measure how the local broker's fetch cost grows with the size of a partition.

Starts a private tansu broker (memory engine, as the local stack runs it), fills one partition
with 50 KB records (the size of a camera frame) in steps of 200 MB, and after each step times a
fetch of the newest record of that partition and of a small topic.  Quoted in the README
(Soak) to explain why a long overload soak on the local stack stalls: the broker, not
FaceGate's services.

    .venv/bin/python scripts/tansu_fetch_growth.py --steps 8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from facegate.stack.ports import free_port_block
from facegate.stack.services import tansu_argv

RECORD_BYTES = 50_000
RECORDS_PER_STEP = 4000


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def _fetch_newest_ms(
    producer: KafkaProducer, consumer: KafkaConsumer, topic: str, rounds: int = 5
) -> float:
    """Median time from seeking to a just-written record to having it, over ``rounds``."""
    partition = TopicPartition(topic, 0)
    times = []
    for _ in range(rounds):
        offset = producer.send(topic, b"x").get(30).offset
        consumer.assign([partition])
        consumer.seek(partition, offset)
        started = time.perf_counter()
        found = False
        while not found:
            for records in consumer.poll(timeout_ms=1000).values():
                found = found or any(r.offset == offset for r in records)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="200 MB steps (default 8)")
    args = parser.parse_args()
    port = free_port_block(1)
    broker = subprocess.Popen(
        tansu_argv(f"tcp://127.0.0.1:{port}", "memory://tansu/"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        bootstrap = f"127.0.0.1:{port}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("big", 1, 1), NewTopic("small", 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, enable_idempotence=False)
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        payload = os.urandom(RECORD_BYTES)
        for step in range(1, args.steps + 1):
            for future in [producer.send("big", payload) for _ in range(RECORDS_PER_STEP)]:
                future.get(60)
            size_mb = step * RECORDS_PER_STEP * RECORD_BYTES / 1e6
            print(
                f"partition {size_mb:.0f} MB, broker RSS {_rss_mb(broker.pid)} MB: newest record "
                f"fetched in {_fetch_newest_ms(producer, consumer, 'big'):.1f} ms; "
                f"small topic {_fetch_newest_ms(producer, consumer, 'small'):.1f} ms",
                flush=True,
            )
        consumer.close()
        producer.close()
    finally:
        broker.kill()


if __name__ == "__main__":
    main()
