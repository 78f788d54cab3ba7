"""The ``--omni-*`` options and ini keys, read once into a validated, frozen ``PerfConfig``.

The command line wins over the ini file, and either over the option's default. "Not given" is
``None``, never a falsy value, so ``--omni-rounds=0`` is an error rather than silently the
default. The option table and its registration with pytest are ``plugin_options``' (its
public names are re-exported here).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.case_options import case_paths, parse_model_override
from pytest_omni_perf.plugin_options import (
    BACKENDS as BACKENDS,
    DEFAULT_SERVER_COMMAND as DEFAULT_SERVER_COMMAND,
    INCONCLUSIVE_POLICIES as INCONCLUSIVE_POLICIES,
    LAUNCHES as LAUNCHES,
    OPTIONS,
    REFERENCE_REGRESSION_POLICIES as REFERENCE_REGRESSION_POLICIES,
    Option,
    add_options as add_options,
)


@dataclasses.dataclass(frozen=True)
class PerfConfig:
    """The run's settings, validated at configure time."""

    profile_names: tuple[str, ...]
    model: str
    backend: str
    rounds: int
    warmup: int
    baseline_dir: Path
    update_baselines: bool
    report_json: Path | None
    report_html: Path | None
    cache_dir: Path | None
    start_timeout_s: float
    request_timeout_s: float
    server_command: str
    in_process: bool
    engine_launch: str
    profile_files: tuple[Path, ...]
    list_profiles: str | None
    report_benchmark: Path | None = None
    separate_engines: bool = False
    """--omni-separate-engines: no engine shared between profiles of equal engine options."""
    gpu_wait_s: float = 1800.0
    gpu_lock_dir: Path | None = None
    """None: gpu_leases.DEFAULT_FOLDER."""
    max_rounds: int = 30
    max_seconds: float = 120.0
    inconclusive: str = "warn"
    """What an undecided gate at the budget does: one of INCONCLUSIVE_POLICIES."""
    reference_regressions: str = "warn"
    """What a reference profile's stored-latency regression does on a GPU key: one of
    REFERENCE_REGRESSION_POLICIES."""
    confidence: float = 0.95
    run_spread: float | None = None
    """None: measure.stats.RUN_SPREAD_GPU or RUN_SPREAD_CPU by hardware key."""
    history: str | None = None
    """--omni-history as given (None: the default file; see history.session.target)."""
    cases: tuple[Path, ...] = ()
    """--omni-cases files, absolute."""
    cases_model: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """--omni-cases-model: task (or '*') -> model."""
    report_markdown: Path | None = None
    ssim_budget: float = 0.98
    suite_request: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """--omni-suite-request: request fields the zero-code suite overrides."""
    server_urls: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """--omni-server-url: profile name -> URL of its running server (empty: start servers)."""


def _value(config: pytest.Config, opt: Option) -> Any:
    """Command line first, then ini (converted and checked the same way), then the default."""
    value = config.getoption(opt.dest)
    if value is not None:
        return value
    raw = config.getini(opt.dest)
    if raw is None or raw == "":
        return opt.default
    try:
        return opt.convert(str(raw))
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"{_ini_name(config, opt.dest)}: {exc}") from None


def _ini_name(config: pytest.Config, dest: str) -> str:
    """``ini omni_rounds (pytest.ini)``: the key and where its value came from, the file a
    user would edit or ``-o`` (which pytest lets override the file's value)."""
    overrides = config.getoption("override_ini", None) or []
    if any(str(entry).split("=", 1)[0].strip() == dest for entry in overrides):
        return f"ini {dest} (-o {dest}=...)"
    where = f" ({config.inipath.name})" if config.inipath is not None else ""
    return f"ini {dest}{where}"


def _given(config: pytest.Config, dest: str) -> object:
    """The option or ini value as the user gave it, None when neither was."""
    value = config.getoption(dest)
    return value if value is not None else (config.getini(dest) or None)


def _flag(config: pytest.Config, dest: str) -> bool:
    value = config.getoption(dest)
    if value is not None:
        return bool(value)
    try:
        return bool(config.getini(dest))
    except (ValueError, pytest.UsageError) as exc:  # pytest's message names no key
        raise pytest.UsageError(
            f"{_ini_name(config, dest)}: expected true or false ({exc})") from None


def anchor_dir(config: pytest.Config) -> Path:
    """The folder of the ini file that configures the run (pytest.ini, pyproject.toml,
    tox.ini, setup.cfg), else the rootdir: the ini file stays put wherever pytest is
    launched from, while the rootdir can follow the command line's arguments."""
    return config.inipath.parent if config.inipath is not None else config.rootpath


def default_baseline_dir(config: pytest.Config) -> Path:
    """``baselines/`` in :func:`anchor_dir`."""
    return anchor_dir(config) / "baselines"


def baseline_nodeid(item: pytest.Item) -> str:
    """The test's id as baselines key it: its node id with the file part relative to
    :func:`anchor_dir` (the node id itself when the rootdir is that folder, as usual), so a
    run launched from another folder finds the same baselines."""
    anchor = anchor_dir(item.config)
    try:
        relative = item.path.relative_to(anchor).as_posix()
    except ValueError:
        module = getattr(item, "module", None)
        if item.nodeid.startswith("::") and module is not None:
            # Outside the rootdir pytest names no file (``--pyargs pytest_omni_perf.suite``
            # from a project folder): the module's name keys it wherever it is installed.
            return f"{module.__name__}{item.nodeid}"
        return item.nodeid  # a test outside the anchor's tree keeps pytest's own id
    _, sep, rest = item.nodeid.partition("::")
    return relative + sep + rest


def read_config(config: pytest.Config) -> PerfConfig:
    """Build the PerfConfig; pytest.UsageError for anything invalid."""
    values = {opt.dest: _value(config, opt) for opt in OPTIONS}
    raw_profiles = values["omni_profile"] or ""
    names = tuple(n.strip() for n in raw_profiles.split(",") if n.strip())

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value).expanduser()

    if _given(config, "omni_max_rounds") is None:
        # No budget asked for: it grows to the first look asked for, never below it.
        values["omni_max_rounds"] = max(values["omni_max_rounds"], values["omni_rounds"])
    if values["omni_max_rounds"] < values["omni_rounds"]:
        raise pytest.UsageError(
            f"--omni-max-rounds={values['omni_max_rounds']} is below --omni-rounds="
            f"{values['omni_rounds']}: the budget must allow the first look")
    cases, cases_model = _cases(config)
    server_urls: dict[str, str] = {}
    if values["omni_server_url"] is not None:
        from pytest_omni_perf.server_urls import attached

        names, server_urls = attached(
            str(values["omni_server_url"]), values["omni_backend"], names,
            command_given=_given(config, "omni_server_command") is not None)
        if cases:
            raise pytest.UsageError("--omni-cases starts a server per case row; it does not "
                                    "attach to --omni-server-url")
    return PerfConfig(
        profile_names=names,
        model=values["omni_model"],
        backend="omni-server" if server_urls else values["omni_backend"],
        rounds=values["omni_rounds"],
        warmup=values["omni_warmup"],
        baseline_dir=path(values["omni_baseline_dir"]) or default_baseline_dir(config),
        update_baselines=_flag(config, "omni_update_baselines"),
        report_json=path(values["omni_report_json"]),
        report_html=path(values["omni_report_html"]),
        cache_dir=path(values["omni_cache_dir"]),
        start_timeout_s=values["omni_start_timeout"],
        request_timeout_s=values["omni_request_timeout"],
        server_command=values["omni_server_command"],
        in_process=_flag(config, "omni_in_process"),
        separate_engines=_flag(config, "omni_separate_engines"),
        engine_launch=values["omni_engine_launch"],
        profile_files=tuple(config.getini("omni_profile_files")),
        list_profiles=config.getoption("omni_list_profiles"),
        report_benchmark=path(values["omni_report_benchmark"]),
        gpu_wait_s=values["omni_gpu_wait"],
        gpu_lock_dir=path(values["omni_gpu_lock_dir"]),
        max_rounds=values["omni_max_rounds"],
        max_seconds=values["omni_max_seconds"],
        inconclusive=values["omni_inconclusive"],
        reference_regressions=values["omni_reference_regressions"],
        confidence=values["omni_confidence"],
        run_spread=values["omni_run_spread"],
        history=values["omni_history"],
        cases=cases,
        cases_model=cases_model,
        report_markdown=path(values["omni_report_markdown"]),
        ssim_budget=values["omni_ssim_budget"],
        suite_request=values["omni_suite_request"] or {},
        server_urls=server_urls,
    )


def _cases(config: pytest.Config) -> tuple[tuple[Path, ...], dict[str, str]]:
    """--omni-cases (relative to the invocation folder) or ini omni_cases (relative to the
    ini file), each an existing file; --omni-cases-model parsed. UsageError otherwise."""
    given, base, name = config.getoption("omni_cases"), config.invocation_params.dir, \
        "--omni-cases"
    if given is None and config.getini("omni_cases"):
        given, base, name = config.getini("omni_cases"), anchor_dir(config), \
            _ini_name(config, "omni_cases")
    model = _given(config, "omni_cases_model")
    try:
        paths = case_paths(str(given or ""), base)
        override = parse_model_override(str(model)) if model is not None else {}
    except FileNotFoundError as exc:
        raise pytest.UsageError(f"{name}: {exc}") from None
    except ValueError as exc:
        raise pytest.UsageError(f"--omni-cases-model: {exc}") from None
    return paths, override

