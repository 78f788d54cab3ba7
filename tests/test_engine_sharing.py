"""Profiles of equal engine options share one engine: fewer_steps runs in eager's process,
its rounds alternating with eager's there; --omni-separate-engines gives each its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.engines.base import EngineSpec
from pytest_omni_perf.engines.engine_pool import EnginePool, sharing_identity

TEST_FILE = """
def test_image(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=4)
"""


class _Engine:
    """The least an engine pool needs: start, stop, alive."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.alive = False
        self.stops = 0

    def start(self) -> None:
        self.alive = True

    def stop(self) -> None:
        self.alive, self.stops = False, self.stops + 1


def _spec(profile: str, **options: Any) -> EngineSpec:
    return EngineSpec(model="tiny-flux", profile_name=profile, options=options,
                      backend="diffusers")


def _pool(option_determined: bool, share: bool = True) -> tuple[EnginePool, list[_Engine]]:
    made: list[_Engine] = []

    def make(spec: EngineSpec) -> tuple[Any, bool]:
        made.append(_Engine(spec))
        return made[-1], option_determined

    return EnginePool(make, share=share), made


def test_equal_options_get_the_same_engine_and_a_failure_discards_it_for_both() -> None:
    pool, made = _pool(option_determined=True)
    eager = pool.get(_spec("eager", enforce_eager=True))
    fewer = pool.get(_spec("fewer_steps", enforce_eager=True))
    assert fewer is eager and pool.starts == 1
    assert pool.shares(_spec("fewer_steps", enforce_eager=True), _spec("eager", enforce_eager=True))
    compiled = pool.get(_spec("compile", enforce_eager=False), capacity=2)
    assert compiled is not eager and pool.starts == 2
    # The engine fewer_steps was lent is the one its failure stops.
    pool.discard(_spec("fewer_steps", enforce_eager=True))
    assert made[0].stops == 1 and made[1].stops == 0
    again = pool.get(_spec("fewer_steps", enforce_eager=True))
    assert again is not eager and pool.starts == 3 and again.key[1] == "fewer_steps"


def test_plugin_engines_and_separate_engines_are_never_shared() -> None:
    """A plugin's engine may act on the profile's name (the tests' stand-in does)."""
    for pool, _ in (_pool(option_determined=False), _pool(option_determined=True, share=False)):
        first = pool.get(_spec("eager", enforce_eager=True))
        second = pool.get(_spec("fewer_steps", enforce_eager=True), capacity=2)
        assert first is not second and pool.starts == 2
        assert not pool.shares(_spec("fewer_steps", enforce_eager=True),
                               _spec("eager", enforce_eager=True))


def test_identity_covers_everything_but_the_name() -> None:
    base = _spec("eager", enforce_eager=True)
    assert sharing_identity(base) == sharing_identity(_spec("other", enforce_eager=True))
    for changed in (_spec("eager", enforce_eager=False),
                    EngineSpec(model="tiny-wan", profile_name="eager",
                               options={"enforce_eager": True}, backend="diffusers"),
                    EngineSpec(model="tiny-flux", profile_name="eager",
                               options={"enforce_eager": True}, backend="diffusers",
                               devices=(1,))):
        assert sharing_identity(changed) != sharing_identity(base)


@pytest.mark.parametrize("separate", [False, True], ids=["shared", "separate"])
def test_fewer_steps_runs_in_eagers_engine_on_the_real_engine(
        pytester: pytest.Pytester, tiny_model_cache: Path, monkeypatch: pytest.MonkeyPatch,
        separate: bool) -> None:
    """Through the real diffusers engine on tiny-flux: one engine start for both profiles,
    said in the result's notes and the JSON report, unless --omni-separate-engines."""
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(tiny_model_cache))
    pytester.makepyfile(test_share=TEST_FILE)
    args = ["-p", "no:cacheprovider", "--omni-model=tiny-flux", "--omni-backend=diffusers",
            "--omni-profile=fewer_steps", "--omni-rounds=3", "--omni-max-rounds=3",
            "--omni-update-baselines", "--omni-history=none", "--omni-report-json=r.json", "-rA"]
    result = pytester.runpytest_subprocess(*args, *(["--omni-separate-engines"] * separate))
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)  # timings vary
    assert "Traceback" not in result.stdout.str()
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["session"]["engine_starts"] == (2 if separate else 1)
    (entry,) = report["results"]
    assert entry["measurement"]["engine_profile"] == ("fewer_steps" if separate else "eager")
    assert entry["baseline"]["engine_profile"] == "eager"
    assert entry["measurement"]["request"]["num_inference_steps"] == 2
    assert entry["baseline"]["request"]["num_inference_steps"] == 4
    shared_note = "fewer_steps and eager ran in one engine, eager's, their rounds " \
        "alternating in one process"
    assert any(shared_note in note for note in entry["notes"]) is not separate
    if not separate:  # one engine process, sampled once: one peak for both
        assert entry["measurement"]["memory"] == entry["baseline"]["memory"]


def test_an_engine_that_refuses_at_start_says_it_was_not_started() -> None:
    """recipe_f's worker found at start that the model has no second transformer: the user
    read "starting tiny-flux[recipe_f] (diffusers) ..." with no "started" line after it."""
    from pytest_omni_perf.engines.base import ProfileUnsupported

    class _Refuses(_Engine):
        def start(self) -> None:
            raise ProfileUnsupported("boundary_ratio needs a second transformer")

    said: list[str] = []
    pool = EnginePool(lambda spec: (_Refuses(spec), True), said.append)
    for _ in range(2):  # the second get answers from memory: nothing is started or said
        with pytest.raises(ProfileUnsupported, match="second transformer"):
            pool.get(_spec("recipe_f", boundary_ratio=1.0))
    assert said == ["starting tiny-flux[recipe_f] (diffusers) ...",
                    "not started tiny-flux[recipe_f]: skipped, boundary_ratio needs a second "
                    "transformer"]
    assert pool.starts == 0
