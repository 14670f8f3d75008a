"""A test stack started with its endpoints exported, so that every settings object and every
subprocess reaches it; stopped, and the environment restored, at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from facegate.stack import LocalStack


@contextmanager
def exported_stack(stack: LocalStack) -> Iterator[dict[str, str]]:
    """Start ``stack``, export its endpoints (``FACEGATE_*``) while it runs; yield them."""
    endpoints = stack.up()
    saved = {key: os.environ.get(key) for key in endpoints}
    os.environ.update(endpoints)
    try:
        yield endpoints
    finally:
        stack.down()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
