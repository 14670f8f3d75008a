"""``wait_for_free_port``: a restarted service waits for the port its crashed predecessor held."""

from __future__ import annotations

import socket
import threading
import time

from facegate.stack.ports import free_port_block
from facegate.stack.process import port_is_free, wait_for_free_port


def test_waits_until_a_listening_socket_is_closed() -> None:
    port = free_port_block(1, start=24000)
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen()
    assert not port_is_free("127.0.0.1", port)
    closer = threading.Timer(0.3, server.close)
    closer.start()
    started = time.monotonic()
    assert wait_for_free_port("127.0.0.1", port, timeout_s=5)
    assert 0.2 < time.monotonic() - started < 5
    closer.join()


def test_gives_up_on_a_port_that_stays_taken() -> None:
    port = free_port_block(1, start=24100)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        started = time.monotonic()
        assert not wait_for_free_port("127.0.0.1", port, timeout_s=0.3)
        assert time.monotonic() - started >= 0.3
