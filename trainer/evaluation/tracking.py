"""Log an evaluation result to MLflow: parameters, flattened metrics, the JSON and the plots.

Logging happens only when MLflow is configured (``FACEGATE_MLFLOW_TRACKING_URI`` in the
environment or the env file) or asked for explicitly; an unreachable server is reported and
skipped, so an evaluation never fails because tracking is down.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from facegate.settings import MlflowSettings, load_settings

log = logging.getLogger(__name__)

# Keys whose values are settings or file paths, not measurements.
_NOT_METRICS = {"options", "plots", "fold_thresholds", "accuracy_folds", "hard_impostor_pairs"}


def requested_settings(explicit: bool) -> MlflowSettings | None:
    """MLflow settings when tracking is configured or ``explicit``; None to skip tracking."""
    settings = load_settings(MlflowSettings)
    if explicit or "tracking_uri" in settings.model_fields_set:
        return settings
    return None


def unreachable_reason(tracking_uri: str, timeout_s: float = 3.0) -> str | None:
    """Why an HTTP tracking server cannot be used now, or None (local stores always can)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s):
            return None
    except (urllib.error.URLError, OSError) as err:
        return f"{tracking_uri} unreachable ({err})"


def flatten_metrics(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a result as ``a.b.c`` metric names (None, lists and paths left out)."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        if key in _NOT_METRICS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def flatten_params(options: Mapping[str, Any]) -> dict[str, str]:
    """Options as MLflow parameters (strings)."""
    return {key: str(value) for key, value in options.items()}


def log_evaluation(
    settings: MlflowSettings,
    run_name: str,
    params: Mapping[str, Any],
    result: Mapping[str, Any],
    json_path: Path,
    plot_paths: Sequence[str],
) -> str | None:
    """Log one evaluation as an MLflow run; its run id, or None when tracking was skipped."""
    reason = unreachable_reason(settings.tracking_uri)
    if reason is not None:
        log.warning("MLflow: %s; evaluation not logged", reason)
        return None
    import mlflow  # heavy import: only when tracking is on

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"facegate.kind": "evaluation", "facegate.model": str(result.get("model"))})
        mlflow.log_params(flatten_params(params))
        mlflow.log_metrics(flatten_metrics(result))
        mlflow.log_artifact(str(json_path), artifact_path="evaluation")
        for plot in plot_paths:
            mlflow.log_artifact(plot, artifact_path="evaluation/plots")
        run_id: str = run.info.run_id
    log.info("MLflow: logged run %s to %s", run_id, settings.tracking_uri)
    return run_id
