"""Offset commits that wait out a broker outage, and the producer's idempotence setting.

``FlakyConsumer`` is a fake standing in for a kafka-python consumer: it raises the errors
kafka-python raised while the broker was down (measured: ``KafkaConnectionError`` from
``commit()`` while tansu restarted).  The real outage is exercised in
tests/faults/test_broker_restart.py.
"""

from __future__ import annotations

import threading

import pytest
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    NodeNotReadyError,
    TopicAuthorizationFailedError,
    UnknownMemberIdError,
)

from facegate.kafka_clients import commit_processed, producer_config
from facegate.settings import KafkaSettings


class FlakyConsumer:
    """Fake: ``commit()`` raises each queued error in turn, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.committed = False

    def commit(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.committed = True


def test_commit_retries_through_a_broker_outage() -> None:
    consumer = FlakyConsumer(KafkaConnectionError("111 ECONNREFUSED"), NodeNotReadyError(111))
    assert commit_processed(consumer, threading.Event(), first_backoff_s=0.001)
    assert consumer.calls == 3 and consumer.committed


@pytest.mark.parametrize("error", [CommitFailedError("rebalanced"), UnknownMemberIdError()])
def test_commit_gives_up_when_the_group_moved_on(error: Exception) -> None:
    consumer = FlakyConsumer(error)
    assert not commit_processed(consumer, threading.Event(), first_backoff_s=0.001)
    assert consumer.calls == 1 and not consumer.committed


def test_commit_stops_waiting_when_the_service_stops() -> None:
    stopping = threading.Event()
    stopping.set()
    consumer = FlakyConsumer(KafkaConnectionError("down"))
    assert not commit_processed(consumer, stopping, first_backoff_s=0.001)
    assert consumer.calls == 1 and not consumer.committed


def test_commit_raises_what_retrying_cannot_fix() -> None:
    consumer = FlakyConsumer(TopicAuthorizationFailedError("verdicts"))
    with pytest.raises(TopicAuthorizationFailedError):
        commit_processed(consumer, threading.Event(), first_backoff_s=0.001)


@pytest.mark.parametrize("enabled", [False, True])
def test_producer_idempotence_follows_the_setting(enabled: bool) -> None:
    config = producer_config(KafkaSettings(idempotent_producer=enabled))
    assert config["enable_idempotence"] is enabled
    assert config["acks"] == "all"


def test_idempotence_is_off_by_default() -> None:
    assert KafkaSettings().idempotent_producer is False
