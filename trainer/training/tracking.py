"""MLflow tracking of a training run (rank 0 only): parameters, per-epoch metrics, artifacts.

Tags: ``data_manifest`` (the dataset version), ``code_version`` (git commit, else the package
version), ``run_name``.  A resumed run reopens its MLflow run, so one training is one run.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from facegate.errors import FacegateError
from facegate.settings import MlflowSettings
from trainer.datasets.manifest import DatasetManifest
from trainer.evaluation.tracking import unreachable_reason
from trainer.training.settings import TrainerSettings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_ARTIFACT = "dataset_manifest.json"
_NOT_PARAMS = {"s3", "mlflow", "metrics_port", "metrics_host", "niceness", "progress"}


def code_version() -> str:
    """The git commit of this checkout, or the installed package version."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    except OSError:
        pass
    try:
        return f"facegate=={importlib.metadata.version('facegate')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tracking_settings(settings: TrainerSettings) -> MlflowSettings | None:
    """The MLflow server to log to, or None (see ``TrainerSettings.track``)."""
    if settings.track == "off":
        return None
    configured = "tracking_uri" in settings.mlflow.model_fields_set
    if settings.track == "auto" and not configured:
        return None
    reason = unreachable_reason(settings.mlflow.tracking_uri)
    if reason is None:
        return settings.mlflow
    if settings.track == "on":
        raise FacegateError(f"MLflow tracking requested but {reason}")
    log.warning("not tracking the training run: %s", reason)
    return None


class TrainingTracker:
    """One MLflow run per training run name (reopened on resume)."""

    def __init__(self, settings: MlflowSettings, run_id: str | None, run_name: str) -> None:
        self.client = MlflowClient(settings.tracking_uri)
        self.resumed = run_id is not None
        if run_id is None:
            experiment = self.client.get_experiment_by_name(settings.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(settings.experiment)
            )
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id: str = run_id

    def start(
        self, settings: TrainerSettings, manifest: DatasetManifest, extra: Mapping[str, Any]
    ) -> None:
        """Parameters, tags and the manifest artifact (only when the run is new)."""
        if self.resumed:
            return
        values = settings.model_dump(exclude=_NOT_PARAMS)
        params = [Param(k, str(v)) for k, v in sorted({**values, **extra}.items())]
        tags = [
            RunTag("data_manifest", manifest.version),
            RunTag("code_version", code_version()),
            RunTag("facegate.kind", "training"),
        ]
        self.client.log_batch(self.run_id, params=params, tags=tags)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / MANIFEST_ARTIFACT
            path.write_text(manifest.to_json(), encoding="utf-8")
            self.client.log_artifact(self.run_id, str(path))

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Metrics of one epoch, with the epoch as their step."""
        batch = [Metric(k, float(v), 0, epoch) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, model_dir: Path | None, summary: Mapping[str, Any], complete: bool) -> None:
        """Log the trained model folder and a summary; close the run."""
        if model_dir is not None:
            self.client.log_artifacts(self.run_id, str(model_dir), artifact_path="model")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "training_summary.json"
            path.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_tag(self.run_id, "complete", str(complete).lower())
        self.client.set_terminated(self.run_id, status="FINISHED")
