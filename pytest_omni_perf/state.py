"""Per-process session state, kept in the config stash (never on private config attributes)."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_omni_perf.config import PerfConfig, default_baseline_dir
from pytest_omni_perf.hardware import HardwareInfo, probe
from pytest_omni_perf.profiles import Profile
from pytest_omni_perf.escape import shell_line
from pytest_omni_perf.suite_cost import SuiteCost

if TYPE_CHECKING:
    from pytest_omni_perf.engines.engine_pool import EnginePool
    from pytest_omni_perf.gpu_pool import GpuPool
    from pytest_omni_perf.harness import Harness, RequestKey
    from pytest_omni_perf.results import Measurement
    from pytest_omni_perf.verdict import HistorySource


@dataclasses.dataclass
class SessionState:
    """Settings, profiles and the lazily created hardware probe and engine pool."""

    pytest_config: pytest.Config
    perf: PerfConfig
    profiles: dict[str, Profile]
    _hardware: HardwareInfo | None = None
    _backend: tuple[str, str] | None = None
    _pool: EnginePool | None = None
    _gpus: GpuPool | None = None
    baseline_cache: dict[RequestKey, Measurement] = dataclasses.field(default_factory=dict)
    reported: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Results from this process's and (on the xdist controller) the workers' reports."""
    loads: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """``omni_perf.load()`` reports (``LoadReport.to_dict()`` plus the test's outcome), as
    reports carried them."""
    cases: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """``--omni-cases`` items' loads (``load_runs.CASE_PROPERTY`` values plus nodeid and
    outcome), as reports carried them."""
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Skipped perf tests ({nodeid, profile, model, reason}), as reports carried them: the
    support table's "unsupported" and "not runnable here" cells."""
    suite_cost: SuiteCost = dataclasses.field(default_factory=SuiteCost)
    """What this process's measurements cost (rounds run, baselines measured or reused)."""
    starts_saved_by_order: int = 0
    """Engine starts the test order saved (ordering.expected_starts, before - after)."""
    history_source: HistorySource | None = None
    """Reads a series' run-to-run spread and level from the history (history.session)."""

    @property
    def hardware(self) -> HardwareInfo:
        if self._hardware is None:
            hook = self.pytest_config.hook.pytest_omni_perf_probe_hardware
            self._hardware = hook(config=self.pytest_config) or probe()
        return self._hardware

    @property
    def backend(self) -> tuple[str, str]:
        """(backend, why) with ``auto`` resolved."""
        if self._backend is None:
            from pytest_omni_perf.engines.factory import resolve_backend

            self._backend = resolve_backend(self.perf.backend, self.hardware,
                                            attached=bool(self.perf.server_urls))
        return self._backend

    @property
    def pool(self) -> EnginePool:
        if self._pool is None:
            from pytest_omni_perf.engines.factory import make_engine
            from pytest_omni_perf.engines.engine_pool import EnginePool

            from pytest_omni_perf.progress import ProgressWriter

            progress = ProgressWriter(self.pytest_config)
            self.pytest_config.pluginmanager.register(progress, "omni-perf-progress")
            self._pool = EnginePool(
                lambda spec: make_engine(self.pytest_config, spec, self.hardware), progress,
                share=not self.perf.separate_engines)
        return self._pool

    @property
    def gpus(self) -> GpuPool:
        """This process's lease on the machine's GPUs, shared by its engines."""
        if self._gpus is None:
            from pytest_omni_perf.gpu_leases import DEFAULT_FOLDER, LeaseDir
            from pytest_omni_perf.gpu_pool import GpuPool

            self._gpus = GpuPool(
                LeaseDir(self.perf.gpu_lock_dir or DEFAULT_FOLDER),
                [g.index for g in self.hardware.gpus], self.perf.gpu_wait_s,
                stop_engines=self.close_engines, live_engines=lambda: self.pool.live_count)
        return self._gpus

    def close_engines(self) -> None:
        """Stop every engine of this process (their GPUs are about to be given back)."""
        if self._pool is not None:
            self._pool.close()

    def engine_facts(self) -> dict[str, Any]:
        """Engine starts, live engines and suite cost counters of this process."""
        pool = {"engine_starts": 0, "live": []} if self._pool is None else self._pool.snapshot()
        return {**pool, **self.suite_cost.to_dict(),
                "starts_saved_by_order": self.starts_saved_by_order}

    def close(self) -> None:
        if self._gpus is not None:
            self._gpus.release()  # stops the engines first
        self.close_engines()
        from pytest_omni_perf.engines import zygote_host

        zygote_host.stop_all()

    @property
    def run_spread_and_origin(self) -> tuple[float, str]:
        """The run-to-run spread and where it came from, in the words intervals print
        beside it: --omni-run-spread, else the measured default of this hardware's kind.
        One test decides both, so the number and its words cannot disagree."""
        if self.perf.run_spread is not None:
            return self.perf.run_spread, "--omni-run-spread"
        from pytest_omni_perf.measure.stats import RUN_SPREAD_CPU, RUN_SPREAD_GPU

        if self.hardware.gpus:
            return RUN_SPREAD_GPU, "the built-in GPU default, not measured here"
        return RUN_SPREAD_CPU, "the built-in CPU default, not measured here"

    @property
    def run_spread(self) -> float:
        """The number of ``run_spread_and_origin``."""
        return self.run_spread_and_origin[0]

    @property
    def run_spread_origin(self) -> str:
        """The words of ``run_spread_and_origin``."""
        return self.run_spread_and_origin[1]

    def refresh_command(self, nodeid: str, profile: str, model: str,
                        pyargs: bool = False) -> str:
        """The command that (re)creates the stored baseline of one test and profile;
        ``pyargs``: ``nodeid`` starts with a module name (see ``config.baseline_nodeid``)."""
        argv = [*pytest_launcher(), nodeid, f"--omni-profile={profile}",
                "--omni-update-baselines"]
        if pyargs:  # a module name (pytest_omni_perf.suite::test_support), not a path
            argv.insert(argv.index(nodeid), "--pyargs")
            if fields := getattr(self.perf, "suite_request", None):  # the same requests
                argv.append("--omni-suite-request="
                            + ",".join(f"{k}={v}" for k, v in fields.items()))
        if model != "tiny-flux":
            argv.append(f"--omni-model={model}")
        if self.perf.server_urls:  # the same running servers (implies the backend)
            argv.append("--omni-server-url=" + ",".join(
                f"{name}={url}" for name, url in self.perf.server_urls.items()))
        elif self.perf.backend != "auto":
            argv.append(f"--omni-backend={self.perf.backend}")
        if self.perf.baseline_dir.resolve() != default_baseline_dir(self.pytest_config).resolve():
            # The same folder, or the refreshed baseline lands where this run does not look.
            argv.append(f"--omni-baseline-dir={self.perf.baseline_dir}")
        return launch_environment() + shell_line(argv)


LAUNCH_ENVIRONMENT = ("HF_HUB_OFFLINE", "OMNI_PERF_CACHE_DIR")
"""Variables a printed command repeats when this run had them: the main job sets both
(scripts/perf-suite.sh), and without the cache folder a refresh builds the models again."""


def launch_environment(environ: Mapping[str, str] | None = None) -> str:
    """``"K=V "`` for each variable of ``LAUNCH_ENVIRONMENT`` set here, values quoted for a
    POSIX shell (the assignment itself must stay unquoted to be one); "" when none is."""
    environ = os.environ if environ is None else environ
    return "".join(f"{k}={shlex.quote(environ[k])} " for k in LAUNCH_ENVIRONMENT
                   if environ.get(k))


def pytest_launcher(environ: Mapping[str, str] | None = None, executable: str | None = None,
                    cwd: Path | None = None) -> list[str]:
    """The argv that starts this very pytest again: ``pytest`` where the one on PATH sits
    beside this interpreter, else this interpreter with ``-m pytest`` (relative to ``cwd``
    when inside it). A newcomer's main job ran ``.venv/bin/python -m pytest`` with no venv
    active, so the bare ``pytest ...`` it printed could not run."""
    environ = os.environ if environ is None else environ
    python = Path(executable or sys.executable)
    cwd = cwd or Path.cwd()
    found = shutil.which("pytest", path=environ.get("PATH"))
    if found is not None and Path(found).parent == python.parent:
        return ["pytest"]
    shown = python.relative_to(cwd) if python.is_relative_to(cwd) else python
    return [str(shown), "-m", "pytest"]


state_key = pytest.StashKey[SessionState]()
harness_key = pytest.StashKey["list[Harness]"]()
