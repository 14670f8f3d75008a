"""The pure parts of the soak: its samples over time and the checks that they stay bounded.

Kept free of I/O so that the checks are unit-tested on made-up series (one that levels off and
one that keeps growing) before they judge a real run.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# A service's resident memory may grow this much (relative, plus a fixed allowance for caches
# and allocator slack) from the end of the warm-up quarter to the end of the run.
MEMORY_GROWTH = 1.2
MEMORY_SLACK_MB = 64.0
# The backlog of the second half may exceed the first half's peak by this much, plus one
# sample's worth of arrivals (the backlog is sampled, so it jitters by about that).
BACKLOG_GROWTH = 1.25
# Fewer samples than this cannot be split into halves and quarters worth comparing.
MIN_SAMPLES = 4


@dataclass
class SoakSample:
    """The pipeline at one moment of the soak."""

    t_s: float
    published: int
    answered: int
    stale: int
    dead_letters: int
    duplicates: int
    rss_mb: dict[str, float] = field(default_factory=dict)
    # facegate_consumer_lag of the stream processor and the worker, summed per topic.
    consumer_lag: dict[str, float] = field(default_factory=dict)
    # Capture-to-decision latency of the frames analysed (not shed) since the last sample.
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None

    @property
    def backlog(self) -> int:
        """Frames published and not yet answered: the lag of the whole pipeline, in frames."""
        return self.published - self.answered

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "backlog": self.backlog}


def backlog_check(
    samples: Sequence[SoakSample], rate_fps: float, sample_s: float
) -> dict[str, Any]:
    """Whether the backlog levels off: the second half's peak against the first half's."""
    if len(samples) < MIN_SAMPLES:
        return {"met": False, "why": f"only {len(samples)} samples"}
    half = len(samples) // 2
    first = max(s.backlog for s in samples[:half])
    second = max(s.backlog for s in samples[half:])
    allowed = BACKLOG_GROWTH * first + rate_fps * sample_s
    return {
        "first_half_peak": first,
        "second_half_peak": second,
        "allowed": round(allowed, 1),
        "met": second <= allowed,
    }


def memory_check(
    samples: Sequence[SoakSample], services: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per service: resident memory at the end against the end of the warm-up quarter."""
    checks: dict[str, dict[str, Any]] = {}
    if len(samples) < MIN_SAMPLES:
        return {name: {"met": False, "why": f"only {len(samples)} samples"} for name in services}
    warm = samples[len(samples) // 4]
    last = samples[-1]
    for name in services:
        before = warm.rss_mb.get(name, 0.0)
        after = last.rss_mb.get(name, 0.0)
        allowed = MEMORY_GROWTH * before + MEMORY_SLACK_MB
        peak = max(s.rss_mb.get(name, 0.0) for s in samples)
        checks[name] = {
            "after_warmup_mb": round(before, 1),
            "end_mb": round(after, 1),
            "peak_mb": round(peak, 1),
            "allowed_mb": round(allowed, 1),
            "met": 0.0 < after <= allowed,
        }
    return checks


def loss_check(published: int, answered: int, duplicates: int) -> dict[str, Any]:
    """Every frame answered (verdict or dead letter) once after de-duplication by frame id."""
    return {
        "published": published,
        "answered": answered,
        "lost": published - answered,
        "duplicates": duplicates,
        "met": answered == published,
    }


def rates(samples: Sequence[SoakSample]) -> list[dict[str, float]]:
    """Per interval: frames published and answered per second, and the share shed as stale."""
    out = []
    for before, after in itertools.pairwise(samples):
        dt = after.t_s - before.t_s
        answered = after.answered - before.answered
        if dt <= 0:
            continue
        out.append(
            {
                "t_s": after.t_s,
                "published_per_s": round((after.published - before.published) / dt, 2),
                "answered_per_s": round(answered / dt, 2),
                "stale_share": round((after.stale - before.stale) / answered, 3)
                if answered
                else 0.0,
            }
        )
    return out


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The soak's figures as (figure, value) rows for the terminal and the README."""
    checks = report["checks"]
    sustained = report["sustained_fps"]
    rows = [
        (
            "sustained online rate (closed loop, 8 clients)",
            f"{sustained:.2f} fps" if sustained is not None else "not measured (--rate given)",
        ),
        ("offered rate", f"{report['offered_fps']:.2f} fps for {report['duration_s']:.0f} s"),
        ("achieved publishing rate", f"{report['published_fps']:.2f} fps"),
        (
            "frames published / answered",
            f"{checks['loss']['published']} / {checks['loss']['answered']}",
        ),
        (
            "unanswered after the drain / duplicated",
            f"{checks['loss']['lost']} / {checks['loss']['duplicates']}",
        ),
        ("answered stale (shed unanalysed)", f"{report['stale_total']}"),
        (
            "analysed and decided",
            f"{report.get('analysed_total', 0)} "
            f"({report.get('analysed_fps', 0.0):.2f} fps over the offered period)",
        ),
        (
            "capture-to-decision of analysed frames, second half p50 / p95",
            f"{report.get('second_half_e2e_p50_ms')} / {report.get('second_half_e2e_p95_ms')} ms",
        ),
        ("dead letters", f"{report['dead_letters_total']}"),
        (
            "backlog peak, first / second half",
            f"{checks['backlog']['first_half_peak']} / {checks['backlog']['second_half_peak']} "
            f"frames (allowed {checks['backlog']['allowed']}): "
            + ("bounded" if checks["backlog"]["met"] else "NOT bounded"),
        ),
    ]
    for name, check in checks["memory"].items():
        rows.append(
            (
                f"RSS {name}",
                f"{check['after_warmup_mb']} -> {check['end_mb']} MB (peak {check['peak_mb']}, "
                f"allowed {check['allowed_mb']}): "
                + ("bounded" if check["met"] else "NOT bounded"),
            )
        )
    for name, mb in report.get("other_rss_end_mb", {}).items():
        rows.append((f"RSS {name} (not judged)", f"{mb} MB at the end"))
    return rows


def soak_plot(report: Mapping[str, Any], path: Any) -> Any:
    """Backlog, answers per second and resident memory over the soak, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = [s["t_s"] for s in samples]
    fig, (lag, flow, memory) = plt.subplots(3, 1, figsize=(8, 9), dpi=110, sharex=True)
    lag.plot(t, [s["backlog"] for s in samples], color="#C44E52", label="unanswered frames")
    topics = sorted({name for s in samples for name in s.get("consumer_lag", {})})
    for topic in topics:
        lag.plot(
            t,
            [s.get("consumer_lag", {}).get(topic, 0.0) for s in samples],
            linestyle="--",
            label=f"consumer lag on {topic}",
        )
    lag.set_ylabel("frames / records")
    lag.legend(loc="upper left", fontsize="small")
    lag.set_title(
        f"soak: {report['offered_fps']:.1f} fps offered "
        f"({report['factor']}x sustained) for {report['duration_s']:.0f} s"
    )
    steps = report["rates"]
    flow.plot([r["t_s"] for r in steps], [r["published_per_s"] for r in steps], label="published")
    flow.plot([r["t_s"] for r in steps], [r["answered_per_s"] for r in steps], label="answered")
    flow.set_ylabel("frames/s")
    share = flow.twinx()
    share.plot(
        [r["t_s"] for r in steps],
        [r["stale_share"] for r in steps],
        color="grey",
        linestyle=":",
        label="stale share",
    )
    share.set_ylabel("answered stale (share)")
    share.set_ylim(0, 1)
    flow.legend(loc="upper left")
    names = sorted({name for s in samples for name in s["rss_mb"]})
    for name in names:
        memory.plot(t, [s["rss_mb"].get(name, 0.0) for s in samples], label=name)
    memory.set_ylabel("resident memory (MB)")
    memory.set_xlabel("seconds")
    memory.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
