"""``facegate_consumer_lag`` of the worker's librdkafka consumer and of a kafka-python one,
measured against the real broker."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from facegate.kafka_clients import make_consumer, make_producer
from facegate.rdkafka_clients import RdConsumer
from facegate.settings import KafkaSettings, load_settings
from facegate.stack import LocalStack
from inference_worker.metrics import KafkaLag
from tests.topic_reader import create_scratch_topic

pytestmark = pytest.mark.integration


def _lag(group: str, topic: str) -> float | None:
    labels = {"group": group, "topic": topic, "partition": "0"}
    return REGISTRY.get_sample_value("facegate_consumer_lag", labels)


@pytest.mark.parametrize("library", ["librdkafka", "kafka-python"])
def test_lag_follows_what_the_group_has_consumed(local_stack: LocalStack, library: str) -> None:
    kafka = load_settings(KafkaSettings)
    topic, group = create_scratch_topic("lag", kafka), f"lag-group-{uuid.uuid4().hex[:8]}"
    producer = make_producer(kafka)
    for n in range(10):
        # One record per produce request: the broker's high watermark is exact then.
        producer.send(topic, key=b"k", value=str(n).encode()).get(timeout=30)
    producer.close()

    consumer: Any = (
        RdConsumer(kafka, group, [topic])
        if library == "librdkafka"
        else make_consumer(kafka, group, [topic], max_poll_records=4)
    )
    lag = KafkaLag(consumer, group)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=4 - len(seen)).values():
                seen += [int(r.value) for r in records]
        assert seen == [0, 1, 2, 3]
        lag.update()
        assert _lag(group, topic) == 6
        while len(seen) < 10 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen += [int(r.value) for r in records]
        assert seen == list(range(10))
        lag.update()
        assert _lag(group, topic) == 0
    finally:
        consumer.close()
