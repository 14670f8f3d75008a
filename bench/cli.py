"""``facegate bench``: every figure of issue 8 in one run on this machine, against its targets."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bench.plan import (
    FULL,
    MAX_STREAM_PROCESSORS,
    QUICK,
    SOAK_STREAM_PROCESSORS,
    STUDENTS,
    BenchPlan,
)

F = TypeVar("F", bound=Callable[..., Any])


def stream_processors_option(default: int) -> Callable[[F], F]:
    """``--stream-processors``: processes of the stream processor, in one consumer group."""
    return click.option(
        "--stream-processors",
        type=click.IntRange(1, MAX_STREAM_PROCESSORS),
        default=default,
        show_default=True,
        help="Stream processor processes of the pipeline (one consumer group).",
    )


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that the private stack is stopped on the way out."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    return {
        "nproc": cores,
        "cpu_model": model,
        "python": platform.python_version(),
        "description": f"{cores} cores ({model}), Linux {platform.release()}",
    }


def run_bench(plan: BenchPlan, say: Any = print) -> dict[str, Any]:
    """Measure everything; the results dict (targets included, no files written)."""
    from bench.baseline import run_naive
    from bench.model_scaling import all_cores_fps
    from bench.models import model_only_bound, probe_frames, provider_cost, search_cost
    from bench.pipeline import run_pipeline
    from bench.stats import bracketing_mean, compute_targets
    from producers.roster import demo_photo_folder
    from trainer.build_models import build_all

    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "plan": plan.__dict__}
    say(f"machine: {results['machine']['description']}")
    say("1/6 models (built once) and the demo photos")
    build_all()
    photos = demo_photo_folder()
    # Every part runs on the same frames: the probe photos of the students the pipeline enrols.
    checkins = probe_frames(photos, STUDENTS)
    frames = checkins[: plan.frames]
    say(f"2/6 model-only bound on {len(frames)} frames, batches {plan.batch_sizes}")
    bound = model_only_bound(frames, plan.batch_sizes)
    say(
        f"    sustained for {plan.all_cores_s:.0f} s, batch {bound['best_batch']}: one process, "
        f"then {bound['cores']} at once"
    )
    bound["one_process"] = all_cores_fps(frames, 1, bound["best_batch"], plan.all_cores_s)
    bound["all_cores"] = all_cores_fps(
        frames, bound["cores"], bound["best_batch"], plan.all_cores_s
    )
    # The bound is what the models do on every core together, measured (again after the
    # pipeline, below: the node's speed drifts).
    bound["bound_fps"] = bound["all_cores"]["fps"]
    results["model_only"] = bound
    say(f"3/6 1:N search, galleries of {plan.gallery_sizes}")
    results["search_ms"] = search_cost(plan.gallery_sizes, plan.search_queries)
    say("4/6 OpenVINO against the CPU execution provider")
    results["providers"] = provider_cost(checkins, (1, 8))
    say(f"5/6 pipeline through a private local stack, {plan.stream_processors} stream processors")
    pipeline = run_pipeline(
        photos,
        STUDENTS,
        checkins,
        plan.gate_requests,
        plan.online_requests,
        plan.clients,
        say,
        plan.stream_processors,
    )
    results.update(pipeline)
    say(
        "    the model-only bound and one frame's compute again: the pipeline is compared with "
        "the mean of before and after"
    )
    bound["all_cores_after"] = all_cores_fps(
        frames, bound["cores"], bound["best_batch"], plan.all_cores_s
    )
    bound["bound_fps"] = bracketing_mean(bound["all_cores"]["fps"], bound["all_cores_after"]["fps"])
    bound["frame_ms_batch1_after"] = model_only_bound(frames, (1,))["frame_ms_batch1"]
    bound["frame_ms_batch1_mean"] = bracketing_mean(
        bound["frame_ms_batch1"], bound["frame_ms_batch1_after"]
    )
    say(f"6/6 naive one-at-a-time HTTP service, {plan.clients} clients")
    results["naive"] = run_naive(checkins, plan.clients, plan.naive_requests)
    results["targets"] = compute_targets(
        online_fps=results["online"]["throughput_fps"],
        model_bound_fps=bound["bound_fps"],
        naive_fps=results["naive"]["throughput_fps"],
        gate_p50_ms=results["gate"]["end_to_end_ms"]["p50"],
        model_frame_ms=bound["frame_ms_batch1_mean"],
        search_p99_ms={int(k): v["p99"] for k, v in results["search_ms"].items()},
        search_p50_ms={int(k): v["p50"] for k, v in results["search_ms"].items()},
        peak_rss_mb=results["peak_rss_mb"],
    )
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results


@click.command("bench")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("reports/bench.json"),
    show_default=True,
    help="Where the JSON goes; the Markdown table and histogram PNGs go next to it.",
)
@click.option("--quick", is_flag=True, help="A 1-2 minute smoke run with small frame counts.")
@stream_processors_option(FULL.stream_processors)
def bench_command(json_path: Path, quick: bool, stream_processors: int) -> None:
    """Benchmark models, pipeline profiles, a naive baseline, 1:N search and memory."""
    from dataclasses import replace

    from bench.report import figure_rows, text_table, write_outputs

    exit_on_sigterm()
    plan = replace(QUICK if quick else FULL, stream_processors=stream_processors)
    results = run_bench(plan, say=click.echo)
    files = write_outputs(results, json_path)
    click.echo(text_table(figure_rows(results)))
    click.echo(f"files: {', '.join(files.values())} ({results['duration_s']} s)")


@click.command("soak")
@click.option(
    "--minutes", type=float, default=10.0, show_default=True, help="How long the load is offered."
)
@click.option(
    "--factor",
    type=float,
    default=2.0,
    show_default=True,
    help="Offered rate as a multiple of the sustained `online` rate measured first.",
)
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Offer this many frames/s instead (skips measuring the sustained rate).",
)
@click.option(
    "--sample-every",
    "sample_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between samples of backlog, memory and verdicts.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("reports/soak.json"),
    show_default=True,
    help="Where the report goes; the Markdown table and the PNG go next to it.",
)
@stream_processors_option(SOAK_STREAM_PROCESSORS)
def soak_command(
    minutes: float,
    factor: float,
    rate: float | None,
    sample_s: float,
    json_path: Path,
    stream_processors: int,
) -> None:
    """Soak the `online` pipeline at FACTOR x its sustained rate (not part of the test suite).

    Reports backlog, resident memory and verdicts over time, and exits 1 unless the backlog
    levels off, no service's memory keeps growing and every frame is answered exactly once.
    """
    import json

    from bench.models import probe_frames
    from bench.soak import SoakPlan, run_soak
    from bench.soak_stats import MIN_SAMPLES, soak_plot, summary_rows
    from producers.roster import demo_photo_folder
    from trainer.build_models import build_all

    if minutes * 60 < MIN_SAMPLES * sample_s:
        raise click.UsageError(
            f"--minutes {minutes:g} gives fewer than {MIN_SAMPLES} samples of "
            f"{sample_s:g} s: the checks compare the first half of the samples with the second"
        )
    exit_on_sigterm()
    plan = SoakPlan(
        duration_s=minutes * 60,
        factor=factor,
        rate_fps=rate,
        sample_s=sample_s,
        stream_processors=stream_processors,
    )
    click.echo(f"machine: {machine()['description']}")
    build_all()
    photos = demo_photo_folder()
    report = run_soak(plan, photos, STUDENTS, probe_frames(photos, STUDENTS), say=click.echo)
    report["machine"] = machine()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    png = soak_plot(report, json_path.with_suffix(".png"))
    rows = summary_rows(report)
    width = max(len(a) for a, _ in rows)
    click.echo("\n".join(f"{a:<{width}}  {b}" for a, b in rows))
    markdown = json_path.with_suffix(".md")
    lines = ["| figure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    markdown.write_text(f"{report['machine']['description']}\n\n" + "\n".join(lines) + "\n")
    report["files"] = {"json": str(json_path), "markdown": str(markdown), "plot": str(png)}
    json_path.write_text(json.dumps(report, indent=2, default=str))
    click.echo(f"files: {json_path}, {markdown}, {png}")
    click.echo("soak: all checks met" if report["met"] else "soak: a check was NOT met")
    if not report["met"]:
        raise SystemExit(1)
