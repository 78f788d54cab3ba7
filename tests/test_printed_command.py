"""The printed refresh command starts pytest the way this run was started.

A newcomer's main job (scripts/perf-suite.sh) runs ``.venv/bin/python -m pytest`` with
``OMNI_PERF_CACHE_DIR`` and ``HF_HUB_OFFLINE`` set and no venv active: the bare
``pytest ...`` it printed was not on PATH, and without the cache folder would have built
the models again.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from pytest_omni_perf.state import launch_environment, pytest_launcher


def _script(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_pytest_beside_the_interpreter_is_named_bare(tmp_path: Path) -> None:
    python = _script(tmp_path / "venv" / "bin", "python")
    _script(tmp_path / "venv" / "bin", "pytest")
    env = {"PATH": str(python.parent)}
    assert pytest_launcher(env, str(python), tmp_path) == ["pytest"]


def test_without_it_on_path_the_interpreter_runs_pytest(tmp_path: Path) -> None:
    python = _script(tmp_path / ".venv" / "bin", "python")
    _script(tmp_path / "elsewhere", "pytest")  # another pytest, another interpreter
    env = {"PATH": str(tmp_path / "elsewhere")}
    assert pytest_launcher(env, str(python), tmp_path) == [".venv/bin/python", "-m", "pytest"]
    outside = tmp_path / "project"
    outside.mkdir()
    assert pytest_launcher({"PATH": ""}, str(python), outside) == [str(python), "-m", "pytest"]


def test_the_main_jobs_variables_lead_the_line_as_assignments() -> None:
    env = {"HF_HUB_OFFLINE": "1", "OMNI_PERF_CACHE_DIR": "/data/omni cache", "HOME": "/root"}
    prefix = launch_environment(env)
    assert prefix == "HF_HUB_OFFLINE=1 OMNI_PERF_CACHE_DIR='/data/omni cache' "
    # A shell reads both as assignments before the command.
    assert shlex.split(prefix + "pytest x") == ["HF_HUB_OFFLINE=1",
                                                "OMNI_PERF_CACHE_DIR=/data/omni cache",
                                                "pytest", "x"]
    assert launch_environment({"PATH": os.defpath}) == ""
