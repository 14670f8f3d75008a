"""How the checks find FaceGate's metrics and settings: from the sources, so that a new service's
metrics module or settings class is checked without being listed in the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import checks

pytestmark = pytest.mark.deploy

# The model lifecycle's modules, which came after the first services.
LIFECYCLE_METRICS = {
    "stream_processors.drift.metrics",
    "inference_worker.canary_controller",
    "inference_worker.rollout",
    "trainer.retrain_service",
}


def test_every_metrics_module_is_found_and_its_metrics_are_exported(
    exported_metrics: set[str],
) -> None:
    modules = checks.metrics_modules()
    assert LIFECYCLE_METRICS | {"facegate.metrics", "console.metrics"} <= set(modules)
    for module in modules:
        for name in checks.defined_metric_names(module):
            # Counters may be written without _total; histograms export _bucket series.
            series = {name, f"{name}_total", f"{name}_bucket", f"{name}_info"}
            assert series & exported_metrics, name
    assert {
        "facegate_drift_statistic",
        "facegate_drift_breaches_total",
        "facegate_canary_check",
        "facegate_rollout_decisions_total",
        "facegate_canary_share",
        "facegate_worker_registry_errors_total",
        "facegate_retrain_runs_total",
        "facegate_retrain_last_run_timestamp_seconds",
    } <= exported_metrics


def test_every_settings_class_is_found(facegate_variables: set[str]) -> None:
    names = {cls.__name__ for cls in checks.settings_classes()}
    assert {"DriftSettings", "CanarySettings", "RetrainSettings", "TrainerSettings"} <= names
    assert {"ConsoleSettings", "InferenceWorkerSettings", "KafkaSettings"} <= names
    assert {
        "FACEGATE_DRIFT_WINDOW_SECONDS",
        "FACEGATE_CANARY_MIN_VERDICTS",
        "FACEGATE_RETRAIN_GATE_LFW_DIR",
        "FACEGATE_TRAIN_CACHE_DIR",
    } <= facegate_variables
    # Connections are set through their own prefix, never as a service's field.
    assert "FACEGATE_DRIFT_KAFKA" not in facegate_variables


def test_discovery_finds_a_new_module_and_nothing_else(tmp_path: Path) -> None:
    package = tmp_path / "newservice"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "metrics.py").write_text(
        "from prometheus_client import Counter, Gauge\n"
        'A = Counter(\n    "facegate_new_total", "x"\n)\n'
        "B = Gauge('facegate_level', 'y', ['gate'])\n"
    )
    (package / "settings.py").write_text(
        'model_config = SettingsConfigDict(env_prefix="FACEGATE_NEW_")\n'
    )
    (package / "other.py").write_text('C = Counter("requests_total", "not FaceGate\'s")\n')
    assert checks.metrics_modules(tmp_path, ["newservice"]) == ["newservice.sub.metrics"]
    assert checks.settings_modules(tmp_path, ["newservice"]) == ["newservice.settings"]
    assert checks.defined_metric_names("newservice.sub.metrics", tmp_path) == {
        "facegate_new_total",
        "facegate_level",
    }
