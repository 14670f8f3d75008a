"""Several processes of one pipeline service on one host: each serves metrics on its own port."""

from __future__ import annotations

import pytest

from facegate.pipeline import instance_env, instance_name, metrics_port

PORT = "FACEGATE_STREAM_METRICS_PORT"


def test_second_instance_moves_a_port_given_in_its_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT, raising=False)
    env = {PORT: "30000", "OTHER": "x"}
    assert instance_env("stream-processor", env, 1) == env
    assert instance_env("stream-processor", env, 2) == {PORT: "30010", "OTHER": "x"}
    assert instance_env("stream-processor", env, 3)[PORT] == "30020"


def test_second_instance_moves_a_port_it_would_inherit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The soak sets the port in its own environment; the services inherit it.  The second
    # stream processor used to inherit the same port and die with "Address already in use".
    monkeypatch.setenv(PORT, "31000")
    assert instance_env("stream-processor", {}, 2) == {PORT: "31010"}
    assert instance_env("stream-processor", {}, 1) == {}
    assert metrics_port("stream-processor", {}, 3) == 31020


def test_services_without_a_metrics_port_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT, raising=False)
    assert instance_env("stream-processor", {}, 2) == {}
    assert instance_env("drift", {"A": "1"}, 2) == {"A": "1"}
    assert metrics_port("stream-processor", {}, 2) is None
    assert instance_name("worker", 1) == "worker"
    assert instance_name("stream-processor", 2) == "stream-processor-2"
