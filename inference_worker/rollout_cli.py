"""``facegate rollout``: the canary controller service, and the rollout's state."""

from __future__ import annotations

import logging

import click

from facegate.service_process import lower_priority, serve_metrics, stop_on_signals
from facegate.settings import (
    KafkaSettings,
    MlflowSettings,
    ObjectStoreSettings,
    RedisSettings,
    load_settings,
)

log = logging.getLogger(__name__)


@click.group("rollout")
def rollout_group() -> None:
    """Canary rollout: start a canary, watch it, and let the controller promote or roll back."""


@rollout_group.command("run")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (none by default).")
def run_command(metrics_port: int | None) -> None:
    """Run the canary controller: compare the canary's verdicts and proctor feedback with the
    champion's and promote or roll back after FACEGATE_CANARY_MIN_VERDICTS canary verdicts."""
    from inference_worker.canary_controller import CanaryController, CanarySettings

    overrides = {"metrics_port": metrics_port} if metrics_port else {}
    settings = load_settings(CanarySettings, **overrides)
    controller = CanaryController(settings)

    stop_on_signals(controller.stopping, "stopping the canary controller")
    serve_metrics(settings)
    lower_priority(settings)
    controller.run()


@rollout_group.command("start")
@click.argument("version")
@click.option("--share", default=0.2, show_default=True, help="Share of students routed to it.")
@click.option("--reason", default="started by hand", show_default=True)
@click.option(
    "--backfill/--no-backfill",
    default=True,
    show_default=True,
    help="Enrol the version's gallery from the stored enrolment photos first, if it has none.",
)
def start_command(version: str, share: float, reason: str, backfill: bool) -> None:
    """Make VERSION the canary for SHARE of the students (workers reload on the model event)."""
    from facegate.redis_client import make_redis
    from inference_worker.gallery import GalleryStore
    from inference_worker.gallery_backfill import backfill_model
    from trainer.promotion import start_canary
    from trainer.registry import resolve

    mlflow, kafka = load_settings(MlflowSettings), load_settings(KafkaSettings)
    redis_settings = load_settings(RedisSettings)
    client = make_redis(redis_settings)
    try:
        students = len(GalleryStore(client, version).students())
    finally:
        client.close()
    if backfill and students == 0:
        registered = resolve(mlflow, version_number=version)
        report = backfill_model(
            version,
            registered.model_dir,
            mlflow,
            redis_settings,
            load_settings(ObjectStoreSettings),
            kafka,
        )
        click.echo(
            f"gallery v{version}: {len(report.enrolled)}/{report.students} students enrolled "
            f"from stored photos ({len(report.without_photos)} without photos)"
        )
    elif students == 0:
        click.echo(f"warning: v{version} has no gallery: its students will be unknown_student")
    step = start_canary(mlflow, kafka, version, share, reason)
    click.echo(f"canary: v{step.version} for {share:.0%} of students (champion v{step.previous})")


@rollout_group.command("status")
def status_command() -> None:
    """Show the champion, the canary and its share, and the last rollout decisions."""
    from trainer.registry import list_versions, version_tags

    settings = load_settings(MlflowSettings)
    rows = list_versions(settings)
    if not rows:
        click.echo(f"no versions of {settings.registered_model} at {settings.tracking_uri}")
        return
    for row in rows:
        tags = version_tags(settings, row["version"])
        state = tags.get("rollout.state", "-")
        share = tags.get("rollout.canary_share", "")
        aliases = ",".join(row["aliases"]) or "-"
        line = f"v{row['version']:<4} {aliases:<20} {row['architecture']:<16} state={state}"
        if "canary" in row["aliases"] and share:
            line += f" share={float(share):.0%}"
        reason = tags.get(f"rollout.{state}_reason", "")
        click.echo(line + (f"  ({reason})" if reason else ""))
