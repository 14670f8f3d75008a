"""``facegate train serve``: start retraining on drift, on a schedule, or after many enrolments.

The service follows ``drift`` (a report whose breached statistics call for retraining) and
``enrollments`` (new students since the last run) in its own consumer group, and runs one
:class:`~trainer.retraining.Retrainer` run at a time.  After a run starts, further requests
wait out ``cooldown_s``: a drifted afternoon asks for one retraining, not one per window.
The request a run answers is kept in Redis until the run ends (:mod:`trainer.retrain_ledger`):
a service killed mid-run resumes it when it starts again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from prometheus_client import Counter, Gauge

from facegate.dead_letters import dead_letter_record
from facegate.kafka_clients import (
    commit_processed,
    make_control_consumer,
    make_producer,
    send_acknowledged,
)
from facegate.redis_client import make_redis
from inference_worker.gallery_backfill import BACKFILL
from schemas.codec import SchemaError, decode
from schemas.messages import DriftReport, Enrollment
from schemas.topics import DRIFT, ENROLLMENTS, FRAMES_DLQ
from stream_processors.drift.thresholds import retraining_reasons
from trainer.retrain_ledger import RetrainLedger
from trainer.retraining import Retrainer, RetrainOutcome, RetrainSettings

log = logging.getLogger(__name__)
SERVICE = "retrain"

REQUESTS = Counter(
    "facegate_retrain_requests_total",
    "Retraining requests, by trigger (resumed: a run the service's end interrupted).",
    ["trigger"],
)
RUNS = Counter(
    "facegate_retrain_runs_total",
    "Retraining runs, by outcome (canary, refused, failed).",
    ["outcome"],
)
LAST_RUN = Gauge("facegate_retrain_last_run_timestamp_seconds", "When the last run started.")
# Every outcome is exported from the start, so `increase()` in the alerts sees the first one.
for _outcome in ("canary", "refused", "failed"):
    RUNS.labels(_outcome)
for _trigger in ("drift", "enrollments", "schedule", "resumed"):
    REQUESTS.labels(_trigger)


@dataclass(frozen=True)
class Request:
    """Why a retraining is wanted."""

    trigger: str  # drift | schedule | enrollments
    reason: str


class RetrainTriggers:
    """Turns drift reports, enrolments and the clock into at most one request at a time."""

    def __init__(self, settings: RetrainSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.last_run = clock()
        self.last_request_at = 0.0
        self.last_finished = 0.0
        self.new_students: set[str] = set()

    @property
    def new_enrollments(self) -> int:
        return len(self.new_students)

    def on_drift(self, report: DriftReport) -> Request | None:
        reasons = retraining_reasons(report)
        if not reasons:
            return None
        if report.window_end < self.last_finished:
            # Closed while the last run trained: about the data that run already answered.
            log.info("drift report %s predates the last run's end: ignored", report.report_id)
            return None
        gate = report.gate_id or "all gates"
        return self._request(
            "drift", f"drift at {gate} on model v{report.model_version}: {', '.join(reasons)}"
        )

    def on_enrollment(self, event: Enrollment) -> Request | None:
        # A student counts once however many versions they were enrolled under; a new
        # version's backfill re-enrols known students and counts for nothing.
        if event.action != "enrolled" or event.by == BACKFILL:
            return None
        self.new_students.add(event.student_id)
        if self.new_enrollments < self.settings.enrollments_trigger:
            return None
        return self._request("enrollments", f"{self.new_enrollments} new enrolments")

    def on_clock(self) -> Request | None:
        schedule = self.settings.schedule_s
        if schedule <= 0 or self.clock() - self.last_run < schedule:
            return None
        return self._request("schedule", f"scheduled every {schedule:.0f} s")

    def _request(self, trigger: str, reason: str) -> Request | None:
        if self.clock() - self.last_request_at < self.settings.cooldown_s:
            log.info("retraining wanted (%s) but cooling down", reason)
            return None
        self.last_request_at = self.clock()
        REQUESTS.labels(trigger).inc()
        return Request(trigger, reason)

    def started(self) -> None:
        self.last_run = self.clock()
        self.new_students.clear()
        LAST_RUN.set(self.last_run)

    def finished(self) -> None:
        self.last_finished = self.clock()


def merged(requests: list[Request]) -> Request:
    """One run answers every request read in one poll: its reason names them all."""
    reasons = list(dict.fromkeys(r.reason for r in requests))
    return Request(requests[0].trigger, "; ".join(reasons))


class RetrainService:
    """The consumer loop of ``facegate train serve``."""

    def __init__(
        self,
        settings: RetrainSettings,
        run: Callable[[str], RetrainOutcome] | None = None,
        ledger: RetrainLedger | None = None,
    ) -> None:
        self.settings = settings
        self.triggers = RetrainTriggers(settings)
        self._run = run or Retrainer(settings).run
        self.ledger = ledger or RetrainLedger(make_redis(settings.redis), settings.group_id)
        self.stopping = threading.Event()
        self.outcomes: list[RetrainOutcome] = []

    def run(self) -> None:
        consumer = make_control_consumer(
            self.settings.kafka, self.settings.group_id, [DRIFT.name, ENROLLMENTS.name]
        )
        producer = make_producer(self.settings.kafka)
        try:
            self.resume_interrupted()
            while not self.stopping.is_set():
                requests: list[Request] = []
                letters: list[tuple[bytes | None, bytes]] = []
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        try:
                            request = self._handle(record.topic, record.value)
                        except SchemaError as error:
                            letters.append(dead_letter_record(record, error, SERVICE))
                            continue
                        if request is not None:
                            requests.append(request)
                clock = self.triggers.on_clock()
                if clock is not None:
                    requests.append(clock)
                if not send_acknowledged(producer, FRAMES_DLQ.name, letters, self.stopping):
                    break  # stopping during a broker outage: uncommitted, redelivered
                request = merged(requests) if requests else None
                if request is not None:
                    self.remember(request)
                # What was read is acted on now: the records are not replayed after a crash
                # (a run that kills the process would be asked for again on every restart);
                # the ledger keeps the request until the run ends, for a bounded resume.
                commit_processed(consumer, self.stopping)
                if request is not None:
                    self.retrain(request)
        finally:
            consumer.close()
            producer.close()

    def resume_interrupted(self) -> RetrainOutcome | None:
        """Run again the request of a run that did not end, unless it has had its attempts."""
        try:
            pending = self.ledger.take_over()
        except redis.RedisError as error:
            log.warning("cannot read the pending retraining (Redis: %s); none resumed", error)
            return None
        if pending is None:
            return None
        limit = self.settings.max_attempts
        if pending.attempts > limit:
            asked = datetime.fromtimestamp(pending.requested_at, UTC).isoformat(timespec="seconds")
            log.error(
                "retraining given up after %d interrupted attempts (%s, asked for at %s): %s",
                limit,
                pending.trigger,
                asked,
                pending.reason,
            )
            RUNS.labels("failed").inc()
            self._forget()
            return None
        log.warning(
            "resuming a retraining interrupted before it ended, attempt %d of %d: %s",
            pending.attempts,
            limit,
            pending.reason,
        )
        REQUESTS.labels("resumed").inc()
        reason = f"{pending.reason} (attempt {pending.attempts}: the last one was interrupted)"
        return self.retrain(Request(pending.trigger, reason))

    def remember(self, request: Request) -> None:
        """Record ``request`` as pending (before its records are committed)."""
        try:
            self.ledger.begin(request.trigger, request.reason)
        except redis.RedisError as error:
            log.warning(
                "retraining not recorded as pending (Redis: %s): if this process dies during "
                "the run, the request is lost",
                error,
            )

    def _forget(self) -> None:
        try:
            self.ledger.end()
        except redis.RedisError as error:
            log.warning("the ended retraining is still recorded as pending (Redis: %s)", error)

    def _handle(self, topic: str, value: bytes) -> Request | None:
        """The request a record makes, if any; raises SchemaError on an unreadable one."""
        if topic == DRIFT.name:
            return self.triggers.on_drift(decode(value, DriftReport))
        return self.triggers.on_enrollment(decode(value, Enrollment))

    def retrain(self, request: Request) -> RetrainOutcome | None:
        """Run ``request`` and clear it from the ledger, whatever the outcome (None: failed).

        Only the process's end between the two leaves it pending, to be resumed."""
        outcome = self._attempt(request)
        self._forget()
        return outcome

    def _attempt(self, request: Request) -> RetrainOutcome | None:
        log.info("retraining (%s): %s", request.trigger, request.reason)
        self.triggers.started()
        try:
            outcome = self._run(request.reason)
        except Exception:
            RUNS.labels("failed").inc()
            log.exception("retraining failed; the service keeps listening")
            return None
        finally:
            self.triggers.finished()
        RUNS.labels("canary" if outcome.canary else "refused").inc()
        self.outcomes.append(outcome)
        log.info("retraining done: %s", "; ".join(outcome.steps))
        return outcome
