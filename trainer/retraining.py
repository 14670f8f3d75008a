"""One retraining run, end to end: dataset -> training -> export -> gate -> registry -> canary.

Each step is visible where an operator looks:
- MLflow: the training run (parameters, per-epoch metrics, data manifest, code version) gets
  the gate's per-slice results as metrics, its report as an artifact and ``gate`` =
  ``passed``/``refused`` with the reason; a passing model is registered with its tags;
- ``model-events``: ``challenger set`` and ``canary set`` for a passing model, ``refused`` with
  the failed slices for one the gate turned down.
The canary controller (inference_worker/canary_controller.py) then promotes or rolls back.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facegate.object_store import make_object_store
from facegate.paths import models_dir
from facegate.settings import (
    BaseServiceSettings,
    KafkaSettings,
    MlflowSettings,
    ObjectStoreSettings,
    RedisSettings,
    load_settings,
)
from inference_worker.embedder import Embedder
from inference_worker.gallery_backfill import backfill_model
from schemas.messages import ModelEvent, now
from stream_processors.vision.mtcnn import MtcnnDetector
from trainer.evaluation_gate import GateOptions, GateResult, GateSample, plot_gate, run_gate
from trainer.promotion import publish_event, start_canary
from trainer.registry import register_embedder, resolve
from trainer.training.tracking import code_version

log = logging.getLogger(__name__)


class RetrainSettings(BaseServiceSettings):
    """Retraining runs and the service that starts them (``FACEGATE_RETRAIN_*``)."""

    model_config = SettingsConfigDict(env_prefix="FACEGATE_RETRAIN_")

    # Labelled folders (one sub-folder per identity) added to the object-store sources.
    folders: list[Path] = Field(default_factory=list)
    max_folder_identities: int | None = 200
    architecture: str = "finetune"
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 32
    # The gate's suite: LFW identities (FACEGATE_RETRAIN_GATE_LFW_DIR; none: feedback only).
    gate_lfw_dir: Path | None = None
    gate_identities: int = 60
    gate_images_per_identity: int = 4
    gate_tolerance: float = 0.02
    gate_far: float = 1e-3
    canary_share: float = Field(default=0.5, gt=0.0, le=1.0)
    # Where runs write their checkpoints and ONNX models (none: <models dir>/trained).
    output_dir: Path | None = None
    # Triggers of `facegate train serve`.
    schedule_s: float = 0.0  # 0: no scheduled runs
    # New enrolments that call for a run; above the demo day's enrolment (a full roster).
    enrollments_trigger: int = 500
    cooldown_s: float = 600.0
    # Attempts a request gets when runs are interrupted by the service's end (SIGKILL, a lost
    # node): the next service resumes it until then, and gives it up after.
    max_attempts: int = Field(default=2, ge=1)
    group_id: str = "facegate-retrain"
    kafka: KafkaSettings = Field(default_factory=lambda: load_settings(KafkaSettings))
    redis: RedisSettings = Field(default_factory=lambda: load_settings(RedisSettings))
    s3: ObjectStoreSettings = Field(default_factory=lambda: load_settings(ObjectStoreSettings))
    mlflow: MlflowSettings = Field(default_factory=lambda: load_settings(MlflowSettings))


@dataclass
class RetrainOutcome:
    """What one run produced."""

    reason: str
    run_id: str | None = None
    manifest_version: str | None = None
    gate: GateResult | None = None
    version: str | None = None
    canary: bool = False
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "run_id": self.run_id,
            "manifest_version": self.manifest_version,
            "gate": self.gate.as_dict() if self.gate else None,
            "version": self.version,
            "canary": self.canary,
            "steps": self.steps,
        }


def feedback_samples(manifest: Any, cache_dir: Path, client: Any) -> list[GateSample]:
    """The validation split of a manifest as gate samples (files fetched and checked)."""
    from trainer.datasets.materialize import materialize

    val = [e for e in manifest.entries if e.split == "val"]
    if not val:
        return []
    local = materialize(manifest, cache_dir, client, splits=("val",))
    return [
        GateSample(
            f"val/{item.entry.sha256[:12]}", item.entry.identity, item.path, item.entry.aligned
        )
        for item in local
    ]


class Retrainer:
    """Runs retraining end to end with one set of settings."""

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        self.store = make_object_store(settings.s3)

    def _event(self, **fields: Any) -> None:
        event = ModelEvent(model_name=self.settings.mlflow.registered_model, at=now(), **fields)
        publish_event(self.settings.kafka, event)

    def build_dataset(self) -> Any:
        from trainer.datasets.builder import build_manifest, store_manifest
        from trainer.datasets.sources import FolderSource, object_store_sources

        s3 = self.settings.s3
        sources = object_store_sources(self.store, s3.bucket_feedback, s3.bucket_datasets)
        for folder in self.settings.folders:
            sources.append(FolderSource(folder, max_identities=self.settings.max_folder_identities))
        manifest = build_manifest(sources)
        store_manifest(manifest, self.store, s3.bucket_datasets)
        return manifest

    def run(self, reason: str) -> RetrainOutcome:
        """Dataset, training, export, gate; register and start a canary if the gate passes."""
        from trainer.datasets.materialize import prune_cache
        from trainer.training.settings import TrainerSettings
        from trainer.training.train import dataset_cache_dir, train

        outcome = RetrainOutcome(reason)
        settings = self.settings
        manifest = self.build_dataset()
        outcome.manifest_version = manifest.version
        outcome.steps.append(f"dataset {manifest.version[:12]}: {manifest.counts['images']} images")
        root = self.settings.output_dir or models_dir() / "trained"
        out_dir = root / f"retrain-{int(time.time())}"
        train_settings = load_settings(
            TrainerSettings,
            architecture=settings.architecture,
            epochs=settings.epochs,
            max_steps=settings.max_steps,
            batch_size=settings.batch_size,
            run_name=out_dir.name,
            resume=False,
            track="on",
        )
        # Erasure reaches this host's dataset cache here (forget cannot reach it): copies of
        # images no longer in the store go before training reads the cache.
        pruned = prune_cache(dataset_cache_dir(train_settings), manifest)
        if pruned:
            log.info("dataset cache: deleted %d copies of images no longer stored", len(pruned))
            outcome.steps.append(f"cache: {len(pruned)} copies of images no longer stored deleted")
        # train() exports model.onnx and checks it against the PyTorch model on real faces.
        result = train(train_settings, manifest, out_dir)
        outcome.run_id = result.run_id
        outcome.steps.append(f"trained run {result.run_id}")
        gate = self.gate(manifest, out_dir)
        outcome.gate = gate
        self._log_gate(result.run_id, gate, reason)
        if not gate.passed:
            outcome.steps.append(gate.summary())
            self._event(
                version=f"run-{result.run_id}",
                alias="challenger",
                action="refused",
                reason=gate.summary(),
                run_id=result.run_id,
            )
            return outcome
        threshold = self._threshold(gate)
        version = register_embedder(
            out_dir,
            threshold,
            settings.mlflow,
            extra_tags={
                "data_manifest": manifest.version,
                "code_version": code_version(),
                "training_run": str(result.run_id),
                "gate": "passed",
                "gate_summary": gate.summary(),
                "threshold_far": f"{settings.gate_far:g}",
                "retrain_reason": reason[:4000],
            },
            alias="challenger",
        )
        outcome.version = version
        outcome.steps.append(f"registered v{version} as challenger")
        self._event(
            version=version,
            alias="challenger",
            action="set",
            reason=gate.summary(),
            run_id=result.run_id,
        )
        self.backfill(version, out_dir)
        start_canary(
            settings.mlflow,
            settings.kafka,
            version,
            settings.canary_share,
            f"gate passed; {reason}",
        )
        outcome.canary = True
        outcome.steps.append(f"canary v{version} for {settings.canary_share:.0%}")
        return outcome

    def gate(self, manifest: Any, candidate_dir: Path) -> GateResult:
        settings = self.settings
        champion = resolve(settings.mlflow)
        detector = MtcnnDetector(models_dir() / "mtcnn").load()
        with tempfile.TemporaryDirectory(prefix="facegate-gate-") as tmp:
            samples = feedback_samples(manifest, Path(tmp), self.store)
            return run_gate(
                Embedder(champion.model_dir, version=champion.version).load(),
                Embedder(candidate_dir, version="candidate").load(),
                detector,
                settings.gate_lfw_dir,
                samples,
                GateOptions(
                    lfw_identities=settings.gate_identities,
                    images_per_identity=settings.gate_images_per_identity,
                    operating_far=settings.gate_far,
                    tolerance=settings.gate_tolerance,
                ),
            )

    def _threshold(self, gate: GateResult) -> float:
        """The candidate's operating threshold: at the gate FAR on the first clean slice."""
        for s in gate.slices:
            if s.candidate_threshold is not None and s.name in ("lfw/clean", "feedback"):
                return s.candidate_threshold
        raise RuntimeError("the gate measured no threshold for the candidate")

    def _log_gate(self, run_id: str | None, gate: GateResult, reason: str) -> None:
        if run_id is None:
            return
        mlflow.set_tracking_uri(self.settings.mlflow.tracking_uri)
        client = mlflow.MlflowClient(self.settings.mlflow.tracking_uri)
        for key, value in gate.metrics().items():
            client.log_metric(run_id, key, value)
        client.set_tag(run_id, "gate", "passed" if gate.passed else "refused")
        client.set_tag(run_id, "gate_summary", gate.summary()[:4000])
        client.set_tag(run_id, "retrain_reason", reason[:4000])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gate.json"
            path.write_text(json.dumps(gate.as_dict(), indent=2))
            plot_gate(gate, Path(tmp))
            client.log_artifacts(run_id, tmp, artifact_path="gate")

    def backfill(self, version: str, model_dir: Path) -> None:
        """Enrol the new version's gallery from the stored enrolment photos."""
        settings = self.settings
        backfill_model(
            version, model_dir, settings.mlflow, settings.redis, settings.s3, settings.kafka
        )
