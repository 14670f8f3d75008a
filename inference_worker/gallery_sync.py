"""Keep a worker's in-memory gallery in step with Redis by following the enrollments topic."""

from __future__ import annotations

import logging
import threading

import redis
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from facegate.dead_letters import dead_letter_record
from facegate.errors import FacegateError
from facegate.kafka_clients import Sender, make_control_consumer, send_acknowledged
from facegate.redis_client import waiting_may_cure
from facegate.settings import KafkaSettings
from inference_worker.gallery import GalleryIndex, GalleryStore
from inference_worker.metrics import UNREADABLE_TEMPLATES
from schemas.codec import SchemaError, decode
from schemas.messages import Enrollment
from schemas.topics import ENROLLMENTS, FRAMES_DLQ

log = logging.getLogger(__name__)
SERVICE = "gallery-sync"
# Backoff while Redis is unreachable: first wait, longest wait.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
# Unreadable templates named one by one in the start-up log; the rest are counted.
MAX_UNREADABLE_LOGGED = 20


class GallerySync:
    """Loads the gallery once, then applies enrolments and removals as they are published.

    Each event makes the worker re-read that student's templates from Redis, so replaying
    events (the topic is read from its beginning; tansu cannot be asked for its end reliably)
    only ever converges on what Redis holds.
    """

    def __init__(
        self,
        store: GalleryStore,
        index: GalleryIndex,
        kafka: KafkaSettings,
        producer: Sender | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.kafka = kafka
        # Where unreadable events go (the dead-letter topic); None only in tests without Kafka.
        self.producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="gallery-sync", daemon=True)
        self.applied = 0
        # Students whose templates could not be read when the gallery was loaded.
        self.unreadable_at_start: list[str] = []

    def start(self) -> GallerySync:
        load = self.store.load_readable()
        version = self.store.version
        if load.unreadable and not load.templates:
            # Not one template opens: the key configuration is wrong, not the data.
            student, reason = next(iter(load.unreadable.items()))
            raise FacegateError(
                f"gallery {version}: none of the {len(load.unreadable)} students' templates "
                f"can be read (first, {student!r}: {reason}); check FACEGATE_GALLERY_KEY_FILE"
            )
        for shown, (student, reason) in enumerate(sorted(load.unreadable.items())):
            if shown == MAX_UNREADABLE_LOGGED:
                log.error("gallery %s: ... and %d more", version, len(load.unreadable) - shown)
                break
            log.error(
                "gallery %s: templates of %r cannot be read and are left out (%s); the "
                "student's frames go to review as unknown until they are enrolled again",
                version,
                student,
                reason,
            )
        UNREADABLE_TEMPLATES.labels(version).set(len(load.unreadable))
        self.unreadable_at_start = sorted(load.unreadable)
        self.index.replace_all(load.templates)
        log.info("gallery %s: %d students", version, len(self.index))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def apply(self, event: Enrollment) -> None:
        """Bring one student up to date with Redis."""
        if event.model_version not in (self.store.version, "unknown"):
            return
        templates = self.store.get(event.student_id)
        if templates is None:
            self.index.remove(event.student_id)
        else:
            self.index.upsert(event.student_id, templates)
        self.applied += 1

    def _follow(self) -> None:
        consumer = make_control_consumer(self.kafka, None, consumer_timeout_ms=1000)
        partitions = consumer.partitions_for_topic(ENROLLMENTS.name) or set()
        assigned = [TopicPartition(ENROLLMENTS.name, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        try:
                            event = decode(record.value, Enrollment)
                        except SchemaError as error:
                            self._dead_letter(record, error)
                            continue
                        try:
                            self._apply_with_retry(event)
                        except (FacegateError, ValueError, redis.RedisError) as error:
                            # A template this worker cannot open (no key, unknown key id,
                            # tampered), use (another model's size) or read (Redis refuses:
                            # the key holds another type): the student keeps their last state
                            # here, the event goes to the dead letters with the reason, the
                            # thread goes on.
                            detail = str(error)
                            if isinstance(error, redis.RedisError):
                                detail = f"Redis refused: {type(error).__name__}: {error}"
                            self._dead_letter(record, SchemaError("template_unreadable", detail))
        finally:
            consumer.close()

    def _apply_with_retry(self, event: Enrollment) -> None:
        """Apply one event, waiting out a Redis outage with backoff.

        Without this, one failed read ended the thread and the worker silently stopped
        following enrolments until restarted.  The event is never skipped: the serving gallery
        keeps its last state meanwhile (frames are still decided), and the student is brought
        up to date as soon as Redis answers again.  An error that waiting cannot cure (the
        student's key holds another type) is raised: retried, it would stop every later
        enrolment from reaching this worker.
        """
        delay = RETRY_FIRST_S
        while not self._stop.is_set():
            try:
                self.apply(event)
                return
            except redis.RedisError as error:
                if not waiting_may_cure(error):
                    raise
                log.warning(
                    "gallery %s: Redis unavailable for %s (%s); retrying in %.1f s",
                    self.store.version,
                    event.student_id,
                    error,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _dead_letter(self, record: ConsumerRecord, error: SchemaError) -> None:
        letter = dead_letter_record(record, error, SERVICE)  # logged and counted here
        if self.producer is not None:
            # Waits out a broker outage instead of ending the thread (this consumer commits
            # nothing: the topic is read from its beginning at every start).
            send_acknowledged(self.producer, FRAMES_DLQ.name, [letter], self._stop)
