"""Case files as pytest nodes: a ``CaseFile`` per ``--omni-cases`` file, a ``CaseItem`` per
row, entry and concurrency level (``test_name[entry]``, ``test_name[entry-c2]`` in a sweep).

An item starts (or reuses, through the session's engine pool) the row's server on the
``omni-server`` backend, runs the entry's load (``load.run_load``) and judges each bound of
the entry's baseline for this hardware on its metric's confidence interval
(``load_verdict``): it fails when a request failed or a bound's whole interval is on the
wrong side, and is INCONCLUSIVE (``--omni-inconclusive`` decides) when an interval
straddles a bound or cannot reach it yet. Its measurements and verdicts travel as
``user_properties`` (so they reach the controller under xdist, and the JSON and HTML
reports), and the terminal summary prints them with every note.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_omni_perf.cases.reader import (
    NEGATIVE_PROMPT, CaseEntry, CaseError, model_for, passthrough_argv, read_case_file,
)
from pytest_omni_perf.engines.server_command import SHIPPED_SERVER
from pytest_omni_perf.load_runs import CASE_PROPERTY

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from pytest_omni_perf.cases.load import LoadPlan
    from pytest_omni_perf.engines.engine_pool import LiveEngine


class CaseFile(pytest.File):
    """A vLLM-Omni perf case file given with ``--omni-cases``."""

    def collect(self) -> Iterable[pytest.Item]:
        for entry in read_case_file(self.path):
            request_of(entry, "", entry.steps)  # CaseError now, not when the item runs
            item = CaseItem.from_parent(self, name=entry.item_name, entry=entry)
            for mark in _marks(self.config, entry):
                item.add_marker(mark)
            yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: TracebackStyle | None = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, CaseError):
            return str(excinfo.value)  # the message names file, row and field: no traceback
        return super().repr_failure(excinfo)


def _marks(config: pytest.Config, entry: CaseEntry) -> Iterator[pytest.MarkDecorator]:
    """The row's marks, registered (so --strict-markers passes), and what decides skipping.

    Hardware marks select, as in vLLM-Omni's CI (``-m "H100 and cards_2"``); they do not
    skip, so a row can run on a small model elsewhere. GPUs are required by the options'
    parallel degrees (``requires_gpus``, from which the plugin adds the one ``cards_<n>``);
    without such a requirement the row's ``num_cards`` becomes ``cards_<n>`` directly.
    """
    from pytest_omni_perf.canonical import world_size

    for name in entry.marks:
        config.addinivalue_line("markers", f"{name}: from vLLM-Omni perf case files")
        yield getattr(pytest.mark, name)
    needed = max(world_size(entry.options), entry.cards or 0)
    if world_size(entry.options) > 1:
        yield pytest.mark.requires_gpus(needed)
    elif entry.cards:
        from pytest_omni_perf.markers import CARDS_DOC

        config.addinivalue_line("markers", CARDS_DOC.format(n=entry.cards))
        yield getattr(pytest.mark, f"cards_{entry.cards}")
    if entry.skip:
        yield pytest.mark.skip(reason=entry.skip)


class CaseItem(pytest.Item):
    """One load at one concurrency level, checked against the entry's baseline."""

    def __init__(self, *, entry: CaseEntry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.entry.where}, concurrency {self.entry.concurrency}"

    def runtest(self) -> None:
        from pytest_omni_perf.cases.bounds import bounds_for
        from pytest_omni_perf.cases.load import host_monitor, run_load
        from pytest_omni_perf.cases.load_verdict import judged_level
        from pytest_omni_perf.outcomes import settle
        from pytest_omni_perf.state import state_key

        state = self.config.stash[state_key]
        entry = self.entry
        model = model_for(entry, state.perf.cases_model)
        notes = [] if model == entry.model else [
            f"model {model} served instead of the file's {entry.model} (--omni-cases-model)"]
        url, server, devices_note = self._server(state, model)
        notes += devices_note
        hw = state.hardware
        bounds, bound_notes = bounds_for(entry.baseline, entry.level,
                                         [g.name for g in hw.gpus], hw.key)
        plan = _plan(entry, state.perf.request_timeout_s)
        result, judged, run_notes = judged_level(
            lambda first: run_load(url, plan if first else plan.again(),
                                   host_monitor(server, hw)), bounds,
            confidence=state.perf.confidence, retry=state.perf.inconclusive == "retry")
        measured = result.metrics()
        notes += bound_notes + run_notes + judged.notes
        if not entry.baseline:
            notes.append("no baseline in the entry: measured only")
        self.user_properties.append((CASE_PROPERTY, {
            "file": str(entry.source), "row": entry.row, "entry": entry.entry,
            "concurrency": entry.concurrency, "model": model, "measured": measured,
            "bounds": [b.field for b in bounds],
            "verdict": "fail" if result.failed else judged.verdict,
            "verdicts": [v.to_dict() for v in judged.verdicts], "notes": notes,
            "host": result.host}))
        if result.failed:
            pytest.fail(f"{entry.where}, concurrency {entry.concurrency}: {result.failed} of "
                        f"{result.failed + result.completed} requests failed; first: "
                        f"{result.first_error()}", pytrace=False)
        where = f"{entry.where}, concurrency {entry.concurrency}, hardware {hw.key!r}:"

        def under_where(lines: list[str]) -> list[str]:
            return [where, *(f"  {line}" for line in lines)] if lines else []

        settle(self, under_where(judged.violations), under_where(judged.undecided),
               "on the load's requests")

    def _server(self, state: Any, model: str) -> tuple[str, LiveEngine, list[str]]:
        """The base URL of a healthy server for the row (reused across its entries), the
        pool's record of it and notes."""
        from pytest_omni_perf.canonical import world_size
        from pytest_omni_perf.engines.base import EngineError, EngineSpec, ProfileUnsupported
        from pytest_omni_perf.engines.omni_server import OmniServerEngine
        from pytest_omni_perf.gpu_leases import LeaseTimeout
        from pytest_omni_perf.gpu_pool import gpus_needed
        from pytest_omni_perf.omni_perf import engine_outcome

        entry, perf = self.entry, state.perf
        command = perf.server_command
        notes = []
        if SHIPPED_SERVER in command:
            from pytest_omni_perf.engines.omni_server import shipped_server_reason

            if (why := shipped_server_reason(list(entry.passthrough))) is not None:
                # At the case file, not here, as a skip mark's would be.
                raise pytest.skip.Exception(f"serve_args: {why}", _use_item_location=True)
        elif entry.passthrough:
            from pytest_omni_perf.engines.omni_options import check

            failure, note = check(entry.passthrough, online=True, cache_dir=perf.cache_dir)
            if failure is not None:
                pytest.fail(f"{entry.where}: server_params.serve_args: {failure}",
                            pytrace=False)
            notes.append(f"{note}: " + shlex.join(passthrough_argv(entry.passthrough)))
        extra = passthrough_argv(entry.passthrough)
        try:
            devices = state.gpus.devices_for(gpus_needed(world_size(entry.options)),
                                             self.nodeid)
        except LeaseTimeout as exc:
            pytest.fail(f"{self.nodeid}: {exc}", pytrace=False)
        # Named by the server's configuration, so rows asking for the same server share it
        # (the pool keys engines by model, this name, backend and devices).
        config = json.dumps([entry.options, extra], sort_keys=True, default=str)
        spec = EngineSpec(
            model=model, profile_name=f"case-{hashlib.sha1(config.encode()).hexdigest()[:8]}",
            options=entry.options,
            backend="omni-server", devices=devices, start_timeout_s=perf.start_timeout_s,
            request_timeout_s=perf.request_timeout_s,
            server_command=" ".join([command, *map(shlex.quote, extra)]),
            cache_dir=str(perf.cache_dir) if perf.cache_dir else "",
            lease_fds=state.gpus.lease_fds)
        try:
            record = state.pool.get(spec)
        except (ProfileUnsupported, EngineError) as exc:
            error: BaseException = exc
        else:
            if not isinstance(record.engine, OmniServerEngine):
                pytest.fail(f"the omni-server backend made a {type(record.engine).__name__}, "
                            "which has no URL to send load to", pytrace=False)
            return record.engine.url, record, notes
        engine_outcome(error)


def _plan(entry: CaseEntry, timeout_s: float) -> LoadPlan:
    from pytest_omni_perf.cases.load import LoadPlan, random_prompts

    def requests(count: int, steps: int, seed: int) -> list[Any]:
        return [request_of(entry, prompt, steps) for prompt in random_prompts(count, seed)]

    return LoadPlan(
        requests=requests(entry.num_prompts, entry.steps, entry.seed),
        concurrency=entry.concurrency, request_rate=entry.request_rate,
        warmup=requests(entry.warmup_requests, entry.warmup_steps, entry.seed + 1),
        warmup_concurrency=entry.warmup_concurrency, fps=entry.fps or 16,
        seed=entry.seed, timeout_s=timeout_s)


def request_of(entry: CaseEntry, prompt: str, steps: int) -> Any:
    """One request of the entry. ``extra-body`` keys that name a request field (seed,
    guidance_scale, true_cfg_scale, ...) become that field; the rest stay extra_body, which
    the wire merges into the body as vLLM-Omni's benchmark client does. CaseError (naming
    the entry) for a value the request refuses."""
    import dataclasses

    from pytest_omni_perf.cases.load import random_input_image
    from pytest_omni_perf.engines.base import GenerationRequest, RequestError

    own = {f.name for f in dataclasses.fields(GenerationRequest)} - {"prompt", "extra_body"}
    fields = {k: v for k, v in entry.extra_body.items() if k in own}
    extra = {k: v for k, v in entry.extra_body.items() if k not in own}
    fields = {"width": entry.width, "height": entry.height, "seed": entry.seed,
              "num_frames": entry.num_frames if entry.is_video else None,
              "fps": entry.fps if entry.is_video else None,
              "negative_prompt": NEGATIVE_PROMPT if entry.negative_prompt else None,
              "images": (random_input_image(),) * entry.input_images, **fields}
    try:
        return GenerationRequest(prompt=prompt, num_inference_steps=steps, extra_body=extra,
                                 **fields)
    except RequestError as exc:
        raise CaseError(f"{entry.where}.extra-body: {exc}") from None


def _state_key() -> Any:
    from pytest_omni_perf.state import state_key

    return state_key


def summary_lines(reports: Iterable[pytest.TestReport]) -> list[str]:
    """One line per measured case item (throughput, latency, memory), a line per bound
    (PASS, FAIL or INCONCLUSIVE with its interval) and its notes."""
    from pytest_omni_perf.cases.load_verdict import verdict_lines
    from pytest_omni_perf.outcomes import OUTCOME_PROPERTY as OUTCOME

    lines = []
    for report in reports:
        for name, value in report.user_properties:
            if name != CASE_PROPERTY or not isinstance(value, dict):
                continue
            m = value["measured"]

            def show(key: str, unit: str) -> str:
                number = m.get(key)
                return "-" if number is None else f"{number:.4g}{unit}"

            outcome = "inconclusive" if (OUTCOME, "inconclusive") in report.user_properties \
                else report.outcome
            lines.append(f"{report.nodeid} [{outcome}] c={value['concurrency']}: "
                         f"{show('throughput_qps', ' req/s')}, "
                         f"latency mean {show('latency_mean', ' s')} "
                         f"p50 {show('latency_p50', ' s')} p95 {show('latency_p95', ' s')} "
                         f"p99 {show('latency_p99', ' s')}, peak "
                         f"{show('peak_memory_mb_max', ' MB')}, "
                         f"{int(m['completed'] or 0)} ok / {int(m['failed'] or 0)} failed")
            lines += verdict_lines(value.get("verdicts") or ())
            lines += [f"    note: {note}" for note in value["notes"]]
    return lines


class CasesPlugin:
    """Registered by ``pytest_configure`` when ``--omni-cases`` (or ini ``omni_cases``) names
    files: collects them and prints what their items measured."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = frozenset(paths)

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector
                            ) -> CaseFile | None:
        """The listed case files, whatever their name (other JSON files stay uncollected)."""
        if file_path.resolve() in self.paths:
            return CaseFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Run the items of one server configuration together (first appearance order), so
        rows and files asking for the same server start it once: the pool keeps one."""
        slots = [i for i, item in enumerate(items) if isinstance(item, CaseItem)]
        cases = [items[i] for i in slots]
        first: dict[str, int] = {}
        for item in cases:
            assert isinstance(item, CaseItem)
            first.setdefault(self._server_key(item), len(first))
        cases.sort(key=lambda item: first[self._server_key(item)])  # stable: file order kept
        for slot, item in zip(slots, cases):
            items[slot] = item

    def _server_key(self, item: pytest.Item) -> str:
        assert isinstance(item, CaseItem)
        state = item.config.stash[_state_key()]
        entry = item.entry
        return json.dumps([model_for(entry, state.perf.cases_model), entry.options,
                           entry.passthrough], sort_keys=True, default=str)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Each case item's load: throughput, latency percentiles, memory, notes."""
        # "inconclusive": the category pytest_report_teststatus files undecided items under.
        reports = [r for key in ("passed", "failed", "inconclusive")
                   for r in terminalreporter.stats.get(key, []) if getattr(r, "when", "") == "call"]
        lines = summary_lines(reports)
        if lines:
            terminalreporter.write_sep("-", "omni-perf cases")
            for line in lines:
                terminalreporter.write_line(line)


def add_case_paths(config: pytest.Config, paths: tuple[Path, ...]) -> None:
    """Make pytest collect the case files: they replace the default arguments (testpaths or
    the current folder) when no path was given, so ``pytest --omni-cases=x.json`` runs the
    cases alone, and join the given paths otherwise."""
    if not paths:
        return
    given = config.args_source == pytest.Config.ArgsSource.ARGS
    args = list(config.args) if given else []
    for path in paths:
        if str(path) not in args:
            args.append(str(path))
    config.args[:] = args
    config.pluginmanager.register(CasesPlugin(paths), "omni-perf-cases")


def header_lines(cases: Sequence[Path], models: Mapping[str, str]) -> list[str]:
    """The report header's line for ``--omni-cases``: case rows run through ``vllm serve
    --omni`` whatever backend the line above names, and their model may be replaced (a GPU
    case run's header named only the default model, tiny-flux, beside medium-flux served)."""
    if not cases:
        return []
    served = ", ".join(f"{task}: {model}" for task, model in models.items()) or \
        "each row's own"
    return [f"omni-perf: {len(cases)} case file(s) (--omni-cases), each row through its own "
            f"`vllm serve --omni`; model served: {served}"]
