"""The continuous-training loop on the real stack, with small real data.

A drifted stream (the enrolled students' photos, darkened) makes the drift monitor publish a
breached report; the training service starts a retraining run (tracked in MLflow) that
fine-tunes the champion on LFW people and the enrolment photos; its candidate goes through
the evaluation gate and is either refused with the failed slices, or registered as challenger
and rolled out as a canary that the canary controller promotes or rolls back.  Each step is
checked where an operator would see it: the ``drift`` and ``model-events`` topics, the MLflow
runs and tags, the registry's aliases, and the verdicts (none lost during model swaps).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import pytest
from kafka import TopicPartition

from facegate.kafka_clients import make_consumer
from facegate.pipeline import start_service
from facegate.settings import KafkaSettings, MlflowSettings
from producers.publisher import FramePublisher
from producers.settings import ProducerSettings
from schemas.codec import SchemaError, decode
from schemas.messages import DriftReport, Frame, ModelEvent, new_id, now
from schemas.topics import DRIFT, MODEL_EVENTS
from tests.e2e.conftest import RunningPipeline
from trainer.datasets.materialize import blob_path, crop_path
from trainer.evaluation_gate import GateOptions, lfw_samples
from trainer.registry import champion_version, version_tags

pytestmark = [pytest.mark.e2e, pytest.mark.loop]

LOOP_SERVICES = ("drift", "canary-controller", "retrain")
GATE = GateOptions(lfw_identities=24, images_per_identity=3)
WINDOW = 16


def _training_folder(lfw_dir: Path, target: Path, identities: int = 24) -> Path:
    """LFW people the gate does not evaluate on (links, not copies), one folder each."""
    held_out = {s.identity for s in lfw_samples(lfw_dir, GATE)}
    chosen = 0
    for person in sorted((lfw_dir / "images").iterdir()):
        images = sorted(person.glob("*.jpg"))
        if person.name in held_out or len(images) < 4:
            continue
        (target / person.name).mkdir(parents=True)
        for image in images[:6]:
            (target / person.name / image.name).symlink_to(image)
        chosen += 1
        if chosen == identities:
            break
    return target


class Topic:
    """Reads one topic from its beginning, keeping everything seen."""

    def __init__(self, name: str, kind: type) -> None:
        self.consumer = make_consumer(KafkaSettings(), None)
        partitions = self.consumer.partitions_for_topic(name) or {0}
        assigned = [TopicPartition(name, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        self.consumer.seek_to_beginning(*assigned)
        self.kind = kind
        self.seen: list[Any] = []

    def wait(self, predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:  # other tests of the session put unreadable records on topics
                        self.seen.append(decode(record.value, self.kind))
                    except SchemaError:
                        continue
            found = [m for m in self.seen if predicate(m)]
            if found:
                return found[0]
        raise AssertionError(f"no {what} within {timeout_s:.0f} s; seen: {self.seen}")


def _frames(pipeline: RunningPipeline, count: int, gate: str, dark: bool) -> list[Frame]:
    frames = []
    # Round robin over the students (the canary's share is a share of students).
    students = [s for s in pipeline.roster.students if s.student_id in pipeline.enrolled]
    for i in range(count):
        entry = students[i % len(students)]
        student = entry.student_id
        path = entry.probe_photos[(i // len(students)) % len(entry.probe_photos)]
        data = path.read_bytes()
        if dark:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None, f"unreadable photo {path}"
            ok, encoded = cv2.imencode(".jpg", cv2.convertScaleAbs(image, alpha=0.3))
            assert ok
            data = encoded.tobytes()
        frames.append(
            Frame(
                frame_id=new_id(),
                gate_id=gate,
                exam_id="loop-exam",
                claimed_student_id=student,
                captured_at=now(),
                published_at=now(),
                source="test",
                image=data,
            )
        )
    return frames


def _publish(pipeline: RunningPipeline, frames: list[Frame], timeout_s: float = 120) -> None:
    with FramePublisher(ProducerSettings()) as publisher:
        for frame in frames:
            publisher.publish(frame)
    missing = pipeline.collector.wait_for({f.frame_id for f in frames}, timeout_s)
    assert not missing, f"{len(missing)} frames without a verdict"


def _stale_copies(cache: Path) -> list[Path]:
    gone = "f0" * 32  # the checksum of no image in the store
    return [blob_path(cache, gone), crop_path(cache, "align112-any", gone)]


@pytest.fixture
def loop_services(
    pipeline: RunningPipeline, lfw_dir: Path, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The drift monitor, canary controller and training service, as their own processes."""
    folder = _training_folder(lfw_dir, tmp_path / "train")
    env = {
        **pipeline.env,
        "FACEGATE_DRIFT_WINDOW_SIZE": str(WINDOW),
        "FACEGATE_DRIFT_MIN_SAMPLES": str(WINDOW // 2),
        "FACEGATE_DRIFT_ALL_GATES": "false",
        "FACEGATE_RETRAIN_FOLDERS": f'["{folder}"]',
        "FACEGATE_RETRAIN_EPOCHS": "1",
        # A gentle fine-tune (backbone at lr 1e-4): a few steps on small data must not wreck
        # the champion, so the candidate usually passes the gate and the canary path runs.
        "FACEGATE_TRAIN_LR": "0.001",
        "FACEGATE_RETRAIN_BATCH_SIZE": "16",
        "FACEGATE_RETRAIN_GATE_LFW_DIR": str(lfw_dir),
        "FACEGATE_RETRAIN_GATE_IDENTITIES": str(GATE.lfw_identities),
        "FACEGATE_RETRAIN_GATE_IMAGES_PER_IDENTITY": str(GATE.images_per_identity),
        "FACEGATE_RETRAIN_CANARY_SHARE": "0.5",
        "FACEGATE_RETRAIN_ENROLLMENTS_TRIGGER": "100000",
        "FACEGATE_CANARY_MIN_VERDICTS": "8",
        "FACEGATE_CANARY_MIN_CHAMPION_VERDICTS": "4",
        "FACEGATE_TRAIN_PROGRESS": "false",
        "FACEGATE_RETRAIN_OUTPUT_DIR": str(tmp_path / "models"),
        "FACEGATE_TRAIN_CACHE_DIR": str(tmp_path / "cache"),
    }
    # Copies of an image no longer stored (a forgotten student's), left by an earlier run: the
    # retraining run deletes them (test_drift_retrains_gates_and_rolls_out checks).
    for stale in _stale_copies(tmp_path / "cache"):
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"sealed copy of a forgotten photo")
    mlflow_settings = MlflowSettings()
    original = champion_version(mlflow_settings)
    for name in LOOP_SERVICES:
        start_service(pipeline.stack, name, env)
    try:
        yield env
    finally:
        for name in LOOP_SERVICES:
            pipeline.stack.table.stop(name)
        # Leave the session's pipeline as the other end-to-end tests expect it.
        from trainer.promotion import rollback_canary, rollback_champion

        kafka = KafkaSettings()
        if champion_version(mlflow_settings, "canary") is not None:
            rollback_canary(mlflow_settings, kafka, "loop test cleanup")
        if original and champion_version(mlflow_settings) != original:
            rollback_champion(mlflow_settings, kafka, "loop test cleanup", original)


def test_drift_retrains_gates_and_rolls_out(
    pipeline: RunningPipeline, loop_services: dict[str, str]
) -> None:
    drift = Topic(DRIFT.name, DriftReport)
    events = Topic(MODEL_EVENTS.name, ModelEvent)
    started = time.time()

    # 1. A normal window (the reference), then a darkened one: a breached drift report.
    _publish(pipeline, _frames(pipeline, WINDOW, "gate-loop", dark=False))
    _publish(pipeline, _frames(pipeline, WINDOW, "gate-loop", dark=True))
    report = drift.wait(
        lambda r: r.gate_id == "gate-loop" and r.breached, 60, "breached drift report"
    )
    assert "brightness_mean_drop" in report.breached, report
    assert report.statistics["brightness_mean_drop"] > report.thresholds["brightness_mean_drop"]

    # 2. The training service retrains; the gate decides: refused, or challenger + canary.
    decided = events.wait(
        lambda e: (
            e.at >= started
            and (e.action == "refused" or (e.alias == "canary" and e.action == "set"))
        ),
        600,
        "gate decision on model-events",
    )
    assert decided.run_id, decided
    # The run pruned its dataset cache to the images the store still holds.
    assert not any(
        p.exists() for p in _stale_copies(Path(loop_services["FACEGATE_TRAIN_CACHE_DIR"]))
    )
    settings = MlflowSettings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    run = mlflow.get_run(decided.run_id)
    assert run.data.tags["data_manifest"] and run.data.tags["code_version"]
    assert "drift" in run.data.tags["retrain_reason"]
    assert run.data.tags["gate"] == ("refused" if decided.action == "refused" else "passed")
    assert "gate_lfw_clean_candidate_tar" in run.data.metrics
    assert any(m.startswith("epoch") or "loss" in m for m in run.data.metrics), run.data.metrics
    gate_files = {
        a.path
        for a in mlflow.MlflowClient(settings.tracking_uri).list_artifacts(run.info.run_id, "gate")
    }
    assert "gate/gate.json" in gate_files and "gate/roc_lfw_clean.png" in gate_files, gate_files

    print(f"loop: {decided.action} {decided.alias} v{decided.version}: {decided.reason}")
    if decided.action == "refused":
        assert decided.reason.startswith("gate failed:"), decided.reason
        assert champion_version(settings, "canary") is None
        return

    # 3. A canary: students' check-ins are split between the arms by the workers, until the
    # controller promotes or rolls back; no check-in is lost across the swaps.
    canary = decided.version
    assert version_tags(settings, canary)["data_manifest"] == run.data.tags["data_manifest"]
    assert champion_version(settings, "canary") == canary
    deadline = time.monotonic() + 240
    outcome = None
    while outcome is None and time.monotonic() < deadline:
        _publish(pipeline, _frames(pipeline, 12, "gate-canary", dark=False))
        outcome = next(
            (
                e
                for e in events.seen
                if e.version == canary and e.action in ("promoted", "rolled_back")
            ),
            None,
        )
        if outcome is None:
            try:
                outcome = events.wait(
                    lambda e: e.version == canary and e.action in ("promoted", "rolled_back"),
                    2,
                    "rollout decision",
                )
            except AssertionError:
                outcome = None
    assert outcome is not None, "the canary controller decided nothing"
    print(f"loop: canary v{canary} {outcome.action}: {outcome.reason}")
    canary_gate = [v for v in pipeline.collector.verdicts if v.gate_id == "gate-canary"]
    assert {v.model_alias for v in canary_gate} == {"champion", "canary"}
    # Across the canary's start and its promotion or roll-back: one verdict per frame.
    frames = [v.frame_id for v in canary_gate]
    assert len(frames) == len(set(frames)), "a frame was decided twice across a model swap"
    # The workers swap to the decided set while check-ins go on: none is lost.
    _publish(pipeline, _frames(pipeline, 8, "gate-after", dark=False))
    if outcome.action == "promoted":
        assert champion_version(settings) == canary
    else:
        assert champion_version(settings, "canary") is None
        assert outcome.reason.startswith("canary degraded"), outcome.reason
