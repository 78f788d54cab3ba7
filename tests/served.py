"""The shipped server for HTTP tests: started as users start it, talked to over sockets."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_omni_perf.engines.ports import free_port

HOST = "127.0.0.1"


@contextmanager
def shipped_server(model: str, cache: Path, log: Path) -> Iterator[int]:
    """``python -m pytest_omni_perf.serve MODEL --omni`` on a free loopback port, healthy;
    yields the port and ends the server (SIGTERM, then SIGKILL) afterwards."""
    port = free_port(HOST)
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "pytest_omni_perf.serve", model, "--omni", "--host", HOST,
             "--port", str(port), "--enforce-eager"],
            stdout=output, stderr=subprocess.STDOUT,
            env={**_env(), "OMNI_PERF_CACHE_DIR": str(cache)})
    try:
        deadline = time.monotonic() + 300
        while status(port, "GET", "/health") != 200:
            assert server.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the server never became healthy"
            time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _env() -> dict[str, str]:
    import os

    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def status(port: int, method: str, path: str) -> int | None:
    """The status of a bodyless request, or None when nothing answers."""
    try:
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        connection.request(method, path)
        return connection.getresponse().status
    except OSError:
        return None


def exchange(port: int, raw: bytes, *, half_close: bool = False,
             timeout_s: float = 60.0) -> tuple[int | None, bytes]:
    """Send ``raw`` bytes as they are; (status, body) of the answer, or (None, b"") when the
    server closed the connection without one. A server that neither answers nor closes
    within ``timeout_s`` raises TimeoutError: a hang fails the test."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused before reading everything: read what it said
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            return response.status, response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None, b""


def request_bytes(method: str, path: str, headers: list[tuple[str, str]],
                  body: bytes = b"") -> bytes:
    """One HTTP/1.1 request, framed exactly as given (no header is added)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("latin-1") + b"\r\n" + body


def chunked(body: bytes, size: int, extension: str = "") -> bytes:
    """``body`` in chunked transfer-coding, ``size`` bytes a chunk, then a trailer."""
    pieces = [f"{len(body[i:i + size]):x}{extension}\r\n".encode() + body[i:i + size] + b"\r\n"
              for i in range(0, len(body), size)]
    return b"".join(pieces) + b"0\r\nX-Trailer: done\r\n\r\n"
