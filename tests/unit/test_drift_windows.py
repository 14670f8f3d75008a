"""Tumbling drift windows (count and time) and the drift monitor fed with records directly."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.messages import DriftReport, Feedback, Verdict, new_id
from stream_processors.drift.monitor import DriftMonitor
from stream_processors.drift.reference import MemoryReferenceStore, reference_key
from stream_processors.drift.reports import format_table
from stream_processors.drift.settings import DriftSettings
from stream_processors.drift.statistics import VerdictSample
from stream_processors.drift.windows import TumblingWindows, WindowKey

SAMPLE = VerdictSample("match", "accept", 0.7, 0.45, {}, False, None)


def _feedback(gate: str = "g1", action: str = "confirm", decision: str = "reject") -> Feedback:
    return Feedback(
        feedback_id=new_id(),
        frame_id=new_id(),
        exam_id="e",
        gate_id=gate,
        student_id="s",
        proctor="p",
        action=action,  # type: ignore[arg-type]
        verdict_decision=decision,  # type: ignore[arg-type]
        model_version="v1",
        decided_at=0.0,
    )


def test_windows_close_by_count_per_gate_and_across_gates() -> None:
    windows = TumblingWindows(size=3, seconds=60)
    assert windows.add_verdict("g1", "v1", SAMPLE, 0.0) == []
    assert windows.add_verdict("g2", "v1", SAMPLE, 1.0) == []
    closed = windows.add_verdict("g1", "v1", SAMPLE, 2.0)
    # the all-gates window of v1 has three verdicts now too
    assert [c.key for c in closed] == [WindowKey(None, "v1")]
    closed = windows.add_verdict("g1", "v1", SAMPLE, 3.0)
    assert [(c.key, len(c.samples), c.full) for c in closed] == [(WindowKey("g1", "v1"), 3, True)]
    assert (closed[0].opened_at, closed[0].closed_at) == (0.0, 3.0)
    # model versions have their own windows
    assert windows.add_verdict("g1", "v2", SAMPLE, 4.0) == []
    assert {w.key for w in windows.open_windows()} == {
        WindowKey("g2", "v1"),
        WindowKey(None, "v1"),
        WindowKey("g1", "v2"),
        WindowKey(None, "v2"),
    }


def test_windows_close_by_time_whichever_comes_first() -> None:
    windows = TumblingWindows(size=100, seconds=10, all_gates=False)
    windows.add_verdict("g1", "v1", SAMPLE, 0.0)
    windows.add_verdict("g1", "v1", SAMPLE, 5.0)
    assert windows.expire(9.9) == []
    closed = windows.expire(10.0)
    assert [(len(c.samples), c.full, c.closed_at) for c in closed] == [(2, False, 10.0)]
    assert len(windows) == 0
    # a record after the window's time closes it and opens the next one
    windows.add_verdict("g1", "v1", SAMPLE, 20.0)
    closed = windows.add_verdict("g1", "v1", SAMPLE, 31.0)
    assert [(len(c.samples), c.full) for c in closed] == [(1, False)]
    assert [len(w.samples) for w in windows.open_windows()] == [1]


def test_feedback_counts_in_its_window_but_never_closes_it_by_count() -> None:
    windows = TumblingWindows(size=2, seconds=60)
    for _ in range(5):
        assert windows.add_feedback(_feedback(), 0.0) == []
    windows.add_verdict("g1", "v1", SAMPLE, 1.0)
    closed = windows.add_verdict("g1", "v1", SAMPLE, 2.0)
    assert sorted(c.feedback.false_rejects for c in closed) == [5, 5]
    assert windows.close_all(3.0) == []


def test_window_needs_a_size_and_a_duration() -> None:
    with pytest.raises(ValueError):
        TumblingWindows(size=0, seconds=1)


# ---- the monitor, fed with verdicts directly ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _verdicts(
    count: int, gate: str, brightness: float, shift: float, seed: int, score: float = 0.75
) -> list[Verdict]:
    rng = np.random.default_rng(seed)
    verdicts = []
    for _ in range(count):
        sketch = rng.normal(loc=shift, scale=0.25, size=16).tolist()
        verdicts.append(
            Verdict(
                frame_id=new_id(),
                gate_id=gate,
                exam_id="e",
                claimed_student_id="s",
                captured_at=0.0,
                decided_at=0.0,
                decision="accept",
                reason="match",
                score=score + float(rng.normal(scale=0.05)),
                threshold=0.45,
                model_name="m",
                model_version="v1",
                quality={
                    "brightness": brightness + float(rng.normal(scale=5)),
                    "contrast": 50.0,
                    "sharpness": 0.1,
                    "interocular_px": 40.0,
                },
                embedding_sketch=sketch,
            )
        )
    return verdicts


def _feed(monitor: DriftMonitor, verdicts: list[Verdict]) -> list[DriftReport]:
    return [report for v in verdicts for report in monitor.add_verdict(v)]


def test_monitor_reference_then_normal_then_drifted_window() -> None:
    settings = DriftSettings(window_size=40, min_samples=10, all_gates=False)
    store = MemoryReferenceStore()
    monitor = DriftMonitor(settings, store, Clock())

    (first,) = _feed(monitor, _verdicts(40, "g1", 120, 0.0, seed=1))
    assert first.statistics["reference_window"] == 1.0
    assert "mmd" not in first.statistics
    assert store.get("v1", "g1") is not None

    (normal,) = _feed(monitor, _verdicts(40, "g1", 118, 0.0, seed=2))
    assert normal.breached == []
    assert settings.mmd_max is not None
    assert abs(normal.statistics["mmd"]) < settings.mmd_max
    assert normal.thresholds["mmd"] == settings.mmd_max

    (drifted,) = _feed(monitor, _verdicts(40, "g1", 45, 0.5, seed=3, score=0.5))
    breached = set(drifted.breached)
    assert {"brightness_mean_drop", "mmd", "mean_sketch_distance"} <= breached
    assert "genuine_score_mean_drop" in breached
    assert drifted.gate_id == "g1" and drifted.samples == 40


def test_stale_verdicts_are_not_counted_in_a_window() -> None:
    settings = DriftSettings(window_size=10, min_samples=10, all_gates=False)
    monitor = DriftMonitor(settings, MemoryReferenceStore(), Clock())
    shed = [
        v.model_copy(update={"decision": "review", "reason": "stale", "score": None})
        for v in _verdicts(30, "g1", 120, 0.0, seed=6)
    ]
    assert _feed(monitor, shed) == []  # thirty shed frames fill no window of ten
    (report,) = _feed(monitor, _verdicts(10, "g1", 120, 0.0, seed=7))
    assert report.samples == 10


def test_monitor_drops_small_windows_and_reports_open_ones_on_close() -> None:
    clock = Clock()
    settings = DriftSettings(window_size=50, window_seconds=30, min_samples=5)
    monitor = DriftMonitor(settings, MemoryReferenceStore(), clock)
    _feed(monitor, _verdicts(3, "g1", 120, 0.0, seed=4))
    clock.now += 31
    assert monitor.tick() == []  # 3 < min_samples: dropped (gate and all-gates windows)
    assert monitor.dropped_windows == 2
    _feed(monitor, _verdicts(6, "g1", 120, 0.0, seed=5))
    for _ in range(20):
        monitor.add_feedback(_feedback("g1", "accept_manual", "review"))
    reports = monitor.close_all()
    assert sorted((r.gate_id or "all", r.samples) for r in reports) == [("all", 6), ("g1", 6)]
    for report in reports:
        # closed by time, not full: no reference was taken from them
        assert "reference_window" not in report.statistics
        assert report.statistics["false_reject_rate"] == 1.0
        assert "false_reject_rate" in report.breached
    lines = format_table(reports)
    assert lines[0].split()[:4] == ["gate", "model", "window", "n"]
    assert any(line.startswith("g1") and "false_reject_rate" in line for line in lines[1:])


def test_a_deleted_reference_is_taken_again() -> None:
    settings = DriftSettings(window_size=10, min_samples=10, all_gates=False)
    store = MemoryReferenceStore()
    monitor = DriftMonitor(settings, store, Clock())
    _feed(monitor, _verdicts(10, "g1", 120, 0.0, seed=6))
    assert store.delete("v1", "g1") == 1
    (again,) = _feed(monitor, _verdicts(10, "g1", 60, 0.0, seed=7))
    assert again.statistics["reference_window"] == 1.0
    assert store.get("v1", "g1") is not None
    assert reference_key("v1", None) == "facegate:drift:reference:v1:all"


def test_settings_bounds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGATE_DRIFT_MMD_MAX", "0.5")
    monkeypatch.setenv("FACEGATE_DRIFT_NO_FACE_RATE_MAX", "")  # empty: default
    monkeypatch.setenv("FACEGATE_DRIFT_GENUINE_SCORE_P10_MIN", "0.4")
    monkeypatch.setenv("FACEGATE_DRIFT_WINDOW_SIZE", "30")
    monkeypatch.setenv("FACEGATE_DRIFT_LOW_QUALITY_RATE_MAX", "off")
    settings = DriftSettings()
    bounds = {b.setting: (b.limit, b.direction) for b in settings.bounds()}
    assert bounds["mmd_max"] == (0.5, "above")
    assert bounds["no_face_rate_max"] == (0.15, "above")
    assert bounds["genuine_score_p10_min"] == (0.4, "below")
    assert "genuine_score_mean_min" not in bounds
    assert "low_quality_rate_max" not in bounds
    assert settings.window_size == 30 and settings.group_id == "facegate-drift"
    with pytest.raises(ValidationError, match="min_samples"):
        DriftSettings(window_size=10, min_samples=20)
