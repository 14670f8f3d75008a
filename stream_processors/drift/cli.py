"""``facegate drift``: run the drift monitor, show its reports, reset reference windows."""

from __future__ import annotations

import json
from typing import Any

import click

from facegate.settings import load_settings


def _settings(**overrides: Any) -> Any:
    from stream_processors.drift.settings import DriftSettings

    return load_settings(DriftSettings, **{k: v for k, v in overrides.items() if v is not None})


@click.group("drift")
def drift_group() -> None:
    """Drift monitoring: windowed score, quality, embedding and feedback statistics per gate.

    Settings are FACEGATE_DRIFT_*: window size and duration, minimum samples, and one bound
    per statistic such as FACEGATE_DRIFT_MMD_MAX (unset: the calibrated default; "off": not
    checked).
    """


@drift_group.command("run")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (none by default).")
def run_command(metrics_port: int | None) -> None:
    """Run the drift monitor: verdicts and feedback in, a drift report per closed window out.

    Stops cleanly on SIGTERM or Ctrl+C, reporting the windows still open.
    """
    from stream_processors.drift.service import run_monitor

    settings = _settings(metrics_port=metrics_port)
    click.echo(
        f"drift monitor: group {settings.group_id}, windows of {settings.window_size} verdicts "
        f"or {settings.window_seconds:.0f} s"
    )
    run_monitor(settings)


@drift_group.command("show")
@click.option("--limit", default=20, show_default=True, help="How many of the latest reports.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per report instead.")
def show_command(limit: int, as_json: bool) -> None:
    """Print the latest drift reports: gate, model, window, samples, statistics, breaches."""
    from stream_processors.drift.reports import format_table, read_reports

    reports = read_reports(_settings().kafka, limit=limit)
    if as_json:
        for report in reports:
            click.echo(json.dumps(report.model_dump(mode="json")))
        return
    if not reports:
        click.echo("no drift reports yet")
        return
    for line in format_table(reports):
        click.echo(line)


@drift_group.command("reset-reference")
@click.option("--model-version", default=None, help="Only this model version (default: all).")
@click.option("--gate", default=None, help="Only this gate; 'all' is the all-gates window.")
def reset_reference_command(model_version: str | None, gate: str | None) -> None:
    """Forget reference windows: the next full window of each gate becomes its reference.

    A running monitor reads references from Redis at every window, so it follows at once.
    """
    from facegate.redis_client import make_redis
    from stream_processors.drift.reference import RedisReferenceStore

    store = RedisReferenceStore(make_redis(_settings().redis))
    deleted = store.delete(model_version, gate)
    click.echo(f"deleted {deleted} reference window(s)")
