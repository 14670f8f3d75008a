"""The ``facegate`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from facegate.errors import FacegateError
from facegate.logging_setup import configure_logging
from facegate.settings import StackSettings, load_settings

if TYPE_CHECKING:
    from facegate.stack import LocalStack


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING... (env FACEGATE_LOG_LEVEL).")
def cli(log_level: str | None) -> None:
    """FaceGate: real-time face verification for exam check-in.

    A student's ID card gives the claimed identity, a camera gives the face; FaceGate tells the
    proctor whether they match. Settings come from FACEGATE_* environment variables or the env
    file named by FACEGATE_ENV_FILE (default ./facegate.env); see the README for every setting.
    """
    configure_logging(log_level)


# ---- stack ----------------------------------------------------------------------------------


@cli.group()
def stack() -> None:
    """The embedded local stack: Kafka-protocol broker, Redis, S3 object store, MLflow.

    Every service is a real server installed by `make setup` and started as its own process;
    data, logs and pid files live under FACEGATE_STACK_STATE_DIR (default .facegate/stack).
    """


def _stack() -> LocalStack:
    # Imported here so that `facegate --help` stays fast.
    from facegate.stack import LocalStack

    return LocalStack(load_settings(StackSettings))


@stack.command("up")
@click.option(
    "--timeout", type=float, default=None, help="Seconds to wait for health (default 90)."
)
@click.option(
    "--with-monitoring",
    is_flag=True,
    help="Also run Prometheus (Debian package `prometheus`) scraping FaceGate's services "
    "(FACEGATE_STACK_WITH_MONITORING).",
)
def stack_up(timeout: float | None, with_monitoring: bool) -> None:
    """Start every service, wait until all are healthy, create topics and buckets."""
    from facegate.stack import LocalStack

    settings = load_settings(StackSettings)
    if timeout is not None:
        settings.startup_timeout_s = timeout
    if with_monitoring:
        settings.with_monitoring = True
    started = time.monotonic()
    endpoints = LocalStack(settings).up(progress=lambda line: click.echo(f"  {line}"))
    click.echo(f"stack healthy in {time.monotonic() - started:.1f} s; clients reach it with:")
    for key, value in endpoints.items():
        click.echo(f"  export {key}={value}")


@stack.command("down")
def stack_down() -> None:
    """Stop exactly what `stack up` started under the state directory."""
    stopped = _stack().down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack.command("status")
def stack_status() -> None:
    """Show each service's process, endpoint and health. Exit 1 if any is unhealthy."""
    rows = _stack().status()
    click.echo(f"{'service':<8} {'pid':>8}  {'health':<8} {'endpoint':<28} detail")
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        health = "healthy" if row.healthy else "DOWN"
        click.echo(f"{row.name:<8} {pid:>8}  {health:<8} {row.endpoint:<28} {row.detail}")
    if not all(row.healthy for row in rows):
        sys.exit(1)


@stack.command("logs")
@click.argument("service")
@click.option("-n", "--lines", default=40, show_default=True, help="Lines from the end.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl+C to stop).")
def stack_logs(service: str, lines: int, follow: bool) -> None:
    """Print the log of SERVICE (broker, redis, s3, mlflow or prometheus)."""
    path: Path = _stack().log_path(service)
    if not path.is_file():
        raise FacegateError(f"no log yet for {service} at {path}; has the stack been started?")
    with open(path, errors="replace") as handle:
        for line in handle.readlines()[-lines:]:
            click.echo(line, nl=False)
        while follow:
            line = handle.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.5)


# ---- doctor ---------------------------------------------------------------------------------


@cli.command()
def doctor() -> None:
    """Check this installation: inference providers, server binaries, models (exit 1 on a fault)."""
    from facegate.doctor import run_checks

    problems = 0
    for name, ok, detail in run_checks():
        click.echo(f"{'ok  ' if ok else 'FAIL'} {name:<28} {detail}")
        problems += not ok
    if problems:
        sys.exit(1)


@cli.command()
@click.option("--students", default=6, show_default=True, help="Students to enrol and check in.")
@click.option(
    "--enroll-photos",
    default=3,
    show_default=True,
    help="Photos per student used for enrolment (the others are shown to the camera).",
)
@click.option("--gates", default=2, show_default=True, help="Gates (cameras) at the exam hall.")
@click.option("--exams", default=5, show_default=True, help="Exams during the morning.")
@click.option("--seed", default=7, show_default=True, help="Seed of the simulated morning.")
@click.option(
    "--time-scale",
    default=600.0,
    show_default=True,
    help="Simulated seconds per real second (0: as fast as possible).",
)
@click.option(
    "--profile",
    type=click.Choice(["gate", "online"]),
    default="online",
    show_default=True,
    help="Worker profile: gate (batch 1) or online (dynamic batching).",
)
@click.option(
    "--roster",
    "roster_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Photo folder <person>/*.jpg (default: photos from registry packages).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where truth, report and plots go (default .facegate/reports/<time>).",
)
@click.option(
    "--report-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON to this file.",
)
@click.option("--keep-running", is_flag=True, help="Leave the stack and services running.")
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    help="Seconds to wait for services and for the last verdicts.",
)
def demo(**kwargs: object) -> None:
    """The main job: a simulated exam day through the whole real pipeline, ending in a report.

    Starts the local stack, builds and registers the models, enrols real people, runs a stream
    processor and an embedding worker, replays an exam morning (genuine students, impostors,
    no-face, several-face, blurred, dark and corrupt frames) through Kafka, and reports
    verdicts, accuracy against the simulator's truth, latency, throughput and dead letters.
    """
    from facegate.demo import DemoOptions, run_demo

    run_demo(DemoOptions(**kwargs), say=click.echo)  # type: ignore[arg-type]


@click.group("gallery")
def gallery_group() -> None:
    """The gallery of face templates in Redis: the keys that encrypt them and stored face images."""


def _register_subcommands() -> None:
    # Each part of FaceGate owns its commands; they are gathered here.
    from inference_worker.cli import enroll_command, unenroll_command, worker_command
    from stream_processors.cli import stream_processor_command
    from trainer.evaluation.cli import eval_group
    from trainer.models_cli import models_group

    for command in (
        models_group,
        eval_group,
        enroll_command,
        unenroll_command,
        stream_processor_command,
        worker_command,
    ):
        cli.add_command(command)

    from producers.cli import camera_command, record_command, replay_command, simulate_command

    cli.add_command(camera_command)
    cli.add_command(simulate_command)
    cli.add_command(record_command)
    cli.add_command(replay_command)

    from bench.cli import bench_command, soak_command

    cli.add_command(bench_command)
    cli.add_command(soak_command)

    from console.cli import console_command, feedback_consumer_command

    cli.add_command(console_command)
    cli.add_command(feedback_consumer_command)

    from inference_worker.rollout_cli import rollout_group
    from stream_processors.drift.cli import drift_group

    cli.add_command(rollout_group)
    cli.add_command(drift_group)

    from trainer.retrain_cli import retrain_command, serve_command
    from trainer.train_cli import train_group

    train_group.add_command(serve_command)
    train_group.add_command(retrain_command)
    cli.add_command(train_group)

    from inference_worker.template_crypto_cli import rotate_key_command

    gallery_group.add_command(rotate_key_command)
    cli.add_command(gallery_group)

    from facegate.privacy.forget import forget_command
    from facegate.privacy.retention import retention_command

    cli.add_command(forget_command)
    cli.add_command(retention_command)

    from facegate.dead_letter_replay import dlq_group

    cli.add_command(dlq_group)


_register_subcommands()


def main() -> None:
    """Console entry point: user-facing errors become one line, never a traceback."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FacegateError as exc:
        click.echo(f"facegate: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
