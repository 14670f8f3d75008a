"""The training service's consumer on the real broker: a drift report that calls for
retraining starts a run, an unreadable record goes to the dead-letter topic with its reason,
and the service goes on; a run cut short by the service's end is resumed by the next service
from the ledger in the real Redis, and given up after its attempts.

The run itself is a stand-in here (a function that records its reason, said so): the real run
is exercised end to end by the loop test (tests/e2e/test_training_loop.py).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import REGISTRY

from facegate.kafka_clients import make_producer
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, RedisSettings
from facegate.stack import LocalStack
from schemas.codec import decode, encode
from schemas.messages import DeadLetter, DriftReport, now
from schemas.topics import DRIFT, FRAMES_DLQ
from tests.topic_reader import read_topic
from trainer.retrain_ledger import PENDING_KEY
from trainer.retrain_service import SERVICE, RetrainService
from trainer.retraining import RetrainOutcome, RetrainSettings

pytestmark = pytest.mark.integration


def _dead_letters(payload: bytes, timeout_s: float) -> list[DeadLetter]:
    def ours(record: ConsumerRecord) -> DeadLetter | None:
        letter = decode(record.value, DeadLetter)
        return letter if letter.service == SERVICE and letter.payload == payload else None

    return read_topic(FRAMES_DLQ.name, FRAMES_DLQ.partitions, ours, bool, timeout_s)


def _breached_report(gate: str) -> DriftReport:
    # Other tests' breached reports earlier on the topic start runs first, and a report closed
    # before a run ended counts as answered by it: this one closes later.
    return DriftReport(
        report_id=uuid.uuid4().hex,
        gate_id=gate,
        model_version="1",
        window_start=now(),
        window_end=now() + 600,
        samples=50,
        statistics={"brightness_mean_drop": 0.6},
        thresholds={"brightness_mean_drop": 0.25},
        breached=["brightness_mean_drop"],
    )


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
    report = _breached_report(gate)
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


class Killed(BaseException):
    """Stands in for the process's end in the middle of a run (SIGKILL, a lost node): not an
    ``Exception``, so the service does not count it as a failed run and clean up after it;
    it ends the service's thread as the signal would end its process."""


def _serve(service: RetrainService) -> tuple[threading.Thread, threading.Event]:
    """Run ``service`` in a thread; the event is set if a ``Killed`` ends it."""
    killed = threading.Event()

    def target() -> None:
        try:
            service.run()
        except Killed:
            killed.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, killed


def test_a_run_cut_short_is_resumed_by_the_next_service_then_given_up(
    local_stack: LocalStack,
) -> None:
    gate, later_gate = (f"gate-{uuid.uuid4().hex[:8]}" for _ in range(2))
    settings = RetrainSettings(
        group_id=f"retrain-{uuid.uuid4().hex[:8]}", cooldown_s=0, max_attempts=2
    )
    redis_client = make_redis(RedisSettings())
    key = PENDING_KEY.format(group=settings.group_id)
    calls: list[tuple[int, str]] = []

    def run_dying_on(service_number: int) -> RetrainService:
        def run(reason: str) -> RetrainOutcome:
            calls.append((service_number, reason))
            if gate in reason:
                raise Killed
            return RetrainOutcome(reason)  # other tests' reports: a stand-in run that ends

        return RetrainService(settings, run=run)

    producer = make_producer(KafkaSettings())
    try:
        # 1. The report is read, committed and its run begun; the service dies in the run.
        thread, killed = _serve(run_dying_on(1))
        producer.send(DRIFT.name, key=gate.encode(), value=encode(_breached_report(gate))).get(30)
        assert killed.wait(90), f"the report's run did not start: {calls}"
        thread.join(30)
        pending = {k.decode(): v.decode() for k, v in redis_client.hgetall(key).items()}
        assert pending["attempts"] == "1" and gate in pending["reason"], pending
        assert pending["trigger"] == "drift"

        # 2. The next service resumes it before reading anything, and dies in it too.
        thread, killed = _serve(run_dying_on(2))
        assert killed.wait(60), f"the pending run was not resumed: {calls}"
        thread.join(30)
        (resumed,) = [reason for number, reason in calls if number == 2]
        assert gate in resumed and "(attempt 2: the last one was interrupted)" in resumed
        assert redis_client.hget(key, "attempts") == b"2"

        # 3. Past its attempts it is given up; the report is not read again (its offset was
        # committed before the first run) while a report sent now starts a run.
        failed_before = _failed_runs()
        third = run_dying_on(3)
        thread, killed = _serve(third)
        producer.send(
            DRIFT.name, key=later_gate.encode(), value=encode(_breached_report(later_gate))
        ).get(30)
        deadline = time.monotonic() + 90
        while not any(later_gate in reason for number, reason in calls if number == 3):
            assert time.monotonic() < deadline, f"the later report started no run: {calls}"
            assert thread.is_alive() and not killed.is_set(), calls
            time.sleep(0.2)
        third.stopping.set()
        thread.join(30)
        left_pending = redis_client.exists(key)
    finally:
        producer.close()
        redis_client.delete(key)
    assert not any(gate in reason for number, reason in calls if number == 3), calls
    assert left_pending == 0
    assert _failed_runs() == failed_before + 1


def _failed_runs() -> float:
    value = REGISTRY.get_sample_value("facegate_retrain_runs_total", {"outcome": "failed"})
    return value or 0.0
