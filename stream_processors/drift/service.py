"""The drift monitor as a service: the consumer loop, report publishing, dead letters, commits.

One consumer group (``facegate-drift``) reads ``verdicts`` and ``feedback``.  After each poll the
reports of the windows that closed are published to ``drift`` (keyed by gate, ``all`` for the
all-gates window) and unreadable records go to the dead-letter topic; only when the broker has
acknowledged all of them are the offsets committed.  Records of windows still open when the
process dies are not replayed: their window restarts (drift statistics are estimates, and a
replay would count the records of closed windows twice).  On a clean stop the open windows
with enough verdicts are reported.
"""

from __future__ import annotations

import logging
import threading

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from facegate.dead_letters import dead_letter_record
from facegate.heartbeat import Heartbeat
from facegate.kafka_clients import (
    commit_processed,
    ensure_topics,
    make_control_consumer,
    make_producer,
    send_acknowledged,
)
from facegate.redis_client import make_redis
from facegate.service_process import lower_priority, serve_metrics, stop_on_signals
from schemas.codec import SchemaError, decode, encode
from schemas.messages import DriftReport, Feedback, Verdict
from schemas.topics import DRIFT, FEEDBACK, FRAMES_DLQ, VERDICTS
from stream_processors.drift.metrics import record_report
from stream_processors.drift.monitor import DriftMonitor
from stream_processors.drift.reference import (
    MemoryReferenceStore,
    RedisReferenceStore,
    ReferenceStore,
    gate_label,
)
from stream_processors.drift.settings import DriftSettings

log = logging.getLogger(__name__)
SERVICE = "drift-monitor"
POLL_TIMEOUT_MS = 500
SEND_TIMEOUT_S = 30.0


class DriftService:
    """Consume, update the monitor, publish reports, then commit."""

    def __init__(
        self, monitor: DriftMonitor, consumer: KafkaConsumer, producer: KafkaProducer
    ) -> None:
        self.monitor = monitor
        self.consumer = consumer
        self.producer = producer
        self.stopping = threading.Event()
        self.reports_published = 0
        self.dead_letters = 0
        self.records_seen = 0

    def run(self) -> None:
        """Serve until :attr:`stopping` is set; then report the open windows and return."""
        while not self.stopping.is_set():
            self.step()
        self._publish(self.monitor.close_all(), [])
        self.producer.flush(timeout=SEND_TIMEOUT_S)

    def step(self) -> None:
        """One poll: handle its records, close old windows, publish, commit."""
        batches = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
        reports: list[DriftReport] = []
        letters: list[tuple[bytes | None, bytes]] = []
        count = 0
        for records in batches.values():
            for record in records:
                count += 1
                reports += self.handle(record, letters)
        reports += self.monitor.tick()
        if not self._publish(reports, letters):
            return  # stopping during a broker outage: uncommitted
        if count:
            # Every report and dead letter of these records is acknowledged: move on.
            commit_processed(self.consumer, self.stopping)
            self.records_seen += count

    def handle(
        self, record: ConsumerRecord, letters: list[tuple[bytes | None, bytes]]
    ) -> list[DriftReport]:
        """The reports a record closes; an unreadable record is dead-lettered instead."""
        try:
            if record.topic == FEEDBACK.name:
                return self.monitor.add_feedback(decode(record.value, Feedback))
            return self.monitor.add_verdict(decode(record.value, Verdict))
        except SchemaError as error:
            self.dead_letters += 1
            letters.append(dead_letter_record(record, error, SERVICE))
            return []

    def _publish(
        self, reports: list[DriftReport], letters: list[tuple[bytes | None, bytes]]
    ) -> bool:
        """Publish reports and dead letters and wait for the broker's acknowledgement, through
        an outage of any length; False when stopping before it came (commit nothing)."""
        records = [(gate_label(r.gate_id).encode(), encode(r)) for r in reports]
        if not send_acknowledged(self.producer, DRIFT.name, records, self.stopping):
            return False
        if not send_acknowledged(self.producer, FRAMES_DLQ.name, letters, self.stopping):
            return False
        for report in reports:
            record_report(report)
            self.reports_published += 1
            if report.breached:
                log.warning(
                    "drift %s/%s: %s breached",
                    gate_label(report.gate_id),
                    report.model_version,
                    ", ".join(report.breached),
                )
        return True


def reference_store(settings: DriftSettings) -> ReferenceStore:
    """Redis references when the settings ask for them, else memory ones."""
    if settings.redis_references:
        return RedisReferenceStore(make_redis(settings.redis))
    return MemoryReferenceStore()


def build_service(settings: DriftSettings) -> DriftService:
    """The service with its consumer (subscribed to verdicts and feedback) and producer."""
    ensure_topics(settings.kafka, [VERDICTS, FEEDBACK, DRIFT, FRAMES_DLQ])
    consumer = make_control_consumer(
        settings.kafka, settings.group_id, [VERDICTS.name, FEEDBACK.name]
    )
    producer = make_producer(settings.kafka)
    return DriftService(DriftMonitor(settings, reference_store(settings)), consumer, producer)


def run_monitor(settings: DriftSettings) -> None:
    """Run the drift monitor until SIGTERM or SIGINT."""
    service = build_service(settings)

    stop_on_signals(service.stopping, "reporting open windows and stopping")
    serve_metrics(settings)
    lower_priority(settings)
    heartbeat = Heartbeat(make_redis(settings.redis), SERVICE).start()
    log.info(
        "drift monitor: group %s, windows of %d verdicts or %.0f s",
        settings.group_id,
        settings.window_size,
        settings.window_seconds,
    )
    try:
        service.run()
    finally:
        heartbeat.stop()
        service.consumer.close()
        service.producer.close()
        log.info(
            "drift monitor stopped: %d records, %d reports, %d dead letters",
            service.records_seen,
            service.reports_published,
            service.dead_letters,
        )
