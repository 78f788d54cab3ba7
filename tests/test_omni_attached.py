"""``--omni-server-url``: measuring servers someone else started, as vLLM-Omni's CI does.

The servers are the shipped one (``python -m pytest_omni_perf.serve``), started here by the
test as a CI script would; pytest then runs with ``--omni-server-url`` against them. The
plugin must measure, and must neither start nor stop a server.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import served

from pytest_omni_perf.engines.base import EngineError, EngineSpec, GenerationRequest
from pytest_omni_perf.engines.omni_attached import AttachedServerEngine
from pytest_omni_perf.engines.ports import free_port
from pytest_omni_perf.server_urls import parse_server_urls


# -- the option --------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("http://h:8000", ("http://h:8000", {})),
    ("http://h:8000/", ("http://h:8000", {})),
    ("eager=http://h:8000, cache_dit=https://h:8001/",
     (None, {"eager": "http://h:8000", "cache_dit": "https://h:8001"})),
])
def test_server_url_forms(text: str, expected: tuple[str | None, dict[str, str]]) -> None:
    assert parse_server_urls(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("h:8000", "expected an http(s)://HOST[:PORT] URL"),
    ("http://h:port", "Port could not be cast"),
    ("http://a:1,http://b:2", "several servers are NAME=URL pairs"),
    ("eager=http://a:1,eager=http://b:2", "each NAME once"),
    ("eager=ftp://a:1", "expected an http(s)"),
])
def test_server_url_mistakes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_server_urls(text)


@pytest.mark.parametrize(("args", "message"), [
    (["--omni-server-url=http://127.0.0.1:1"],
     ("*--omni-server-url=http://127.0.0.1:1 measures one profile: name the one the server "
      "runs with --omni-profile=NAME (got none)*")),
    (["--omni-server-url=http://127.0.0.1:1", "--omni-profile=eager,fp8"], "*(got eager,fp8)*"),
    (["--omni-server-url=eager=http://127.0.0.1:1", "--omni-profile=fp8"],
     "*--omni-profile asks for fp8, which --omni-server-url gives no server (eager have one)*"),
    (["--omni-server-url=eager=http://127.0.0.1:1", "--omni-backend=diffusers"],
     "*not --omni-backend=diffusers*"),
    (["--omni-server-url=eager=http://127.0.0.1:1", "--omni-server-command=x {port}"],
     "*--omni-server-command and --omni-server-url exclude each other*"),
    (["--omni-server-url=eagre=http://127.0.0.1:1"], "*unknown profile(s) eagre*"),
])
def test_what_cannot_be_meant_is_a_usage_error(pytester: pytest.Pytester, args: list[str],
                                               message: str) -> None:
    pytester.makepyfile("def test_x(omni_perf):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_the_ini_key_attaches_too(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nomni_server_url = eager=http://127.0.0.1:1\n")
    pytester.makepyfile("def test_x(omni_perf):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines([("*backend omni-server (attached to running servers with "
                                  "--omni-server-url)*"), "*test_x?eager?*"])


# -- against running servers -------------------------------------------------------------------
PERF_TESTS = """
import os

import psutil
import pytest

def test_image(omni_perf, omni_engine):
    result = omni_perf.measure(width=64, height=64, num_inference_steps=2)
    assert result.median_s > 0
    # The plugin started no process: no server, no engine worker.
    assert psutil.Process(os.getpid()).children(recursive=True) == []
    assert omni_engine.describe().pids == ()

@pytest.mark.omni_model("tiny-wan")
def test_other_model(omni_perf):
    omni_perf.measure(width=64, height=64, num_inference_steps=2, num_frames=5)
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory,
            tiny_model_cache: Path) -> Iterator[list[tuple[int, Path]]]:
    """Two tiny-flux servers started as a CI script starts them: (port, log) each."""
    folder = tmp_path_factory.mktemp("servers")
    logs = [folder / "a.log", folder / "b.log"]
    with ExitStack() as stack:
        ports = [stack.enter_context(served.shipped_server("tiny-flux", tiny_model_cache, log))
                 for log in logs]
        yield list(zip(ports, logs))


def _server_pids(port: int) -> set[int]:
    """The shipped servers listening on ``port`` (other sessions may run servers too)."""
    found = subprocess.run(["pgrep", "-f", f"pytest_omni_perf.serve .*--port {port} "],
                           capture_output=True, text=True, check=False).stdout.split()
    return {int(pid) for pid in found}


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    pytester.makepyfile(test_attached=PERF_TESTS)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=2", "--omni-max-rounds=2", "--omni-warmup=1",
        f"--omni-baseline-dir={pytester.path / 'stored'}", f"--omni-report-json={report}",
        "--omni-history=none", "-rs", *args)
    return result, (json.loads(report.read_text()) if report.exists() else {})


def test_one_running_server_is_measured_and_left_running(
        pytester: pytest.Pytester, servers: list[tuple[int, Path]]) -> None:
    (port, log), _ = servers
    url = f"http://{served.HOST}:{port}"
    before = _server_pids(port)
    assert len(before) == 1
    result, report = _run(pytester, f"--omni-server-url={url}/", "--omni-profile=eager",
                          "--omni-update-baselines")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        f"*the server at {url} serves tiny-flux (GET /v1/models), not 'tiny-wan'*"])
    assert served.status(port, "GET", "/health") == 200  # still up, not stopped
    assert _server_pids(port) == before  # the same process: not stopped, not replaced
    (measured,) = [r["measurement"] for r in report["results"] if r["outcome"] == "passed"]
    assert measured["applied"]["url"] == url and measured["applied"]["attached"] is True
    assert "not verified" in measured["applied"]["profile"]
    assert measured["applied"]["model"] == "'tiny-flux' confirmed by GET /v1/models"
    # The shipped server reports no peak on CPU: "not measured", never a 0 passed off as one.
    assert measured["memory"]["kind"] == "none"
    assert "no process on this machine" in measured["memory"]["label"]
    assert report["backend"]["why"] == "attached to running servers with --omni-server-url"
    assert "generating image 64x64" in log.read_text()


def test_a_profile_and_its_baseline_on_two_servers(
        pytester: pytest.Pytester, servers: list[tuple[int, Path]]) -> None:
    (port_a, log_a), (port_b, log_b) = servers
    url_a, url_b = (f"http://{served.HOST}:{p}" for p in (port_a, port_b))
    seen = [log.read_text().count("generating image") for log in (log_a, log_b)]
    result, report = _run(pytester, f"--omni-server-url=eager={url_a},fewer_steps={url_b}",
                          "--omni-profile=fewer_steps", "-k", "test_image",
                          "--omni-update-baselines")
    # 2 rounds are too few for the speedup's interval: reported inconclusive, not failed.
    assert result.ret == 0, result.stdout.str()
    (row,) = report["results"]
    assert row["outcome"] == "passed"
    assert row["measurement"]["applied"]["url"] == url_b
    assert row["baseline"]["applied"]["url"] == url_a
    assert row["measurement"]["interleaved_with"] == "eager"  # rounds alternated
    assert row["speedup"] is not None
    after = [log.read_text().count("generating image") for log in (log_a, log_b)]
    assert after[0] > seen[0] and after[1] > seen[1]
    # fewer_steps asks its server for half the steps: each server got its own profile.
    assert "1 steps" in log_b.read_text()


def test_a_baseline_without_a_server_skips_naming_the_fix(
        pytester: pytest.Pytester, servers: list[tuple[int, Path]]) -> None:
    (port, _), _ = servers
    result, _ = _run(pytester, f"--omni-server-url=fewer_steps=http://{served.HOST}:{port}",
                     "-k", "test_image")
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines([
        ("*SKIPPED*profile 'eager' has no running server: --omni-server-url names "
         "fewer_steps; add eager=URL to measure it*")])


def test_nothing_at_the_url_fails_at_once_naming_it(pytester: pytest.Pytester) -> None:
    url = f"http://{served.HOST}:{free_port(served.HOST)}"
    began = time.monotonic()
    result, _ = _run(pytester, f"--omni-server-url={url}", "--omni-profile=eager",
                     "-k", "test_image")
    result.assert_outcomes(errors=1, deselected=1)  # omni_engine's setup, before the body
    result.stdout.fnmatch_lines([(f"*nothing answers GET {url}/health (--omni-server-url "
                                  "for profile 'eager'): is the server running*")])
    assert time.monotonic() - began < 60


# -- the engine against a hand-written server: hangs, loading, no /v1/models -----------------
class _Stub(http.server.BaseHTTPRequestHandler):
    health = 200
    hang = threading.Event()

    def do_GET(self) -> None:
        status, body = (self.health, b"{}") if self.path == "/health" else (404, b"{}")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.hang.wait(30)  # a request that never gets its answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Handler", (_Stub,), {"hang": threading.Event()})
    server = http.server.ThreadingHTTPServer((served.HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{served.HOST}:{server.server_address[1]}", handler
    handler.hang.set()
    server.shutdown()
    server.server_close()


def _engine(url: str, **extra: float) -> AttachedServerEngine:
    fields = {"start_timeout_s": 5.0, "request_timeout_s": 1.0, **extra}
    return AttachedServerEngine(EngineSpec(
        model="tiny-flux", profile_name="eager", options={}, backend="omni-server",
        server_url=url, **fields))


def test_a_hung_request_fails_and_leaves_the_server_alone(
        stub: tuple[str, type[_Stub]]) -> None:
    url, _ = stub
    engine = _engine(url)
    engine.start()
    # No /v1/models answer: the model is recorded as named, not verified.
    assert engine.applied["model"] == ("'tiny-flux' named by the user; not verified: GET "
                                       "/v1/models named no model")
    began = time.monotonic()
    with pytest.raises(EngineError, match="did not answer the request within 1 s; the server "
                                          "was left running"):
        engine.generate(GenerationRequest(width=64, height=64, num_inference_steps=1))
    assert time.monotonic() - began < 10
    engine.stop()
    engine.stop()  # twice is fine
    assert served.status(int(url.rsplit(":", 1)[1]), "GET", "/health") == 200


def test_a_server_still_loading_fails_at_the_start_timeout_with_its_status(
        stub: tuple[str, type[_Stub]]) -> None:
    url, handler = stub
    handler.health = 503
    began = time.monotonic()
    with pytest.raises(EngineError, match=f"the server at {re.escape(url)} answered GET "
                                          r"/health with HTTP 503 for 1 s, never 200"):
        _engine(url, start_timeout_s=1.0).start()
    assert time.monotonic() - began < 5


def test_attached_profile_and_baseline_interleave_on_a_gpu_machine() -> None:
    """On GPUs, two engines live at once only when the baseline's NVML peak shows room; two
    attached servers hold no memory here, so their rounds always interleave."""
    from types import SimpleNamespace

    from pytest_omni_perf.harness import Harness

    gpu = SimpleNamespace(index=0, vram_gib=80.0)
    harness = SimpleNamespace(hardware=SimpleNamespace(gpus=[gpu]),
                              pool=SimpleNamespace(shares=lambda spec, other: False))

    def spec(name: str, url: str) -> EngineSpec:
        return EngineSpec(model="tiny-flux", profile_name=name, options={},
                          backend="omni-server", devices=(0,), server_url=url)

    room: Any = Harness._room_for_two
    assert room(harness, spec("cache_dit", "http://h:1"), spec("eager", "http://h:2"), None)
    assert not room(harness, spec("cache_dit", ""), spec("eager", ""), None)
