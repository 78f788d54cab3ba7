"""Engines that cannot start, for real: out of memory, a missing or broken model folder, a
bad server flag, a taken port. Each must fail its test within seconds with the cause in the
message (not after the start timeout), show no traceback as the only output, and leave no
process behind; and the shipped server must listen on loopback only unless told otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_omni_perf.engines.process import running

import memory_cap

pytest.importorskip("torch")
pytest.importorskip("diffusers")

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FAST = ("-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0", "--omni-profile=eager")
ONE_TEST = """
def test_image(omni_perf):
    omni_perf.measure(width=64, height=64, num_inference_steps=2)
"""
# Pytest, the worker's interpreter and its imports of torch and diffusers take 10-20 s on a
# 2-core machine; the start timeout these failures must not wait for is 30 minutes.
FAIL_FAST_S = 90.0
START_TIMEOUT = "--omni-start-timeout=1800"


def _workers_of(run_dir: Path) -> list[int]:
    """Engine workers or servers still alive whose working directory is ``run_dir``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != str(run_dir):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if running(int(entry)) and (b"pytest_omni_perf.engines.worker" in cmdline
                           or b"pytest_omni_perf.serve" in cmdline):
            found.append(int(entry))
    return found


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, float]:
    began = time.monotonic()
    result = pytester.runpytest_subprocess(*FAST, START_TIMEOUT, "-rfE", *args)
    return result, time.monotonic() - began


def _clean_failure(result: pytest.RunResult, pytester: pytest.Pytester) -> str:
    text = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("error", outcomes.get("errors", 0)) == 1, text
    assert "INTERNALERROR" not in text, text
    # Our own message leads the failure; the engine's traceback may follow it as its log.
    section = text.split(" test_image", 1)[1]
    assert section.split("\n", 2)[1].startswith(("engine ", "server ", "model ")), section
    assert _workers_of(pytester.path) == [], text
    return text


# -- out of memory ---------------------------------------------------------------------------
def test_out_of_memory_while_loading_fails_fast_and_names_it(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    pytester.makeconftest(memory_cap.conftest_source(TESTS_DIR, headroom_mib=8))
    pytester.makepyfile(ONE_TEST)
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR)  # the worker imports memory_cap
    result, elapsed = _run(pytester, "--omni-backend=diffusers")
    text = _clean_failure(result, pytester)
    assert elapsed < FAIL_FAST_S, (elapsed, text)
    # The cause, out of memory, is in the headline, though diffusers re-raises it as
    # "Unable to load weights from checkpoint file".
    result.stdout.fnmatch_lines(["engine 'eager' failed during start, out of memory: *"])
    headline = next(l for l in result.outlines if l.startswith("engine 'eager' failed"))
    assert "Cannot allocate memory" in headline or "MemoryError" in headline, headline


# -- model folders ---------------------------------------------------------------------------
def test_missing_model_folder_fails_in_the_parent_at_once(pytester: pytest.Pytester,
                                                          tmp_path: Path) -> None:
    pytester.makepyfile(ONE_TEST)
    missing = tmp_path / "no-such-model"
    result, elapsed = _run(pytester, "--omni-backend=diffusers", f"--omni-model={missing}")
    _clean_failure(result, pytester)
    result.stdout.fnmatch_lines([f"model '{missing}' is neither a built-in (tiny-flux, *) nor an"
                                 " existing local diffusers folder*"])
    assert elapsed < FAIL_FAST_S / 3, elapsed  # no engine was started at all
    assert "starting" not in result.stdout.str()


def test_broken_model_folder_fails_with_the_loaders_reason(pytester: pytest.Pytester,
                                                           tmp_path: Path) -> None:
    folder = tmp_path / "broken-model"
    folder.mkdir()
    # A pipeline whose transformer folder is missing: found by the real worker's load.
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxPipeline", "_diffusers_version": "0.40.0",
        "transformer": ["diffusers", "FluxTransformer2DModel"]}))
    pytester.makepyfile(ONE_TEST)
    result, elapsed = _run(pytester, "--omni-backend=diffusers", f"--omni-model={folder}")
    _clean_failure(result, pytester)
    assert elapsed < FAIL_FAST_S, elapsed
    result.stdout.fnmatch_lines(["engine 'eager' failed during start: *"])
    headline = next(l for l in result.outlines if l.startswith("engine 'eager' failed"))
    assert "out of memory" not in headline and "Error" in headline, headline


# -- the omni-server backend -----------------------------------------------------------------
SERVE = "{python} -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"


def test_bad_server_flag_fails_fast_with_the_servers_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ONE_TEST)
    result, elapsed = _run(pytester, "--omni-backend=omni-server",
                           f"--omni-server-command={SERVE} --no-such-flag")
    _clean_failure(result, pytester)
    assert elapsed < FAIL_FAST_S, elapsed
    result.stdout.fnmatch_lines([
        "server for 'eager' exited during start-up (exit code 2); command: *",
        "*unrecognized arguments: --no-such-flag*"])


def _listening(pid: int, port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of ``pid``'s listening sockets on ``port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as handle:
            for row in handle.read().splitlines()[1:]:
                fields = row.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if fields[3] == "0A" and int(hex_port, 16) == port and fields[9] in inodes:
                    found.append(address)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pytest_omni_perf.serve", "tiny-flux", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_shipped_server_binds_loopback_only_by_default() -> None:
    port = _free_port()
    server = _serve("--port", str(port))
    try:
        deadline = time.monotonic() + 60
        while not (addresses := _listening(server.pid, port)):
            assert server.poll() is None, server.communicate()[0].decode()
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.05)
        assert addresses == ["0100007F"], addresses  # 127.0.0.1, nothing else
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode()
    assert server.returncode == 0, output


def test_shipped_server_on_a_taken_port_says_so() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        began = time.monotonic()
        server = _serve("--port", str(port))
        output = server.communicate(timeout=60)[0].decode()
    assert server.returncode == 4, output
    assert f"error: cannot bind 127.0.0.1:{port}: [Errno 98] Address already in use" in output
    assert "Traceback" not in output, output
    assert time.monotonic() - began < 30
