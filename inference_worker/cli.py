"""``facegate worker`` and ``facegate enroll``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from facegate.settings import load_settings


@click.command("worker")
@click.option(
    "--profile",
    type=click.Choice(["gate", "online"]),
    default=None,
    help="gate: batch 1, latency first; online: dynamic batching (FACEGATE_WORKER_PROFILE).",
)
def worker_command(profile: str | None) -> None:
    """Run an embedding worker: faces -> embed (ONNX Runtime, OpenVINO) -> match -> verdicts.

    Workers form a consumer group (FACEGATE_WORKER_GROUP_ID); start more to scale out.  The model
    is the registry's FACEGATE_WORKER_MODEL_ALIAS (default champion) unless
    FACEGATE_WORKER_MODEL_SOURCE=local.
    """
    from inference_worker.runner import run_worker
    from inference_worker.settings import InferenceWorkerSettings

    overrides = {"profile": profile} if profile else {}
    run_worker(load_settings(InferenceWorkerSettings, **overrides))


@click.command("enroll")
@click.argument("roster", type=click.Path(exists=True, path_type=Path))
@click.option("--limit", type=int, default=None, help="Enrol at most N students.")
@click.option(
    "--min-photos",
    default=1,
    show_default=True,
    help="Photos with exactly one good face a student needs to be enrolled.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary as JSON.",
)
def enroll_command(
    roster: Path, limit: int | None, min_photos: int, json_path: Path | None
) -> None:
    """Enrol students from ROSTER: a folder of <student>/<photos> or a CSV student_id,name,photo.

    Photos go through the production detect-align-embed path; a photo without exactly one
    good face is refused with its reason.  Templates are stored in Redis under the registry's
    champion (and canary) version and every worker is told through the enrollments topic.
    """
    from inference_worker.enrollment_service import enroll_roster

    summary = enroll_roster(roster, limit, min_photos)
    click.echo(
        f"enrolled {len(summary.enrolled)} student(s) from {summary.photos_used} photo(s); "
        f"refused photos: {dict(summary.photos_refused) or 'none'}"
    )
    for student, why in summary.failed.items():
        click.echo(f"  not enrolled: {student}: {why}")
    if json_path:
        json_path.write_text(json.dumps(summary.as_dict(), indent=2))


@click.command("unenroll")
@click.argument("students", nargs=-1, required=True)
def unenroll_command(students: tuple[str, ...]) -> None:
    """Remove STUDENTS' face templates from the gallery; workers drop them without a restart."""
    from inference_worker.enrollment_service import unenroll_students

    removed = unenroll_students(list(students))
    click.echo(f"removed {len(removed)} of {len(students)}: {', '.join(removed) or 'none'}")
