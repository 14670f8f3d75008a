"""Rollout actions on the registry: challenger -> canary -> champion, and back.

Every action moves aliases only (never files), tags the versions with what happened and why,
logs an MLflow run named after the action (so the history is visible in the tracking UI), and
publishes a :class:`~schemas.messages.ModelEvent` on ``model-events`` so that workers reload.

- ``start_canary``: the challenger (or a given version) becomes the canary for a share of
  students; the champion keeps serving everyone else.
- ``promote_canary``: the canary becomes the champion; the old champion is remembered in the
  new champion's ``rollout.previous_champion`` tag, which ``rollback_champion`` uses.
- ``rollback_canary``: the canary alias is removed; the champion serves everyone again.
- ``rollback_champion``: the champion alias goes back to the previous (or a given) version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import mlflow

from facegate.errors import FacegateError
from facegate.kafka_clients import make_producer
from facegate.settings import KafkaSettings, MlflowSettings
from schemas.codec import encode
from schemas.messages import ModelEvent, now
from schemas.topics import MODEL_EVENTS
from trainer.registry import (
    champion_version,
    remove_alias,
    set_alias,
    tag_version,
    version_tags,
)

log = logging.getLogger(__name__)

CANARY_SHARE_TAG = "rollout.canary_share"
Alias = Literal["champion", "canary"]
EventAction = Literal["set", "promoted", "rolled_back"]


@dataclass(frozen=True)
class RolloutStep:
    """What an action did."""

    action: str
    version: str
    alias: Alias
    reason: str
    previous: str | None = None


def publish_event(kafka: KafkaSettings, event: ModelEvent) -> None:
    """Publish a model event and wait for the broker's acknowledgement."""
    producer = make_producer(kafka)
    try:
        producer.send(MODEL_EVENTS.name, key=event.model_name.encode(), value=encode(event)).get(
            timeout=30
        )
    finally:
        producer.close()


def _record(settings: MlflowSettings, step: RolloutStep, metrics: dict[str, float]) -> None:
    """An MLflow run per rollout action, with the version tags updated."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tag_version(
        settings,
        step.version,
        {
            f"rollout.{step.action}_at": stamp,
            f"rollout.{step.action}_reason": step.reason[:4000],
            "rollout.state": step.action,
        },
    )
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=f"rollout-{step.action}-v{step.version}"):
        mlflow.set_tags(
            {
                "facegate.kind": "rollout",
                "rollout.action": step.action,
                "rollout.version": step.version,
                "rollout.alias": step.alias,
                "rollout.previous": step.previous or "",
                "rollout.reason": step.reason[:4000],
            }
        )
        if metrics:
            mlflow.log_metrics(metrics)
    log.info("rollout %s: v%s (%s)", step.action, step.version, step.reason)


def _announce(
    settings: MlflowSettings,
    kafka: KafkaSettings,
    step: RolloutStep,
    action: EventAction,
    metrics: dict[str, float] | None = None,
    canary_share: float | None = None,
    run_id: str | None = None,
) -> RolloutStep:
    """Record ``step`` in MLflow, then tell the workers on ``model-events`` (``action``)."""
    _record(settings, step, metrics or {})
    publish_event(
        kafka,
        ModelEvent(
            model_name=settings.registered_model,
            version=step.version,
            alias=step.alias,
            action=action,
            canary_share=canary_share,
            at=now(),
            reason=step.reason,
            run_id=run_id,
        ),
    )
    return step


def start_canary(
    mlflow_settings: MlflowSettings,
    kafka: KafkaSettings,
    version: str,
    share: float,
    reason: str,
    run_id: str | None = None,
) -> RolloutStep:
    """Make ``version`` the canary for ``share`` of the students."""
    if not 0.0 < share <= 1.0:
        raise FacegateError(f"canary share must be in (0, 1], got {share}")
    champion = champion_version(mlflow_settings)
    if champion is None:
        raise FacegateError("no champion: register one before starting a canary")
    if champion == version:
        raise FacegateError(f"version {version} is already the champion")
    tag_version(mlflow_settings, version, {CANARY_SHARE_TAG: f"{share:.4f}"})
    set_alias(mlflow_settings, "canary", version)
    step = RolloutStep("canary", version, "canary", reason, champion)
    return _announce(
        mlflow_settings,
        kafka,
        step,
        "set",
        {"canary_share": share},
        canary_share=share,
        run_id=run_id or version_tags(mlflow_settings, version).get("training_run"),
    )


def promote_canary(
    mlflow_settings: MlflowSettings,
    kafka: KafkaSettings,
    reason: str,
    metrics: dict[str, float] | None = None,
) -> RolloutStep:
    """The canary becomes the champion."""
    canary = champion_version(mlflow_settings, "canary")
    if canary is None:
        raise FacegateError("no canary to promote")
    previous = champion_version(mlflow_settings)
    if previous is not None:
        tag_version(mlflow_settings, canary, {"rollout.previous_champion": previous})
    set_alias(mlflow_settings, "champion", canary)
    remove_alias(mlflow_settings, "canary")
    step = RolloutStep("promoted", canary, "champion", reason, previous)
    return _announce(mlflow_settings, kafka, step, "promoted", metrics)


def rollback_canary(
    mlflow_settings: MlflowSettings,
    kafka: KafkaSettings,
    reason: str,
    metrics: dict[str, float] | None = None,
) -> RolloutStep:
    """Stop the canary: everyone goes back to the champion."""
    canary = champion_version(mlflow_settings, "canary")
    if canary is None:
        raise FacegateError("no canary to roll back")
    remove_alias(mlflow_settings, "canary")
    step = RolloutStep("rolled_back", canary, "canary", reason, champion_version(mlflow_settings))
    return _announce(mlflow_settings, kafka, step, "rolled_back", metrics)


def rollback_champion(
    mlflow_settings: MlflowSettings,
    kafka: KafkaSettings,
    reason: str,
    to_version: str | None = None,
) -> RolloutStep:
    """Point the champion back at the version it replaced (or at ``to_version``)."""
    current = champion_version(mlflow_settings)
    if current is None:
        raise FacegateError("no champion to roll back")
    target = to_version or version_tags(mlflow_settings, current).get("rollout.previous_champion")
    if not target:
        raise FacegateError(
            f"champion v{current} records no previous champion; name the version to go back to"
        )
    set_alias(mlflow_settings, "champion", target)
    step = RolloutStep("champion_rolled_back", target, "champion", reason, current)
    return _announce(mlflow_settings, kafka, step, "rolled_back")
