"""The zero-code suite in one short command, for a model contributor.

    python -m pytest_omni_perf.sweep MODEL [--profile all] [--markdown PATH] [...] [-- PYTEST_ARGS]

is the same run as::

    pytest --pyargs pytest_omni_perf.suite --omni-model=MODEL --omni-profile=all \\
        --omni-report-markdown=omni-support-<model-name>.md [...] [PYTEST_ARGS]

Each named option maps 1:1 to one plugin option (``pytest_omni_perf.plugin_options``) and is
passed as given, so pytest validates it and words its errors exactly as for the long form;
whatever follows ``--`` is appended verbatim. pytest runs in this process and its exit status
is the command's; nothing is printed besides what pytest prints.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

SUITE = "pytest_omni_perf.suite"
PROG = "python -m pytest_omni_perf.sweep"
# ``python -m`` imports the package before pytest loads it as a plugin, so pytest warns that
# it cannot rewrite its asserts (the suite has none): not the user's concern.
QUIET = ("-W", ("ignore:Module already imported so cannot be rewritten; pytest_omni_perf"
               ":pytest.PytestAssertRewriteWarning"))

# (sweep flag, plugin option, metavar, help): each a value passed through unchanged.
_PASSED = (
    ("--backend", "--omni-backend", "NAME", "auto (default), diffusers, omni or omni-server"),
    ("--json", "--omni-report-json", "PATH", "also write the JSON report here"),
    ("--html", "--omni-report-html", "PATH", "also write the self-contained HTML report here"),
    ("--ssim-budget", "--omni-ssim-budget", "SSIM",
     "SSIM a profile must keep to be recommended (default 0.98)"),
    ("--request", "--omni-suite-request", "KEY=VALUE[,...]",
     "request fields to override, e.g. width=32,height=32,num_inference_steps=2"),
)


def report_name(model: str) -> str:
    """``omni-support-<model-name>.md``: the last part of MODEL's path or hub id
    (``black-forest-labs/FLUX.1-dev`` -> ``FLUX.1-dev``, ``/models/wan/`` -> ``wan``) with
    every run of characters other than letters, digits, ``.``, ``_`` and ``-`` made one
    ``_`` and leading dots dropped, so the name is a plain file in the current folder
    (``model`` when nothing is left)."""
    last = [part for part in re.split(r"[/\\]+", model.strip()) if part]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", last[-1] if last else "").lstrip(".")
    return f"omni-support-{safe or 'model'}.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{PROG} MODEL [options] [-- extra pytest args]",
        description="Measure optimization profiles of one diffusion model against their\n"
        "baseline profile (the zero-code suite) and write its support-table row.",
        epilog="Same as the pytest command:\n\n"
        f"  pytest --pyargs {SUITE} --omni-model=MODEL --omni-profile=all \\\n"
        "      --omni-report-markdown=omni-support-<model-name>.md [mapped options] "
        "[extra pytest args]\n\n"
        "Arguments after '--' go to pytest verbatim (e.g. -- -x -rs --omni-rounds=10).")
    parser.add_argument("model", metavar="MODEL", help="a built-in (tiny-flux, tiny-wan, "
                        "medium-flux, medium-wan), a local diffusers folder or a vLLM-Omni "
                        "model id (--omni-model)")
    parser.add_argument("--profile", default="all", metavar="NAME[,NAME...]",
                        help="profiles to measure, comma separated (--omni-profile; "
                        "default: all)")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write the Markdown support table here (--omni-report-markdown; "
                        "default: omni-support-<model-name>.md in the current folder, the "
                        "last part of MODEL with unsafe characters replaced by '_')")
    for flag, option, metavar, text in _PASSED:
        parser.add_argument(flag, metavar=metavar, help=f"{text} ({option})")
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The options of ``argv`` (without the program name); what follows the first ``--`` is
    kept verbatim as ``extra`` (list[str]). An empty or blank MODEL, a missing MODEL or an
    unknown option exits with argparse's usage error (SystemExit 2, message on stderr)."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = _parser()
    options = parser.parse_args(argv[:cut])
    if not options.model.strip():
        parser.error("MODEL must not be empty: give a built-in name (tiny-flux, ...), a "
                     "diffusers folder or a vLLM-Omni model id")
    options.extra = argv[cut + 1:]
    return options


def pytest_args(options: argparse.Namespace | Sequence[str]) -> list[str]:
    """The pytest argument list for a parsed Namespace or a raw argv (parsed first, so its
    usage errors apply): a filter of one warning the short form causes (``QUIET``), the
    suite, the model and profiles, the Markdown report (given or default), each mapped
    option that was given, then the extra pytest arguments."""
    if not isinstance(options, argparse.Namespace):
        options = parse(options)
    args = [*QUIET, "--pyargs", SUITE, f"--omni-model={options.model}",
            f"--omni-profile={options.profile}",
            f"--omni-report-markdown={options.markdown or report_name(options.model)}"]
    for flag, option, _, _ in _PASSED:
        value = getattr(options, flag[2:].replace("-", "_"))
        if value is not None:
            args.append(f"{option}={value}")
    return args + list(getattr(options, "extra", []))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite in this process; pytest's exit status (0 all passed or skipped, 1 a
    test failed, 4 a usage error ...). ``argv`` defaults to ``sys.argv[1:]``."""
    import sys

    import pytest

    return int(pytest.main(pytest_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
