"""``facegate doctor``: what this installation can and cannot do, checked for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from facegate.errors import FacegateError


def _onnxruntime_providers() -> str:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if "OpenVINOExecutionProvider" not in providers:
        raise FacegateError(
            f"OpenVINO provider missing ({providers}); plain onnxruntime may have overwritten "
            "onnxruntime-openvino: run `make setup`"
        )
    return f"onnxruntime {onnxruntime.__version__}: {', '.join(providers)}"


def _binary(find: Callable[[], object]) -> Callable[[], str]:
    return lambda: str(find())


def _torch() -> str:
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def _models() -> str:
    from facegate.paths import models_dir
    from trainer.build_models import BUILDERS

    missing = [name for name in BUILDERS if not (models_dir() / name / "card.json").is_file()]
    if missing:
        raise FacegateError(f"not built: {', '.join(missing)}; run `make models`")
    return f"{', '.join(BUILDERS)} in {models_dir()}"


def _calibration() -> str:
    from trainer.calibration import load_calibration

    calibration = load_calibration()
    threshold = calibration.threshold_for(calibration.champion)
    return f"champion {calibration.champion}, threshold {threshold:.4f}"


def run_checks() -> Iterator[tuple[str, bool, str]]:
    """Yield (check, passed, detail) for each part of the installation."""
    from facegate.stack import binaries

    checks: list[tuple[str, Callable[[], str]]] = [
        ("onnxruntime providers", _onnxruntime_providers),
        ("torch", _torch),
        ("broker binary (tansu)", _binary(binaries.tansu_binary)),
        ("redis binary (valkey)", _binary(binaries.valkey_binary)),
        ("object store (weed)", _binary(binaries.weed_binary)),
        ("mlflow", _binary(binaries.mlflow_binary)),
        ("models", _models),
        ("calibration", _calibration),
    ]
    for name, check in checks:
        try:
            yield name, True, check()
        except Exception as exc:  # a doctor reports every failure, whatever its type
            yield name, False, str(exc)
