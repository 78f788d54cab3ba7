"""The command-line options and their ini keys: one table of :class:`Option` records, the
``type=`` converters that check a value as it is read, and :func:`add_options` for
``pytest_addoption``.

Every option is also an ini key (``--omni-rounds`` -> ``omni_rounds``); the command line wins.
Every default registered with pytest is ``None``, so "not given" is never a falsy value and
``--omni-rounds=0`` is an error rather than silently the default; ``config.read_config``
applies :attr:`Option.default` after looking at both.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from pytest_omni_perf.numeric import Range

BACKENDS = ("auto", "diffusers", "omni", "omni-server")
INCONCLUSIVE_POLICIES = ("warn", "fail", "retry")
REFERENCE_REGRESSION_POLICIES = ("warn", "fail")
DEFAULT_SERVER_COMMAND = "vllm serve {model} --omni --host 127.0.0.1 --port {port}"


def _number(rule: Range) -> Callable[[str], float]:
    """An argparse ``type=``: the text as a number within ``rule`` (finite, so ``nan`` and
    ``inf`` are refused), else ArgumentTypeError; argparse and ``config.read_config`` add the
    name."""
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
        raise argparse.ArgumentTypeError(
            f"--omni-list-profiles takes 'json' or nothing, got {text!r}")
    return text


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``--omni-*`` option and its ini twin. ``convert`` checks both the command line's
    text (as argparse's ``type=``) and the ini value's; ``default`` applies when neither
    was given."""

    flag: str
    help: str
    convert: Callable[[str], Any] = str
    default: Any = None
    ini_type: str = "string"
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


OPTIONS = (
    Option("--omni-profile", "Profiles to measure, comma separated ('all' for every known one); "
           "tests using omni_profile/omni_engine/omni_perf are parametrized over them. "
           "Default: the test's omni_profiles marker, else 'eager'.", metavar="NAME[,NAME...]"),
    Option("--omni-model", "Model to measure: a built-in (tiny-/medium- flux, wan; flux-kontext "
           "for image edit, wan-i2v for image to video: tiny-flux-kontext, medium-wan-i2v ...; "
           "tiny-qwen-image-edit-plus for an edit from several images), a local diffusers "
           "folder or a vLLM-Omni model id. Default: tiny-flux.",
           default="tiny-flux", metavar="ID_OR_PATH"),
    Option("--omni-backend", "Engine driving the model: auto (omni when vllm_omni imports and a "
           "GPU is present, else diffusers), diffusers, omni, omni-server. Default: auto.",
           _backend, "auto"),
    # Rounds are adaptive: the first look after --omni-rounds, then more rounds at each look
    # until every gate's interval is decisive or a budget is spent (harness.RoundBudget).
    Option("--omni-rounds", "Measured requests per profile before the first look at the "
           "gates' intervals; more follow (5 at a time, then by half) until every gate is "
           "decided or --omni-max-rounds / --omni-max-seconds is spent. Default: 5.",
           _ROUNDS, 5, metavar="N"),
    Option("--omni-max-rounds", "Most measured requests per profile and measurement "
           "(set it equal to --omni-rounds for a fixed count). Default: 30.",
           _ROUNDS, 30, metavar="N"),
    Option("--omni-max-seconds", "Most seconds of measured requests per measurement (both "
           "engines' rounds together) before a gate left undecided is reported inconclusive. "
           "Default: 120.", _SECONDS, 120.0, metavar="S"),
    Option("--omni-inconclusive", "What a gate whose interval still straddles its bound at the "
           "budget does to the test: warn (passes, reported INCONCLUSIVE), fail, or retry "
           "(measure once more with twice the budget, then fail). Default: warn.",
           _choice("--omni-inconclusive", INCONCLUSIVE_POLICIES), "warn", metavar="POLICY"),
    Option("--omni-engine-launch", "How diffusers engine workers start: zygote (forked from a "
           "process that imported torch and diffusers once) or exec (a fresh interpreter "
           "each). Default: zygote.", _choice("--omni-engine-launch", LAUNCHES), "zygote"),
    Option("--omni-reference-regressions", "What a latency regression of a reference profile "
           "(eager: no baseline profile beside it to normalize by) against its stored run or "
           "history level does on a GPU key: warn (hosts of one GPU model differ) or fail (one "
           "host, or a pinned fleet). Default: warn.",
           _choice("--omni-reference-regressions", REFERENCE_REGRESSION_POLICIES), "warn",
           metavar="POLICY"),
    Option("--omni-run-spread", "Run-to-run sd of the log of a ratio on this hardware, added "
           "to every interval (one run's rounds cannot show it). Default: 0.075 on GPU keys "
           "(measured across H100 hosts), 0.02 on the cpu key; 0 turns it off.",
           _number(Range(0, 1)), None, metavar="SD"),
    Option("--omni-confidence", "Two-sided confidence level of the intervals. Default: 0.95.",
           _CONFIDENCE, 0.95, metavar="LEVEL"),
    Option("--omni-warmup", "Unmeasured requests before the rounds. Default: 1.",
           _WARMUP, 1, metavar="N"),
    Option("--omni-baseline-dir", "Stored baselines. Default: baselines/ beside the ini file "
           "(pytest.ini, pyproject.toml, ...) that configures the run, else in the rootdir's "
           "conftest.py (or the rootdir).", metavar="PATH"),
    Option("--omni-report-json", "Write the JSON report here.", metavar="PATH"),
    Option("--omni-report-html", "Write the self-contained HTML report here.", metavar="PATH"),
    Option("--omni-report-markdown", "Write the measured support-table row of each model "
           "(vLLM-Omni's table layout, one column per method of the guide) here.",
           metavar="PATH"),
    Option("--omni-ssim-budget", "SSIM a profile must keep against its baseline profile to be "
           "recommended as 'fastest within the SSIM budget'. Default: 0.98.",
           _number(Range(0, 1)), 0.98, metavar="SSIM"),
    Option("--omni-suite-request", "Fields the zero-code suite (--pyargs pytest_omni_perf.suite) "
           "sets on each of its requests, e.g. width=32,height=32,num_inference_steps=2.",
           _suite_request, metavar="KEY=VALUE[,...]"),
    Option("--omni-report-benchmark", "Write a pytest-benchmark JSON export here (compare runs "
           "with 'pytest-benchmark compare A.json B.json').", metavar="PATH"),
    Option("--omni-cache-dir", "Built-in model folders and compile caches. Default: "
           "$OMNI_PERF_CACHE_DIR or ~/.cache/pytest-omni-perf.", metavar="PATH"),
    Option("--omni-start-timeout", "Seconds an engine may take to start. Default: 900.",
           _SECONDS, 900.0, metavar="S"),
    Option("--omni-request-timeout", "Seconds one request may take before the engine is "
           "killed. Default: 600.", _SECONDS, 600.0, metavar="S"),
    Option("--omni-server-command", "Server command template for --omni-backend=omni-server; "
           "{model} and {port} are filled in, the profile's flags appended. "
           f"Default: '{DEFAULT_SERVER_COMMAND}'.", default=DEFAULT_SERVER_COMMAND, metavar="CMD"),
    Option("--omni-server-url", "Measure already running vLLM-Omni servers (vllm serve --omni) "
           "instead of starting them (implies --omni-backend=omni-server): URL for the one "
           "profile named with --omni-profile, or NAME=URL,NAME=URL so a profile and its "
           "baseline each run on their own server. No process is started or stopped.",
           metavar="URL|NAME=URL,..."),
    Option("--omni-gpu-wait", "Seconds a test waits for the GPUs it needs while other tests "
           "or pytest sessions hold them, before it fails naming the holders. Default: 1800.",
           _SECONDS, 1800.0, metavar="S"),
    Option("--omni-gpu-lock-dir", "Folder of the machine-wide GPU lock files that every pytest "
           "process sharing these GPUs must agree on. Default: <tempdir>/pytest-omni-perf-gpus.",
           metavar="PATH"),
    Option("--omni-history", "Run history every session appends to: an SQLite file, a database "
           "URL (postgresql://...; pip install pytest-omni-perf[history]) or 'none'. "
           "Default: <baseline dir>/history.sqlite.", metavar="PATH_OR_URL"),
    Option("--omni-cases", "vLLM-Omni nightly perf case files (tests/dfx/perf/tests/*.json "
           "layout), comma separated: each row's entries become tests, run through the "
           "omni-server backend with the row's load and checked against its baseline for this "
           "hardware. As an ini key, paths are relative to the ini file.", metavar="PATH[,PATH]"),
    Option("--omni-cases-model", "Serve this model instead of the case files' own (e.g. "
           "tiny-flux to try real files on a small model): NAME for every task, or "
           "t2i=NAME,t2v=NAME. Reports name both.", metavar="NAME|TASK=NAME,..."),
)


def add_options(parser: pytest.Parser) -> None:
    """Register every option with its ini twin."""
    group = parser.getgroup("omni-perf", "vLLM-Omni diffusion performance (pytest-omni-perf)")
    for opt in OPTIONS:
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
