"""One support table from several runs' JSON reports.

    python -m pytest_omni_perf.support_table REPORT.json [REPORT.json ...] [-o TABLE.md]

A model's profiles do not always fit one session (a GPU call of limited length, profiles
split between machines of one kind): each run writes its own ``--omni-report-json``, and
this command merges their results and skip records into the Markdown page that
``--omni-report-markdown`` writes for one run (``report.markdown.support_markdown``).
Reports must share the backend and the hardware key, since a table compares profiles on one
machine kind; a report of another kind, an unreadable file or one that is not a
pytest-omni-perf report is refused with its path named (exit status 2), never skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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


def merged(paths: Sequence[Path]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]],
                                           str, str]:
    """(results, skip records, backend name, hardware summary) of all ``paths`` together.

    Raises ReportError when a file is unreadable or its backend or hardware key differs
    from the first report's.
    """
    if not paths:
        raise ReportError("no JSON report given")
    results: list[Mapping[str, Any]] = []
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
        results += data["results"]
        skips += [s for s in data.get("skipped", []) if isinstance(s, dict)]
    assert first is not None
    return results, skips, first[0], summary


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
        results, skips, backend, hardware = merged(args.reports)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = support_markdown(results, skips, backend=backend, hardware=hardware)
    if args.output is None:
        print(text)
    else:
        write_atomic(args.output, text)
        print(f"support table of {len(args.reports)} reports written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
