"""One support table from several runs' JSON reports.

    python -m pytest_omni_perf.support_table REPORT.json [REPORT.json ...] [-o TABLE.md]

A model's profiles do not always fit one session (a GPU call of limited length, profiles
split between machines of one kind): each run writes its own ``--omni-report-json``, and
this command merges their results and skip records into the Markdown page that
``--omni-report-markdown`` writes for one run (``report.markdown.support_markdown``).
Reports must share the backend and the hardware key, since a table compares profiles on one
machine kind; a report of another kind, an unreadable file or one that is not a
pytest-omni-perf report is refused with its path named (exit status 2), never skipped.
Reports are read in the order given: when two measured the same model, profile and request
(a profile run again after a fix, or after a call ran out of time), the later one's row
replaces the earlier one's and the command says how many it replaced, so a table never
shows two rows of one measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pytest_omni_perf.support import model_of


class ReportError(ValueError):
    """A JSON report that cannot join the table (message names the file)."""


def _read(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read as JSON: {exc}") from exc
    if not (isinstance(data, dict) and isinstance(data.get("results"), list)
            and isinstance(data.get("hardware"), dict) and isinstance(data.get("backend"), dict)):
        raise ReportError(f"{path}: not a pytest-omni-perf JSON report "
                          "(written by --omni-report-json)")
    return data


class Merged(NamedTuple):
    """The results and skip records of several reports, as one run's would be."""

    results: list[Mapping[str, Any]]
    skips: list[Mapping[str, Any]]
    backend: str
    hardware: str
    replaced: int
    """Earlier results dropped because a later report measured the same key."""


def measurement_key(result: Mapping[str, Any]) -> tuple[str, str, str]:
    """(model, profile, request label): what one row of the detail table measured."""
    return model_of(result), str(result.get("profile", "")), str(result.get("label") or "")


def merged(paths: Sequence[Path]) -> Merged:
    """All ``paths`` together, a later report's result replacing an earlier one of the same
    ``measurement_key``.

    Raises ReportError when a file is unreadable or its backend or hardware key differs
    from the first report's.
    """
    if not paths:
        raise ReportError("no JSON report given")
    results: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    replaced = 0
    skips: list[Mapping[str, Any]] = []
    first: tuple[str, str] | None = None
    summary = ""
    for path in paths:
        data = _read(path)
        kind = (str(data["backend"].get("name")), str(data["hardware"].get("key")))
        if first is None:
            first, summary = kind, str(data["hardware"].get("summary", ""))
        elif kind != first:
            raise ReportError(f"{path}: backend {kind[0]!r} on hardware key {kind[1]!r}, but "
                              f"{paths[0]} is backend {first[0]!r} on {first[1]!r}: one table "
                              "compares profiles on one backend and one machine kind")
        for result in data["results"]:
            key = measurement_key(result)
            replaced += key in results
            results.pop(key, None)  # re-inserted last: the table keeps the later run's order
            results[key] = result
        skips += [s for s in data.get("skipped", []) if isinstance(s, dict)]
    assert first is not None
    return Merged(list(results.values()), skips, first[0], summary, replaced)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 for a refused report)."""
    from pytest_omni_perf.atomic_files import write_atomic
    from pytest_omni_perf.report.markdown import support_markdown

    parser = argparse.ArgumentParser(prog="python -m pytest_omni_perf.support_table",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="--omni-report-json files")
    parser.add_argument("-o", "--output", type=Path,
                        help="write the Markdown here (atomically) instead of printing it")
    args = parser.parse_args(argv)
    try:
        table = merged(args.reports)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = support_markdown(table.results, table.skips, backend=table.backend,
                            hardware=table.hardware)
    if table.replaced:
        print(f"{table.replaced} measurement(s) of an earlier report replaced by a later "
              "report's (same model, profile and request)", file=sys.stderr)
    if args.output is None:
        print(text)
    else:
        write_atomic(args.output, text)
        print(f"support table of {len(args.reports)} reports written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
