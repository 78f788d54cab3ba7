"""Live progress lines (engine starts, first requests) that keep pytest's own output whole.

pytest writes a file's progress letters on one line (``test_x.py ..``) and, with ``-v``, a
test's id before its outcome. A plain ``write_line`` in between leaves the letter alone on
the next line. As pytest's live logging does, the message goes on its own line, and the
line pytest was writing is started again before pytest writes to it: in the default mode by
``write_fspath_result`` (the file name, then the letter), with ``-v`` by pytest itself
(its ``write_ensure_prefix`` writes the test id again when another line came between).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest


class ProgressWriter:
    """Writes ``omni-perf: <message>`` lines; registered as a plugin for its hook."""

    def __init__(self, config: pytest.Config) -> None:
        plugins = config.pluginmanager
        self._reporter: Any = plugins.get_plugin("terminalreporter")
        self._capture: Any = plugins.get_plugin("capturemanager")
        self._verbosity = config.get_verbosity()
        self._open = False
        """A message is written without its newline: pytest's next write must end it."""

    def __call__(self, message: str) -> None:
        if self._reporter is None or self._verbosity < 0:
            return
        with self._uncaptured():
            if self._open:
                self._reporter.write("\n")
            else:
                self._reporter.ensure_newline()
            self._reporter.write(f"omni-perf: {message}", flush=True)
            self._open = True

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[None]:
        # Live, past output capture, so a user sees what a long start waits for.
        if self._capture is None:
            yield
            return
        with self._capture.global_and_fixture_disabled():
            yield

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before pytest writes this report's letter or word, start its line again."""
        if not self._open or self._reporter is None:
            return
        shows = report.when == "call" or not report.passed
        if self._verbosity > 0:
            # write_ensure_prefix ends our line and writes the test id again.
            self._open = not shows and report.when != "teardown"
        elif shows:
            self._reporter.write_fspath_result(report.nodeid, "")
            self._open = False
        if self._open and report.when == "teardown":
            self._reporter.write("\n")
            self._open = False
