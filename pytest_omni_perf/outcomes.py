"""What a measured test turns into: its outcome, its published results, the session's reports.

Registered by ``plugin.pytest_configure``. A failed gate fails the test; a gate left
undecided at the round budget marks it INCONCLUSIVE (or fails it, by
``--omni-inconclusive``); each result travels in ``user_properties`` (through xdist, into
JUnit XML) to the controller, which writes the JSON, HTML and pytest-benchmark reports.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.load_runs import CASE_PROPERTY, LOAD_PROPERTY
from pytest_omni_perf.state import SessionState, harness_key, state_key

USER_PROPERTY = "omni_perf"
SKIP_PROPERTY = "omni_perf_skip"
"""user_properties entry of a skipped perf test: {nodeid, profile, model, reason}."""
OUTCOME_PROPERTY = "omni_perf_outcome"
"""user_properties entry ('omni_perf_outcome', 'inconclusive') that marks an undecided test;
it travels with the report through xdist and into JUnit XML as a property."""
INCONCLUSIVE_LETTER = "?"
"""An inconclusive test's mark in pytest's progress line (the summary says what it means)."""
UNDECIDED_PROPERTY = "omni_perf_undecided"
"""user_properties entry of a test left inconclusive under ``--omni-inconclusive=warn``:
which gates were undecided and why, shown in the terminal summary (and JUnit XML)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After the test body: publish its measurements; fail it on violated gates, and on
    gates left undecided when ``--omni-inconclusive`` is fail or retry."""
    try:
        yield
    finally:
        harnesses = item.stash.get(harness_key, [])
        results = [r for h in harnesses for r in h.results]
        for result in results:
            item.user_properties.extend(ResultCollector.publish(item.config, result))
        loads = [load for h in harnesses for load in h.loads]
        for load in loads:
            item.user_properties.append((LOAD_PROPERTY, load.to_dict()))

    def lines(kind: str) -> list[str]:
        return [f"[{r.profile}{'@' + r.label if r.label else ''}] {v}"
                for r in results for v in getattr(r, kind)]

    def load_lines(kind: str) -> list[str]:
        return [f"[{load.profile}{'@' + load.label if load.label else ''} load] {v}"
                for load in loads for v in getattr(load, kind)]

    undecided = lines("undecided")
    settle(item, lines("violations") + load_lines("violations"),
           undecided + load_lines("undecided"),
           "at the round budget" if undecided else "on the load's requests")


def settle(item: pytest.Item, failures: list[str], undecided: list[str], where: str) -> None:
    """The outcome of a test's gates, for measured tests and case items alike: fail on
    ``failures``; with gates ``undecided`` mark the test inconclusive (the property the
    terminal, JSON, HTML and JUnit read) and fail, or (``warn``) keep why for the terminal
    summary, as ``--omni-inconclusive`` says. ``where``: when they were left undecided
    (``at the round budget``)."""
    policy = item.config.stash[state_key].perf.inconclusive
    if undecided:
        item.user_properties.append((OUTCOME_PROPERTY, "inconclusive"))
    if failures:
        pytest.fail("omni-perf gate(s) failed:\n" + "\n".join(failures), pytrace=False)
    if undecided and policy != "warn":
        pytest.fail(f"omni-perf gate(s) inconclusive {where} "
                    f"(--omni-inconclusive={policy}):\n" + "\n".join(undecided), pytrace=False)
    if undecided:
        # Counted once, as its own outcome: a PytestWarning as well made the final line read
        # "26 passed, 14 inconclusive, 14 warnings" (and an error under -W error). The why
        # goes to the terminal summary's "omni-perf inconclusive" section instead.
        item.user_properties.append((UNDECIDED_PROPERTY, f"gate(s) inconclusive {where}:\n"
                                     + "\n".join(undecided)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skipped perf test carries its profile, model and reason to the controller (the
    support table tells "unsupported by the model" from "not runnable here")."""
    report = yield
    if report.skipped:
        from pytest_omni_perf.markers import model_of

        callspec = getattr(item, "callspec", None)
        profile = callspec.params.get("omni_profile") if callspec is not None else None
        if isinstance(profile, str):
            longrepr = report.longrepr
            reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
            model = model_of(item, item.config.stash[state_key].perf.model)
            report.user_properties.append((SKIP_PROPERTY, {
                "nodeid": item.nodeid, "profile": profile, "model": model,
                "reason": reason.removeprefix("Skipped: ")}))
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    """A passed test with a gate left undecided is reported INCONCLUSIVE ('?'), and the
    final line counts it (``3 passed, 1 inconclusive``); it does not fail the run."""
    if report.when == "call" and report.passed \
            and (OUTCOME_PROPERTY, "inconclusive") in report.user_properties:
        return "inconclusive", INCONCLUSIVE_LETTER, ("INCONCLUSIVE", {"yellow": True})
    return None


class ResultCollector:
    """Collects measurements from test reports: this process's and, under xdist, the
    workers' (user_properties travel with the serialized report to the controller), and
    writes the JSON, HTML and pytest-benchmark reports on the controller at session end."""

    def __init__(self, state: SessionState) -> None:
        self.state = state
        self.processes: dict[str, dict[str, Any]] = {}
        self.written: list[str] = []
        self.inconclusive: list[tuple[str, str]] = []
        """(nodeid, why) of each test reported INCONCLUSIVE, in the order they finished."""

    @staticmethod
    def _path(config: pytest.Config, path: Path | None) -> Path | None:
        # Against the invocation folder, so workers and controller agree on one file.
        return None if path is None else config.invocation_params.dir / path

    @staticmethod
    def publish(config: pytest.Config, result: Any) -> list[tuple[str, object]]:
        """The user_properties of one result: the full dict (with the paths of its
        thumbnails when an HTML report is asked for) and flat values for JUnit XML."""
        from pytest_omni_perf.report.json_report import junit_properties

        published = result.to_dict()
        html = ResultCollector._path(config, config.stash[state_key].perf.report_html)
        if html is not None:
            from pytest_omni_perf.report.images import write_result_images

            published["images"] = write_result_images(result, html)
        return [(USER_PROPERTY, published), *junit_properties(published)]

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Controller: drop the previous session's thumbnails before any worker writes."""
        html = self._path(session.config, self.state.perf.report_html)
        if html is not None and not hasattr(session.config, "workerinput"):
            from pytest_omni_perf.report.images import reset_assets

            reset_assets(html)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: keep each worker's engine facts for the report."""
        facts = getattr(node, "workeroutput", {}).get(USER_PROPERTY)
        if isinstance(facts, dict):
            self.processes[str(node.gateway.id)] = facts

    # tryfirst: before xdist's own sessionfinish, which tears its workers down for seconds;
    # a Ctrl-C or SIGTERM landing there would otherwise end the run before any report.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Workers hand their engine facts over; the controller writes the reports."""
        config = session.config
        facts = self.state.engine_facts()
        if hasattr(config, "workerinput"):
            config.workeroutput[USER_PROPERTY] = facts  # type: ignore[attr-defined]
            return
        if facts["engine_starts"] or not self.processes:
            self.processes["main"] = facts
        from pytest_omni_perf.history.session import record as record_history

        # Before the reports, which show each result's trend.
        self.written = record_history(config, self.state)
        perf = self.state.perf
        paths = [self._path(config, p) for p in (perf.report_json, perf.report_html,
                                                   perf.report_benchmark)]
        markdown = self._path(config, perf.report_markdown)
        if markdown is not None:
            from pytest_omni_perf.report.json_report import write_markdown

            self.written.append(write_markdown(markdown, self.state))
        if not any(paths):
            return
        from pytest_omni_perf.report.json_report import write_reports

        self.written += write_reports(config, self.state, self.processes, *paths)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep the omni_perf results of each finished test call, and skip records."""
        for name, value in report.user_properties:
            if name == SKIP_PROPERTY and isinstance(value, dict):
                self.state.skipped.append(value)
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == UNDECIDED_PROPERTY and report.passed:
                self.inconclusive.append((report.nodeid, str(value)))
            elif name == USER_PROPERTY and isinstance(value, dict):
                self.state.reported.append({**value, "outcome": report.outcome})
            elif name == LOAD_PROPERTY and isinstance(value, dict):
                self.state.loads.append({**value, "outcome": report.outcome})
            elif name == CASE_PROPERTY and isinstance(value, dict):
                self.state.cases.append({**value, "nodeid": report.nodeid,
                                         "outcome": report.outcome})

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """The summary table: test, profile, median, speedup, memory, SSIM, verdict."""
        from pytest_omni_perf.report.terminal import (
            write_recommendations, write_suite_cost, write_summary,
        )

        if self.state.reported:
            write_summary(terminalreporter, self.state.reported)
            write_suite_cost(terminalreporter, self.state.reported, self.processes)
            write_recommendations(terminalreporter, self.state.reported,
                                  self.state.profiles, self.state.perf.ssim_budget)
        if self.state.loads:
            from pytest_omni_perf.load_runs import summary_lines

            terminalreporter.write_sep("-", "omni-perf loads")
            for line in summary_lines(self.state.loads):
                terminalreporter.write_line(line)
        for line in self.written:
            terminalreporter.write_line(f"omni-perf: {line}")
        if self.inconclusive:
            write_inconclusive(terminalreporter, self.inconclusive)


def write_inconclusive(terminalreporter: pytest.TerminalReporter,
                       found: list[tuple[str, str]]) -> None:
    """One entry per INCONCLUSIVE test, last before pytest's own short summary: its node id
    and every undecided gate with why (``INCONCLUSIVE t.py::test_x[fp8]: gate(s)
    inconclusive at the round budget:`` then the gates, indented). Without ``-v`` the
    section starts with what the ``?`` these tests got in the progress line means."""
    from pytest_omni_perf.escape import terminal_text

    terminalreporter.write_sep("-", "omni-perf inconclusive (not failed: "
                               "--omni-inconclusive=warn)")
    if terminalreporter.config.get_verbosity() <= 0:
        # pytest has no legend for a plugin's letter, and a newcomer could not tell what
        # "..?.." meant; -v writes the word INCONCLUSIVE instead, which needs none.
        # Not only "straddled": a newcomer's busy run held back passes and failures for the
        # load, and a refresh on a busy host kept the stored baseline; each says why below.
        terminalreporter.write_line(f"{INCONCLUSIVE_LETTER} in the progress line = "
                                    "INCONCLUSIVE: a gate was left undecided (its interval "
                                    "still straddled its bound when measuring stopped, or "
                                    "the host was busy); why, test by test, below")
    for nodeid, why in found:
        first, *rest = why.splitlines() or [""]
        terminalreporter.write_line(terminal_text(f"INCONCLUSIVE {nodeid}: {first}"))
        for line in rest:
            terminalreporter.write_line(terminal_text(f"  {line}"))
