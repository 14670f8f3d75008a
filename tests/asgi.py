"""One HTTP request through an ASGI app, in-process: no test client, no server, no socket."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI


async def asgi_request(
    app: FastAPI,
    method: str,
    path: str,
    body: bytes = b"",
    cookies: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through the ASGI app: (status, headers, body)."""
    path, _, query = path.partition("?")
    headers = [(b"host", b"console.test")]
    if body:
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    if cookies:
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        headers.append((b"cookie", cookie.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("console.test", 80),
    }
    received = False
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the response is sent
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], response_headers, content
