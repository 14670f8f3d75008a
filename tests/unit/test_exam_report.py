"""The exam-day report is computed from verdicts and dead letters against the truth."""

from __future__ import annotations

from collections import Counter

from facegate.exam_report import CHECKIN_COLUMNS, build_report, checkin_rows, collect, format_report
from schemas.messages import DeadLetter, Verdict
from tests.messages import make_dead_letter, make_verdict


def _verdict(frame: str, decision: str, reason: str, captured: float, decided: float) -> Verdict:
    return make_verdict(
        frame_id=frame,
        gate_id="g",
        exam_id="e",
        claimed_student_id="s",
        captured_at=captured,
        decided_at=decided,
        decision=decision,
        reason=reason,
        score=None,
        threshold=None,
        timings_ms={"detect": 20.0, "embed": 7.0},
    )


def _letter(frame: str, detail: str) -> DeadLetter:
    """The dead letter of a truncated JPEG."""
    return make_dead_letter(failed_at=103.0, detail=detail, service="s", frame_id=frame)


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
    letters = [_letter("c1", "")]
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


def test_every_checkin_has_a_row_and_the_wrong_ones_are_listed() -> None:
    truth = [
        _truth("g1", "genuine", ["accept/match"]) | {"checkin": 0, "photos": ["/r/ann/1.jpg"]},
        _truth("g2", "genuine", ["accept/match"]) | {"checkin": 1, "photos": ["/r/bob/2.jpg"]},
        _truth("c1", "corrupt", ["dead_letter"]) | {"checkin": 2, "photos": ["/r/ann/3.jpg"]},
        _truth("m1", "genuine", ["accept/match"]) | {"checkin": 3, "photos": ["/r/cy/4.jpg"]},
    ]
    rejected = _verdict("g2", "reject", "mismatch", 101.0, 101.25).model_copy(
        update={"score": 0.412, "threshold": 0.45, "quality_reasons": ["blur", "pose"]}
    )
    verdicts = [_verdict("g1", "accept", "match", 100.0, 100.05), rejected]
    letter = _letter("c1", "JPEG without its end-of-image marker")
    observed = collect(verdicts, [letter])
    rows = checkin_rows(truth, observed)
    assert [r["frame_id"] for r in rows] == ["g1", "g2", "c1", "m1"]
    assert set(rows[0]) == set(CHECKIN_COLUMNS)
    assert [(r["outcome"], r["correct"]) for r in rows] == [
        ("accept/match", True),
        ("reject/mismatch", False),
        ("dead_letter", True),
        ("missing", False),
    ]
    assert rows[1]["photos"] == "bob/2.jpg" and rows[1]["latency_ms"] == 250.0
    assert rows[1]["quality_reasons"] == "blur;pose" and rows[0]["quality_reasons"] == ""
    assert rows[2]["dead_letter_detail"] == "JPEG without its end-of-image marker"

    report = build_report(truth, observed)
    assert [(m["checkin"], m["outcome"]) for m in report["mistakes"]] == [
        (1, "reject/mismatch"),
        (3, "missing"),
    ]
    text = format_report(report)
    assert "wrong outcomes: 2 (every check-in is in checkins.csv)" in text
    assert "#1   genuine       bob/2.jpg" in text
    assert "got reject/mismatch  score 0.412, threshold 0.450  (blur;pose)" in text
    assert "expected accept/match, got missing" in text
