"""Free ports for private stacks (tests, benchmarks) that must not meet anyone else's."""

from __future__ import annotations

import os
from pathlib import Path

from facegate.settings import StackSettings
from facegate.stack.process import port_is_free
from facegate.stack.services import S3_PORT_BLOCK

# Linux hands out ephemeral ports for outgoing connections from 32768 up: a server port chosen
# there can be taken by some client's connection between the check and the server's bind.
EPHEMERAL_PORTS_START = 32768


def free_port_block(size: int, start: int = 20000, stop: int = EPHEMERAL_PORTS_START) -> int:
    """The first of ``size`` consecutive ports free on 127.0.0.1 at or after ``start``, below
    the ephemeral range."""
    port = start
    while port + size < stop:
        if all(port_is_free("127.0.0.1", p) for p in range(port, port + size)):
            return port
        port += size
    raise RuntimeError(f"no {size} free consecutive ports between {start} and {stop}")


def private_stack_settings(state_dir: Path, with_mlflow: bool = True) -> StackSettings:
    """A stack of its own: its state directory, free ports, in-memory broker, embedded Redis."""
    # Spread processes over the range so that parallel runs rarely probe the same block.
    base = free_port_block(S3_PORT_BLOCK + 3, start=20000 + (os.getpid() % 120) * 100)
    return StackSettings(
        state_dir=state_dir,
        s3_port=base,
        redis_port=base + S3_PORT_BLOCK,
        broker_port=base + S3_PORT_BLOCK + 1,
        mlflow_port=base + S3_PORT_BLOCK + 2,
        with_mlflow=with_mlflow,
        redis_mode="embedded",
        broker_storage="memory",
    )
