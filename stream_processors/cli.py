"""``facegate stream-processor``: run a Faust stream-processor worker."""

from __future__ import annotations

import sys

import click

from facegate.settings import load_settings


@click.command("stream-processor")
@click.option("--loglevel", default="info", show_default=True, help="Faust worker log level.")
def stream_processor_command(loglevel: str) -> None:
    """Run a stream-processor worker: frames -> detect, align, quality -> faces (or dead letters).

    Scale out by starting more workers with the same FACEGATE_STREAM_APP_ID (a consumer group);
    settings are FACEGATE_STREAM_* (see the README).  Also keeps exam attendance in Redis.
    """
    from stream_processors.app import run
    from stream_processors.settings import StreamProcessorSettings

    settings = load_settings(StreamProcessorSettings)
    # Faust parses the process's own arguments: hand it only the worker's.
    sys.argv = [sys.argv[0], "worker", f"--loglevel={loglevel}"]
    run(settings, loglevel)
