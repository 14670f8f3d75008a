"""The training service's consumer on the real broker: a drift report that calls for
retraining starts a run, an unreadable record goes to the dead-letter topic with its reason,
and the service goes on.

The run itself is a stand-in here (a function that records its reason, said so): the real run
is exercised end to end by the loop test (tests/e2e/test_training_loop.py).
"""

from __future__ import annotations

import threading
import uuid

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from facegate.kafka_clients import make_producer
from facegate.settings import KafkaSettings
from facegate.stack import LocalStack
from schemas.codec import decode, encode
from schemas.messages import DeadLetter, DriftReport, now
from schemas.topics import DRIFT, FRAMES_DLQ
from tests.topic_reader import read_topic
from trainer.retrain_service import SERVICE, RetrainService
from trainer.retraining import RetrainOutcome, RetrainSettings

pytestmark = pytest.mark.integration


def _dead_letters(payload: bytes, timeout_s: float) -> list[DeadLetter]:
    def ours(record: ConsumerRecord) -> DeadLetter | None:
        letter = decode(record.value, DeadLetter)
        return letter if letter.service == SERVICE and letter.payload == payload else None

    return read_topic(FRAMES_DLQ.name, FRAMES_DLQ.partitions, ours, bool, timeout_s)


def test_a_drift_report_starts_a_run_and_garbage_is_dead_lettered(
    local_stack: LocalStack,
) -> None:
    gate = f"gate-{uuid.uuid4().hex[:8]}"
    reasons: list[str] = []
    ran_for_this_gate = threading.Event()

    def stand_in_run(reason: str) -> RetrainOutcome:
        # Other tests' breached reports earlier on the topic start stand-in runs too: wait
        # for the one this test's report starts.
        reasons.append(reason)
        if gate in reason:
            ran_for_this_gate.set()
        return RetrainOutcome(reason)

    settings = RetrainSettings(group_id=f"retrain-{uuid.uuid4().hex[:8]}", cooldown_s=0)
    service = RetrainService(settings, run=stand_in_run)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    garbage = b"\x00not a drift report " + uuid.uuid4().bytes
    report = DriftReport(
        report_id=uuid.uuid4().hex,
        gate_id=gate,
        model_version="1",
        # Other tests' breached reports earlier on the topic start stand-in runs first, and a
        # report closed before a run ended counts as answered by it: this one closes later.
        window_start=now(),
        window_end=now() + 600,
        samples=50,
        statistics={"brightness_mean_drop": 0.6},
        thresholds={"brightness_mean_drop": 0.25},
        breached=["brightness_mean_drop"],
    )
    producer = make_producer(KafkaSettings())
    try:
        # The group joins from the earliest offset, so records sent now are read.
        producer.send(DRIFT.name, key=gate.encode(), value=garbage).get(30)
        producer.send(DRIFT.name, key=gate.encode(), value=encode(report)).get(30)
        assert ran_for_this_gate.wait(90), f"the drift report started no run: {reasons}"
        (letter,) = _dead_letters(garbage, timeout_s=30)
    finally:
        service.stopping.set()
        thread.join(30)
        producer.close()
    assert letter.source_topic == DRIFT.name and letter.reason
    # One run answers every report read in one poll, naming each (other tests' reports may
    # come in the same poll as this one).
    ours = [part for r in reasons for part in r.split("; ") if gate in part]
    assert ours == [f"drift at {gate} on model v1: brightness_mean_drop"]
    assert service.outcomes and not thread.is_alive()
