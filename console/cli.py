"""``facegate console`` (the web console, `add-user`) and ``facegate feedback-consumer``."""

from __future__ import annotations

import threading
from typing import Any

import click

from facegate.settings import load_settings


def _settings(**overrides: Any) -> Any:
    from console.settings import ConsoleSettings

    return load_settings(ConsoleSettings, **{k: v for k, v in overrides.items() if v is not None})


@click.group("console", invoke_without_command=True)
@click.option("--host", default=None, help="Address to listen on (FACEGATE_CONSOLE_HOST).")
@click.option("--port", type=int, default=None, help="Port (FACEGATE_CONSOLE_PORT, 18080).")
@click.pass_context
def console_command(ctx: click.Context, host: str | None, port: int | None) -> None:
    """The proctor console: live check-ins per exam and gate, decisions, attendance.

    Without a subcommand it serves the console; users are added with `console add-user`.
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from console.app import build_console, create_app
    from facegate.service_process import lower_priority

    settings = _settings(host=host, port=port)
    lower_priority(settings)
    if not settings.users_path().is_file():
        click.echo(
            f"note: no users yet in {settings.users_path()}; "
            "add one with `facegate console add-user NAME --role admin`"
        )
    app = create_app(build_console(settings))
    click.echo(f"proctor console on http://{settings.host}:{settings.port}/")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


@console_command.command("add-user")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(["proctor", "admin"]), default="proctor", show_default=True
)
@click.password_option(help="The password (asked for when not given; at least 8 characters).")
def add_user_command(name: str, role: str, password: str) -> None:
    """Add a console user, or change their password and role (stored as an argon2id hash)."""
    from console.users import UserStore

    store = UserStore(_settings().users_path())
    store.add(name, password, role)  # type: ignore[arg-type]
    click.echo(f"user {name} ({role}) saved in {store.path}")


@click.command("feedback-consumer")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (none by default).")
def feedback_consumer_command(metrics_port: int | None) -> None:
    """Turn proctors' decisions into a training dataset and the proctor-seen error metrics."""
    from console.feedback_consumer import FeedbackSink, run_consumer
    from facegate.kafka_clients import ensure_topics, make_control_consumer, make_producer
    from facegate.object_store import make_object_store
    from facegate.redis_client import make_redis
    from facegate.service_process import lower_priority, serve_metrics, stop_on_signals
    from schemas.topics import FEEDBACK, FRAMES_DLQ

    settings = _settings(metrics_port=metrics_port)
    s3 = settings.s3
    store = make_object_store(s3)
    if not store.bucket_exists(s3.bucket_feedback):
        store.make_bucket(s3.bucket_feedback)
    ensure_topics(settings.kafka, [FEEDBACK, FRAMES_DLQ])
    serve_metrics(settings)
    lower_priority(settings)
    stop = threading.Event()
    stop_on_signals(stop, "stopping the feedback consumer")
    consumer = make_control_consumer(settings.kafka, settings.feedback_group_id, [FEEDBACK.name])
    producer = make_producer(settings.kafka)
    click.echo(f"feedback consumer: group {settings.feedback_group_id} -> {s3.bucket_feedback}")
    try:
        run_consumer(
            consumer,
            FeedbackSink(make_redis(settings.redis), store, s3.bucket_feedback),
            stop,
            producer,
        )
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        producer.close()
