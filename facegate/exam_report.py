"""The exam-day report: what the pipeline decided, measured against the simulator's truth.

Everything here is computed from the verdicts and dead letters read back from Kafka and the
ground truth the simulator wrote when it published each frame; nothing is assumed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.messages import DeadLetter, Verdict

DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Observed:
    """What came back for one frame: its first verdict or dead letter, and how many repeats."""

    label: str
    verdict: Verdict | None
    dead_letter: DeadLetter | None
    repeats: int


def collect(verdicts: Iterable[Verdict], dead_letters: Iterable[DeadLetter]) -> dict[str, Observed]:
    """One observation per frame id; repeated deliveries are counted, not double-counted."""
    seen: dict[str, Observed] = {}
    for verdict in verdicts:
        previous = seen.get(verdict.frame_id)
        if previous is None:
            label = f"{verdict.decision}/{verdict.reason}"
            seen[verdict.frame_id] = Observed(label, verdict, None, 0)
        else:
            seen[verdict.frame_id] = Observed(
                previous.label, previous.verdict, previous.dead_letter, previous.repeats + 1
            )
    for letter in dead_letters:
        if letter.frame_id is None:
            continue
        previous = seen.get(letter.frame_id)
        if previous is None:
            seen[letter.frame_id] = Observed(DEAD_LETTER, None, letter, 0)
        else:
            seen[letter.frame_id] = Observed(
                previous.label, previous.verdict, previous.dead_letter, previous.repeats + 1
            )
    return seen


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    data = np.asarray(values)
    return {
        "p50": round(float(np.percentile(data, 50)), 2),
        "p95": round(float(np.percentile(data, 95)), 2),
        "p99": round(float(np.percentile(data, 99)), 2),
        "mean": round(float(data.mean()), 2),
    }


def build_report(
    truth: list[dict[str, Any]],
    observed: dict[str, Observed],
    unmatched_dead_letters: Counter[str] | None = None,
) -> dict[str, Any]:
    """The report of one simulated exam day (see the README for every field)."""
    verdict_counts: dict[str, Counter[str]] = defaultdict(Counter)
    dead_letters: Counter[str] = Counter(unmatched_dead_letters or {})
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: list[float] = []
    stage_times: dict[str, list[float]] = defaultdict(list)
    correct = answered = missing = impostors = caught = repeats = 0
    genuine = genuine_accepted = 0
    first_capture, last_decision = float("inf"), 0.0
    for row in truth:
        seen = observed.get(row["frame_id"])
        kind = row["kind"]
        by_kind[kind]["frames"] += 1
        if seen is None:
            missing += 1
            by_kind[kind]["missing"] += 1
            continue
        answered += 1
        repeats += seen.repeats
        ok = seen.label in row["expected"]
        correct += ok
        by_kind[kind]["correct"] += ok
        if seen.verdict is not None:
            verdict = seen.verdict
            verdict_counts[verdict.decision][verdict.reason] += 1
            latencies.append((verdict.decided_at - verdict.captured_at) * 1000)
            for stage, ms in verdict.timings_ms.items():
                if stage != "batch_size":
                    stage_times[stage].append(ms)
            first_capture = min(first_capture, verdict.captured_at)
            last_decision = max(last_decision, verdict.decided_at)
        elif seen.dead_letter is not None:
            dead_letters[seen.dead_letter.reason] += 1
        if kind == "impostor":
            impostors += 1
            caught += seen.label.split("/")[0] != "accept"
        if kind == "genuine":
            genuine += 1
            genuine_accepted += seen.label == "accept/match"
    span = last_decision - first_capture if last_decision > first_capture else 0.0
    decided = sum(sum(c.values()) for c in verdict_counts.values())
    return {
        "checkins": len(truth),
        "answered": answered,
        "missing": missing,
        "repeated_deliveries": repeats,
        "verdicts": {d: dict(sorted(c.items())) for d, c in sorted(verdict_counts.items())},
        "accuracy": round(correct / answered, 4) if answered else None,
        "accuracy_by_kind": {
            kind: {
                "frames": counts["frames"],
                "correct": counts["correct"],
                "missing": counts["missing"],
                "accuracy": round(counts["correct"] / counts["frames"], 4)
                if counts["frames"]
                else None,
            }
            for kind, counts in sorted(by_kind.items())
        },
        "genuine": genuine,
        "genuine_accepted": genuine_accepted,
        "impostors": impostors,
        "impostors_caught": caught,
        "latency_ms": _percentiles(latencies),
        "stage_ms": {stage: _percentiles(v) for stage, v in sorted(stage_times.items())},
        "throughput_per_s": round(decided / span, 2) if span else None,
        "dead_letters": dict(sorted(dead_letters.items())),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as text for the terminal."""
    lines = [
        "FaceGate exam-day report",
        "=" * 60,
        f"check-ins published      {report['checkins']}",
        f"answered / missing       {report['answered']} / {report['missing']}"
        f"   (repeated deliveries recognised: {report['repeated_deliveries']})",
        f"accuracy vs ground truth {_pct(report['accuracy'])}",
        f"genuine accepted         {report['genuine_accepted']} of {report['genuine']}",
        f"impostors caught         {report['impostors_caught']} of {report['impostors']}",
        "",
        "verdicts by decision and reason:",
    ]
    for decision, reasons in report["verdicts"].items():
        for reason, count in reasons.items():
            lines.append(f"  {decision:<8} {reason:<18} {count:>5}")
    lines.append("dead letters by reason:")
    for reason, count in report["dead_letters"].items() or {"none": 0}.items():
        lines.append(f"  {reason:<27} {count:>5}")
    lines.append("accuracy by kind of check-in:")
    for kind, row in report["accuracy_by_kind"].items():
        lines.append(
            f"  {kind:<15} {row['correct']:>4}/{row['frames']:<4} {_pct(row['accuracy']):>8}"
        )
    if report.get("attendance"):
        lines.append("attendance (from the stream processor's table in Redis):")
        for exam, row in report["attendance"].items():
            lines.append(
                f"  {exam:<28} {row['checked_in']:>3} checked in of {row['students_seen']} seen"
            )
    latency = report["latency_ms"]
    lines += [
        "",
        f"end-to-end latency (capture -> verdict) ms: p50 {latency['p50']}  p95 {latency['p95']}"
        f"  p99 {latency['p99']}",
        f"throughput: {report['throughput_per_s']} verdicts/s",
        "per-stage median ms: "
        + "  ".join(f"{stage} {values['p50']}" for stage, values in report["stage_ms"].items()),
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
