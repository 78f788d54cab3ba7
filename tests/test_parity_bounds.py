"""The PSNR and pixel-difference bounds and parity with another backend, as pure functions:
the numbers (against numpy and scikit-image), where bounds enter (profile files, markers,
``Bounds``) and the gates' messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pytest_omni_perf import judge
from pytest_omni_perf.markers import marker_problems
from pytest_omni_perf.measure.stats import RatioInterval
from pytest_omni_perf.pixel_diff import abs_diff
from pytest_omni_perf.profiles import Bounds, ProfileError, load_file


def _pair(shape: tuple[int, ...], amplitude: int, seed: int = 0,
          dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    a: np.ndarray = rng.integers(0, top + 1, shape).astype(dtype)
    noise = rng.integers(-amplitude, amplitude + 1, shape)
    return a, np.clip(a.astype(np.int64) + noise, 0, top).astype(dtype)


# -- the numbers --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (64, 48, 3), (9, 4)])
@pytest.mark.parametrize("amplitude", [0, 1, 7, 255])
def test_abs_diff_is_vllm_omnis_mean_and_p99_in_pixel_values(shape: tuple[int, ...],
                                                              amplitude: int) -> None:
    a, b = _pair(shape, amplitude)
    got = abs_diff([a], [b])
    # vLLM-Omni's assert_images_pixel_close: float32 in [0, 1], np.quantile(.., 0.99).
    theirs = np.abs(a.astype(np.float32) / 255.0 - b.astype(np.float32) / 255.0)
    assert got.mean == pytest.approx(float(theirs.mean()) * 255, rel=1e-5, abs=1e-6)
    assert got.p99 == pytest.approx(float(np.quantile(theirs, 0.99)) * 255, rel=1e-5, abs=1e-4)
    exact = np.abs(a.astype(np.int64) - b)
    assert got.p99 == pytest.approx(float(np.quantile(exact, 0.99)), abs=1e-12)
    assert got.identical == bool((a == b).all())


def test_abs_diff_of_a_video_pools_every_frame_and_16_bit_frames_work() -> None:
    frames = [_pair((16, 16, 3), amp, seed) for seed, amp in enumerate([0, 3, 40])]
    got = abs_diff([a for a, _ in frames], [b for _, b in frames])
    pooled = np.concatenate([np.abs(a.astype(np.int64) - b).ravel() for a, b in frames])
    assert got.mean == pytest.approx(pooled.mean()) and not got.identical
    assert got.p99 == pytest.approx(float(np.quantile(pooled, 0.99)))
    a, b = _pair((8, 8), 5000, dtype=np.uint16)
    assert abs_diff([a], [b]).p99 == pytest.approx(
        float(np.quantile(np.abs(a.astype(np.int64) - b), 0.99)))


def test_psnr_is_scikit_images_and_identical_images_give_inf() -> None:
    from skimage.metrics import peak_signal_noise_ratio

    from pytest_omni_perf.quality import compare_frames

    a, b = _pair((32, 32, 3), 9)
    result = compare_frames([a], [b], method="skimage")
    assert result.psnr_mean == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=255), rel=1e-12)  # type: ignore[no-untyped-call]
    assert result.mean_abs_diff == abs_diff([a], [b]).mean and not result.identical
    same = compare_frames([a], [a.copy()])
    assert same.psnr_mean == math.inf and same.identical
    assert same.mean_abs_diff == 0.0 and same.p99_abs_diff == 0.0
    # Smaller than SSIM's window: no SSIM, but PSNR and the differences still.
    small = compare_frames([a[:8, :8]], [b[:8, :8]])
    assert small.ssim_mean is None and small.mean_abs_diff is not None


def test_json_report_writes_an_infinite_psnr_as_null_beside_identical() -> None:
    from pytest_omni_perf.quality import compare_frames
    from pytest_omni_perf.report.json_report import _finite

    a, _ = _pair((16, 16, 3), 0)
    text = json.dumps(_finite(compare_frames([a], [a]).to_dict()), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["psnr_mean"] is None and loaded["identical"] is True


# -- where bounds enter -------------------------------------------------------------------------
def test_bounds_take_the_new_fields() -> None:
    bounds = Bounds.from_mapping({"min_psnr": 30, "max_mean_abs_diff": 1, "max_p99_abs_diff": 4,
                                  "parity": "diffusers", "max_latency_ratio": 1.2}, "t")
    assert (bounds.min_psnr, bounds.max_mean_abs_diff, bounds.max_p99_abs_diff,
            bounds.parity, bounds.max_latency_ratio) == (30.0, 1.0, 4.0, "diffusers", 1.2)


@pytest.mark.parametrize(("raw", "message"), [
    ({"min_psnr": 0}, "t.min_psnr: expected a finite number > 0, got 0"),
    ({"max_mean_abs_diff": 300}, "t.max_mean_abs_diff: expected a finite number in [0, 255], "
                                 "got 300"),
    ({"max_p99_abs_diff": -1}, "t.max_p99_abs_diff: expected a finite number in [0, 255]"),
    ({"parity": "auto"}, "t.parity: expected the name of a backend to compare with, such as "
                         "'diffusers', 'omni' or 'omni-server' (not 'auto'), got 'auto'"),
    ({"parity": 3}, "t.parity: expected the name of a backend"),
    ({"parity": "Diffusers"}, "t.parity: expected the name of a backend"),
    ({"max_latency_ratio": 1.2}, "t.max_latency_ratio: compares this backend's latency with "
                                 "the parity backend's, but no parity backend is named; add "
                                 "parity='diffusers'"),
    ({"parity": "diffusers", "max_latency_ratio": 0}, "t.max_latency_ratio: expected a "
                                                      "finite number > 0"),
])
def test_bad_bounds_are_refused_naming_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError) as info:
        Bounds.from_mapping(raw, "t")
    assert str(info.value).startswith(message), str(info.value)


def test_a_profile_file_names_file_profile_and_field(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[profiles.p]\nbounds = { max_latency_ratio = 1.2 }\n', encoding="utf-8")
    with pytest.raises(ProfileError, match=rf"^{path}: profile 'p'\.bounds\.max_latency_ratio: "
                                           "compares this backend's latency"):
        load_file(path)
    path.write_text('[profiles.p]\nbounds = { parity = "omni-server", min_psnr = 30, '
                    'max_latency_ratio = 1.3 }\n', encoding="utf-8")
    bounds = load_file(path)["p"].bounds
    assert bounds.parity == "omni-server" and bounds.max_latency_ratio == 1.3


def test_a_bad_marker_is_a_collection_problem() -> None:
    mark = pytest.mark.omni_bounds(parity="diffusers ", min_psnr=float("nan")).mark
    problems = marker_problems([mark], {"eager": object()})  # each bad bound, not the first
    assert [p.split(":")[0] for p in problems] == ["@pytest.mark.omni_bounds.parity",
                                                   "@pytest.mark.omni_bounds.min_psnr"]
    good = pytest.mark.omni_bounds(parity="diffusers", min_psnr=30, max_latency_ratio=1.2).mark
    assert marker_problems([good], {"eager": object()}) == []


# -- the gates ----------------------------------------------------------------------------------
def test_pixel_gates_fail_naming_metric_value_reference_and_bound() -> None:
    bounds = Bounds(min_psnr=30, max_mean_abs_diff=1, max_p99_abs_diff=4)
    judged = judge.pixel_judgement(bounds, judge.PixelFacts(24.5, 2.25, 9.0), "parity_",
                                   "the output of eager on backend 'diffusers'")
    assert [str(v) for v in judged.violations] == [
        "parity_psnr: output PSNR 24.50 dB against the output of eager on backend "
        "'diffusers', below the bound min_psnr=30 dB",
        "parity_pixel_diff: mean absolute pixel difference 2.250 (of 0-255) against the "
        "output of eager on backend 'diffusers', above the bound max_mean_abs_diff=1",
        "parity_pixel_diff: p99 absolute pixel difference 9.000 (of 0-255) against the "
        "output of eager on backend 'diffusers', above the bound max_p99_abs_diff=4",
    ]
    identical = judge.pixel_judgement(bounds, judge.PixelFacts(math.inf, 0.0, 0.0), "", "x")
    assert not identical.violations
    at_bound = judge.pixel_judgement(bounds, judge.PixelFacts(30.0, 1.0, 4.0), "", "x")
    assert not at_bound.violations
    assert not judge.pixel_judgement(Bounds(), judge.PixelFacts(1.0, 99, 99), "", "x").violations


def test_the_stored_image_gets_the_pixel_bounds_too() -> None:
    facts = judge.StoredFacts(stored_path="b/eager", ssim=0.99, latency=None, relative_to=None,
                              memory_gib=1.0, stored_memory_gib=None, strict=True,
                              refresh_command="pytest x --omni-update-baselines",
                              pixels=judge.PixelFacts(20.0, 0.5, 2.0))
    judged = judge.stored_judgement(Bounds(min_psnr=30), facts)
    (violation,) = judged.violations
    assert violation.metric == "stored_psnr"
    assert violation.message.endswith("refresh it with: pytest x --omni-update-baselines")


def _interval(estimate: float, low: float, high: float) -> RatioInterval:
    return RatioInterval(estimate, low, high, 0.95, 10)


@pytest.mark.parametrize(("interval", "outcome"), [
    (_interval(1.5, 1.4, 1.6), "fail"),
    (_interval(1.0, 0.95, 1.05), "pass"),
    (_interval(1.2, 1.1, 1.3), "undecided"),
])
def test_latency_ratio_is_judged_on_its_interval(interval: RatioInterval, outcome: str) -> None:
    bounds = Bounds(parity="diffusers", max_latency_ratio=1.2)
    judged = judge.parity_latency_judgement(bounds, interval, "eager", "omni-server",
                                            "diffusers")
    got = {"fail": judged.violations, "pass": judged.passed, "undecided": judged.undecided}
    (entry,) = got[outcome]
    assert entry.metric == "parity_latency"
    assert entry.message.startswith(
        f"eager on 'omni-server' takes {interval.describe()} the latency of the same profile "
        "and request on 'diffusers' measured alongside, bound max_latency_ratio=1.2")
