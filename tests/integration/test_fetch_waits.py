"""Hot-path and control consumers on the real broker: how long the broker holds an idle fetch.

A consumer of a control topic (enrolments, model events, drift, feedback) lets the broker hold
an empty fetch for ``control_fetch_max_wait_ms`` instead of ``fetch_max_wait_ms``, so that an
idle service does not poll 50 times a second; kafka-python's own fetch-latency metric shows it.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from facegate.kafka_clients import make_consumer, make_control_consumer
from facegate.settings import KafkaSettings
from facegate.stack import LocalStack
from tests.topic_reader import create_scratch_topic

pytestmark = pytest.mark.integration


def _idle_fetch_latency_ms(consumer: KafkaConsumer, topic: str, seconds: float) -> float:
    """kafka-python's mean fetch latency after polling an empty topic for ``seconds``."""
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not consumer.poll(timeout_ms=200), "the topic was meant to stay empty"
    metrics = consumer.metrics()["consumer-fetch-manager-metrics"]
    return float(metrics["fetch-latency-avg"])


def test_control_consumers_let_the_broker_hold_idle_fetches_longer(
    local_stack: LocalStack,
) -> None:
    topic = create_scratch_topic("fetch-waits")
    settings = KafkaSettings(fetch_max_wait_ms=20, control_fetch_max_wait_ms=500)
    hot = make_consumer(settings, None)
    control = make_control_consumer(settings, None)
    try:
        assert control.config["fetch_max_wait_ms"] == 500
        hot_ms = _idle_fetch_latency_ms(hot, topic, 2.5)
        control_ms = _idle_fetch_latency_ms(control, topic, 2.5)
    finally:
        hot.close()
        control.close()
    # The broker answers an empty fetch when the wait is over (tansu: within a few ms of it).
    assert hot_ms < 100, f"hot consumer's idle fetches took {hot_ms:.0f} ms"
    assert control_ms > 250, f"control consumer's idle fetches took {control_ms:.0f} ms"
