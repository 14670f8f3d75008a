"""The drift monitor on the real stack, fed with verdicts made from real LFW faces.

Verdicts come from the production face path (MTCNN, alignment, quality, MobileFaceNet) on LFW
images: a reference window, a normal window of other people, then the same people darkened
to 0.35 of the light.  The monitor runs as the service does (consumer group, producer, Redis
references) in a thread; its reports are read back from the drift topic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import REGISTRY

from facegate.heartbeat import alive_instances
from facegate.kafka_clients import make_consumer, make_producer
from facegate.redis_client import make_redis
from facegate.settings import KafkaSettings, RedisSettings
from facegate.stack import LocalStack
from facegate.stack.ports import free_port_block
from inference_worker.face_pipeline import get_pipeline
from schemas.codec import SchemaError, decode, encode
from schemas.messages import DeadLetter, DriftReport, Verdict, new_id
from schemas.topics import DRIFT, FRAMES_DLQ, VERDICTS
from stream_processors.drift.calibration import lfw_people, lfw_verdicts
from stream_processors.drift.cli import drift_group
from stream_processors.drift.reference import reference_key
from stream_processors.drift.service import SERVICE, build_service
from stream_processors.drift.settings import DriftSettings
from stream_processors.drift.thresholds import retraining_reasons
from tests.topic_reader import read_topic
from trainer.calibration import load_calibration
from trainer.evaluation.degradations import darken

pytestmark = pytest.mark.integration

WINDOW = 40
# People per window: a few more than a window, as some enrolment images have no face.
GROUP = WINDOW + 6


T = TypeVar("T")


def _read_all(
    topic: str,
    partitions: int,
    wanted: int,
    match: Callable[[ConsumerRecord], T | None],
    timeout_s: float,
) -> list[T]:
    """Records of ``topic`` (from its beginning) for which ``match`` returns a message."""
    return read_topic(topic, partitions, match, lambda found: len(found) >= wanted, timeout_s)


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_drift_monitor_reports_a_darkened_gate(local_stack: LocalStack, lfw_dir: Path) -> None:
    started = time.monotonic()
    pipeline = get_pipeline()
    threshold = load_calibration().threshold_for(pipeline.model_name)
    people = lfw_people(lfw_dir, seed=11)
    run = new_id()[:8]
    gate, exam, version = f"gate-{run}", f"exam-{run}", f"drift-{run}"

    def window(group: int, dark: bool = False) -> list[Verdict]:
        verdicts = lfw_verdicts(
            pipeline,
            people[group * GROUP : (group + 1) * GROUP],
            gate,
            exam,
            version,
            threshold,
            (lambda image: darken(image, 0.35)) if dark else None,
        )
        assert len(verdicts) >= WINDOW
        return verdicts[:WINDOW]

    # the reference window, a normal window of other people, the same people darkened
    windows = [window(0), window(1), window(1, dark=True)]
    made_s = time.monotonic() - started

    settings = DriftSettings(
        group_id=f"facegate-drift-{run}", window_size=WINDOW, min_samples=20, window_seconds=120
    )
    service = build_service(settings)
    thread = threading.Thread(target=service.run, name="drift-test", daemon=True)
    thread.start()
    producer = make_producer(KafkaSettings())
    garbage = f"not a verdict {run}".encode()
    key = exam.encode()  # one key: one partition, so the windows arrive in order
    try:
        for verdict in windows[0] + windows[1]:
            producer.send(VERDICTS.name, key=key, value=encode(verdict)).get(timeout=30)
        producer.send(VERDICTS.name, key=key, value=garbage).get(timeout=30)
        for verdict in windows[2]:
            producer.send(VERDICTS.name, key=key, value=encode(verdict)).get(timeout=30)

        def ours(record: ConsumerRecord) -> DriftReport | None:
            try:
                report = decode(record.value, DriftReport)
            except SchemaError:
                return None
            match = report.gate_id == gate and report.model_version == version
            return report if match else None

        reports = _read_all(DRIFT.name, DRIFT.partitions, 3, ours, timeout_s=60)
        assert thread.is_alive(), "the monitor stopped"
    finally:
        service.stopping.set()
        thread.join(timeout=30)
        producer.close()
    service.consumer.close()
    service.producer.close()
    assert not thread.is_alive()
    assert [r.samples for r in reports] == [WINDOW] * 3
    reference, normal, dark = reports
    for report in reports:
        print(report.breached, json.dumps({k: round(v, 4) for k, v in report.statistics.items()}))

    # the first full window is the reference; the normal one breaches nothing
    assert reference.statistics["reference_window"] == 1.0 and reference.breached == []
    assert normal.breached == [], normal.statistics
    assert "mmd" in normal.statistics and "brightness_mean_drop" in normal.statistics
    # darkness: brightness and at least one more statistic breached
    assert "brightness_mean_drop" in dark.breached
    assert len(dark.breached) >= 2, dark.breached
    assert dark.statistics["brightness_mean_drop"] > 0.5
    assert dark.statistics["low_quality_rate"] > normal.statistics["low_quality_rate"]
    assert dark.thresholds["brightness_mean_drop"] == settings.brightness_mean_drop_max
    assert "brightness_mean_drop" in retraining_reasons(dark)
    assert retraining_reasons(normal) == []

    # the reference is kept in Redis, so a restarted monitor keeps it
    client = make_redis(RedisSettings())
    assert client.exists(reference_key(version, gate)) == 1

    # metrics follow the published reports
    labels = {"gate": gate, "model_version": version}
    assert _value("facegate_drift_reports_total", **labels) == 3
    assert _value("facegate_drift_window_samples", **labels) == WINDOW
    assert _value(
        "facegate_drift_statistic", statistic="brightness_mean_drop", **labels
    ) == pytest.approx(dark.statistics["brightness_mean_drop"])
    for statistic in dark.breached:
        assert _value("facegate_drift_breaches_total", statistic=statistic, **labels) == 1
    assert _value("facegate_drift_reports_total", gate="all", model_version=version) == 3

    # the garbage went to the dead-letter topic, and the monitor went on past it
    def letter(record: ConsumerRecord) -> DeadLetter | None:
        try:
            dead = decode(record.value, DeadLetter)
        except SchemaError:
            return None
        return dead if dead.service == SERVICE and dead.payload == garbage else None

    (dead,) = _read_all(FRAMES_DLQ.name, FRAMES_DLQ.partitions, 1, letter, timeout_s=20)
    assert dead.source_topic == VERDICTS.name and dead.key == key
    assert (_value("facegate_dead_letters_total", service=SERVICE, reason=dead.reason) or 0) >= 1
    # offsets were committed past the dead letter, after the last report was acknowledged
    check = make_consumer(KafkaSettings(), settings.group_id)
    try:
        committed = check.committed(TopicPartition(VERDICTS.name, dead.partition))
    finally:
        check.close()
    assert committed is not None and committed > dead.offset + WINDOW - 1

    # the command line: the reports are listed, and the reference can be reset
    shown = CliRunner().invoke(drift_group, ["show", "--limit", "50", "--json"])
    assert shown.exit_code == 0, shown.output
    listed = [json.loads(line) for line in shown.output.splitlines()]
    assert {r["report_id"] for r in listed} >= {r.report_id for r in reports}
    reset = CliRunner().invoke(
        drift_group, ["reset-reference", "--model-version", version, "--gate", gate]
    )
    assert reset.exit_code == 0 and "deleted 1" in reset.output, reset.output
    assert client.exists(reference_key(version, gate)) == 0
    client.close()
    print(f"verdicts made in {made_s:.1f} s; test took {time.monotonic() - started:.1f} s")


def test_drift_run_serves_metrics_and_stops_on_sigterm(local_stack: LocalStack) -> None:
    port = free_port_block(1, start=28000)
    code = (
        "from stream_processors.drift.cli import drift_group; "
        f"drift_group(['run', '--metrics-port', '{port}'])"
    )
    env = {**os.environ, "FACEGATE_DRIFT_GROUP_ID": f"facegate-drift-{new_id()[:8]}"}
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    client = make_redis(RedisSettings())
    try:
        deadline = time.monotonic() + 30
        page = ""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    page = r.read().decode()
                if alive_instances(client, SERVICE):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert "facegate_drift_reports_total" in page
        assert alive_instances(client, SERVICE) >= 1
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "drift monitor: group facegate-drift-" in output
    assert alive_instances(client, SERVICE) == 0  # the heartbeat went with it
    client.close()
