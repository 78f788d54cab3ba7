"""Faults injected for real: a worker killed or hung mid-request, pytest itself signalled,
baselines corrupted on disk, two processes re-recording one store, random profile documents.

Each fault goes through a real pytest run of a real test file (the stand-in engine of
tests/standin.py in a real worker subprocess), and the tests check what a user reads and
what is left on the machine afterwards: no process, no torn or rewritten file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.engines.process import running

FAST = ("-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0")
TWO_TESTS = """
def test_first(omni_perf):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)

def test_second(omni_perf):
    # Another request: the same one would reuse test_first's measurement of 'eager'.
    omni_perf.measure(width=24, height=16, num_inference_steps=2)
"""
ONE_TEST = """
def test_image(omni_perf):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)
"""
WORKER_MODULE = b"pytest_omni_perf.engines.worker"


def _workers_tagged(tag: str) -> list[int]:
    """Living engine workers whose environment carries ``STANDIN_TAG=tag`` (ours alone,
    also on a machine where other sessions run engines)."""
    found = []
    needle = f"STANDIN_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if WORKER_MODULE not in handle.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            if not running(int(entry)):
                continue  # exited; a zombie holds no memory or device
        except OSError:
            continue  # exited while we looked
        found.append(int(entry))
    return found


def _none_left(tag: str, within_s: float = 5.0) -> list[int]:
    """Workers of ``tag`` still alive after ``within_s`` (they may be exiting right now)."""
    deadline = time.monotonic() + within_s
    while (alive := _workers_tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture
def isolated(standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Engines in real worker processes, tagged so the test can find every one of them."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv("STANDIN_ISOLATED", "1")
    monkeypatch.setenv("STANDIN_TAG", tag)
    yield tag
    for pid in _workers_tagged(tag):  # a failing test must not leave its workers running
        os.kill(pid, signal.SIGKILL)


def _no_traceback(result: pytest.RunResult) -> None:
    text = result.stdout.str()
    assert "Traceback (most recent call last)" not in text, text
    assert "INTERNALERROR" not in text, text


# -- 1. worker killed mid-request ----------------------------------------------------------------
def test_worker_killed_mid_request_fails_that_test_only(
        standin_pytester: pytest.Pytester, isolated: str, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = standin_pytester.path / "crashed-once"
    monkeypatch.setenv("STANDIN_CRASH_ONCE_EAGER", str(marker))
    standin_pytester.makepyfile(TWO_TESTS)
    result = standin_pytester.runpytest_subprocess(*FAST, "--omni-profile=eager",
                                                   "--omni-update-baselines", "-rf")
    assert marker.exists()  # the fault did fire
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*_ test_first?eager? _*",
        "engine worker for 'eager' (diffusers, model *) died during the request: exit code 3;"
        " log: *engine-eager-*.log",
        "*omni-perf summary*"])
    assert "During handling of the above exception" not in result.stdout.str()
    # The crashed engine was discarded: test_second started a fresh one.
    assert result.stdout.str().count("omni-perf: starting tiny-flux[eager]") == 2
    log = result.stdout.str().split("; log: ", 1)[1].split()[0]
    assert Path(log).is_file()
    _no_traceback(result)
    assert _none_left(isolated) == []


# -- 2. hang ------------------------------------------------------------------------------------
def test_hung_request_is_killed_at_the_timeout(
        standin_pytester: pytest.Pytester, isolated: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_HANG_EAGER", "1")
    standin_pytester.makepyfile(ONE_TEST)
    began = time.monotonic()
    result = standin_pytester.runpytest_subprocess(*FAST, "--omni-profile=eager",
                                                   "--omni-request-timeout=2", "-rf")
    elapsed = time.monotonic() - began
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*_ test_image?eager? _*",
                                 "engine 'eager' (*) did not answer the request within 2 s:"
                                 " killed it (raise --omni-request-timeout if that is expected)"])
    _no_traceback(result)
    # 2 s timeout + 2 s kill grace + interpreter starts; an unkilled hang would take an hour.
    assert elapsed < 30, elapsed
    assert _none_left(isolated) == []


# -- 3. pytest itself signalled -----------------------------------------------------------------
def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored and children inherit that; Python
    # then never turns Ctrl-C into KeyboardInterrupt. Give the inner pytest a real Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen_pytest(where: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=where,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_default_sigint)


# Under xdist the two tests run side by side: the second measures eight requests, so it is
# still running when the first has finished.
SIGNALLED_TESTS = TWO_TESTS.replace(
    "    omni_perf.measure(width=24, height=16, num_inference_steps=2)",
    # Long enough (8 x 8 rounds of 0.3 s) that under -n 2, where both tests start at once and
    # a loaded controller may hear of test_first late, the signal still finds it running.
    "    for width in range(24, 88, 8):\n"
    "        omni_perf.measure(width=width, height=16, num_inference_steps=2)")


@pytest.mark.parametrize(("sig", "xdist"), [(signal.SIGINT, ()), (signal.SIGTERM, ()),
                                            (signal.SIGTERM, ("-n", "2"))],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-xdist"])
def test_signalled_pytest_leaves_no_worker_and_writes_the_report(
        standin_pytester: pytest.Pytester, isolated: str, monkeypatch: pytest.MonkeyPatch,
        sig: signal.Signals, xdist: tuple[str, ...]) -> None:
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.3")
    assert SIGNALLED_TESTS != TWO_TESTS
    standin_pytester.makepyfile(SIGNALLED_TESTS)
    report = standin_pytester.path / "partial.json"
    # The first test completes in 8 rounds of 0.3 s; the signal lands during the second's.
    done = standin_pytester.path / "first-done"
    standin_pytester.makeconftest((standin_pytester.path / "conftest.py").read_text() + f"""
def pytest_runtest_logreport(report):
    if report.when == "teardown" and "test_first" in report.nodeid:
        open({str(done)!r}, "w").close()
""")
    proc = _popen_pytest(standin_pytester.path, "-p", "no:cacheprovider", "--omni-rounds=8",
                         "--omni-warmup=0", "--omni-profile=eager", "--omni-update-baselines",
                         f"--omni-report-json={report}", *xdist)
    try:
        deadline = time.monotonic() + 60
        while not done.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # test_second's first request is now in flight
        assert _workers_tagged(isolated), "the engine worker should be running now"
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.decode()
    # 2: pytest's "interrupted"; a SIGTERM that killed outright would read -15.
    assert proc.returncode == 2, text
    assert "KeyboardInterrupt" in text and "Traceback (most recent call last)" not in text, text
    assert _none_left(isolated) == [], text
    assert report.is_file(), f"no partial report after {sig.name}:\n{text}"
    written = json.dumps(json.loads(report.read_text()))
    assert "test_first" in written and "test_second" not in written, written


# -- 4. corrupt baselines -----------------------------------------------------------------------
def _tamper(folder: Path, how: str) -> None:
    png, metrics = folder / "frame_000.png", folder / "metrics.json"
    if how == "truncated_png":
        png.write_bytes(png.read_bytes()[:-20])
    elif how == "garbage_metrics":
        metrics.write_bytes(b"{\"schema_version\": 1, \x00\xff not json")
    elif how == "edited_request":
        doc = json.loads(metrics.read_text())
        doc["request"]["width"] = 24
        metrics.write_text(json.dumps(doc))
    elif how == "edited_samples":
        # A hand edit of a field the harness computes with (tests/test_baseline_fuzz.py
        # tries the others): it ended the test with a ValueError from the statistics.
        doc = json.loads(metrics.read_text())
        doc["samples_s"] = ["fast", 0.1]
        metrics.write_text(json.dumps(doc))
    elif how == "resized_png":
        from PIL import Image

        Image.new("RGB", (24, 16), (10, 20, 30)).save(png)
    else:  # pragma: no cover - a typo in the parametrization
        raise AssertionError(how)


EXPECTED = {
    "truncated_png": "*broken baseline in */eager: frame_000.png: truncated or not a PNG*",
    "garbage_metrics": "*broken baseline in */eager: metrics.json: not *",
    "edited_request": "*the stored baseline in */eager was recorded for another request*",
    "edited_samples": "*broken baseline in */eager: metrics.json: samples_s is ?'fast', 0.1?,"
                      " expected a list of seconds > 0*",
    "resized_png": "*cannot compare with the stored baseline in */eager: *",
}


def _snapshot(root: Path) -> dict[str, bytes]:
    # The run history lives beside the baselines and grows with every run, by design.
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("history.sqlite")}


@pytest.mark.parametrize("how", sorted(EXPECTED))
def test_corrupt_baseline_fails_clearly_and_is_left_alone(standin_pytester: pytest.Pytester,
                                                          how: str) -> None:
    standin_pytester.makepyfile(ONE_TEST)
    standin_pytester.runpytest_subprocess(
        *FAST, "--omni-profile=eager", "--omni-update-baselines").assert_outcomes(passed=1)
    store = standin_pytester.path / "baselines"
    (folder,) = [p.parent for p in store.rglob("metrics.json")]
    _tamper(folder, how)
    before = _snapshot(store)
    result = standin_pytester.runpytest_subprocess(*FAST, "--omni-profile=eager", "-rf")
    result.assert_outcomes(failed=1)
    # On a busy host the command is followed by "(on a quiet host: this one was busy, ...)".
    refresh = ("*; *with: *pytest '*::test_image?eager?' --omni-profile=eager "
               "--omni-update-baselines*")
    result.stdout.fnmatch_lines([EXPECTED[how] + refresh[1:]])
    _no_traceback(result)
    assert _snapshot(store) == before


def test_baselines_of_other_hardware_only_are_named(standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(ONE_TEST)
    standin_pytester.runpytest_subprocess(
        *FAST, "--omni-profile=eager", "--omni-update-baselines").assert_outcomes(passed=1)
    store = standin_pytester.path / "baselines"
    (store / "cpu").rename(store / "h100-sxm-80gb")
    shutil.copytree(store / "h100-sxm-80gb", store / "a10g-24gb")
    before = _snapshot(store)
    result = standin_pytester.runpytest_subprocess(*FAST, "--omni-profile=eager", "-rf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*no stored baseline for *::test_image?eager? on hardware key 'cpu' at *"
        " (there are baselines for a10g-24gb, h100-sxm-80gb); create it with: *pytest *"])
    assert _snapshot(store) == before


# -- 6. two processes re-recording one store ----------------------------------------------------
def test_concurrent_updates_leave_complete_baselines(standin_pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_omni_perf.baselines import BaselineStore

    standin_pytester.makepyfile("\n".join(
        f"def test_{i}(omni_perf):\n    omni_perf.measure(width=16, height=16, "
        f"num_inference_steps=2)\n" for i in range(8)))
    # Two sessions of two xdist workers each: four writers of the same eight baselines.
    args = (*FAST, "--omni-profile=eager", "--omni-update-baselines", "-q", "-n", "2")
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.05")  # long enough for the runs to overlap
    procs = [_popen_pytest(standin_pytester.path, *args) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    store_root = standin_pytester.path / "baselines"
    assert not [p for p in store_root.rglob(".tmp-*")]
    store = BaselineStore(store_root, "cpu")
    nodeids = [f"test_concurrent_updates_leave_complete_baselines.py::test_{i}[eager]"
               for i in range(8)]
    for nodeid in nodeids:
        stored = store.load(nodeid, "eager")
        assert stored is not None, nodeid
        assert stored.frames[0].shape == (16, 16, 3)
        assert stored.metrics["request"]["width"] == 16
    assert len(list(store_root.rglob("metrics.json"))) == len(nodeids)


# -- 7. the profile parser never raises anything but ProfileError -------------------------------
def _documents() -> Any:
    from hypothesis import strategies as st

    from pytest_omni_perf.canonical import CANONICAL_OPTIONS
    from pytest_omni_perf.profiles import _PROFILE_FIELDS, BOUND_FIELDS

    keys = st.sampled_from([*_PROFILE_FIELDS, *BOUND_FIELDS, *CANONICAL_OPTIONS, "gpus", "sm",
                            "vram_gib", "steps_scale", "profiles", "defaults", "bounds",
                            "eager", "x"]) | st.text(max_size=6)
    # Small numbers and known names too, so some documents get past the first checks.
    scalars = (st.none() | st.booleans() | st.integers(0, 8) | st.integers(-10**20, 10**20)
               | st.floats() | st.text(max_size=8)
               | st.sampled_from(["8.9", "89", "eager", "", "1.0", "cache_dit", "none", "fp8"]))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
    options = st.dictionaries(st.sampled_from(sorted(CANONICAL_OPTIONS)), values, max_size=4)
    profile = st.dictionaries(keys, values, max_size=5) | st.fixed_dictionaries(
        {"options": options}, optional={k: values for k in _PROFILE_FIELDS if k != "options"})
    bounds = st.dictionaries(st.sampled_from(BOUND_FIELDS), scalars, max_size=3)
    sections = st.fixed_dictionaries(
        {"profiles": st.dictionaries(st.text(max_size=6), profile, min_size=1, max_size=3)},
        optional={"defaults": st.fixed_dictionaries({}, optional={"bounds": bounds | values})})
    # Well-shaped sections with random contents (twice as likely), or anything at all.
    return sections | sections | st.dictionaries(keys, values, max_size=3)


def test_parse_document_raises_only_profile_error() -> None:
    from hypothesis import HealthCheck, given, settings

    from pytest_omni_perf.profiles import Profile, ProfileError, parse_document

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_documents())
    def check(doc: dict[str, Any]) -> None:
        try:
            parsed = parse_document(doc, "random.toml")
        except ProfileError:
            return
        assert all(isinstance(p, Profile) for p in parsed.values())

    check()


# -- 8. test ids that are not file names --------------------------------------------------------
UNSAFE_IDS = ["a/b", "../../escape", "..", "/abs/path", "café-日本", "e\u0301", "x" * 400,
              "nul\x00byte", "back\\slash", "CON", ".hidden"]


def test_unsafe_test_ids_stay_inside_the_baseline_folder(standin_pytester: pytest.Pytester
                                                         ) -> None:
    standin_pytester.makepyfile(f"""
import pytest

@pytest.mark.parametrize("name", {UNSAFE_IDS!r}, ids={UNSAFE_IDS!r})
def test_id(omni_perf, name):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)
""")
    # The store two levels down: a "../../escape" that got out would land in "outer".
    outer = standin_pytester.path / "outer"
    store = outer / "deeper" / "baselines" / "cpu"
    args = (*FAST, "--omni-profile=eager", f"--omni-baseline-dir={store.parent}")
    first = standin_pytester.runpytest_subprocess(*args, "--omni-update-baselines")
    first.assert_outcomes(passed=len(UNSAFE_IDS))
    outside = [p for p in outer.rglob("*") if p not in store.parents and not
               p.is_relative_to(store) and not p.name.startswith("history.sqlite")]
    assert outside == [], outside
    slugs = [p for p in store.iterdir()]
    assert len(slugs) == len(UNSAFE_IDS)  # one folder per id: none collide or nest
    for path in store.rglob("*"):
        part = path.relative_to(store).parts
        assert len(part) <= 3 and all(len(s) <= 150 and not s.startswith(".") for s in part)
    # Read back by the same ids: each finds its own baseline.
    standin_pytester.runpytest_subprocess(*args).assert_outcomes(passed=len(UNSAFE_IDS))


def _profile_bytes() -> Any:
    from importlib import resources

    from hypothesis import strategies as st

    builtin = resources.files("pytest_omni_perf").joinpath("profiles.toml").read_bytes()
    # The shipped file cut anywhere and spliced with junk (a torn or hand-edited copy),
    # deep nesting, arbitrary text, arbitrary bytes.
    torn = st.builds(lambda at, junk: builtin[:at] + junk, st.integers(0, len(builtin)),
                     st.binary(max_size=24) | st.sampled_from([b"", b"\n[", b"= ", b"\xff"]))
    deep = st.integers(1, 3000).map(lambda n: b"[profiles.x]\noptions = " + b"[" * n)
    return torn | deep | st.text(max_size=200).map(str.encode) | st.binary(max_size=200)


def test_profile_files_of_any_bytes_raise_only_profile_error(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings

    from pytest_omni_perf.profiles import ProfileError, load_all

    path = tmp_path / "mine.toml"

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_profile_bytes())
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            load_all([path])
        except ProfileError:
            pass
        assert os.listdir(tmp_path) == ["mine.toml"] and path.read_bytes() == data

    check()
