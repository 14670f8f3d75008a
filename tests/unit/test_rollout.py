"""Canary routing, the worker's model follower and the canary controller's rule.

The follower and the controller are driven here with stand-ins for the registry and the model
loader (plain functions, said so where used); the real registry and workers are exercised by
the loop test (tests/e2e/test_training_loop.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inference_worker.canary_controller import (
    ArmStats,
    Canary,
    CanaryController,
    CanarySettings,
    RolloutDecision,
    compare,
    parse_stamp,
)
from inference_worker.gallery import GalleryIndex
from inference_worker.rollout import Arm, Desired, ModelFollower, ServingSet, in_canary
from inference_worker.settings import InferenceWorkerSettings
from schemas.messages import Feedback, Verdict


def test_canary_share_is_stable_per_student_and_close_to_the_share() -> None:
    students = [f"student-{i}" for i in range(4000)]
    chosen = [s for s in students if in_canary(s, 0.25)]
    assert 0.22 < len(chosen) / len(students) < 0.28
    assert chosen == [s for s in students if in_canary(s, 0.25)]
    # Growing the share only adds students: nobody flips back to the champion.
    assert set(chosen) <= {s for s in students if in_canary(s, 0.5)}
    assert not in_canary(None, 1.0) and not in_canary("x", 0.0)


class _Model:
    """A stand-in for ServingModel: only what the follower and the set read."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.name = "stand-in"
        self.threshold = 0.5
        self.template_name = "t"
        self.embedder = type("E", (), {"card": type("C", (), {"embedding_dim": 4})()})()


def test_serving_set_routes_the_canary_share_only() -> None:
    champion = Arm("champion", _Model("1"), GalleryIndex(4))  # type: ignore[arg-type]
    canary = Arm("canary", _Model("2"), GalleryIndex(4))  # type: ignore[arg-type]
    serving = ServingSet(champion, canary, 0.5)
    routed = {s: serving.arm_for(s).alias for s in (f"s{i}" for i in range(200))}
    assert set(routed.values()) == {"champion", "canary"}
    assert serving.arm_for(None) is champion
    assert ServingSet(champion).arm_for("s1") is champion


def _follower(desired: list[Desired], loads: list[str]) -> ModelFollower:
    """A follower whose registry and loader are stand-ins (lists) instead of MLflow."""
    settings = InferenceWorkerSettings()

    def read() -> Desired:
        return desired[-1]

    def load(alias: str) -> tuple[Any, float]:
        version = desired[-1].champion if alias == "champion" else desired[-1].canary
        loads.append(f"{alias}:{version}")
        return _Model(str(version)), 0.0

    follower = ModelFollower(settings, None, None, loader=load, read_desired=read)  # type: ignore[arg-type]
    follower._arm = lambda alias: Arm(alias, load(alias)[0], GalleryIndex(4))  # type: ignore[method-assign,assignment]
    return follower


def test_follower_loads_a_canary_then_promotes_it_without_reloading() -> None:
    desired = [Desired("1", None, 0.0)]
    loads: list[str] = []
    follower = _follower(desired, loads)
    assert follower.reconcile() is True
    assert follower.current.champion.model.version == "1" and follower.current.canary is None
    assert follower.reconcile() is False  # nothing changed: nothing reloaded
    desired.append(Desired("1", "2", 0.3))
    assert follower.reconcile() is True
    assert follower.current.canary is not None and follower.current.canary_share == 0.3
    desired.append(Desired("2", None, 0.0))  # promoted
    assert follower.reconcile() is True
    current = follower.current
    assert current.champion.model.version == "2" and current.champion.alias == "champion"
    assert current.canary is None and current.canary_share == 0.0
    assert loads == ["champion:1", "canary:2"]  # the canary's loaded model became champion


def _verdict(version: str, reason: str, score: float | None, frame: str, at: float) -> Verdict:
    decision = {"match": "accept", "mismatch": "reject"}.get(reason, "review")
    return Verdict(
        frame_id=frame,
        gate_id="g1",
        exam_id="e1",
        claimed_student_id="s1",
        captured_at=at,
        decided_at=at,
        decision=decision,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        score=score,
        threshold=0.45,
        model_name="m",
        model_version=version,
    )


def test_compare_promotes_a_canary_as_good_as_the_champion() -> None:
    canary, champion = ArmStats(), ArmStats()
    rng = np.random.default_rng(0)
    for i in range(60):
        champion.observe(_verdict("1", "match", 0.7 + 0.05 * rng.normal(), f"a{i}", 10.0))
        canary.observe(_verdict("2", "match", 0.7 + 0.05 * rng.normal(), f"b{i}", 10.0))
    decision = compare(canary, champion, CanarySettings())
    assert decision.action == "promote", decision.reason


def test_compare_rolls_back_a_canary_that_rejects_more_and_names_the_check() -> None:
    canary, champion = ArmStats(), ArmStats()
    for i in range(40):
        champion.observe(_verdict("1", "match", 0.7, f"a{i}", 10.0))
        reason = "mismatch" if i % 3 == 0 else "match"
        canary.observe(_verdict("2", reason, 0.3 if reason == "mismatch" else 0.5, f"b{i}", 10.0))
    decision = compare(canary, champion, CanarySettings())
    assert decision.action == "rollback"
    assert "reject_rate" in decision.reason and "score_margin" in decision.reason


def test_arm_counts_a_redelivered_verdict_once() -> None:
    stats = ArmStats()
    verdict = _verdict("1", "match", 0.7, "same-frame", 10.0)
    stats.observe(verdict)
    stats.observe(verdict)
    assert stats.verdicts == 1


def test_controller_waits_for_enough_verdicts_then_acts_once() -> None:
    acted: list[RolloutDecision] = []
    settings = CanarySettings(min_verdicts=5, min_champion_verdicts=5)
    canary = Canary("2", "1", started_at=100.0)
    controller = CanaryController(settings, read_canary=lambda: canary, act=acted.append)
    controller.refresh()
    # The champion's verdicts from before the canary started do not count.
    controller.observe(_verdict("1", "match", 0.7, "old", 50.0))
    for i in range(4):
        controller.observe(_verdict("2", "match", 0.7, f"c{i}", 101.0))
        controller.observe(_verdict("1", "match", 0.7, f"p{i}", 101.0))
    assert controller.step() is None and not acted
    controller.observe(_verdict("2", "match", 0.7, "c4", 101.0))
    controller.observe(_verdict("1", "match", 0.7, "p4", 101.0))
    controller.observe(
        Feedback(
            feedback_id="f",
            frame_id="c4",
            exam_id="e1",
            gate_id="g1",
            student_id="s1",
            proctor="p",
            action="confirm",
            verdict_decision="accept",
            model_version="2",
            decided_at=102.0,
        )
    )
    decision = controller.step()
    assert decision is not None and decision.action == "promote" and acted == [decision]
    assert controller.arms == {} and controller.step() is None
    assert decision.metrics["canary_verdicts"] == 5


def test_parse_stamp_reads_the_rollout_tags() -> None:
    assert parse_stamp("1970-01-01T00:01:40Z") == pytest.approx(100.0)
    assert parse_stamp(None) == 0.0


def test_check_gauges_follow_the_comparison_before_a_decision_and_reset_for_a_new_canary() -> None:
    from prometheus_client import REGISTRY

    def check(name: str) -> float | None:
        return REGISTRY.get_sample_value("facegate_canary_check", {"check": name})

    canaries = [Canary("2", "1", started_at=100.0)]
    controller = CanaryController(
        CanarySettings(min_verdicts=50), read_canary=lambda: canaries[-1], act=lambda d: None
    )
    controller.refresh()
    controller.observe(_verdict("1", "match", 0.7, "p0", 101.0))
    controller.observe(_verdict("2", "mismatch", 0.3, "c0", 101.0))
    assert controller.step() is None  # far from 50 canary verdicts
    assert check("reject_rate") == pytest.approx(1.0)
    assert check("score_margin") == pytest.approx(0.4)
    canaries.append(Canary("3", "1", started_at=200.0))
    controller.refresh()
    assert check("reject_rate") is None
    assert REGISTRY.get_sample_value("facegate_canary_verdicts", {"alias": "canary"}) == 0
