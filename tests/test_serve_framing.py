"""HTTP framing against the running shipped server, over raw loopback sockets.

Every body framing an HTTP/1.1 client may send (Content-Length, chunked with extensions and
trailers, HTTP/1.0, pipelining, Expect: 100-continue, multipart with any legal boundary)
is served; malformed framing or headers get a 4xx or a clean close, never a 500 and never a
hang (every exchange has a timeout), and the server keeps serving afterwards.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("av")

from served import HOST, chunked, exchange, request_bytes, shipped_server, status  # noqa: E402

from pytest_omni_perf.omni_wire import decode_mp4, decode_png  # noqa: E402

IMAGE = json.dumps({"prompt": "a fox", "size": "16x16", "num_inference_steps": 1}).encode()
JSON = [("Content-Type", "application/json")]
IMAGES = "/v1/images/generations"


@pytest.fixture(scope="module")
def flux(tiny_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log = tmp_path_factory.mktemp("logs") / "flux.log"
    with shipped_server("tiny-flux", tiny_model_cache, log) as p:
        yield p
    # (the server's liveness after every malformed request is checked in each test)


@pytest.fixture(scope="module")
def wan(tiny_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log = tmp_path_factory.mktemp("logs") / "wan.log"
    with shipped_server("tiny-wan", tiny_model_cache, log) as p:
        yield p


def image_of(body: bytes) -> tuple[int, ...]:
    return tuple(decode_png(json.loads(body)["data"][0]["b64_json"]).shape)


# -- valid framings ---------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "body"), [
    ([*JSON, ("Content-Length", str(len(IMAGE)))], IMAGE),
    ([*JSON, ("Transfer-Encoding", "chunked")], chunked(IMAGE, 1)),
    ([*JSON, ("Transfer-Encoding", "chunked")], chunked(IMAGE, 7, ";name=value")),
    ([*JSON, ("transfer-encoding", "CHUNKED")], chunked(IMAGE, 4096)),
], ids=["content-length", "chunked-1-byte", "chunked-extensions", "chunked-case"])
def test_valid_body_framings_are_served(flux: int, headers: list[tuple[str, str]],
                                        body: bytes) -> None:
    code, answer = exchange(flux, request_bytes("POST", IMAGES, headers, body))
    assert code == 200, answer[:300]
    assert image_of(answer) == (16, 16, 3)


def test_http10_pipelining_and_expect_continue(flux: int) -> None:
    head = f"POST {IMAGES} HTTP/1.0\r\nContent-Type: application/json\r\n"
    code, answer = exchange(flux, f"{head}Content-Length: {len(IMAGE)}\r\n\r\n".encode() + IMAGE)
    assert code == 200 and image_of(answer) == (16, 16, 3)
    # Two requests in one write on a keep-alive connection: two answers, in order.
    with socket.create_connection((HOST, flux), timeout=60) as sock:
        one = request_bytes("GET", "/health", [])
        sock.sendall(one + request_bytes("GET", "/v1/models", []))
        seen = b""
        while b"owned_by" not in seen:
            chunk = sock.recv(65536)
            assert chunk, seen
            seen += chunk
        assert seen.index(b"healthy") < seen.index(b'"object":"list"')
    # Expect: 100-continue: the body follows the interim answer.
    with socket.create_connection((HOST, flux), timeout=60) as sock:
        sock.sendall(request_bytes("POST", IMAGES, [*JSON, ("Content-Length", str(len(IMAGE))),
                                                    ("Expect", "100-continue")]))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100")
        sock.sendall(IMAGE)
        reply = b""
        while not reply.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("boundary", [
    "b", "x" * 70, "----WebKitFormBoundary7MA4YWxkTrZu0gW", "'()+_,-./:=?",
    "with space inside", "3f2a9c1e5b7d4e6f8a0b1c2d3e4f5a6b",  # fixed: xdist workers must agree
])
def test_multipart_with_any_legal_boundary(wan: int, boundary: str) -> None:
    fields = {"prompt": "waves", "width": "16", "height": "16", "num_frames": "1",
              "num_inference_steps": "1"}
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                    .encode() for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="ref"; filename="a.bin"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n").encode() + bytes(range(256))
    body = b"preamble\r\n" + body + f"\r\n--{boundary}--\r\nepilogue".encode()
    headers = [("Content-Type", f'multipart/form-data; boundary="{boundary}"'),
               ("Content-Length", str(len(body)))]
    code, answer = exchange(wan, request_bytes("POST", "/v1/videos/sync", headers, body))
    # The binary file part, every byte value in it, was framed whole and read by its name:
    # since videos take input images, a file part other than input_reference is refused
    # naming it (the text fields before it were read, or they would be named instead).
    assert code == 400, answer[:300]
    assert b"file part 'ref': POST /v1/videos takes its input image as 'input_reference'" \
        in answer
    # Without that part, the same framing is served.
    ref_part = f'--{boundary}\r\nContent-Disposition: form-data; name="ref"'.encode()
    plain = body.split(ref_part)[0]
    plain += f"--{boundary}--\r\n".encode()
    headers = [("Content-Type", f'multipart/form-data; boundary="{boundary}"'),
               ("Content-Length", str(len(plain)))]
    code, answer = exchange(wan, request_bytes("POST", "/v1/videos/sync", headers, plain))
    assert code == 200, answer[:300]
    frames = decode_mp4(answer)
    assert len(frames) == 1 and frames[0].shape == (16, 16, 3)


def test_urlencoded_form_is_served(wan: int) -> None:
    body = b"prompt=waves+and+sand&width=16&height=16&num_frames=1&num_inference_steps=1"
    headers = [("Content-Type", "application/x-www-form-urlencoded"),
               ("Transfer-Encoding", "chunked")]
    code, answer = exchange(wan, request_bytes("POST", "/v1/videos/sync", headers,
                                               chunked(body, 5)))
    assert code == 200 and len(decode_mp4(answer)) == 1


# -- malformed framing and headers -----------------------------------------------------------
LONG = "a" * 100_000
MALFORMED = {
    "content-length-not-a-number": request_bytes("POST", IMAGES, [*JSON, ("Content-Length",
                                                                          "abc")], IMAGE),
    "content-length-negative": request_bytes("POST", IMAGES, [*JSON, ("Content-Length", "-5")],
                                             IMAGE),
    "content-length-twice-differing": request_bytes(
        "POST", IMAGES, [*JSON, ("Content-Length", "5"), ("Content-Length", "6")], IMAGE),
    "content-length-and-chunked": request_bytes(
        "POST", IMAGES, [*JSON, ("Content-Length", str(len(IMAGE))),
                         ("Transfer-Encoding", "chunked")], chunked(IMAGE, 8)),
    "unknown-transfer-coding": request_bytes(
        "POST", IMAGES, [*JSON, ("Transfer-Encoding", "gzip")], IMAGE),
    "bad-chunk-size": request_bytes("POST", IMAGES, [*JSON, ("Transfer-Encoding", "chunked")],
                                    b"zz\r\n" + IMAGE + b"\r\n0\r\n\r\n"),
    "garbage-request-line": b"HELLO THERE\r\n\r\n",
    "binary-request-line": bytes(range(1, 32)) + b"\r\n\r\n",
    "header-without-colon": b"GET /health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "oversized-header": request_bytes("GET", "/health", [("X-Long", LONG)]),
    "unsupported-http-version": b"GET /health HTTP/3.7\r\nHost: x\r\n\r\n",
    "body-over-the-limit": request_bytes("POST", IMAGES, [*JSON, ("Content-Length",
                                                                  str(10**12))]),
    "bad-multipart": request_bytes(
        "POST", "/v1/videos", [("Content-Type", "multipart/form-data; boundary=b"),
                               ("Content-Length", "21")], b"--b\r\nno headers end\r\n"),
    "multipart-without-boundary": request_bytes(
        "POST", "/v1/videos", [("Content-Type", "multipart/form-data"),
                               ("Content-Length", "3")], b"abc"),
}
TRUNCATED = {
    "chunked-cut-short": request_bytes("POST", IMAGES, [*JSON, ("Transfer-Encoding", "chunked")],
                                       chunked(IMAGE, 8)[:40]),
    "content-length-longer-than-body": request_bytes(
        "POST", IMAGES, [*JSON, ("Content-Length", str(len(IMAGE) + 50))], IMAGE),
    "headers-cut-short": b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Le",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_requests_get_a_4xx_or_a_clean_close(flux: int, name: str) -> None:
    code, answer = exchange(flux, MALFORMED[name], timeout_s=30)
    if name == "unsupported-http-version":
        assert code == 505, answer[:300]  # RFC 9110 15.6.6, the one 5xx that is right here
    else:
        assert code is None or 400 <= code < 500, (code, answer[:300])
    assert status(flux, "GET", "/health") == 200  # still serving


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_truncated_requests_end_when_the_client_stops_sending(flux: int, name: str) -> None:
    code, answer = exchange(flux, TRUNCATED[name], half_close=True, timeout_s=30)
    assert code is None or 400 <= code < 500, (code, answer[:300])
    assert status(flux, "GET", "/health") == 200


def test_a_stalled_body_does_not_block_other_clients(flux: int) -> None:
    with socket.create_connection((HOST, flux), timeout=30) as stalled:
        stalled.sendall(TRUNCATED["content-length-longer-than-body"])  # and then nothing
        code, answer = exchange(flux, request_bytes(
            "POST", IMAGES, [*JSON, ("Content-Length", str(len(IMAGE)))], IMAGE), timeout_s=60)
        assert code == 200, answer[:300]
