"""pytest-omni-perf's hooks and fixtures: options, markers and wiring only.

The logic lives in pure modules (markers, profiles, harness, judge, verdict); the hooks stay
thin. What a measured test turns into (its outcome and the session's reports) is in
``outcomes``, registered from ``pytest_configure``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pytest_omni_perf import config as config_mod
from pytest_omni_perf import markers, sigterm
from pytest_omni_perf.engines.base import (
    Engine, EngineError, EngineSpec, ProfileUnsupported,
)
from pytest_omni_perf.gpu_leases import LeaseTimeout
from pytest_omni_perf.gpu_pool import gpus_needed
from pytest_omni_perf.plugin_options import add_options
from pytest_omni_perf.profiles import Profile, ProfileError, load_all
from pytest_omni_perf.server_urls import url_for
from pytest_omni_perf.state import SessionState, harness_key, state_key

if TYPE_CHECKING:
    from pytest_omni_perf.omni_perf import OmniPerf

_PERF_FIXTURES = ("omni_profile", "omni_engine", "omni_perf")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register pytest-omni-perf's own hooks (engine factory, hardware probe)."""
    from pytest_omni_perf import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the --omni-* options and their ini keys."""
    add_options(parser)


def _load_profiles(config: pytest.Config, perf: config_mod.PerfConfig) -> dict[str, Profile]:
    try:
        return load_all(perf.profile_files)
    except ProfileError as exc:
        raise pytest.UsageError(f"omni_profile_files: {exc}") from None


def _check_profile_names(names: tuple[str, ...], profiles: dict[str, Profile],
                         option: str) -> None:
    unknown = [n for n in names if n != "all" and n not in profiles]
    if unknown:
        # A typo (cache_ditt, fp9) is the usual cause: each name gets its nearest profiles
        # before the full list, which is long enough to hide them.
        named = ", ".join(n + (f" (did you mean {', '.join(map(repr, close))}?)" if (
            close := difflib.get_close_matches(n, [*profiles, "all"])) else "") for n in unknown)
        raise pytest.UsageError(
            f"{option}: unknown profile(s) {named}. Known profiles: "
            f"{', '.join(sorted(profiles))} (or 'all'; see pytest --omni-list-profiles)")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--omni-list-profiles[=json]``: print every profile and exit."""
    fmt = config.getoption("omni_list_profiles")
    if fmt is None:
        return None
    perf = config_mod.read_config(config)
    profiles = _load_profiles(config, perf)
    described = {name: p.describe() for name, p in sorted(profiles.items())}
    if fmt == "json":
        print(json.dumps(described, indent=2, sort_keys=True))
        return 0
    from pytest_omni_perf.report.listing import format_profiles

    print(format_profiles(profiles))
    return 0


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register markers, validate options and profiles, and set up session state."""
    for doc in markers.MARKER_DOCS.values():
        config.addinivalue_line("markers", doc)
    for n in (1, 2, 4, 8):
        config.addinivalue_line("markers", markers.CARDS_DOC.format(n=n))
    perf = config_mod.read_config(config)
    profiles = _load_profiles(config, perf)
    _check_profile_names(tuple(perf.server_urls), profiles, "--omni-server-url")
    _check_profile_names(perf.profile_names, profiles, "--omni-profile")
    state = SessionState(config, perf, profiles)
    config.stash[state_key] = state
    from pytest_omni_perf.history import session as history_session

    history_session.check(config, state)  # and wires state.history_source
    from pytest_omni_perf import outcomes

    config.pluginmanager.register(outcomes, "omni-perf-outcomes")
    config.pluginmanager.register(outcomes.ResultCollector(state), "omni-perf-results")
    if perf.cases:
        from pytest_omni_perf.case_items import add_case_paths

        add_case_paths(config, perf.cases)
    sigterm.interrupt_on_sigterm(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Probe the hardware before any test (the header does, but -q prints none): a machine
    the plugin refuses (a MIG slice) stops the run with one usage error, not one per test."""
    if not hasattr(session.config, "workerinput"):  # xdist's controller checked it already
        session.config.stash[state_key].hardware  # noqa: B018 - probes; may raise UsageError


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop every engine this process started."""
    state = config.stash.get(state_key, None)
    if state is not None:
        state.close()
    sigterm.restore(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Backend choice and hardware, so a reader knows what the numbers are of."""
    state = config.stash[state_key]
    backend, why = state.backend
    perf = state.perf
    lines = [f"omni-perf: backend {backend} ({why}); default model {perf.model} "
             "(omni_model marks choose others); "
             f"{perf.warmup} warmup, then {perf.rounds} rounds and more up to "
             f"{perf.max_rounds} or {perf.max_seconds:g} s until each gate's "
             f"{perf.confidence:.0%} interval clears its bound (undecided: "
             f"{perf.inconclusive})",
             f"omni-perf: {state.hardware.summary()}"]
    if perf.cases:
        from pytest_omni_perf.case_items import header_lines

        lines += header_lines(perf.cases, perf.cases_model)
    return lines



# -- collection -------------------------------------------------------------------------------
def _selected_profiles(state: SessionState, marked: tuple[str, ...] | None) -> tuple[str, ...]:
    chosen = state.perf.profile_names
    if "all" in chosen:
        chosen = tuple(sorted(state.profiles))
    if not chosen:
        return marked or ("eager",)
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Check marker arguments; parametrize perf tests over the selected profiles."""
    state = metafunc.config.stash[state_key]
    try:
        marked = markers.profiles_from_marks(metafunc.definition.iter_markers("omni_profiles"),
                                             state.profiles)
    except markers.MarkerArgumentError:
        marked = None  # reported with every other bad mark of the run, after collection
    if not any(name in metafunc.fixturenames for name in _PERF_FIXTURES):
        return
    params = []
    for name in _selected_profiles(state, marked):
        profile = state.profiles[name]
        marks: list[pytest.MarkDecorator] = []
        if marked is not None and name not in marked:
            # One text for every left-out profile, so pytest -rs folds a test's skips into
            # one line (the count and the test's location say the rest).
            marks.append(pytest.mark.skip(reason=(
                f"omni_profiles({', '.join(marked)}) leaves this profile out")))
        req = profile.requires
        if req.gpus:
            marks.append(pytest.mark.requires_gpus(req.gpus))
        if req.sm:
            marks.append(pytest.mark.requires_sm(f"{req.sm[0]}.{req.sm[1]}"))
        if req.vram_gib:
            marks.append(pytest.mark.requires_vram(req.vram_gib))
        params.append(pytest.param(name, marks=marks, id=name))
    # Session scope groups tests by profile, so each engine starts once per session.
    metafunc.parametrize("omni_profile", params, indirect=True, scope="session")


def _report_bad_marks(config: pytest.Config, items: list[pytest.Item]) -> set[str]:
    """Check every test's marks; all problems of the run become one collection error.

    Checked here rather than in pytest_generate_tests, where the first bad mark would fail
    its whole module (and hide the bad marks of every later test). Returns the bad items.
    """
    state = config.stash[state_key]
    problems: dict[str, list[str]] = {}
    bad = set()
    for item in items:
        found = markers.marker_problems(item.iter_markers(), state.profiles)
        if found:
            bad.add(item.nodeid)
            # Parametrized copies share their function's marks: report the function once.
            problems.setdefault(item.nodeid.split("[")[0], found)
    if problems:
        # A failed collect report, as a module that fails to import gives: pytest shows it
        # under ERRORS, counts it, and stops before running anything; xdist forwards it.
        report = pytest.CollectReport(nodeid="", outcome="failed", result=[],
                                      longrepr=markers.collection_error(problems))
        config.hook.pytest_collectreport(report=report)
    return bad


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests needing n GPUs ``cards_<n>`` (before ``-m`` deselects), and add a skip
    mark to those whose requires_* markers or profile requirements this machine misses."""
    state = config.stash[state_key]
    for item in items:
        try:
            req = markers.requirements_from_marks(item.iter_markers())
        except markers.MarkerArgumentError:
            continue  # reported after deselection, by pytest_collection_modifyitems_marks
        if (name := markers.cards_marker(req)) is not None:
            config.addinivalue_line("markers", markers.CARDS_DOC.format(n=req.gpus))
            item.add_marker(name)
        if req.gpus or req.sm or req.vram_gib:
            # A skip *mark* (not pytest.skip at setup) lets pytest report the test's own
            # location, and the test is skipped before any fixture starts an engine. The
            # reason names no test, so pytest -rs folds the skips of one test function.
            if (reason := markers.skip_reason(req, state.hardware)) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


# trylast: after ``-k`` and ``-m`` deselected, so a bad mark on a test the user left out
# stops nothing (as pytest's own skipif conditions are only read for tests that run).
@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_marks(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check the marker arguments of the selected tests: one collection error for all."""
    bad = _report_bad_marks(config, items)
    # Without xdist the error stops the run before any test; xdist runs the rest (as for a
    # module that fails to import), so tests with bad marks must not run there either.
    items[:] = [item for item in items if item.nodeid not in bad]


def _engine_use(state: SessionState, item: pytest.Item) -> tuple[str, str, str | None] | None:
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("omni_profile") if callspec is not None else None
    if not isinstance(name, str) or name not in state.profiles:
        return None
    model = markers.model_of(item, state.perf.model)
    return model, name, state.profiles[name].baseline


# trylast: after pytest's own reorder_items (by session-scoped parameter: the profile).
# (Named pytest_* because pytest only reads hook implementations of that prefix.)
@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_for_engine_reuse(config: pytest.Config,
                                                   items: list[pytest.Item]) -> None:
    """Run each model's tests together, so an engine starts once per profile and model."""
    from pytest_omni_perf.ordering import by_model, expected_starts

    state = config.stash[state_key]
    # Tests skipped by a mark start no engine: they count in neither order.
    running = [i for i in items if i.get_closest_marker("skip") is None]
    before = [u for u in (_engine_use(state, i) for i in running) if u is not None]
    items[:] = by_model(items, lambda i: _engine_use(state, i))
    running = [i for i in items if i.get_closest_marker("skip") is None]
    after = [u for u in (_engine_use(state, i) for i in running) if u is not None]
    state.starts_saved_by_order = expected_starts(before) - expected_starts(after)


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def omni_profile(request: pytest.FixtureRequest) -> Profile:
    """The active optimization ``Profile`` (tests are parametrized over --omni-profile)."""
    state = request.config.stash[state_key]
    name = getattr(request, "param", None) or "eager"
    return state.profiles[name]


def _model_of(request: pytest.FixtureRequest, state: SessionState) -> str:
    return markers.model_of(request.node, state.perf.model)


def _spec(state: SessionState, profile: Profile, model: str,
          leased: tuple[int, ...]) -> EngineSpec:
    perf = state.perf
    return EngineSpec(
        model=model, profile_name=profile.name, options=profile.options,
        backend=state.backend[0],
        # The first leased GPUs, as many as the profile spans: the 1-GPU baseline of a
        # 2-GPU profile runs on the first GPU of the test's lease.
        devices=leased[:gpus_needed(profile.requires.gpus)], in_process=perf.in_process,
        launch=perf.engine_launch, start_timeout_s=perf.start_timeout_s,
        request_timeout_s=perf.request_timeout_s,
        server_command=perf.server_command, server_url=url_for(perf.server_urls, profile.name),
        cache_dir=str(perf.cache_dir) if perf.cache_dir else "",
        lease_fds=state.gpus.lease_fds,
    )


@pytest.fixture
def _omni_gpu_lease(request: pytest.FixtureRequest,
                    omni_profile: Profile) -> Iterator[tuple[int, ...]]:
    """Physical GPUs this test holds for its engines (``()`` without GPUs).

    As many as the test's profile, its baseline profile or its ``requires_gpus`` marker
    ask for; machine-wide locks keep other xdist workers and pytest sessions off them. The
    lease outlives the test while its engines stay warm for the next one; it is given back
    when a later test needs another count or another process waits for these GPUs.
    """
    state = request.config.stash[state_key]
    baseline = state.profiles.get(omni_profile.baseline or "")
    wanted = gpus_needed(markers.requirements_from_marks(request.node.iter_markers()).gpus,
                         omni_profile.requires.gpus,
                         baseline.requires.gpus if baseline is not None else 0)
    try:
        devices = state.gpus.devices_for(wanted, request.node.nodeid)
    except LeaseTimeout as exc:
        pytest.fail(f"{request.node.nodeid}: {exc}", pytrace=False)
    try:
        yield devices
    finally:
        state.gpus.after_test()


@pytest.fixture
def omni_engine(request: pytest.FixtureRequest, omni_profile: Profile,
                _omni_gpu_lease: tuple[int, ...]) -> Engine:
    """A started engine for (model, profile, backend), reused across tests of the session.

    At most one live engine per GPU set: asking for another stops the previous one. Runs
    on GPUs leased to the test (``CUDA_VISIBLE_DEVICES`` names them).
    """
    state = request.config.stash[state_key]
    try:
        spec = _spec(state, omni_profile, _model_of(request, state), _omni_gpu_lease)
        return state.pool.get(spec).engine
    except (ProfileUnsupported, EngineError) as exc:
        error = exc
    # Outside the except block: a skip/fail raised inside it would chain the engine error
    # (and its own cause), and pytest prints each chained message again.
    from pytest_omni_perf.omni_perf import engine_outcome

    engine_outcome(error)


@pytest.fixture
def omni_perf(request: pytest.FixtureRequest, omni_profile: Profile,
              _omni_gpu_lease: tuple[int, ...]) -> OmniPerf:
    """The measuring harness, an ``OmniPerf``: ``result = omni_perf.measure(prompt=...)``.

    Runs warmup and adaptive rounds on the profile's engine, alternating with its baseline
    profile's, judges every bound on its confidence interval, and fails the test when a gate
    failed (when the test body ends, so one test may call measure() several times:
    give each ``label="..."``, its own summary row and stored baseline).
    ``--omni-inconclusive`` says what an undecided gate does.
    Returns a ``PerfResult``: ``frames`` (HxWx3 uint8), ``median_s``, ``cold_start_s``,
    ``peak_memory_gib``, ``speedup`` and ``speedup_interval``, ``ssim``, ``measurement``
    and ``baseline`` (latency stats in seconds with the robust ``estimate``, memory),
    ``violations``, ``undecided``, ``notes`` and ``verdict``.
    """
    from pytest_omni_perf.baselines import BaselineStore
    from pytest_omni_perf.harness import Harness, RoundBudget
    from pytest_omni_perf.omni_perf import OmniPerf
    from pytest_omni_perf.verdict import References

    state = request.config.stash[state_key]
    perf = state.perf
    model = _model_of(request, state)
    nodeid = config_mod.baseline_nodeid(request.node)
    marks = list(request.node.iter_markers("omni_bounds"))
    bounds, unapplied = markers.bounds_here(marks, omni_profile, state.hardware)
    harness = Harness(
        nodeid=nodeid, profile=omni_profile, profiles=state.profiles, bounds=bounds,
        bound_notes=unapplied,
        ssim_origin=markers.bound_origin(marks, omni_profile, "min_ssim"),
        model=model, backend=state.backend[0], hardware=state.hardware, pool=state.pool,
        spec_for=lambda p: _spec(state, p, model, _omni_gpu_lease),
        budget=RoundBudget(first=perf.rounds, max_rounds=perf.max_rounds,
                           max_seconds=perf.max_seconds, retry=perf.inconclusive == "retry",
                           confidence=perf.confidence),
        warmup=perf.warmup,
        references=References(
            store=BaselineStore(perf.baseline_dir, state.hardware.key),
            update=perf.update_baselines, reference_fails=perf.reference_regressions == "fail",
            refresh_command=state.refresh_command(nodeid, omni_profile.name, model,
                                                  pyargs=request.node.nodeid.startswith("::")),
            spread=state.run_spread, spread_origin=state.run_spread_origin,
            history_for=state.history_source),
        baseline_cache=state.baseline_cache, cost=state.suite_cost,
    )
    request.node.stash.setdefault(harness_key, []).append(harness)
    return OmniPerf(harness)
