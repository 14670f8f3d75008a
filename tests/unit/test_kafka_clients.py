"""Offset commits and acknowledged sends that wait out a broker outage, and the producer's
idempotence setting.

``FlakyConsumer``, ``ScriptedFuture`` and ``ScriptedProducer`` are fakes standing in for
kafka-python's consumer, send future and producer: they raise the errors kafka-python raises
while the broker is down (measured: ``KafkaConnectionError`` from ``commit()`` while tansu
restarted; ``KafkaTimeoutError`` from ``get`` while a send is still pending).  The real outage
is exercised in tests/faults/test_broker_restart.py.
"""

from __future__ import annotations

import threading

import pytest
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    TopicAuthorizationFailedError,
    UnknownMemberIdError,
)

from facegate.kafka_clients import commit_processed, producer_config, send_acknowledged
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


class ScriptedFuture:
    """Fake send future: each ``get`` plays the next step ("wait": still pending, an
    exception: the send failed, "ok": acknowledged)."""

    def __init__(self, steps: list[object]) -> None:
        self.steps = steps
        self.is_done = False

    def get(self, timeout: float | None = None) -> object:
        step = self.steps.pop(0) if self.steps else "ok"
        if step == "wait":
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")
        self.is_done = True
        if isinstance(step, Exception):
            raise step
        return "metadata"


class ScriptedProducer:
    """Fake producer: the n-th ``send`` returns a future playing ``scripts[n]``."""

    def __init__(self, *scripts: list[object]) -> None:
        self.scripts = list(scripts)
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> object:
        self.sent.append((topic, key, value))
        return ScriptedFuture(self.scripts.pop(0) if self.scripts else [])


def test_send_waits_out_a_long_pending_acknowledgement() -> None:
    producer = ScriptedProducer(["wait", "wait", "wait", "ok"])
    assert send_acknowledged(producer, "verdicts", [(b"k", b"v")], threading.Event(), 0.001)
    assert producer.sent == [("verdicts", b"k", b"v")]


def test_send_resends_a_record_whose_delivery_failed() -> None:
    # The producer gave up on the first send (its delivery timeout ran out during an outage).
    producer = ScriptedProducer([KafkaTimeoutError("Batch expired")], ["ok"])
    assert send_acknowledged(producer, "verdicts", [(b"k", b"v")], threading.Event(), 0.001)
    assert len(producer.sent) == 2 and producer.sent[0] == producer.sent[1]


def test_send_stops_waiting_when_the_service_stops() -> None:
    stopping = threading.Event()
    stopping.set()
    producer = ScriptedProducer(["wait"] * 100)
    assert not send_acknowledged(producer, "verdicts", [(b"k", b"v")], stopping, 0.001)


def test_send_raises_when_the_broker_refuses_a_record_for_good() -> None:
    producer = ScriptedProducer([MessageSizeTooLargeError("too big")])
    with pytest.raises(MessageSizeTooLargeError):
        send_acknowledged(producer, "verdicts", [(b"k", b"v")], threading.Event(), 0.001)
