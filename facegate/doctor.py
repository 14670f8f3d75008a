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
    ]
    for name, check in checks:
        try:
            yield name, True, check()
        except Exception as exc:  # a doctor reports every failure, whatever its type
            yield name, False, str(exc)
