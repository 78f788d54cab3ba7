"""Command-line options and ini keys, read once into a validated, frozen ``PerfConfig``.

Every option is also an ini key (``--omni-rounds`` -> ``omni_rounds``); the command line wins.
"Not given" is ``None``, never a falsy value, so ``--omni-rounds=0`` is an error rather than
silently the default.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.case_options import case_paths, parse_model_override
from pytest_omni_perf.numeric import Range

BACKENDS = ("auto", "diffusers", "omni", "omni-server")
INCONCLUSIVE_POLICIES = ("warn", "fail", "retry")
REFERENCE_REGRESSION_POLICIES = ("warn", "fail")
DEFAULT_SERVER_COMMAND = "vllm serve {model} --omni --host 127.0.0.1 --port {port}"


def _number(rule: Range) -> Callable[[str], float]:
    """An argparse ``type=``: the text as a number within ``rule`` (finite, so ``nan`` and
    ``inf`` are refused), else ArgumentTypeError; argparse and ``_value`` add the name."""
    def convert(text: str) -> float:
        return rule.parse(text, "", argparse.ArgumentTypeError)
    return convert


def _choice(name: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(
                f"expected one of {', '.join(allowed)}, got {text!r}")
        return text
    return convert


LAUNCHES = ("zygote", "exec")
_ROUNDS = _number(Range(2, whole=True))
_WARMUP = _number(Range(0, whole=True))
_SECONDS = _number(Range(0, low_open=True))
_CONFIDENCE = _number(Range(0.5, 1, high_open=True))


def _backend(text: str) -> str:
    if text not in BACKENDS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(BACKENDS)}, got {text!r}")
    return text


def _suite_request(text: str) -> dict[str, Any]:
    from pytest_omni_perf.suite_requests import parse_overrides

    return parse_overrides(text)


def _list_format(text: str) -> str:
    if text not in ("text", "json"):
        raise argparse.ArgumentTypeError(f"--omni-list-profiles takes 'json' or nothing, got {text!r}")
    return text


@dataclasses.dataclass(frozen=True)
class _Opt:
    flag: str
    help: str
    convert: Callable[[str], Any] = str
    default: Any = None
    ini_type: str = "string"
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


_OPTIONS = (
    _Opt("--omni-profile", "Profiles to measure, comma separated ('all' for every known one); "
         "tests using omni_profile/omni_engine/omni_perf are parametrized over them. "
         "Default: the test's omni_profiles marker, else 'eager'.", metavar="NAME[,NAME...]"),
    _Opt("--omni-model", "Model to measure: a built-in (tiny-/medium- flux, wan; flux-kontext "
         "for image edit, wan-i2v for image to video: tiny-flux-kontext, medium-wan-i2v ...), "
         "a local diffusers folder or a vLLM-Omni model id. Default: tiny-flux.",
         default="tiny-flux", metavar="ID_OR_PATH"),
    _Opt("--omni-backend", "Engine driving the model: auto (omni when vllm_omni imports and a GPU "
         "is present, else diffusers), diffusers, omni, omni-server. Default: auto.",
         _backend, "auto"),
    # Rounds are adaptive: the first look after --omni-rounds, then more rounds at each look
    # until every gate's interval is decisive or a budget is spent (harness.RoundBudget).
    _Opt("--omni-rounds", "Measured requests per profile before the first look at the "
         "gates' intervals; more follow (5 at a time, then by half) until every gate is "
         "decided or --omni-max-rounds / --omni-max-seconds is spent. Default: 5.",
         _ROUNDS, 5, metavar="N"),
    _Opt("--omni-max-rounds", "Most measured requests per profile and measurement "
         "(set it equal to --omni-rounds for a fixed count). Default: 30.",
         _ROUNDS, 30, metavar="N"),
    _Opt("--omni-max-seconds", "Most seconds of measured requests per measurement (both "
         "engines' rounds together) before a gate left undecided is reported inconclusive. "
         "Default: 120.", _SECONDS, 120.0, metavar="S"),
    _Opt("--omni-inconclusive", "What a gate whose interval still straddles its bound at the "
         "budget does to the test: warn (passes, reported INCONCLUSIVE), fail, or retry "
         "(measure once more with twice the budget, then fail). Default: warn.",
         _choice("--omni-inconclusive", INCONCLUSIVE_POLICIES), "warn", metavar="POLICY"),
    _Opt("--omni-engine-launch", "How diffusers engine workers start: zygote (forked from a "
         "process that imported torch and diffusers once) or exec (a fresh interpreter "
         "each). Default: zygote.", _choice("--omni-engine-launch", LAUNCHES), "zygote"),
    _Opt("--omni-reference-regressions", "What a latency regression of a reference profile "
         "(eager: no baseline profile beside it to normalize by) against its stored run or "
         "history level does on a GPU key: warn (hosts of one GPU model differ) or fail (one "
         "host, or a pinned fleet). Default: warn.",
         _choice("--omni-reference-regressions", REFERENCE_REGRESSION_POLICIES), "warn",
         metavar="POLICY"),
    _Opt("--omni-run-spread", "Run-to-run sd of the log of a ratio on this hardware, added "
         "to every interval (one run's rounds cannot show it). Default: 0.075 on GPU keys "
         "(measured across H100 hosts), 0.02 on the cpu key; 0 turns it off.",
         _number(Range(0, 1)), None, metavar="SD"),
    _Opt("--omni-confidence", "Two-sided confidence level of the intervals. Default: 0.95.",
         _CONFIDENCE, 0.95, metavar="LEVEL"),
    _Opt("--omni-warmup", "Unmeasured requests before the rounds. Default: 1.",
         _WARMUP, 1, metavar="N"),
    _Opt("--omni-baseline-dir", "Stored baselines. Default: baselines/ beside the ini file "
         "(pytest.ini, pyproject.toml, ...) that configures the run, else in the rootdir's "
         "conftest.py (or the rootdir).", metavar="PATH"),
    _Opt("--omni-report-json", "Write the JSON report here.", metavar="PATH"),
    _Opt("--omni-report-html", "Write the self-contained HTML report here.", metavar="PATH"),
    _Opt("--omni-report-markdown", "Write the measured support-table row of each model "
         "(vLLM-Omni's table layout, one column per method of the guide) here.",
         metavar="PATH"),
    _Opt("--omni-ssim-budget", "SSIM a profile must keep against its baseline profile to be "
         "recommended as 'fastest within the SSIM budget'. Default: 0.98.",
         _number(Range(0, 1)), 0.98, metavar="SSIM"),
    _Opt("--omni-suite-request", "Fields the zero-code suite (--pyargs pytest_omni_perf.suite) "
         "sets on each of its requests, e.g. width=32,height=32,num_inference_steps=2.",
         _suite_request, metavar="KEY=VALUE[,...]"),
    _Opt("--omni-report-benchmark", "Write a pytest-benchmark JSON export here (compare runs "
         "with 'pytest-benchmark compare A.json B.json').", metavar="PATH"),
    _Opt("--omni-cache-dir", "Built-in model folders and compile caches. Default: "
         "$OMNI_PERF_CACHE_DIR or ~/.cache/pytest-omni-perf.", metavar="PATH"),
    _Opt("--omni-start-timeout", "Seconds an engine may take to start. Default: 900.",
         _SECONDS, 900.0, metavar="S"),
    _Opt("--omni-request-timeout", "Seconds one request may take before the engine is "
         "killed. Default: 600.", _SECONDS, 600.0, metavar="S"),
    _Opt("--omni-server-command", "Server command template for --omni-backend=omni-server; "
         "{model} and {port} are filled in, the profile's flags appended. "
         f"Default: '{DEFAULT_SERVER_COMMAND}'.", default=DEFAULT_SERVER_COMMAND, metavar="CMD"),
    _Opt("--omni-server-url", "Measure already running vLLM-Omni servers (vllm serve --omni) "
         "instead of starting them (implies --omni-backend=omni-server): URL for the one "
         "profile named with --omni-profile, or NAME=URL,NAME=URL so a profile and its "
         "baseline each run on their own server. No process is started or stopped.",
         metavar="URL|NAME=URL,..."),
    _Opt("--omni-gpu-wait", "Seconds a test waits for the GPUs it needs while other tests "
         "or pytest sessions hold them, before it fails naming the holders. Default: 1800.",
         _SECONDS, 1800.0, metavar="S"),
    _Opt("--omni-gpu-lock-dir", "Folder of the machine-wide GPU lock files that every pytest "
         "process sharing these GPUs must agree on. Default: <tempdir>/pytest-omni-perf-gpus.",
         metavar="PATH"),
    _Opt("--omni-history", "Run history every session appends to: an SQLite file, a database "
         "URL (postgresql://...; pip install pytest-omni-perf[history]) or 'none'. "
         "Default: <baseline dir>/history.sqlite.", metavar="PATH_OR_URL"),
    _Opt("--omni-cases", "vLLM-Omni nightly perf case files (tests/dfx/perf/tests/*.json "
         "layout), comma separated: each row's entries become tests, run through the "
         "omni-server backend with the row's load and checked against its baseline for this "
         "hardware. As an ini key, paths are relative to the ini file.", metavar="PATH[,PATH]"),
    _Opt("--omni-cases-model", "Serve this model instead of the case files' own (e.g. "
         "tiny-flux to try real files on a small model): NAME for every task, or "
         "t2i=NAME,t2v=NAME. Reports name both.", metavar="NAME|TASK=NAME,..."),
)


def add_options(parser: pytest.Parser) -> None:
    """Register every option with its ini twin."""
    group = parser.getgroup("omni-perf", "vLLM-Omni diffusion performance (pytest-omni-perf)")
    for opt in _OPTIONS:
        group.addoption(opt.flag, dest=opt.dest, type=opt.convert, default=None,
                        metavar=opt.metavar, help=opt.help)
        parser.addini(opt.dest, opt.help, type=opt.ini_type, default=None)  # type: ignore[arg-type]
    group.addoption("--omni-update-baselines", dest="omni_update_baselines", action="store_true",
                    default=None, help="Write or refresh stored baselines for what ran, "
                    "instead of comparing against them.")
    parser.addini("omni_update_baselines", "Same as --omni-update-baselines.", type="bool",
                  default=False)
    group.addoption("--omni-in-process", dest="omni_in_process", action="store_true",
                    default=None, help="Run engines inside the pytest process (for debugging; "
                    "no crash isolation, VRAM of profiles mixes).")
    parser.addini("omni_in_process", "Same as --omni-in-process.", type="bool", default=False)
    group.addoption("--omni-separate-engines", dest="omni_separate_engines",
                    action="store_true", default=None,
                    help="Start an engine per profile even where a profile's engine options "
                    "equal its baseline profile's (fewer_steps and eager share one engine "
                    "otherwise, their rounds interleaved in one process).")
    parser.addini("omni_separate_engines", "Same as --omni-separate-engines.", type="bool",
                  default=False)
    group.addoption("--omni-list-profiles", dest="omni_list_profiles", nargs="?", const="text",
                    type=_list_format, default=None, metavar="json",
                    help="Print every profile (requirements, bounds, Omni(...) kwargs, "
                    "vllm serve flags) and exit; '=json' prints one JSON object.")
    parser.addini("omni_profile_files", "Extra TOML files of user profiles (same schema as the "
                  "built-in profiles.toml), relative to the rootdir.", type="paths", default=[])


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


def _value(config: pytest.Config, opt: _Opt) -> Any:
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
    values = {opt.dest: _value(config, opt) for opt in _OPTIONS}
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

