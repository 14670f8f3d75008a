"""The benchmark's figures as rows: printed as a table, written as Markdown, JSON and PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Row = tuple[str, str, str]


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:.1f} / {summary['p95']:.1f} / {summary['p99']:.1f}"


def figure_rows(results: dict[str, Any]) -> list[Row]:
    """(figure, value, target) rows of every headline figure and every target."""
    rows: list[Row] = []
    bound = results["model_only"]
    rows.append(
        ("model-only ms/frame, decode+detect+align (mean)", f"{bound['front_ms_mean']}", "")
    )
    for batch, ms in bound["embed_ms_per_face"].items():
        rows.append((f"model-only embed ms/face, batch {batch}", f"{ms:.2f}", ""))
    rows.append(("model-only frames/s per core, batch 1", f"{bound['per_core_fps']['1']}", ""))
    best = bound["best_batch"]
    rows.append(
        (
            f"model-only frames/s per core, best batch ({best})",
            f"{bound['per_core_fps'][str(best)]}",
            "",
        )
    )
    cores = bound["cores"]
    rows.append(
        (
            f"model-only per core x {cores} cores, if cores added up (frames/s)",
            f"{bound['linear_bound_fps']}",
            "",
        )
    )
    alone = bound["one_process"]["fps"]
    rows.append((f"model-only sustained, one process, batch {best} (frames/s)", f"{alone}", ""))
    rows.append(
        (
            f"model-only bound: {cores} processes at once, before / after the pipeline; their "
            "mean (frames/s; x one process alone)",
            f"{bound['all_cores']['fps']} / {bound['all_cores_after']['fps']}; "
            f"{bound['bound_fps']} (x{bound['bound_fps'] / alone:.2f})",
            "",
        )
    )
    rows.append(
        (
            "model-only ms for one frame, batch 1 (the gate goal's yardstick), "
            "before / after the pipeline; their mean",
            f"{bound['frame_ms_batch1']} / {bound['frame_ms_batch1_after']}; "
            f"{bound['frame_ms_batch1_mean']}",
            "",
        )
    )
    processors = results.get("plan", {}).get("stream_processors")
    if processors:
        rows.append(("pipeline stream processors (one consumer group)", f"{processors}", ""))
    hop = results.get("broker_hop")
    if hop:
        rows.append(
            (
                f"broker hop alone p50/p95/p99 ms ({hop['record_bytes'] // 1000} KB record, "
                f"produce ack {hop['produce_ack_ms']['p50']:.1f} ms p50)",
                _ms(hop["hop_ms"]),
                "",
            )
        )
    for name in ("gate", "online", "naive"):
        profile = results.get(name)
        if not profile:
            continue
        label = f"{name} ({profile['clients']} client{'s' if profile['clients'] > 1 else ''})"
        rows.append((f"{label} throughput (frames/s)", f"{profile['throughput_fps']}", ""))
        rows.append((f"{label} end-to-end p50/p95/p99 ms", _ms(profile["end_to_end_ms"]), ""))
        for stage, summary in profile.get("stages_ms", {}).items():
            if stage == "batch_size":  # a count, not a time: it stays in the JSON
                continue
            rows.append((f"{name} stage {stage} p50 ms", f"{summary['p50']:.1f}", ""))
    for size, summary in results["search_ms"].items():
        path = summary.get("path", "float32")
        rows.append(
            (
                f"1:N search {int(size):,} p50/p99 ms ({path})",
                f"{summary['p50']} / {summary['p99']}",
                "",
            )
        )
        if "enrolment_ms" in summary:
            enrol = summary["enrolment_ms"]
            rows.append(
                (
                    f"enrolment into {int(size):,} p50 ms (new / replayed / changed)",
                    f"{enrol['new']} / {enrol['replayed']} / {enrol['changed']}",
                    "",
                )
            )
        if "float32" in summary:
            rows.append(
                (
                    f"1:N search {int(size):,} float32 scan p50/p99 ms, int8 recall@5",
                    f"{summary['float32']['p50']} / {summary['float32']['p99']}, "
                    f"{summary['recall_at_k']}",
                    "",
                )
            )
    for key, ratio in results["providers"]["cpu_over_openvino"].items():
        rows.append((f"CPU EP / OpenVINO EP embed cost, batch {key}", f"{ratio}", ""))
    for name, mb in results.get("peak_rss_mb", {}).items():
        rows.append((f"peak RSS {name} (MB)", f"{mb}", ""))
    cpu = results.get("cpu")
    if cpu:
        idle, busy = cpu["idle"]["core_pct"], cpu["online"]
        for name, pct in busy["core_pct"].items():
            rows.append(
                (
                    f"CPU {name}: % of a core idle / online, online ms per frame",
                    f"{idle.get(name, 0.0)} / {pct}, {busy['ms_per_frame'][name]}",
                    "",
                )
            )
        rows.append(
            (
                "CPU all services: % of a core idle / online, online ms per frame",
                f"{cpu['idle']['total_core_pct']} / {busy['total_core_pct']}, "
                f"{busy['total_ms_per_frame']}",
                "",
            )
        )
    for name, entry in results["targets"].items():
        verdict = "met" if entry["met"] else "NOT met"
        rows.append((f"target {name}", f"{entry['value']}", f"goal {entry['goal']}: {verdict}"))
    return rows


def text_table(rows: list[Row]) -> str:
    """Rows aligned in columns for the terminal."""
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>{value_width}}  {c}".rstrip() for a, b, c in rows)


def markdown_table(rows: list[Row]) -> str:
    """Rows as a Markdown table."""
    lines = ["| figure | value | target |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def write_outputs(results: dict[str, Any], json_path: Path) -> dict[str, str]:
    """The JSON, a Markdown table and latency histograms next to it; their paths."""
    from facegate.plots import latency_histogram

    json_path.parent.mkdir(parents=True, exist_ok=True)
    files = {"json": str(json_path)}
    for name in ("gate", "online", "naive"):
        latencies = (results.get(name) or {}).pop("_latencies", None)
        if latencies:
            png = json_path.with_name(f"{json_path.stem}-{name}-latency.png")
            latency_histogram(latencies, png, f"end-to-end latency, {name}")
            files[f"{name}_histogram"] = str(png)
    markdown = json_path.with_suffix(".md")
    table = markdown_table(figure_rows(results))
    markdown.write_text(f"{results['machine']['description']}\n\n{table}")
    files["markdown"] = str(markdown)
    results["files"] = files
    json_path.write_text(json.dumps(results, indent=2, default=str))
    return files
