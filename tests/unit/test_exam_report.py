"""The exam-day report is computed from verdicts and dead letters against the truth."""

from __future__ import annotations

from collections import Counter

from facegate.exam_report import build_report, collect, format_report
from schemas.messages import DeadLetter, Verdict


def _verdict(frame: str, decision: str, reason: str, captured: float, decided: float) -> Verdict:
    return Verdict(
        frame_id=frame,
        gate_id="g",
        exam_id="e",
        claimed_student_id="s",
        captured_at=captured,
        decided_at=decided,
        decision=decision,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        model_name="m",
        model_version="1",
        timings_ms={"detect": 20.0, "embed": 7.0},
    )


def _truth(frame: str, kind: str, expected: list[str]) -> dict[str, object]:
    return {"frame_id": frame, "kind": kind, "expected": expected}


def test_report_counts_accuracy_repeats_and_dead_letters() -> None:
    truth = [
        _truth("g1", "genuine", ["accept/match"]),
        _truth("g2", "genuine", ["accept/match"]),
        _truth("i1", "impostor", ["reject/mismatch", "review/low_quality"]),
        _truth("c1", "corrupt", ["dead_letter"]),
        _truth("m1", "genuine", ["accept/match"]),  # never answered
    ]
    verdicts = [
        _verdict("g1", "accept", "match", 100.0, 100.05),
        _verdict("g1", "accept", "match", 100.0, 100.30),  # a repeated delivery
        _verdict("g2", "reject", "mismatch", 101.0, 101.10),
        _verdict("i1", "reject", "mismatch", 102.0, 102.08),
    ]
    letters = [
        DeadLetter(
            source_topic="frames",
            partition=0,
            offset=1,
            key=None,
            reason="truncated_image",
            detail="",
            service="s",
            failed_at=103.0,
            payload=b"x",
            frame_id="c1",
        )
    ]
    report = build_report(truth, collect(verdicts, letters), Counter({"undecodable": 2}))
    assert report["checkins"] == 5
    assert (report["answered"], report["missing"]) == (4, 1)
    assert report["repeated_deliveries"] == 1
    assert report["accuracy"] == 0.75  # g1, i1, c1 right; g2 wrong; m1 missing
    assert (report["genuine"], report["genuine_accepted"]) == (2, 1)
    assert (report["impostors"], report["impostors_caught"]) == (1, 1)
    assert report["verdicts"] == {"accept": {"match": 1}, "reject": {"mismatch": 2}}
    assert report["dead_letters"] == {"truncated_image": 1, "undecodable": 2}
    # Latency of the first verdict of each frame: 50, 100 and 80 ms.
    assert report["latency_ms"]["p50"] == 80.0
    assert report["stage_ms"]["detect"]["p50"] == 20.0
    assert report["throughput_per_s"] == round(3 / 2.08, 2)
    text = format_report(report)
    assert "impostors caught         1 of 1" in text and "truncated_image" in text
