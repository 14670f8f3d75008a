"""The hot path's fetch wait the local stack exports: long behind the fetch proxy, the code's
default (20 ms) where tansu runs alone, and never over a value the user chose."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegate.settings import StackSettings
from facegate.stack import LocalStack
from facegate.stack.manager import PROXIED_FETCH_MAX_WAIT_MS

WAIT = "FACEGATE_KAFKA_FETCH_MAX_WAIT_MS"


def _endpoints(tmp_path: Path, proxy: bool = True, storage: str = "memory") -> dict[str, str]:
    settings = StackSettings(state_dir=tmp_path / "stack", broker_fetch_proxy=proxy)
    settings.broker_storage = "s3" if storage == "s3" else "memory"
    return LocalStack(settings).endpoints()


@pytest.mark.parametrize("storage", ["memory", "s3"])
def test_behind_the_fetch_proxy_consumers_wait_as_long_as_on_kafka(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, storage: str
) -> None:
    monkeypatch.delenv(WAIT, raising=False)
    assert _endpoints(tmp_path, True, storage)[WAIT] == str(PROXIED_FETCH_MAX_WAIT_MS) == "500"


@pytest.mark.parametrize("storage", ["memory", "s3"])
def test_tansu_alone_keeps_the_short_wait(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, storage: str
) -> None:
    monkeypatch.delenv(WAIT, raising=False)
    assert WAIT not in _endpoints(tmp_path, False, storage)


def test_a_wait_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(WAIT, "20")
    assert WAIT not in _endpoints(tmp_path)
