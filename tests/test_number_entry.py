"""Every number is checked where it enters: profile files, ``omni_bounds`` markers, the
``Bounds`` type itself, command-line options and ini keys.

NaN compares false with everything, so an unchecked ``min_speedup = nan`` (valid TOML)
switched its gate off and ``max_regression = inf`` crashed the compare run. The properties
here generate the numbers users can write (NaN, infinities, huge integers, booleans,
strings, values beside each end of the allowed range) and check that each one is either
taken exactly or rejected with a message naming file, profile and field (or option).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pytest_omni_perf.numeric import NumberError, Range
from pytest_omni_perf.profiles import BOUND_FIELDS, Bounds, ProfileError, load_file

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# pytester runs take a moment each: fewer examples, the same kinds of values.
RUN_SETTINGS = settings(max_examples=25, deadline=None, database=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture])

# What each number may be, written independently of the code under test.
Allowed = Callable[[float], bool]
BOUND_ALLOWED: dict[str, Allowed] = {
    "min_speedup": lambda v: v > 0,
    "min_ssim": lambda v: 0 <= v <= 1,
    "max_vram_ratio": lambda v: v > 0,
    "max_vram_gib": lambda v: v > 0,
    "max_latency_s": lambda v: v > 0,
    "max_regression": lambda v: v >= 0,
    "max_vram_regression": lambda v: v >= 0,
    "min_psnr": lambda v: v > 0,
    "max_mean_abs_diff": lambda v: 0 <= v <= 255,
    "max_p99_abs_diff": lambda v: 0 <= v <= 255,
    "max_latency_p99_s": lambda v: v > 0,
    "max_latency_mean_s": lambda v: v > 0,
    "min_throughput_qps": lambda v: v > 0,
}
# Every numeric bound that stands alone; parity (a backend name) and max_latency_ratio (which
# needs parity) are tested in test_parity_bounds.py.
NUMBER_FIELDS = tuple(f for f in BOUND_FIELDS if f not in ("parity", "max_latency_ratio"))
assert set(NUMBER_FIELDS) == set(BOUND_ALLOWED)
# (TOML table under [profiles.p], field, allowed, whole numbers only)
FILE_FIELDS: list[tuple[str, str, Allowed, bool]] = [
    *(("bounds", name, allowed, False) for name, allowed in BOUND_ALLOWED.items()),
    ("requires", "vram_gib", lambda v: v > 0, False),
    ("requires", "gpus", lambda v: v >= 0, True),
    ("request", "steps_scale", lambda v: 0 < v <= 1, False),
    ("options", "flow_shift", lambda v: v > 0, False),
    ("options", "boundary_ratio", lambda v: 0 <= v <= 1, False),
]

_EDGES = [0.0, -0.0, 1.0, -1.0, 1e-300, 5e-324, 1.0000000000000002, 0.9999999999999999,
          1e308, -1e308]
# Python values a TOML literal can stand for: every float (NaN and both infinities too),
# ints beyond 64 bits, booleans and strings.
toml_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(_EDGES),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 1, 2, 10**400]),
    st.booleans(),
    st.text(max_size=5),
)


def toml_literal(value: object) -> str:
    """``value`` as TOML writes it (floats by repr: ``nan``, ``inf``, ``1e+300``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(f"\\u{ord(c):04x}" if c < " " or c in '"\\\x7f' else c
                             for c in value) + '"'
    return repr(value)


def accepted(value: object, allowed: Allowed, whole: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if whole:
        return isinstance(value, int) and -(2**63) <= value < 2**63 and allowed(value)
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and allowed(number)


@SETTINGS
@given(field=st.sampled_from(FILE_FIELDS), value=toml_values)
@example(field=FILE_FIELDS[0], value=math.nan)  # F2: min_speedup = nan
@example(field=FILE_FIELDS[4], value=math.inf)  # F2: max_regression = inf
def test_profile_file_numbers(tmp_path: Path, field: tuple[str, str, Allowed, bool],
                              value: object) -> None:
    table, name, allowed, whole = field
    extra = 'cache_backend = "none", ' if table == "options" else ""
    path = tmp_path / "mine.toml"
    path.write_text(f"[profiles.p]\n{table} = {{ {extra}{name} = {toml_literal(value)} }}\n",
                    encoding="utf-8")
    if accepted(value, allowed, whole):
        profile = load_file(path)["p"]
        taken = {"bounds": lambda: getattr(profile.bounds, name),
                 "requires": lambda: getattr(profile.requires, name),
                 "request": lambda: profile.request[name],
                 "options": lambda: profile.options[name]}[table]()
        # Bounds and VRAM are kept as floats; options and the request as the file wrote them.
        floats = table == "bounds" or name == "vram_gib"
        assert taken == (float(value) if floats else value)  # type: ignore[arg-type]
        assert not isinstance(taken, bool)
        return
    with pytest.raises(ProfileError) as info:
        load_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: profile 'p'.{table}.{name}: expected "), message


@SETTINGS
@given(name=st.sampled_from(NUMBER_FIELDS), value=toml_values)
def test_defaults_bounds_are_checked_too(tmp_path: Path, name: str, value: object) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(f"[defaults.bounds]\n{name} = {toml_literal(value)}\n[profiles.p]\n",
                    encoding="utf-8")
    if accepted(value, BOUND_ALLOWED[name], False):
        assert getattr(load_file(path)["p"].bounds, name) == float(value)  # type: ignore[arg-type]
    else:
        with pytest.raises(ProfileError, match=re.escape(f"{path}: defaults.bounds.{name}: ")):
            load_file(path)


# Values a marker or a caller can pass in Python: numpy and fraction numbers too.
python_values = st.one_of(
    toml_values,
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.integers(-5, 5).map(np.int64),
    st.fractions(max_denominator=7),
    st.just(None),
    st.sampled_from([[1.0], {"a": 1}, b"1", 1j]),
)


@SETTINGS
@given(name=st.sampled_from(NUMBER_FIELDS), value=python_values)
def test_bounds_constructor_and_mapping_agree(name: str, value: object) -> None:
    """``Bounds(...)``, ``Bounds.from_mapping`` and ``merged`` take the same values."""
    number = None
    if not isinstance(value, (bool, np.bool_)) \
            and isinstance(value, (int, float, np.integer, np.floating, Fraction)):
        try:
            number = float(value)
        except OverflowError:
            pass
    ok = value is None or (number is not None and math.isfinite(number)
                           and BOUND_ALLOWED[name](number))
    makers: list[Callable[[], Bounds]] = [
        lambda: Bounds(**{name: value}),  # type: ignore[arg-type]
        lambda: Bounds.from_mapping({name: value}, "test_x: @pytest.mark.omni_bounds"),
        lambda: Bounds(min_ssim=0.5).merged({name: value}),
    ]
    for make in makers:
        if ok:
            got = getattr(make(), name)
            assert got == number
            assert got is None or type(got) is float
        else:
            with pytest.raises(ProfileError, match=f"{name}: expected "):
                make()


def test_bounds_messages_name_the_source() -> None:
    with pytest.raises(ProfileError) as info:
        Bounds.from_mapping({"min_speedup": math.nan}, "t.py::test_a: @pytest.mark.omni_bounds")
    assert str(info.value) == ("t.py::test_a: @pytest.mark.omni_bounds.min_speedup: expected "
                               "a finite number > 0, got nan")
    with pytest.raises(ProfileError, match=r"^Bounds\.max_regression: .* got inf$"):
        Bounds(max_regression=math.inf)
    with pytest.raises(ProfileError, match=r"unknown field\(s\) min_sped"):
        Bounds.from_mapping({"min_sped": 1.0}, "here")


@SETTINGS
@given(rule=st.builds(Range, low=st.sampled_from([None, 0.0, 2.0]),
                      high=st.sampled_from([None, 1.0, 10.0]), low_open=st.booleans(),
                      high_open=st.booleans(), whole=st.booleans()),
       text=st.one_of(st.text(max_size=8), st.sampled_from(
           ["nan", "NaN", "inf", "-inf", "1e999", "-0", " 3 ", "2.0", "1_0", "0x10", "7"])))
def test_range_parse_is_finite_and_in_range(rule: Range, text: str) -> None:
    try:
        value = rule.parse(text, "--omni-x")
    except NumberError as exc:
        assert str(exc).startswith(f"--omni-x: expected {rule.describe()}, got ")
        return
    assert math.isfinite(value) and rule.contains(value)
    assert isinstance(value, int) if rule.whole else isinstance(value, float)


# -- the whole plugin: files and markers rejected when read, naming where ------------------
def test_nan_and_inf_bounds_in_a_profile_file_stop_the_run(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", mine="[profiles.slow]\nlossy = true\n"
                      "bounds = { min_speedup = nan, min_ssim = 0.9 }\n")
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    pytester.makepyfile("def test_a(omni_perf): raise AssertionError('must not run')\n")
    result = pytester.runpytest("--omni-profile=slow")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: omni_profile_files: {pytester.path / 'mine.toml'}: "
                                 "profile 'slow'.bounds.min_speedup: expected a finite number "
                                 "> 0, got nan"])
    pytester.makefile(".toml", mine="[profiles.slow]\nbounds = { max_regression = inf }\n")
    result = pytester.runpytest("--omni-profile=slow")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mine.toml: profile 'slow'.bounds.max_regression: expected "
                                 "a finite number >= 0, got inf"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("value", ['float("nan")', 'float("inf")', "-1", '"2"', "True"])
def test_nan_bound_in_a_marker_fails_collection(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.omni_bounds(min_speedup={value})
        def test_a(omni_perf):
            raise AssertionError("must not run")
        """)
    result = pytester.runpytest("--omni-profile=cache_dit")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_a: @pytest.mark.omni_bounds.min_speedup: expected a "
                                 "finite number > 0, got *"])
    assert "must not run" not in result.stdout.str()


# -- command-line options and ini keys -------------------------------------------------------
# (option, allowed, whole numbers only); written independently of plugin_options.py.
NUMERIC_OPTIONS: list[tuple[str, Allowed, bool]] = [
    ("--omni-rounds", lambda v: v >= 2, True),
    ("--omni-warmup", lambda v: v >= 0, True),
    ("--omni-start-timeout", lambda v: v > 0, False),
    ("--omni-request-timeout", lambda v: v > 0, False),
    ("--omni-gpu-wait", lambda v: v > 0, False),
]
# What people type: numbers in every spelling Python reads (nan, inf, 1e999, 1_0, " 3 "),
# numbers just beside each limit, and any text. No newlines: an ini value is one line.
option_texts = st.one_of(
    st.sampled_from(["nan", "NaN", "-nan", "inf", "+inf", "-Infinity", "1e999", "-1e999", "0",
                     "-0", "1", "2", "0.0", "1e-320", "1_0", " 3 ", "2.0", "0x10", "", "15s"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-3, 10**20).map(str),
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=6),
)


def option_accepts(text: str, allowed: Allowed, whole: bool) -> bool:
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        return False
    return math.isfinite(value) and allowed(value) and (not whole or abs(value) < 2**63)


def _check_run(result: pytest.RunResult, ok: bool, name: str, text: str) -> None:
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output, output
    if ok:
        assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, output
        return
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert f"{name}: expected a " in output, output


@RUN_SETTINGS
@given(option=st.sampled_from(NUMERIC_OPTIONS), text=option_texts)
@example(option=NUMERIC_OPTIONS[2], text="nan")
@example(option=NUMERIC_OPTIONS[4], text="inf")
def test_numeric_options_on_the_command_line(pytester: pytest.Pytester,
                                             option: tuple[str, Allowed, bool], text: str
                                             ) -> None:
    flag, allowed, whole = option
    # NUL cannot reach a real command line; everything else can.
    result = pytester.runpytest(f"{flag}={text.replace(chr(0), '')}")
    _check_run(result, option_accepts(text.replace(chr(0), ""), allowed, whole),
               f"argument {flag}", text)


@RUN_SETTINGS
@given(option=st.sampled_from(NUMERIC_OPTIONS),
       text=option_texts.filter(lambda t: t.strip() and not set(t) & set("#;\\[]\t\x0b\x0c")))
@example(option=NUMERIC_OPTIONS[0], text="nan")
def test_numeric_ini_keys(pytester: pytest.Pytester, option: tuple[str, Allowed, bool],
                          text: str) -> None:
    flag, allowed, whole = option
    key = flag[2:].replace("-", "_")
    pytester.makeini(f"[pytest]\n{key} = {text}\n")
    result = pytester.runpytest()
    # The ini reader drops the spaces around a value, as a user expects.
    _check_run(result, option_accepts(text.strip(), allowed, whole), f"ini {key} (tox.ini)",
               text)


@pytest.mark.parametrize("key", ["omni_update_baselines", "omni_in_process"])
def test_bool_ini_keys_name_the_key(pytester: pytest.Pytester, key: str) -> None:
    pytester.makeini(f"[pytest]\n{key} = maybe\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ini {key} (tox.ini): expected true or false*'maybe'*"])


# -- requests: omni_perf.measure(...), the shipped server and the worker build them ---------
REQUEST_ALLOWED: dict[str, tuple[Allowed, bool, bool]] = {  # allowed, whole, None allowed
    "width": (lambda v: v >= 1, True, False),
    "height": (lambda v: v >= 1, True, False),
    "num_inference_steps": (lambda v: v >= 1, True, False),
    "num_frames": (lambda v: v >= 1, True, True),
    "seed": (lambda v: True, True, False),
    "guidance_scale": (lambda v: True, False, True),
}


@SETTINGS
@given(name=st.sampled_from(sorted(REQUEST_ALLOWED)), value=st.one_of(python_values, st.none()))
def test_request_fields(name: str, value: object) -> None:
    from pytest_omni_perf.engines.base import GenerationRequest, RequestError

    allowed, whole, optional = REQUEST_ALLOWED[name]
    if value is None:
        ok = optional
    else:
        ok = isinstance(value, (int, float, np.integer, np.floating, Fraction)) and not isinstance(
            value, (bool, np.bool_)) and accepted(
                int(value) if isinstance(value, np.integer) else
                float(value) if isinstance(value, (np.floating, Fraction)) else value,
                allowed, whole)
    if ok:
        assert getattr(GenerationRequest(**{name: value}), name) == value  # type: ignore[arg-type]
    else:
        with pytest.raises(RequestError, match=f"^request field {name}: expected "):
            GenerationRequest(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("call", "message"), [
    ("width=0", "request field width: expected a whole number >= 1, got 0"),
    ('num_inference_steps=float("nan")', "request field num_inference_steps: expected a whole "
                                         "number >= 1, got nan"),
    ('guidance_scale=float("inf")', "request field guidance_scale: expected a finite number, "
                                    "got inf"),
])
def test_measure_rejects_bad_numbers(standin_pytester: pytest.Pytester, call: str,
                                     message: str) -> None:
    standin_pytester.makepyfile(f"""
        def test_a(omni_perf):
            omni_perf.measure(**{{"width": 16, "height": 16, **dict({call})}})
        """)
    result = standin_pytester.runpytest("--omni-profile=eager", "--omni-rounds=2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E * {message}"])
