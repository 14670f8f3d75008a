"""The canary controller: promote a canary that does no harm, roll back one that does.

It follows ``verdicts``, ``feedback`` and ``model-events`` from their beginning (so a restart
rebuilds exactly the same counts) and, while a canary is set, compares the canary's verdicts
with the champion's verdicts since the canary started:

- ``reject_rate``: share of mismatches among verdicts that compared a face with its claimed
  student (students are routed to the arms by a stable hash, so both arms see the same kind of
  traffic and a higher rate means more false rejects or a shifted score distribution);
- ``unknown_rate``: share of ``unknown_student`` reviews (a canary missing templates);
- ``score_margin``: median of score minus threshold over the compared verdicts (how far the
  typical face clears the operating point);
- ``feedback_error_rate``: proctor-reported false rejects and false accepts per feedback on
  each arm's verdicts (when enough feedback came in).

After ``min_verdicts`` canary verdicts the canary is promoted if no check is worse than the
champion's beyond its tolerance, otherwise rolled back with the checks that failed as the
reason; both through the registry's aliases (trainer/promotion.py), recorded in MLflow and on
``model-events``.
"""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from kafka import TopicPartition
from prometheus_client import Counter, Gauge
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facegate.kafka_clients import make_control_consumer
from facegate.settings import BaseServiceSettings, KafkaSettings, MlflowSettings, load_settings
from schemas.codec import SchemaError, decode
from schemas.messages import Feedback, ModelEvent, Verdict
from schemas.topics import FEEDBACK, MODEL_EVENTS, VERDICTS

log = logging.getLogger(__name__)

CANARY_VERDICTS = Gauge(
    "facegate_canary_verdicts",
    "Verdicts counted for the running canary comparison, by arm.",
    ["alias"],
)
CANARY_CHECK = Gauge(
    "facegate_canary_check",
    "How much worse the canary is than the champion on each rollout check (positive: worse; "
    "rates are canary minus champion, the score margin champion minus canary).",
    ["check"],
)
ROLLOUT_DECISIONS = Counter(
    "facegate_rollout_decisions_total",
    "Canary rollouts decided by the controller, by outcome.",
    ["action"],
)
for _action in ("promote", "rollback"):
    ROLLOUT_DECISIONS.labels(_action)  # exported at 0, so `increase()` sees the first decision


class CanarySettings(BaseServiceSettings):
    """The canary controller (``FACEGATE_CANARY_*``)."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_CANARY_")

    min_verdicts: int = Field(default=30, ge=1)
    min_champion_verdicts: int = Field(default=10, ge=1)
    max_reject_rate_increase: float = 0.10
    max_unknown_rate_increase: float = 0.05
    max_score_margin_drop: float = 0.10
    max_feedback_error_increase: float = 0.05
    min_feedback: int = 5
    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    mlflow: MlflowSettings = Field(default_factory=lambda: load_settings(MlflowSettings))


@dataclass
class ArmStats:
    """What one arm did since the canary started."""

    verdicts: int = 0
    compared: int = 0
    mismatches: int = 0
    unknown: int = 0
    margins: list[float] = field(default_factory=list)
    feedback: int = 0
    feedback_errors: int = 0
    frames: set[str] = field(default_factory=set)

    def observe(self, verdict: Verdict) -> None:
        if verdict.frame_id in self.frames:
            return  # a redelivered verdict is counted once
        self.frames.add(verdict.frame_id)
        self.verdicts += 1
        if verdict.reason == "unknown_student":
            self.unknown += 1
        if verdict.reason in ("match", "mismatch") and verdict.score is not None:
            self.compared += 1
            self.mismatches += verdict.reason == "mismatch"
            self.margins.append(verdict.score - (verdict.threshold or 0.0))

    def observe_feedback(self, feedback: Feedback) -> None:
        self.feedback += 1
        false_reject = feedback.verdict_decision != "accept" and feedback.action in (
            "confirm",
            "accept_manual",
        )
        false_accept = feedback.verdict_decision == "accept" and feedback.action == "impostor"
        self.feedback_errors += false_reject or false_accept

    @property
    def reject_rate(self) -> float:
        return self.mismatches / self.compared if self.compared else 0.0

    @property
    def unknown_rate(self) -> float:
        return self.unknown / self.verdicts if self.verdicts else 0.0

    @property
    def score_margin(self) -> float:
        return float(np.median(self.margins)) if self.margins else 0.0

    @property
    def feedback_error_rate(self) -> float:
        return self.feedback_errors / self.feedback if self.feedback else 0.0


@dataclass(frozen=True)
class Canary:
    """The running canary: its version, the champion it is compared with, since when."""

    version: str
    champion: str
    started_at: float


@dataclass(frozen=True)
class RolloutDecision:
    """Promote or roll back, why, and the figures behind it."""

    action: str  # "promote" | "rollback"
    reason: str
    metrics: dict[str, float]


def compare(canary: ArmStats, champion: ArmStats, settings: CanarySettings) -> RolloutDecision:
    """The controller's rule (see the module docstring)."""
    checks = {
        "reject_rate": (
            canary.reject_rate - champion.reject_rate,
            settings.max_reject_rate_increase,
        ),
        "unknown_rate": (
            canary.unknown_rate - champion.unknown_rate,
            settings.max_unknown_rate_increase,
        ),
        "score_margin": (
            champion.score_margin - canary.score_margin,
            settings.max_score_margin_drop,
        ),
    }
    if canary.feedback >= settings.min_feedback and champion.feedback >= settings.min_feedback:
        checks["feedback_error_rate"] = (
            canary.feedback_error_rate - champion.feedback_error_rate,
            settings.max_feedback_error_increase,
        )
    metrics = {
        "canary_verdicts": float(canary.verdicts),
        "champion_verdicts": float(champion.verdicts),
        "canary_reject_rate": canary.reject_rate,
        "champion_reject_rate": champion.reject_rate,
        "canary_unknown_rate": canary.unknown_rate,
        "champion_unknown_rate": champion.unknown_rate,
        "canary_score_margin": canary.score_margin,
        "champion_score_margin": champion.score_margin,
        "canary_feedback_error_rate": canary.feedback_error_rate,
        "champion_feedback_error_rate": champion.feedback_error_rate,
    }
    failed = [
        f"{name} worse by {worse:.3f} (tolerance {limit:.3f})"
        for name, (worse, limit) in checks.items()
        if worse > limit
    ]
    for name, (worse, _) in checks.items():
        CANARY_CHECK.labels(name).set(worse)
    if failed:
        return RolloutDecision("rollback", "canary degraded: " + "; ".join(failed), metrics)
    return RolloutDecision(
        "promote",
        f"no degradation after {canary.verdicts} canary verdicts (checks: {', '.join(checks)})",
        metrics,
    )


def parse_stamp(stamp: str | None) -> float:
    """Epoch seconds of a ``%Y-%m-%dT%H:%M:%SZ`` tag (0 when absent)."""
    if not stamp:
        return 0.0
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def canary_from_registry(settings: MlflowSettings) -> Canary | None:
    """The canary the registry has now, if any."""
    from trainer.registry import champion_version, version_tags

    canary = champion_version(settings, "canary")
    champion = champion_version(settings)
    if canary is None or champion is None or canary == champion:
        return None
    started = parse_stamp(version_tags(settings, canary).get("rollout.canary_at"))
    return Canary(canary, champion, started)


class CanaryController:
    """Counts both arms' verdicts and feedback and decides the rollout."""

    def __init__(
        self,
        settings: CanarySettings,
        read_canary: Callable[[], Canary | None] | None = None,
        act: Callable[[RolloutDecision], None] | None = None,
    ) -> None:
        self.settings = settings
        self._read_canary = read_canary or (lambda: canary_from_registry(settings.mlflow))
        self._act = act or self._act_on_registry
        self.canary: Canary | None = None
        self.arms: dict[str, ArmStats] = {}
        self.decisions: list[RolloutDecision] = []
        self.stopping = threading.Event()
        self._progress_logged_at = 0.0

    def refresh(self) -> None:
        """Re-read the canary from the registry; a new canary starts a new comparison."""
        canary = self._read_canary()
        if canary != self.canary:
            self.canary = canary
            self.arms = {"champion": ArmStats(), "canary": ArmStats()}
            CANARY_CHECK.clear()
            for arm in self.arms:
                CANARY_VERDICTS.labels(arm).set(0)
            if canary is not None:
                log.info("comparing canary v%s with champion v%s", canary.version, canary.champion)

    def observe(self, message: Verdict | Feedback) -> None:
        canary = self.canary
        if canary is None:
            return
        arm = None
        if message.model_version == canary.version:
            arm = "canary"
        elif message.model_version == canary.champion:
            arm = "champion"
        if arm is None:
            return
        if isinstance(message, Verdict):
            # The champion's verdicts from before the canary are not part of the comparison.
            if message.decided_at + 1.0 < canary.started_at:
                return
            self.arms[arm].observe(message)
            CANARY_VERDICTS.labels(arm).set(self.arms[arm].verdicts)
        else:
            self.arms[arm].observe_feedback(message)

    def decide(self) -> RolloutDecision | None:
        """A decision once enough verdicts came in, else None."""
        if self.canary is None:
            return None
        canary, champion = self.arms["canary"], self.arms["champion"]
        if not canary.verdicts or not champion.verdicts:
            return None
        # Compared on every step once both arms have verdicts: the check gauges follow the
        # running comparison before there is enough to decide.
        decision = compare(canary, champion, self.settings)
        if canary.verdicts < self.settings.min_verdicts:
            return None
        if champion.verdicts < self.settings.min_champion_verdicts:
            return None
        return decision

    def step(self) -> RolloutDecision | None:
        """Decide and act if it is time; return what was done."""
        decision = self.decide()
        if decision is None:
            self._log_progress()
            return None
        self._act(decision)
        ROLLOUT_DECISIONS.labels(decision.action).inc()
        self.decisions.append(decision)
        log.info("rollout %s: %s", decision.action, decision.reason)
        self.canary = None
        self.arms = {}
        return decision

    def _log_progress(self, every_s: float = 60.0) -> None:
        """Say what the comparison waits for, once a minute while a canary runs."""
        if self.canary is None or time.monotonic() - self._progress_logged_at < every_s:
            return
        self._progress_logged_at = time.monotonic()
        canary, champion = self.arms["canary"].verdicts, self.arms["champion"].verdicts
        log.info(
            "canary v%s: %d/%d canary and %d/%d champion verdicts so far",
            self.canary.version,
            canary,
            self.settings.min_verdicts,
            champion,
            self.settings.min_champion_verdicts,
        )

    def _act_on_registry(self, decision: RolloutDecision) -> None:
        from trainer.promotion import promote_canary, rollback_canary

        if decision.action == "promote":
            promote_canary(
                self.settings.mlflow, self.settings.kafka, decision.reason, decision.metrics
            )
        else:
            rollback_canary(
                self.settings.mlflow, self.settings.kafka, decision.reason, decision.metrics
            )

    def run(self) -> None:
        """Follow the topics until ``stopping`` is set."""
        consumer = make_control_consumer(self.settings.kafka, None, consumer_timeout_ms=1000)
        assigned = []
        for topic in (VERDICTS.name, FEEDBACK.name, MODEL_EVENTS.name):
            partitions = consumer.partitions_for_topic(topic) or {0}
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        self.refresh()
        try:
            while not self.stopping.is_set():
                events = 0
                for partition, records in consumer.poll(timeout_ms=500).items():
                    for record in records:
                        events += self._handle(partition.topic, record.value)
                if events:
                    self.refresh()
                self.step()
        finally:
            consumer.close()

    def _handle(self, topic: str, value: bytes) -> int:
        """Observe one record; return 1 for a model event (the registry must be re-read)."""
        try:
            if topic == MODEL_EVENTS.name:
                decode(value, ModelEvent)
                return 1
            message: Verdict | Feedback = (
                decode(value, Verdict) if topic == VERDICTS.name else decode(value, Feedback)
            )
        except SchemaError as error:
            log.warning("unreadable %s record skipped: %s", topic, error)
            return 0
        self.observe(message)
        return 0
