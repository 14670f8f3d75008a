"""The exam-day report: what the pipeline decided, measured against the simulator's truth.

Everything here is computed from the verdicts and dead letters read back from Kafka and the
ground truth the simulator wrote when it published each frame; nothing is assumed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
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


# The columns of ``checkins.csv``: what was sent for a check-in, and what came back.
CHECKIN_COLUMNS = (
    "checkin",
    "frame_id",
    "exam_id",
    "gate_id",
    "kind",
    "claimed_student_id",
    "true_identity",
    "photos",
    "expected",
    "outcome",
    "correct",
    "score",
    "threshold",
    "quality_reasons",
    "top_match",
    "top_score",
    "latency_ms",
    "model_version",
    "dead_letter_detail",
)
# How many wrong outcomes the terminal report lists (all are in checkins.csv).
MISTAKES_SHOWN = 10
# How much of a photo's name the terminal report shows.
PHOTO_SHOWN = 32


def checkin_rows(
    truth: list[dict[str, Any]], observed: dict[str, Observed]
) -> list[dict[str, Any]]:
    """One row per published check-in (``CHECKIN_COLUMNS``), in publication order; a check-in
    nothing came back for has the outcome ``missing``."""
    rows = []
    for row in truth:
        seen = observed.get(row["frame_id"])
        verdict = seen.verdict if seen is not None else None
        letter = seen.dead_letter if seen is not None else None
        top = verdict.top_matches[0] if verdict is not None and verdict.top_matches else None
        outcome = seen.label if seen is not None else "missing"
        rows.append(
            {
                "checkin": row.get("checkin"),
                "frame_id": row["frame_id"],
                "exam_id": row.get("exam_id"),
                "gate_id": row.get("gate_id"),
                "kind": row["kind"],
                "claimed_student_id": row.get("claimed_student_id"),
                "true_identity": ";".join(row.get("true_identities") or []),
                "photos": ";".join(_photo_name(p) for p in row.get("photos", [])),
                "expected": ";".join(row["expected"]),
                "outcome": outcome,
                "correct": outcome in row["expected"],
                "score": verdict.score if verdict is not None else None,
                "threshold": verdict.threshold if verdict is not None else None,
                "quality_reasons": ";".join(verdict.quality_reasons) if verdict is not None else "",
                "top_match": top.student_id if top is not None else None,
                "top_score": top.score if top is not None else None,
                "latency_ms": round((verdict.decided_at - verdict.captured_at) * 1000, 2)
                if verdict is not None
                else None,
                "model_version": verdict.model_version if verdict is not None else None,
                "dead_letter_detail": letter.detail if letter is not None else None,
            }
        )
    return rows


def _photo_name(path: str) -> str:
    """``<person>/<photo>``: the roster's folder names the person."""
    return f"{Path(path).parent.name}/{Path(path).name}"


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
        "mistakes": [
            {k: row[k] for k in ("checkin", "kind", "photos", "expected", "outcome", "score")}
            | {"threshold": row["threshold"], "quality_reasons": row["quality_reasons"]}
            for row in checkin_rows(truth, observed)
            if not row["correct"]
        ],
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
    mistakes = report.get("mistakes", [])
    where = " (every check-in is in checkins.csv)" if mistakes else ""
    lines.append(f"wrong outcomes: {len(mistakes)}{where}")
    for row in mistakes[:MISTAKES_SHOWN]:
        score = ""
        if row["score"] is not None:
            score = f"  score {row['score']:.3f}, threshold {row['threshold']:.3f}"
        if row.get("quality_reasons"):
            score += f"  ({row['quality_reasons']})"
        photo = str(row["photos"])
        if len(photo) > PHOTO_SHOWN:  # press-photo file names run long; checkins.csv has all
            photo = photo[: PHOTO_SHOWN - 3] + "..."
        lines.append(
            f"  #{row['checkin']!s:<3} {row['kind']:<13} {photo:<{PHOTO_SHOWN}} expected "
            f"{row['expected']}, got {row['outcome']}{score}"
        )
    if len(mistakes) > MISTAKES_SHOWN:
        lines.append(f"  ... and {len(mistakes) - MISTAKES_SHOWN} more")
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
