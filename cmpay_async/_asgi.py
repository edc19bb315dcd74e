"""The few ASGI pieces the sandbox and the demo merchant need, without a web framework."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import attrs

__all__ = ["ASGIApp", "Receive", "Request", "Scope", "Send", "read_request", "respond"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 64 * 1024


@attrs.frozen
class Request:
    """An HTTP request as the sandbox sees it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: ``scheme://host[:port]`` the client used, to build absolute URLs back to this server.
    base_url: str


async def read_request(scope: Scope, receive: Receive) -> Request:
    """Read the whole request (at most 64 KiB of body; the rest is dropped)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    return Request(
        method=scope["method"],
        path=scope["path"],
        query=query,
        headers=headers,
        body=b"".join(chunks),
        base_url=f"{scope.get('scheme', 'http')}://{host}",
    )


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> None:
    """Send a complete response."""
    raw = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
