"""``facegate rollout``: the canary controller service, and the rollout's state."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from facegate.settings import KafkaSettings, MlflowSettings, load_settings

log = logging.getLogger(__name__)


@click.group("rollout")
def rollout_group() -> None:
    """Canary rollout: start a canary, watch it, and let the controller promote or roll back."""


@rollout_group.command("run")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (none by default).")
def run_command(metrics_port: int | None) -> None:
    """Run the canary controller: compare the canary's verdicts and proctor feedback with the
    champion's and promote or roll back after FACEGATE_CANARY_MIN_VERDICTS canary verdicts."""
    from prometheus_client import start_http_server

    from inference_worker.canary_controller import CanaryController, CanarySettings

    overrides = {"metrics_port": metrics_port} if metrics_port else {}
    settings = load_settings(CanarySettings, **overrides)
    controller = CanaryController(settings)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the canary controller", signum)
        controller.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    controller.run()


@rollout_group.command("start")
@click.argument("version")
@click.option("--share", default=0.2, show_default=True, help="Share of students routed to it.")
@click.option("--reason", default="started by hand", show_default=True)
def start_command(version: str, share: float, reason: str) -> None:
    """Make VERSION the canary for SHARE of the students (workers reload on the model event)."""
    from trainer.promotion import start_canary

    step = start_canary(
        load_settings(MlflowSettings), load_settings(KafkaSettings), version, share, reason
    )
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
