"""Engine workers forked from a zygote (engines/zygote.py, zygote_host.py), with real
processes: who forks whom, what environment a worker sees, what a user reads when a forked
worker dies, what is left running afterwards, and the option that picks the launch.

The engines are the stand-in of tests/standin.py (through tests/zygote_standin.py, which
also reports its parent and environment): a fork costs milliseconds, so these tests are
quick. Only deadlines are asserted, never durations.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytest_omni_perf.engines import zygote_host
from pytest_omni_perf.engines.device_answers import SM_VARIABLE, format_sm, parse_sm, uniform_sm
from pytest_omni_perf.engines.base import EngineError, EngineSpec, GenerationRequest
from pytest_omni_perf.engines.hosting import IsolatedEngine
from pytest_omni_perf.engines.process import running
from pytest_omni_perf.engines.zygote import NVML_CHECK
from pytest_omni_perf.engines.zygote_host import ForkedProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="zygotes fork and use the parent-death signal: Linux")

TESTS_DIR = str(Path(__file__).resolve().parent)
ZYGOTE_MODULE = "pytest_omni_perf.engines.zygote"
REQUEST = GenerationRequest(width=16, height=16)
DEADLINE_S = 20.0


@pytest.fixture(autouse=True)
def no_zygotes() -> Iterator[None]:
    """Each test starts and ends without zygotes in this process: a zygote one test started
    must not serve, or hide a fault from, the next."""
    zygote_host.stop_all()
    yield
    zygote_host.stop_all()


Start = Callable[..., IsolatedEngine]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start a stand-in engine (forked from a zygote unless ``preload=None``); every one
    started is stopped at the end, also when the test fails."""
    started: list[IsolatedEngine] = []

    def start_engine(*, preload: Sequence[str] | None = ("standin",),
                     factory: str = "zygote_standin:make", path: str = TESTS_DIR,
                     **env: str) -> IsolatedEngine:
        engine = IsolatedEngine(
            EngineSpec(model="standin", profile_name="eager", options={}, backend="standin",
                       start_timeout_s=60.0),
            factory, {"profile": "eager", "options": {}},
            env={"PYTHONPATH": path, **env}, log_dir=tmp_path, preload=preload)
        started.append(engine)
        engine.start()
        return engine

    yield start_engine
    for engine in started:
        engine.stop()


def _where(engine: IsolatedEngine) -> dict[str, Any]:
    where: dict[str, Any] = engine.describe().applied["where"]
    return where


def _zygote_of(engine: IsolatedEngine) -> int:
    """The worker's parent, checked to be a zygote that pytest started."""
    zygote = psutil.Process(engine.pids()[0]).parent()
    assert zygote is not None and ZYGOTE_MODULE in " ".join(zygote.cmdline())
    assert zygote.ppid() == os.getpid()  # the trampoline exec'd in place: pytest's child
    return int(zygote.pid)


def _gone_within(pids: Sequence[int], seconds: float = DEADLINE_S) -> list[int]:
    """Those of ``pids`` still running after ``seconds`` (they may be exiting right now)."""
    deadline = time.monotonic() + seconds
    while (alive := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _module(folder: Path, name: str, source: str) -> Path:
    """``folder/name.py``, for a worker to import (put ``folder`` on its PYTHONPATH)."""
    (folder / f"{name}.py").write_text(source)
    return folder


# -- 1. one zygote per environment ------------------------------------------------------------
def test_two_workers_of_one_environment_share_one_zygote(start: Start) -> None:
    """The point of the zygote: one process paid the imports, every worker of that
    environment is its child. Each worker is still an engine of its own: its own session
    (killpg reaches its tree only) and its own answers."""
    first, second = start(), start()
    worker_a, worker_b = first.pids()[0], second.pids()[0]
    assert worker_a != worker_b
    assert _zygote_of(first) == _zygote_of(second)
    assert os.getsid(worker_a) == worker_a and os.getsid(worker_b) == worker_b
    assert _where(first)["pid"] == worker_a  # the pid that answers is the one we track
    frames = [engine.generate(REQUEST).frames[0] for engine in (first, second)]
    assert frames[0].shape == (16, 16, 3) and (frames[0] == frames[1]).all()
    assert isinstance(first._process, ForkedProcess)


# -- 2. which keys need a zygote of their own -------------------------------------------------
def test_late_keys_reuse_the_zygote_and_reach_the_worker(
        start: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key read at import (any but ``LATE_KEYS``) must be right before the zygote imports:
    another value gets another zygote. A late key (the GPU, pytest's current test) changes
    with every engine, so it must not cost a zygote, and each worker must see its own value,
    not the zygote's. The zygote's NVML setting is the zygote's alone."""
    for name in ("CUDA_VISIBLE_DEVICES", "OMNI_TEST_MARK", NVML_CHECK):
        monkeypatch.delenv(name, raising=False)
    gpu0 = start(CUDA_VISIBLE_DEVICES="0", PYTEST_CURRENT_TEST="test_a.py::t (call)")
    gpu1 = start(CUDA_VISIBLE_DEVICES="1", PYTEST_CURRENT_TEST="test_b.py::t (call)")
    bare = start()
    marked = start(OMNI_TEST_MARK="1")
    assert _zygote_of(gpu0) == _zygote_of(gpu1) == _zygote_of(bare) != _zygote_of(marked)
    assert _where(gpu0)["env"] == {"CUDA_VISIBLE_DEVICES": "0",
                                   "PYTEST_CURRENT_TEST": "test_a.py::t (call)",
                                   "OMNI_TEST_MARK": None, NVML_CHECK: None}
    assert _where(gpu1)["env"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert _where(gpu1)["env"]["PYTEST_CURRENT_TEST"] == "test_b.py::t (call)"
    # Absent for this engine: not the value an earlier engine of the zygote had.
    assert _where(bare)["env"]["CUDA_VISIBLE_DEVICES"] is None
    assert _where(marked)["env"]["OMNI_TEST_MARK"] == "1"
    zygote_env = psutil.Process(_zygote_of(gpu0)).environ()
    assert "CUDA_VISIBLE_DEVICES" not in zygote_env and "PYTEST_CURRENT_TEST" not in zygote_env
    assert psutil.Process(_zygote_of(marked)).environ()["OMNI_TEST_MARK"] == "1"


# -- 3. a killed worker -------------------------------------------------------------------------
@pytest.mark.parametrize("launch", ["exec", "zygote"])
def test_a_killed_worker_reads_the_same_as_an_exec_one(start: Start, launch: str) -> None:
    """A forked worker is not our child: its exit status comes from the zygote that reaped
    it. A user must read the same 'killed by signal 9' either way (the exec run is the
    reference), not 'connection lost'."""
    engine = start(preload=None if launch == "exec" else ("standin",))
    pid = engine.pids()[0]
    process = engine._process
    assert process is not None and isinstance(process, ForkedProcess) == (launch == "zygote")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE_S
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() == -signal.SIGKILL
    assert not process.alive() and process.tree() == []
    expected = (f"engine worker for 'eager' (standin, model standin) died during the request: "
                f"killed by signal 9; log: {engine.log_path}")
    with pytest.raises(EngineError, match=re.escape(expected)):
        engine.generate(REQUEST)


# -- 4. what is left running ----------------------------------------------------------------
def test_stopping_engines_and_zygotes_leaves_nothing(start: Start) -> None:
    """Stopping an engine ends its worker (the zygote stays, for the next start);
    ``stop_all``, which the plugin calls at session end, ends every zygote; a start after
    it gets a fresh zygote."""
    engines = [start(), start(), start(OMNI_TEST_MARK="1")]
    workers = [engine.pids()[0] for engine in engines]
    zygotes = sorted({_zygote_of(engine) for engine in engines})
    assert len(zygotes) == 2
    for engine in engines:
        engine.stop()
    assert _gone_within(workers) == []
    assert all(running(z) for z in zygotes)
    children = [c.pid for z in zygotes for c in psutil.Process(z).children() if running(c.pid)]
    assert children == []
    zygote_host.stop_all()
    assert _gone_within(zygotes) == []
    again = start()
    assert _zygote_of(again) not in zygotes
    assert again.generate(REQUEST).frames


# -- 6. the option, as users run it ------------------------------------------------------------
CONFTEST = f"""
import sys
sys.path.insert(0, {TESTS_DIR!r})
from pytest_omni_perf.engines.hosting import IsolatedEngine

def pytest_omni_perf_make_engine(config, spec, hardware):
    return IsolatedEngine(spec, "zygote_standin:make",
                          {{"profile": spec.profile_name, "options": dict(spec.options)}},
                          env={{"PYTHONPATH": {TESTS_DIR!r}}},
                          preload=("standin",) if spec.launch == "zygote" else None)
"""
TWO_TESTS = """
def test_first(omni_perf):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)

def test_second(omni_perf):
    omni_perf.measure(width=24, height=16, num_inference_steps=2)
"""


@pytest.mark.parametrize("args", [["--omni-engine-launch=exec"], [], ["-n", "2"]],
                         ids=["exec", "zygote", "zygote-xdist"])
def test_both_launches_pass_and_leave_nothing(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        args: list[str]) -> None:
    """The same perf tests pass with either launch (the default is the zygote), also under
    xdist where each worker has zygotes of its own, and no worker or zygote outlives the
    run. The workers' own reports say which launch was used."""
    standin_pytester.makeconftest(CONFTEST)
    standin_pytester.makepyfile(TWO_TESTS)
    log = standin_pytester.path / "where.jsonl"
    monkeypatch.setenv("WHERE_LOG", str(log))
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0", "--omni-profile=eager",
        "--omni-update-baselines", *args)
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert "could not be forked" not in text + result.stderr.str()
    result.stdout.fnmatch_lines_random([  # the summary rows, in finishing order under xdist
        "*::test_first * eager * ok *", "*::test_second * eager * ok *",
        "omni-perf: suite cost: 2 tests x 1 profile: * engine starts*"])
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert seen, "no engine started"
    forked = [ZYGOTE_MODULE in where["parent"] for where in seen]
    assert forked == [not args or args[0] == "-n"] * len(seen)
    pids = [where["pid"] for where in seen] + [where["ppid"] for where in seen if forked[0]]
    assert _gone_within(pids) == []


def test_unknown_launch_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A typo must stop the run, naming the option and its choices, not fall back."""
    result = pytester.runpytest("--omni-engine-launch=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --omni-engine-launch: expected one of zygote, exec, "
                                 "got 'bogus'"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


# -- 7. preloads that fail -----------------------------------------------------------------------
def test_a_failing_preload_does_not_stop_the_fork(start: Start) -> None:
    """A preload is a guess (a pipeline class a model folder names, a module an older
    diffusers lacks): one that fails must cost nothing to a worker that does not need it."""
    engine = start(preload=("no_such_module_omni_perf", "standin:no_such_attribute", "standin"))
    assert engine.generate(REQUEST).frames[0].shape == (16, 16, 3)


def test_a_broken_preload_the_worker_needs_reports_the_real_error(
        start: Start, tmp_path: Path) -> None:
    """The zygote swallows the import error; the worker imports the module again and the
    user reads the module's own error, as with exec. The zygote survives for others."""
    path = os.pathsep.join([TESTS_DIR, str(_module(
        tmp_path, "broken_on_purpose", "raise RuntimeError('broken on purpose at import')\n"))])
    with pytest.raises(EngineError, match=r"failed during start: RuntimeError: broken on "
                                          r"purpose at import"):
        start(preload=("broken_on_purpose",), factory="broken_on_purpose:make", path=path)
    assert start(preload=("broken_on_purpose", "standin"), path=path).generate(REQUEST).frames


# -- faults found while writing these tests (each failed before its fix) -----------------------
def test_a_preload_that_exits_does_not_end_the_zygote(start: Start, tmp_path: Path) -> None:
    """A module that calls sys.exit() when imported (a script-like module) is still only a
    failed preload."""
    path = os.pathsep.join([TESTS_DIR, str(_module(tmp_path, "exits_on_import",
                                                    "raise SystemExit(3)\n"))])
    assert start(preload=("exits_on_import", "standin"), path=path).generate(REQUEST).frames


def test_a_subprocess_run_by_a_preload_keeps_its_exit_status(start: Start,
                                                             tmp_path: Path) -> None:
    """Libraries probe the machine with subprocesses when imported (compilers, ldconfig):
    a failed probe must fail in the zygote as it does in a fresh interpreter."""
    # Waits for the probe only once it has exited (as check_output does when reading its
    # output took longer than the probe lived): that makes the race certain, not likely.
    source = ("import subprocess, time, standin\n"
              "probe = subprocess.Popen(['sh', '-c', 'exit 3'])\n"
              "def state():\n"
              "    try:\n"
              "        return open(f'/proc/{probe.pid}/stat').read().rsplit(')', 1)[1].split()[0]\n"
              "    except OSError:\n"
              "        return 'gone'\n"
              "while state() not in ('Z', 'gone'):\n"
              "    time.sleep(0.01)\n"
              "CODE = probe.wait()\n"
              "class Runner(standin.StandinRunner):\n"
              "    def load(self):\n"
              "        return {'code': CODE}\n"
              "def make(profile, options):\n"
              "    return Runner(profile, options)\n")
    path = os.pathsep.join([TESTS_DIR, str(_module(tmp_path, "probes_on_import", source))])
    engine = start(preload=("probes_on_import",), factory="probes_on_import:make", path=path)
    assert engine.describe().applied == {"code": 3}


def test_a_forked_worker_runs_in_pytests_current_directory(
        start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The zygote started in one directory; a later test chdir'd (monkeypatch.chdir,
    pytester): a relative model path must resolve where pytest is now, as with exec."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    start()
    monkeypatch.chdir(tmp_path / "second")
    engine = start()
    assert psutil.Process(engine.pids()[0]).cwd() == str(tmp_path / "second")


def test_a_fourth_environment_does_not_kill_live_engines(start: Start) -> None:
    """Engines of several environments may be alive at once (one per GPU set, a baseline
    beside its profile): starting another must not end one of them."""
    engines = [start(OMNI_TEST_MARK=str(n)) for n in range(zygote_host.MAX_ZYGOTES + 1)]
    for engine in engines:
        assert engine.generate(REQUEST).frames


def test_an_import_that_touches_cuda_ends_the_zygote_and_the_engine_starts_by_exec(
        start: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a GPU host torchao's import initializes CUDA (results/h200/startup/fork-check.jsonl),
    after which no forked child may use it. A CPU torch has no such flag, so this module
    plays the part: it makes torch's own bad-fork flag read true in the zygote. The engine
    must still start (by exec, saying why), and the next one forks from a zygote that stops
    importing before that module."""
    path = os.pathsep.join([TESTS_DIR, str(_module(
        tmp_path, "touches_cuda", "import torch\ntorch._C._cuda_isInBadFork = lambda: True\n"))])
    first = start(preload=("standin", "touches_cuda"), path=path)
    assert ZYGOTE_MODULE not in _where(first)["parent"]
    said = capsys.readouterr().err
    assert ("engine 'eager': importing touches_cuda touched CUDA in the engine zygote, so "
            "workers forked after it could not use CUDA; starting this engine with exec, "
            "later ones forked after importing only standin") in said
    second = start(preload=("standin", "touches_cuda"), path=path)
    assert ZYGOTE_MODULE in _where(second)["parent"]
    assert second.generate(REQUEST).frames[0].shape == (16, 16, 3)


# -- 8. device queries answered from NVML during the zygote's imports --------------------------
ASKS_CAPABILITY = """\
import torch
from torch.cuda import get_device_capability as bound  # bound by name while importing
try:
    CAPABILITY = list(torch.cuda.get_device_capability())
except Exception as exc:  # a CPU torch without an answer: no CUDA here
    CAPABILITY = type(exc).__name__
import standin
class Runner(standin.StandinRunner):
    def load(self):
        return {"capability": CAPABILITY, "bound": bound.__name__,
                "now": torch.cuda.get_device_capability.__name__}
def make(profile, options):
    return Runner(profile, options)
"""


@pytest.mark.parametrize("sm", ["9.0", None])
def test_the_zygote_answers_capability_queries_only_while_importing(
        start: Start, tmp_path: Path, sm: str | None) -> None:
    """torchao asks for the device's compute capability when imported, which would spoil a
    GPU zygote (engines/device_answers.py). With ``OMNI_PERF_ZYGOTE_SM`` the import gets that
    answer, and the forked worker has torch's real function again, also in the module that
    bound the stand-in by name; without it nothing is answered (a CPU torch raises)."""
    path = os.pathsep.join([TESTS_DIR, str(_module(tmp_path, "asks_capability",
                                                    ASKS_CAPABILITY))])
    env = {SM_VARIABLE: sm} if sm else {}
    engine = start(preload=("torch", "asks_capability"), factory="asks_capability:make",
                   path=path, **env)
    applied = engine.describe().applied
    assert ZYGOTE_MODULE in " ".join(psutil.Process(engine.pids()[0]).parent().cmdline())
    assert applied["capability"] == ([9, 0] if sm else applied["capability"])
    if not sm:
        assert isinstance(applied["capability"], str)  # the exception's name: no answer
    assert applied["bound"] == applied["now"] == "get_device_capability"


def test_capability_text_and_agreement() -> None:
    """The variable's form, read back; malformed or absent values answer nothing; GPUs that
    differ give no capability to answer with (one zygote serves them all)."""
    assert parse_sm(format_sm((9, 0))) == (9, 0)
    assert [parse_sm(t) for t in (None, "", "9", "9.x", "-1.0", "9.0.1")] == [None] * 6
    assert uniform_sm([(9, 0), (9, 0)]) == (9, 0)
    assert uniform_sm([(9, 0), (8, 0)]) is None
    assert uniform_sm([]) is None


@pytest.mark.parametrize(("device", "sm", "torchao", "with_class"), [
    ("cpu", None, True, True), ("cuda", None, False, True), ("cuda", None, True, False),
    ("cuda", (9, 0), True, True)])
def test_the_pipeline_class_is_preloaded_where_no_cuda_query_spoils_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device: str,
        sm: tuple[int, int] | None, torchao: bool, with_class: bool) -> None:
    """On CUDA with torchao installed the class is preloaded only when the zygote can answer
    torchao's capability query from NVML (a shared ``sm``)."""
    import importlib.util

    from pytest_omni_perf.engines import diffusers_engine

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        (object() if torchao else None) if name == "torchao" else real_find_spec(name, *a)))
    preload = diffusers_engine.preload_for(str(folder), "", device, sm)
    assert preload[:3] == ("torch", "transformers", "diffusers")
    assert (preload[3:] == ("diffusers:FluxPipeline",)) is with_class


def test_what_torchs_compile_workers_cached_from_the_answers_is_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``has_triton`` reads the device through inductor's worker caches, which would keep
    the stand-in properties for every compile in the forked worker: they must be gone
    after the imports, and torch's own functions back."""
    import torch
    from torch._dynamo import device_interface

    from pytest_omni_perf.engines.device_answers import answered

    real = torch.cuda.get_device_properties
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a CPU torch sees none
    with answered((9, 0)):
        assert device_interface.CudaInterface.Worker.get_device_properties().major == 9
        assert "cuda" in device_interface.caching_worker_device_properties
    assert "cuda" not in device_interface.caching_worker_device_properties
    assert "cuda" not in device_interface.caching_worker_current_devices
    assert torch.cuda.get_device_properties is real
