"""``python -m pytest_omni_perf.history COMMAND``: change points, export, import.

    changes [--history H] [--test T] [--profile P] [--label L] [--hardware-key K]
            [--metric M] [--max-pvalue P] [--min-change PCT]
        Per series (test x profile x request x hardware key): where the metric's level
        moved (time, run, commit), the size of the move and its p-value.
    spread [--history H] [--test T] [--profile P] [--hardware-key K]
        Per series: the run-to-run spread its unfailed runs show, and the spread the
        plugin's gates widen its intervals by (pooled with the default; see .spread).
    export --format json|pytest-benchmark [--history H] [--output PATH]
    import-baselines BASELINE_DIR [--history H]

``--history`` is a file or a database URL; default ``baselines/history.sqlite`` (the
plugin's default when run from the rootdir). Exit status: 0 done, 1 the history or a file
could not be used (the message says which and why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_omni_perf.history.backends import HistoryError, is_url
from pytest_omni_perf.history.changes import (
    DEFAULT_MAX_PVALUE, DEFAULT_MIN_CHANGE, describe, find_changes,
)
from pytest_omni_perf.history.store import _METRIC_SQL, LATENCY, HistoryStore, SeriesKey

DEFAULT_HISTORY = "baselines/history.sqlite"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_omni_perf.history",
                                     description="pytest-omni-perf run history")
    commands = parser.add_subparsers(dest="command", required=True)

    def history_arg(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--history", default=DEFAULT_HISTORY, metavar="PATH_OR_URL",
                         help=f"SQLite file or database URL (default: {DEFAULT_HISTORY})")

    changes = commands.add_parser("changes", help="where a metric's level moved")
    history_arg(changes)
    changes.add_argument("--test", help="node ids containing this text")
    changes.add_argument("--profile")
    changes.add_argument("--label")
    changes.add_argument("--hardware-key")
    changes.add_argument("--metric", default=LATENCY, choices=sorted(_METRIC_SQL),
                         help=f"default {LATENCY}: the robust estimate, else the median")
    changes.add_argument("--max-pvalue", type=float, default=DEFAULT_MAX_PVALUE,
                         help=f"report moves with p <= this (default {DEFAULT_MAX_PVALUE})")
    changes.add_argument("--min-change", type=float, default=DEFAULT_MIN_CHANGE * 100,
                         metavar="PCT", help="ignore moves smaller than this many percent "
                         f"(default {DEFAULT_MIN_CHANGE * 100:g})")

    spread = commands.add_parser("spread", help="how much unchanged runs of a series differ")
    history_arg(spread)
    spread.add_argument("--test", help="node ids containing this text")
    spread.add_argument("--profile")
    spread.add_argument("--hardware-key")

    export = commands.add_parser("export", help="the history as JSON or pytest-benchmark files")
    history_arg(export)
    export.add_argument("--format", required=True, choices=("json", "pytest-benchmark"))
    export.add_argument("--output", type=Path, metavar="PATH",
                        help="json: a file (default stdout); pytest-benchmark: a folder "
                        "(required)")

    imports = commands.add_parser("import-baselines", help="stored baselines into the history")
    history_arg(imports)
    imports.add_argument("baseline_dir", type=Path, metavar="BASELINE_DIR")
    return parser


def _open(target: str, must_exist: bool) -> HistoryStore:
    if must_exist and not is_url(target) and not Path(target).is_file():
        raise HistoryError(f"history {target}: no such file (pytest writes it; see "
                           "--omni-history)")
    return HistoryStore.open(target)


def _changes(args: argparse.Namespace) -> int:
    with _open(args.history, True) as store:
        found = store.series(args.metric, test=args.test, profile=args.profile,
                             label=args.label, hardware_key=args.hardware_key)
    if not found:
        print(f"no results in {args.history} match the filters")
        return 0
    unit = "s" if args.metric.endswith("_s") else ("B" if "bytes" in args.metric else "")
    for key, points in found.items():
        valued = sum(p.value is not None for p in points)
        changes = find_changes(points, max_pvalue=args.max_pvalue,
                               min_magnitude=args.min_change / 100)
        print(f"{key}: {args.metric}, {valued} runs, {len(changes)} level change(s)")
        if valued == 0 and args.metric == "estimate_s":
            print("  no estimate_s values (results from before the robust estimate); "
                  "try --metric median_s")
        for change in changes:
            print(f"  {describe(change, unit)}")
    return 0


def _spread(args: argparse.Namespace) -> int:
    from pytest_omni_perf.hardware import CPU_KEY
    from pytest_omni_perf.history.spread import SeriesSpread, spread_in
    from pytest_omni_perf.measure.stats import RUN_SPREAD_CPU, RUN_SPREAD_GPU

    found_in: list[tuple[SeriesKey, bool, float, SeriesSpread | None]] = []
    with _open(args.history, True) as store:
        speedups = store.series("speedup", test=args.test, profile=args.profile,
                                hardware_key=args.hardware_key)
        for key, points in speedups.items():
            # A profile measured beside a baseline profile is judged by its speedup.
            relative = any(p.value is not None for p in points)
            prior = RUN_SPREAD_CPU if key.hardware_key == CPU_KEY else RUN_SPREAD_GPU
            found_in.append((key, relative, prior,
                             spread_in(store, key, relative=relative, prior=prior)))
    if not found_in:
        print(f"no results in {args.history} match the filters")
        return 0
    for key, relative, prior, found in found_in:
        what = "log speedup" if relative else "log latency"
        if found is None:
            print(f"{key}: {what}: too few unfailed runs in the current level; the default "
                  f"{prior:.1%} applies")
        else:
            print(f"{key}: {what}: {found.runs} unfailed runs, their sd "
                  f"{found.history_sd or 0:.1%}; gates use {found.spread:.1%} (pooled with "
                  f"the default {prior:.1%})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pytest_omni_perf.history.export import write_benchmark_files, write_history_json

    with _open(args.history, True) as store:
        if args.format == "json":
            sys.stdout.write(write_history_json(store, args.output))
            if args.output is not None:
                print(f"history written to {args.output}", file=sys.stderr)
            return 0
        if args.output is None:
            print("export --format pytest-benchmark needs --output FOLDER", file=sys.stderr)
            return 2
        written = write_benchmark_files(store, args.output)
    print(f"{len(written)} pytest-benchmark file(s) written to {args.output}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from pytest_omni_perf.history.importer import import_baselines

    if not args.baseline_dir.is_dir():
        raise HistoryError(f"baseline folder {args.baseline_dir}: not a folder")
    with _open(args.history, False) as store:
        report = import_baselines(store, args.baseline_dir)
        where = store.where
    print(f"imported {report.added} baseline(s) into {where}; {report.present} already there")
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    return 1 if report.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status."""
    args = _parser().parse_args(argv)
    try:
        command = {"changes": _changes, "spread": _spread, "export": _export,
                   "import-baselines": _import}
        return command[args.command](args)
    except (HistoryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
