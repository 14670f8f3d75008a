"""Fixtures of the deployment-file tests (all offline: no Docker, cluster or Grafana)."""

from __future__ import annotations

import pytest

from tests.deploy import checks


@pytest.fixture(scope="session")
def exported_metrics() -> set[str]:
    """Series names FaceGate's services serve, from prometheus_client's registry."""
    return checks.exported_metric_names()


@pytest.fixture(scope="session")
def facegate_variables() -> set[str]:
    """Every FACEGATE_* variable FaceGate reads."""
    return checks.facegate_variable_names()


@pytest.fixture(scope="session")
def promtool_path() -> str:
    """promtool from Debian's prometheus package (`make setup` installs it when run as root)."""
    tool = checks.promtool()
    if tool is None:
        pytest.skip("promtool not found: install Debian's prometheus package (make setup, as root)")
    return tool
