"""``facegate train serve`` and ``facegate train retrain``: the retraining loop as commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from facegate.service_process import lower_priority, serve_metrics, stop_on_signals
from facegate.settings import load_settings

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (none by default).")
def serve_command(metrics_port: int | None) -> None:
    """Run the training service: retrain on drift, on a schedule or after many enrolments.

    Each run builds a dataset manifest, trains (FACEGATE_RETRAIN_ARCHITECTURE, default
    fine-tuning of the production embedder), exports to ONNX, passes the evaluation gate,
    registers a challenger and starts a canary (FACEGATE_RETRAIN_CANARY_SHARE).
    """
    from trainer.retrain_service import RetrainService
    from trainer.retraining import RetrainSettings

    overrides = {"metrics_port": metrics_port} if metrics_port else {}
    settings = load_settings(RetrainSettings, **overrides)
    service = RetrainService(settings)

    stop_on_signals(service.stopping, "stopping after the current run")
    serve_metrics(settings)
    lower_priority(settings)
    service.run()


@click.command("retrain")
@click.option("--reason", default="requested by hand", show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the outcome as JSON.",
)
def retrain_command(reason: str, json_path: Path | None) -> None:
    """Run one retraining now: dataset, training, gate, registry, canary (see `serve`)."""
    from trainer.retraining import Retrainer, RetrainSettings

    outcome = Retrainer(load_settings(RetrainSettings)).run(reason)
    for step in outcome.steps:
        click.echo(f"  {step}")
    if json_path:
        json_path.write_text(json.dumps(outcome.as_dict(), indent=2))
