"""When the training service retrains: drift, new students, the schedule, the cooldown.

The triggers are driven with a hand-moved clock; the service itself, on the real stack, is run
by the loop test (tests/e2e/test_training_loop.py) and tests/integration/test_retrain_service.py
(the pending-run ledger on the real Redis).  Here the service's ledger is a real Redis client
of a port where nothing listens: Redis is down.
"""

from __future__ import annotations

import logging
import socket

import pytest
import redis
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

from inference_worker.gallery_backfill import BACKFILL
from schemas.messages import DriftReport, Enrollment
from trainer.retrain_ledger import RetrainLedger
from trainer.retrain_service import Request, RetrainService, RetrainTriggers
from trainer.retraining import RetrainOutcome, RetrainSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _report(breached: list[str], window_end: float = 1000.0) -> DriftReport:
    return DriftReport(
        report_id="r",
        gate_id="g1",
        model_version="1",
        window_start=window_end - 60,
        window_end=window_end,
        samples=50,
        statistics={name: 1.0 for name in breached},
        thresholds={name: 0.5 for name in breached},
        breached=breached,
    )


def _enrolled(student: str, version: str = "1", by: str = "facegate") -> Enrollment:
    return Enrollment(
        student_id=student,
        action="enrolled",
        model_version=version,
        template_count=3,
        at=0.0,
        by=by,
    )


def _settings(**overrides: float) -> RetrainSettings:
    values: dict[str, float] = {"cooldown_s": 600, "enrollments_trigger": 3, "schedule_s": 0}
    return RetrainSettings(**{**values, **overrides})  # type: ignore[arg-type]


def test_a_breach_that_calls_for_retraining_requests_a_run_with_its_statistics() -> None:
    triggers = RetrainTriggers(_settings(), Clock())
    request = triggers.on_drift(_report(["brightness_mean_drop", "mmd"]))
    assert request is not None and request.trigger == "drift"
    assert "brightness_mean_drop" in request.reason and "g1" in request.reason


def test_breaches_that_retraining_cannot_fix_request_nothing() -> None:
    triggers = RetrainTriggers(_settings(), Clock())
    assert triggers.on_drift(_report([])) is None
    # Several faces in the frame is a gate problem, not a model one.
    assert triggers.on_drift(_report(["several_faces_rate"])) is None


def test_cooldown_holds_back_a_second_request_until_it_has_passed() -> None:
    clock = Clock()
    triggers = RetrainTriggers(_settings(), clock)
    assert triggers.on_drift(_report(["mmd"], window_end=clock.now)) is not None
    clock.now += 599
    assert triggers.on_drift(_report(["mmd"], window_end=clock.now)) is None
    clock.now += 2
    assert triggers.on_drift(_report(["mmd"], window_end=clock.now)) is not None


def test_reports_closed_while_a_run_trained_are_ignored_after_it() -> None:
    clock = Clock()
    triggers = RetrainTriggers(_settings(cooldown_s=0), clock)
    triggers.started()
    clock.now += 3600
    triggers.finished()
    assert triggers.on_drift(_report(["mmd"], window_end=clock.now - 10)) is None
    assert triggers.on_drift(_report(["mmd"], window_end=clock.now + 10)) is not None


def test_new_students_count_once_and_backfills_not_at_all() -> None:
    triggers = RetrainTriggers(_settings(), Clock())
    assert triggers.on_enrollment(_enrolled("s1", "1")) is None
    # The same student under the canary's version too: still one new student.
    assert triggers.on_enrollment(_enrolled("s1", "2")) is None
    for student in ("s2", "s3", "s4"):
        assert triggers.on_enrollment(_enrolled(student, "2", by=BACKFILL)) is None
    assert triggers.on_enrollment(_enrolled("s2")) is None
    request = triggers.on_enrollment(_enrolled("s3"))
    assert request is not None and request.trigger == "enrollments"
    assert request.reason == "3 new enrolments"
    triggers.started()
    assert triggers.new_enrollments == 0


def test_the_schedule_asks_after_its_period_only_when_set() -> None:
    clock = Clock()
    assert RetrainTriggers(_settings(), clock).on_clock() is None
    triggers = RetrainTriggers(_settings(schedule_s=3600, cooldown_s=0), clock)
    assert triggers.on_clock() is None
    clock.now += 3601
    request = triggers.on_clock()
    assert request is not None and request.trigger == "schedule"
    triggers.started()
    assert triggers.on_clock() is None


def _ledger_without_redis() -> RetrainLedger:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # No retries: the client's default backs off for seconds before it reports the error.
    client = redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    return RetrainLedger(client, "unit")


def test_a_failed_run_is_counted_and_the_service_goes_on() -> None:
    def failing(reason: str) -> RetrainOutcome:
        raise RuntimeError("object store down")

    def failed_runs() -> float:
        value = REGISTRY.get_sample_value("facegate_retrain_runs_total", {"outcome": "failed"})
        return value or 0.0

    service = RetrainService(_settings(), run=failing, ledger=_ledger_without_redis())
    request = service.triggers.on_drift(_report(["mmd"]))
    assert request is not None
    before = failed_runs()
    assert service.retrain(request) is None
    assert failed_runs() == before + 1
    assert service.outcomes == []
    assert service.triggers.last_finished > 0

    service = RetrainService(
        _settings(),
        run=lambda reason: RetrainOutcome(reason, canary=True),
        ledger=_ledger_without_redis(),
    )
    outcome = service.retrain(request)
    assert outcome is not None and outcome.canary and service.outcomes == [outcome]


def test_with_redis_down_runs_go_on_and_the_log_says_what_is_at_risk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reasons: list[str] = []

    def run(reason: str) -> RetrainOutcome:
        reasons.append(reason)
        return RetrainOutcome(reason)

    service = RetrainService(_settings(), run=run, ledger=_ledger_without_redis())
    with caplog.at_level(logging.WARNING, logger="trainer.retrain_service"):
        assert service.resume_interrupted() is None
        request = Request("drift", "drift at g1 on model v1: mmd")
        service.remember(request)
        outcome = service.retrain(request)
    assert outcome is not None and reasons == [request.reason]
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot read the pending retraining" in m for m in messages), messages
    assert any("the request is lost" in m for m in messages), messages
    assert any("still recorded as pending" in m for m in messages), messages


def test_requests_read_in_one_poll_make_one_run_naming_each() -> None:
    from trainer.retrain_service import merged

    run = merged(
        [
            Request("drift", "drift at g1 on model v1: mmd"),
            Request("drift", "drift at g2 on model v1: brightness_mean_drop"),
            Request("drift", "drift at g1 on model v1: mmd"),
        ]
    )
    assert run.trigger == "drift"
    assert run.reason == (
        "drift at g1 on model v1: mmd; drift at g2 on model v1: brightness_mean_drop"
    )
