"""The model a worker serves: an embedder, its version, threshold and template name."""

from __future__ import annotations

from dataclasses import dataclass

from facegate.paths import models_dir
from inference_worker.embedder import Embedder
from inference_worker.settings import InferenceWorkerSettings


@dataclass
class ServingModel:
    """A loaded embedder with what a verdict needs to know about it."""

    embedder: Embedder
    version: str
    threshold: float

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def template_name(self) -> str:
        return self.embedder.card.template_name


def load_serving_model(settings: InferenceWorkerSettings) -> ServingModel:
    """Load the model named by the settings: a registry alias, or a local folder."""
    if settings.model_source == "registry":
        from trainer.registry import resolve

        registered = resolve(settings.mlflow, settings.model_alias)
        embedder = Embedder(
            registered.model_dir, settings.provider, settings.threads, registered.version
        )
        return ServingModel(embedder.load(), registered.version, registered.threshold)
    from trainer.calibration import load_calibration

    threshold = settings.local_threshold
    if threshold is None:
        threshold = load_calibration().threshold_for(settings.local_model)
    embedder = Embedder(
        models_dir() / settings.local_model, settings.provider, settings.threads, "local"
    )
    return ServingModel(embedder.load(), f"local-{settings.local_model}", threshold)
