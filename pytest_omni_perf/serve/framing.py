"""What the HTTP layer lets through that the shipped server refuses, and multipart preambles.

uvicorn's h11 protocol frames requests (Content-Length, chunked, malformed request lines
answered 400). Three things h11 accepts are refused here, before any route runs, with
``Connection: close`` so nothing left of the request is read as a next one:
both Content-Length and Transfer-Encoding (RFC 9112 section 6.1 lets a server refuse them:
the request-smuggling shape), headers over ``MAX_HEADER_BYTES`` when they arrive in one
read (h11's limit only applies while a request is incomplete), and HTTP versions other
than 1.0/1.1 (RFC 9110 section 15.6.6: 505).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from pytest_omni_perf.omni_wire import error_body

MAX_HEADER_BYTES = 16 * 1024
"""Largest request head served (h11's default for incomplete requests)."""


def refusal(scope: Scope) -> tuple[int, str] | None:
    """(status, message) for a request the server must not serve, else None."""
    if scope.get("http_version") not in ("1.0", "1.1"):
        return 505, f"HTTP/{scope.get('http_version')} is not supported: use HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    names = {name.lower() for name, _ in headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        return 400, "a request may carry Content-Length or Transfer-Encoding, not both"
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size > MAX_HEADER_BYTES:
        return 431, f"request headers of {size} bytes are over the {MAX_HEADER_BYTES} byte limit"
    return None


class FramingGuard:
    """ASGI middleware answering ``refusal``'s requests and closing their connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = refusal(scope) if scope["type"] == "http" else None
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, message = refused
        body = json.dumps(error_body(status, message)).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def without_preamble(body: bytes, content_type: str) -> bytes:
    """A multipart body from its first boundary on: RFC 2046 lets a preamble precede it,
    which python-multipart refuses. Unchanged when there is no boundary to find."""
    from python_multipart.multipart import parse_options_header

    options: dict[Any, Any] = parse_options_header(content_type)[1]
    boundary = options.get(b"boundary")
    if not boundary:
        return body
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        return body
    found = body.find(b"\r\n" + delimiter)
    return body[found + 2:] if found >= 0 else body
