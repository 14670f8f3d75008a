"""The broker killed and restarted on durable storage (tansu on the object store).

This test has a stack of its own, with ``broker_storage="s3"``: tansu keeps its topics, records
and committed offsets in SeaweedFS, so a restarted broker still has them.  The pipeline serves a
local model (no MLflow), so that the only server that goes away is the broker.  Frames published
before the restart keep their single verdicts, the stream processor and the worker reconnect by
themselves, frames that were in the broker's log but not yet answered when it stopped are
answered after the restart, and frames published after the restart get their verdicts too.
In some runs (1 of 12 on 2026-12-03) one or two in-flight frames are left without a verdict (their
faces are in the faces topic), and the test fails saying where they were found.  The last
failure: faces at partition 1, offsets 8 and 9, the worker group committed at 18: the worker's
consumer moved past faces it never handed on.  Acknowledged records themselves survived a
SIGKILL of this broker in a separate check (3 x 200 records, offsets continuing after the
restart), so a fetch racing a write around the restart is suspected, not shown.  Until it is
understood, the test is marked ``slow`` and kept out of the default run (``make test-all``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import TopicPartition

from facegate.kafka_clients import make_consumer, make_producer
from facegate.paths import models_dir
from facegate.pipeline import (
    SERVICES,
    VerdictCollector,
    service_env,
    start_service,
    wait_until_serving,
)
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, RedisSettings
from facegate.stack import LocalStack
from facegate.stack.ports import private_stack_settings
from inference_worker.embedder import Embedder
from inference_worker.enrollment import RosterEntry, enroll
from inference_worker.face_pipeline import LocalFacePipeline
from producers.roster import Roster, load_roster
from schemas.codec import decode
from schemas.messages import Face, Frame, Verdict
from schemas.topics import FACES, FRAMES, VERDICTS, Topic
from stream_processors.vision.mtcnn import MtcnnDetector
from tests.faults.conftest import frames_of, one_verdict_each, publish
from tests.stack_env import exported_stack

pytestmark = [pytest.mark.faults, pytest.mark.slow]

MODEL = "mobilefacenet"


@pytest.fixture(scope="module")
def durable_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A private stack whose broker stores its log in the object store; no MLflow."""
    settings = private_stack_settings(tmp_path_factory.mktemp("durable"), with_mlflow=False)
    settings.broker_storage = "s3"
    stack = LocalStack(settings)
    with exported_stack(stack):
        yield stack


def _enroll_local(roster: Roster) -> list[str]:
    """Enrol the roster into the local model's gallery (what the local-model worker serves)."""
    embedder = Embedder(models_dir() / MODEL, version="local").load()
    detector = MtcnnDetector(models_dir() / "mtcnn").load()
    client = make_redis(RedisSettings())
    producer = make_producer(KafkaSettings())
    try:
        summary = enroll(
            [RosterEntry(s.student_id, s.name, s.enrollment_photos) for s in roster.students],
            {f"local-{MODEL}": LocalFacePipeline(embedder, detector, False)},
            client,
            producer,
        )
    finally:
        producer.close()
        client.close()
    return summary.enrolled


def _frame_ids_in_topic(
    topic: Topic, kind: type[Frame | Face | Verdict], timeout_s: float, expected: set[str]
) -> set[str]:
    """Frame ids of the records the broker holds in a topic, read from the beginning."""
    consumer = make_consumer(KafkaSettings(), None)
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    found: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not expected <= found and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            found |= {decode(r.value, kind).frame_id for r in records}
    consumer.close()
    return found


def _where(frame_ids: set[str]) -> str:
    """Which topics still hold the given frames, and where their faces are against the
    worker group's committed offsets (to tell where one was lost)."""
    found = ", ".join(
        f"{topic.name}: {len(frame_ids & _frame_ids_in_topic(topic, kind, 10, frame_ids))}"
        for topic, kind in ((FRAMES, Frame), (FACES, Face), (VERDICTS, Verdict))
    )
    consumer = make_consumer(KafkaSettings(), None)
    partitions = [TopicPartition(FACES.name, p) for p in range(FACES.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    places = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            places += [
                (r.partition, r.offset)
                for r in records
                if decode(r.value, Face).frame_id in frame_ids
            ]
    consumer.close()
    group = make_consumer(KafkaSettings(), "facegate-inference")
    committed = {p: group.committed(TopicPartition(FACES.name, p)) for p, _ in places}
    group.close()
    return f"{found}; faces at (partition, offset) {places}; worker committed {committed}"


def test_broker_restart_on_durable_storage_loses_no_verdict(
    durable_stack: LocalStack, lfw_dir: Path
) -> None:
    stack = durable_stack
    roster = load_roster(lfw_dir / "images", max_students=3, enroll_per_student=3, seed=5)
    enrolled = _enroll_local(roster)
    assert len(enrolled) == 3
    env = {
        **service_env(stack.endpoints()),
        "FACEGATE_WORKER_MODEL_SOURCE": "local",
        "FACEGATE_WORKER_LOCAL_MODEL": MODEL,
        "FACEGATE_STREAM_ALIGN_MODELS": f'["{MODEL}"]',
    }
    collector = VerdictCollector(KafkaSettings()).start()
    try:
        for name in SERVICES:
            start_service(stack, name, env)
        wait_until_serving(collector, stack, roster.students[0].probe_photos[0], 240)
        photos = [(s.student_id, p) for s in roster.students for p in s.probe_photos[:2]]
        before = publish(frames_of(photos, "broker-before"))
        assert not collector.wait_for(before, timeout_s=60)

        # Frames in flight when the broker goes: some answered, the rest only in its log.
        inflight = publish(frames_of(photos * 10, "broker-inflight"))
        while len(inflight & collector.answered()) < 3:
            time.sleep(0.01)
        old = stack.table.running("broker")
        assert old is not None
        # A crash, not a clean shutdown: only what the broker acknowledged may be relied on.
        os.killpg(old.pid, signal.SIGKILL)
        answered_at_stop = len(inflight & collector.answered())
        while stack.table.running("broker") is not None:
            time.sleep(0.05)
        started = time.monotonic()
        stack.up()
        restart_s = time.monotonic() - started
        new = stack.table.running("broker")
        assert new is not None and new.pid != old.pid
        assert answered_at_stop < len(inflight), "the stream finished before the restart"

        after = publish(frames_of(photos, "broker-after"))
        missing = collector.wait_for(after, timeout_s=90)
        assert not missing, (
            f"{len(missing)} frames without a verdict after the broker restart; see "
            f"{stack.table.log_file('stream-processor')} and {stack.table.log_file('worker')}"
        )
        print(
            f"broker killed with {answered_at_stop}/{len(inflight)} in-flight frames answered, "
            f"back in {restart_s:.1f} s; verdicts {time.monotonic() - started:.1f} s after"
        )
        for name in SERVICES:
            assert stack.table.running(name) is not None, f"{name} died with the broker"
        lost = collector.wait_for(inflight, timeout_s=30)
        where = _where(lost) if lost else ""
        one_verdict_each(collector, before)
        one_verdict_each(collector, inflight - lost)
        one_verdict_each(collector, after)
        # The verdicts from before the restart are still in the broker's (durable) log.
        assert before <= _frame_ids_in_topic(VERDICTS, Verdict, 30, before)
        assert not lost, f"{len(lost)} in-flight frame(s) without a verdict after the kill: {where}"
    finally:
        collector.stop()
        for name in SERVICES:
            stack.table.stop(name)
