"""The Faust stream processor: frames in, faces (or dead letters) out; attendance kept.

Two agents:
- ``analyse_frames`` on ``frames``: each record is decoded, its faces detected, the chosen face
  aligned and quality-checked in an executor thread (ONNX Runtime and OpenCV release the GIL),
  so the event loop stays free for heartbeats and rebalances; the result goes to ``faces``
  keyed by gate (one gate's frames stay in order), or to ``frames.dlq`` with the reason.
- ``record_attendance`` on ``verdicts``: per-exam attendance in Redis (survives restarts),
  retried while Redis is unreachable; a verdict whose update Redis refuses for its data is
  dead-lettered (``attendance_not_recorded``) so that one exam's broken key stalls no other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import faust
import redis
import uvloop

from facegate.heartbeat import Heartbeat
from facegate.paths import models_dir
from facegate.redis_client import make_redis, waiting_may_cure
from facegate.service_process import lower_priority, serve_metrics
from inference_worker.embedder import ModelCard
from schemas.codec import SchemaError, decode, encode
from schemas.messages import Verdict
from schemas.topics import FACES, FRAMES, FRAMES_DLQ, VERDICTS
from stream_processors.attendance import AttendanceTable
from stream_processors.face_analysis import AlignmentTarget, FaceAnalyzer, detector_for
from stream_processors.frame_processor import FrameProcessor, RecordRef
from stream_processors.metrics import (
    ATTENDANCE_UPDATES,
    DEAD_LETTERS,
    GATE_FRAMES,
    STAGE_SECONDS,
    FaustLag,
)
from stream_processors.metrics import FRAMES as FRAMES_SEEN
from stream_processors.settings import StreamProcessorSettings

log = logging.getLogger(__name__)
SERVICE = "stream-processor"
# The dead-letter reason of a verdict whose attendance Redis refused (see record_with_retry).
ATTENDANCE_NOT_RECORDED = "attendance_not_recorded"


def alignment_targets(settings: StreamProcessorSettings) -> list[AlignmentTarget]:
    """The templates faces are aligned to: the configured models, else the registry's aliases."""
    names = list(settings.align_models)
    cards: list[ModelCard] = []
    if names:
        cards = [ModelCard.read(models_dir() / name) for name in names]
    else:
        from trainer.registry import resolve_alias_cards

        cards = resolve_alias_cards(settings.mlflow)
    return [AlignmentTarget(c.template_name, c.template, c.input_size) for c in cards]


async def refresh_alignment_targets(
    processor: FrameProcessor, settings: StreamProcessorSettings
) -> bool:
    """Look the registry's champion and canary up again and align to their templates from the
    next frame on (a canary registered after start gets its crops without a restart).  Returns
    whether the targets changed; a registry that cannot be read leaves them as they are."""
    loop = asyncio.get_running_loop()
    try:
        targets = await loop.run_in_executor(None, alignment_targets, settings)
    except Exception as error:  # MLflow down or an alias gone: keep aligning as before
        log.warning("registry templates not refreshed, aligning as before: %s", error)
        return False
    changed = processor.analyzer.set_targets(targets)
    if changed:
        log.info("aligning faces to %s (registry aliases changed)", [t.name for t in targets])
    return changed


async def record_with_retry(
    loop: asyncio.AbstractEventLoop, attendance: AttendanceTable, verdict: Verdict
) -> None:
    """Record a verdict's attendance, retrying with backoff while Redis is unreachable: the
    verdict is not skipped (the agent's offset moves on only after it is recorded), and the
    update is idempotent per frame id, so a retry never counts twice.

    Raises the ``redis.RedisError`` that retrying cannot cure (``waiting_may_cure``): retrying
    it would hold every later verdict back for good."""
    delay = 0.5
    while True:
        try:
            await loop.run_in_executor(None, attendance.record, verdict)
            return
        except redis.RedisError as error:
            if not waiting_may_cure(error):
                raise
            log.warning(
                "attendance of %s not recorded (%s); retrying in %.1f s",
                verdict.frame_id,
                error,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def build_processor(settings: StreamProcessorSettings) -> FrameProcessor:
    """The frame processor with its detector loaded."""
    # One OpenCV thread per process: resizing with 2 threads was slower on 2-core nodes, and
    # services scale by processes.
    cv2.setNumThreads(1)
    analyzer = FaceAnalyzer(
        detector_for(settings), alignment_targets(settings), policy=settings.face_policy
    )
    return FrameProcessor(
        analyzer, settings.max_pixels, SERVICE, max_frame_age_s=settings.max_frame_age_s
    )


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Make Faust's consumers use ``max_wait_ms`` as their fetch wait.

    Faust builds its aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``, which on
    tansu delays every record by ~600 ms; there is no setting for it, so the consumer class
    that Faust's driver instantiates is narrowed here, in this process only.
    """
    import aiokafka

    # Faust's driver looks the class up on the aiokafka module at consumer creation.
    base = aiokafka.AIOKafkaConsumer
    if getattr(base, "_facegate_fetch_wait", None) == max_wait_ms:
        return

    class ShortWaitConsumer(base):  # type: ignore[misc, valid-type]
        _facegate_fetch_wait = max_wait_ms

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = max_wait_ms
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = ShortWaitConsumer


def create_app(settings: StreamProcessorSettings) -> faust.App:
    """The Faust app with its topics and agents."""
    kafka = settings.kafka
    limit_fetch_wait(kafka.fetch_max_wait_ms)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        # tansu makes group joins wait half the session timeout (ENVIRONMENT.md).
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        producer_acks=-1,
        # Faust's own web server is not used (metrics are served by prometheus_client): off, so
        # that several processors on one host need no port each.
        web_enabled=False,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
    raw |= {"key_serializer": "raw", "value_serializer": "raw"}
    frames_topic = app.topic(FRAMES.name, **raw)
    faces_topic = app.topic(FACES.name, **raw)
    dlq_topic = app.topic(FRAMES_DLQ.name, **raw)
    verdicts_topic = app.topic(VERDICTS.name, **raw)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frames")
    # Models load before the worker joins the group: no record waits on a cold detector.
    processor = build_processor(settings)
    redis_client = make_redis(settings.redis)
    attendance = AttendanceTable(redis_client)
    # Started with the process; a killed processor's key expires on its own.
    Heartbeat(redis_client, "stream-processor").start()
    serve_metrics(settings)

    @app.agent(frames_topic)
    async def analyse_frames(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        async for event in stream.events():
            message = event.message
            ref = RecordRef(message.topic, message.partition, message.offset, message.key)
            received_at = time.time()
            started = time.perf_counter()
            result = await loop.run_in_executor(
                executor, processor.process, event.value, ref, received_at
            )
            if result.face is not None:
                face = result.face.model_copy(update={"sent_at": time.time()})
                key = face.gate_id.encode()
                await faces_topic.send(key=key, value=encode(face))
                FRAMES_SEEN.labels(face.outcome).inc()
                GATE_FRAMES.labels(face.gate_id).inc()
                for stage, ms in face.timings_ms.items():
                    STAGE_SECONDS.labels(stage).observe(ms / 1000)
                STAGE_SECONDS.labels("total").observe(time.perf_counter() - started)
            elif result.dead_letter is not None:
                letter = result.dead_letter
                await dlq_topic.send(key=message.key, value=encode(letter))
                DEAD_LETTERS.labels(SERVICE, letter.reason).inc()
                log.warning("dead letter %s: %s", letter.reason, letter.detail)

    @app.agent(verdicts_topic)
    async def record_attendance(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()

        async def dead_letter(
            value: bytes, ref: RecordRef, reason: str, detail: str, frame_id: str | None
        ) -> None:
            letter = processor.dead_letter(value, ref, reason, detail, frame_id)
            await dlq_topic.send(key=ref.key, value=encode(letter))
            DEAD_LETTERS.labels("attendance", reason).inc()

        async for event in stream.events():
            message = event.message
            ref = RecordRef(message.topic, message.partition, message.offset, message.key)
            try:
                verdict = decode(event.value, Verdict)
            except SchemaError as error:
                await dead_letter(event.value, ref, error.reason, error.detail, None)
                continue
            try:
                await record_with_retry(loop, attendance, verdict)
            except redis.RedisError as error:
                detail = f"exam {verdict.exam_id}: {type(error).__name__}: {error}"
                log.error(
                    "attendance of %s not recorded, dead-lettered: %s", verdict.frame_id, detail
                )
                await dead_letter(
                    event.value, ref, ATTENDANCE_NOT_RECORDED, detail, verdict.frame_id
                )
                continue
            ATTENDANCE_UPDATES.labels(verdict.decision).inc()

    if not settings.align_models and settings.align_refresh_s > 0:

        @app.timer(interval=settings.align_refresh_s)  # type: ignore[untyped-decorator]
        async def follow_registry_templates() -> None:
            await refresh_alignment_targets(processor, settings)

    lag = FaustLag(app, settings.app_id)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def report_consumer_lag() -> None:
        await lag.update()

    return app


def _credentials(settings: StreamProcessorSettings) -> Any:
    kafka = settings.kafka
    if kafka.sasl_mechanism and kafka.sasl_password is not None:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
        )
    return None


def run(settings: StreamProcessorSettings, loglevel: str = "info") -> None:
    """Run a stream-processor worker until it is stopped."""
    lower_priority(settings)
    if settings.event_loop == "uvloop":
        # Before Faust makes its loops: the agents' and the consumer thread's.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
