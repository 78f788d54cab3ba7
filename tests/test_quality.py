"""Tests of pytest_omni_perf.quality: SSIM (both implementations), PSNR, heat maps."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numpy")
pytest.importorskip("skimage")

import numpy as np  # noqa: E402

from pytest_omni_perf import quality, ssim_torch  # noqa: E402
from pytest_omni_perf.quality import (  # noqa: E402
    SSIM_PARAMETERS,
    ImageSizeMismatch,
    QualityResult,
    compare_frames,
    diff_heatmap,
    psnr,
    ssim,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]


def _random(shape: tuple[int, ...], seed: int = 0) -> Array:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _noisy(img: Array, amplitude: int, seed: int = 1) -> Array:
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, img.shape)
    out: Array = np.clip(img.astype(np.int64) + noise, 0, 255).astype(img.dtype)
    return out


def _smooth(h: int = 96, w: int = 80) -> Array:
    """A structured picture (gradients and a disc), where SSIM behaves as on photos."""
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2) * 120
    rgb = np.stack([xx * 200 / w, yy * 200 / h + disc * 0.5, 60 + disc], axis=-1)
    out: Array = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def _reference_ssim(a: Array, b: Array) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(  # type: ignore[no-untyped-call]
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1 if a.ndim == 3 else None,
        )
    )


def test_identical_images() -> None:
    img = _random((40, 30, 3))
    assert ssim(img, img.copy(), method="skimage") == pytest.approx(1.0, abs=1e-12)
    assert psnr(img, img.copy()) == math.inf
    result = compare_frames([img], [img.copy()], method="skimage")
    assert result.ssim_mean == pytest.approx(1.0, abs=1e-12) and result.psnr_mean == math.inf


@pytest.mark.filterwarnings("error")
def test_identical_images_torch() -> None:
    pytest.importorskip("torch")
    img = _random((40, 30, 3))
    img.flags.writeable = False  # as np.asarray(PIL image) gives; torch must not warn
    assert ssim(img, img.copy(), method="torch") == pytest.approx(1.0, abs=1e-12)


def test_parameters_are_the_ones_used() -> None:
    a, b = _smooth(), _noisy(_smooth(), 30)
    params = {k: v for k, v in SSIM_PARAMETERS.items() if k != "implementation"}
    from skimage.metrics import structural_similarity

    expected = structural_similarity(a, b, **params)  # type: ignore[no-untyped-call]
    assert ssim(a, b, method="skimage") == float(expected)
    assert ssim(a, b, method="skimage") == _reference_ssim(a, b)
    assert "sigma=1.5" in (quality.__doc__ or "")


@pytest.mark.parametrize(
    "shape", [(67, 45, 3), (45, 67), (11, 11, 3), (128, 96, 3), (33, 70, 4), (12, 300)]
)
@pytest.mark.parametrize("amplitude", [3, 40, 255])
def test_torch_matches_skimage(shape: tuple[int, ...], amplitude: int) -> None:
    pytest.importorskip("torch")
    a = _random(shape, seed=sum(shape))
    b = _noisy(a, amplitude)
    expected = _reference_ssim(a, b)
    assert ssim(a, b, method="torch") == pytest.approx(expected, abs=1e-6)
    assert ssim(a, b, method="skimage") == expected


def test_torch_cpu_path_restores_the_thread_count() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    img = _random((30, 30, 3))
    ssim(img, _noisy(img, 9), method="torch")
    assert torch.get_num_threads() == before


def test_torch_matches_skimage_in_row_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(ssim_torch, "_CPU_CHUNK", 2048)  # forces bands of a few rows
    a = _random((150, 101, 3), seed=5)
    b = _noisy(a, 50)
    assert ssim(a, b, method="torch") == pytest.approx(_reference_ssim(a, b), abs=1e-6)
    result = compare_frames([a, b], [b, a], method="torch")
    assert result.psnr_mean == pytest.approx(psnr(a, b), rel=1e-12)


def test_torch_matches_skimage_uint16() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a = rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    b = np.clip(a.astype(np.int64) + rng.integers(-3000, 3000, a.shape), 0, 65535).astype(np.uint16)
    assert ssim(a, b, method="torch") == pytest.approx(ssim(a, b, method="skimage"), abs=1e-6)


@pytest.mark.parametrize("chunk", [1 << 18, 4096])
def test_batched_frames_match_per_frame_skimage(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(ssim_torch, "_CPU_CHUNK", chunk)
    outs = [_random((48, 64, 3), seed=i) for i in range(7)]
    refs = [_noisy(o, 10 + 15 * i, seed=i) for i, o in enumerate(outs)]
    got = compare_frames(outs, refs, method="torch")
    expected = [_reference_ssim(o, r) for o, r in zip(outs, refs)]
    assert got.per_frame_ssim == pytest.approx(expected, abs=1e-6)
    assert got.psnr_mean == pytest.approx(compare_frames(outs, refs, method="skimage").psnr_mean)
    assert compare_frames(np.stack(outs), np.stack(refs), method="skimage").per_frame_ssim == (
        tuple(expected)
    )


def test_video_result_fields() -> None:
    base = _smooth(64, 48)
    outs = [base, base, base, base]
    refs = [_noisy(base, 5, 1), _noisy(base, 20, 2), base.copy(), _noisy(base, 60, 3)]
    result = compare_frames(outs, refs, method="skimage")
    assert isinstance(result, QualityResult)
    assert result.worst_frame == 3 and result.per_frame_ssim[2] == pytest.approx(1.0)
    assert result.ssim_min == result.per_frame_ssim[3] == min(result.per_frame_ssim)
    assert result.ssim_mean == pytest.approx(sum(result.per_frame_ssim) / 4)
    # PSNR pools the squared error of all frames: one identical frame does not make it inf.
    sq = sum(float(((o.astype(float) - r) ** 2).sum()) for o, r in zip(outs, refs))
    expected_psnr = 10 * math.log10(255**2 / (sq / (4 * base.size)))
    assert result.psnr_mean == pytest.approx(expected_psnr)
    assert result.to_dict()["worst_frame"] == 3


def test_noise_lowers_ssim_and_psnr_monotonically() -> None:
    img = _smooth()
    levels = [0, 4, 8, 16, 32, 64, 128]
    scores = [ssim(img, _noisy(img, a), method="skimage") for a in levels]
    psnrs = [psnr(img, _noisy(img, a)) for a in levels]
    assert scores[0] == pytest.approx(1.0)
    assert all(x > y for x, y in zip(scores, scores[1:])), scores
    assert all(x > y for x, y in zip(psnrs, psnrs[1:])), psnrs
    assert psnrs[0] == math.inf and 0 < psnrs[-1] < 20


def test_size_mismatch_messages() -> None:
    small, big = _random((64, 64, 3)), _random((128, 128, 3))
    for call in (ssim, psnr, diff_heatmap):
        message = "output is 64x64x3 but the reference is 128x128x3"
        with pytest.raises(ImageSizeMismatch, match=message):
            call(small, big)
    assert issubclass(ImageSizeMismatch, ValueError)


@pytest.mark.parametrize(("output", "reference", "reason"), [
    ([np.zeros((64, 64, 3), np.uint8)] * 9, [np.zeros((64, 64, 3), np.uint8)] * 5,
     "output has 9 frames, reference 5"),
    ([np.zeros((64, 64, 3), np.uint8)] * 2, [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64),
                                                                                    np.uint8)],
     "frame 1: output is 64x64x3 but the reference is 64x64"),
    ([np.zeros((64, 64, 3), np.uint8)], [np.zeros((128, 128, 3), np.uint8)],
     "output is 64x64x3 but the reference is 128x128x3"),
    ([np.zeros((16, 16), np.uint8)], [np.zeros((16, 16), np.uint16)],
     "output is uint8 but the reference is uint16"),
    ([np.zeros((16, 16), np.float32)], [np.zeros((16, 16), np.float32)], "integer images"),
    ([np.zeros((0, 16, 3), np.uint8)], [np.zeros((0, 16, 3), np.uint8)], "got shape (0, 16, 3)"),
    ([], [], "output and reference have no frames"),
])
def test_pairs_that_cannot_be_compared_say_why(output: list[Array], reference: list[Array],
                                               reason: str) -> None:
    result = compare_frames(output, reference)
    assert not result.comparable and result.not_applicable is not None
    assert reason in result.not_applicable
    assert (result.ssim_mean, result.psnr_mean, result.per_frame_ssim) == (None, None, ())
    assert result.explain("the stored image") == (
        f"cannot compare the output with the stored image: {result.not_applicable}")


def test_bad_inputs() -> None:
    img = _random((32, 32, 3))
    with pytest.raises(TypeError, match="integer images"):
        ssim(img.astype(np.float32), img.astype(np.float32))
    with pytest.raises(TypeError, match="uint8 but the reference is uint16"):
        ssim(img, img.astype(np.uint16))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(img[:10], img[:10])
    with pytest.raises(ValueError, match="method must be one of"):
        ssim(img, img, method="fast")


@pytest.mark.parametrize("shape", [(50, 40, 3), (50, 40), (6, 7, 3)])
def test_heatmap_shape_and_where_it_lights_up(shape: tuple[int, ...]) -> None:
    a = _smooth(*shape[:2])[..., 0] if len(shape) == 2 else _smooth(*shape[:2])
    b = a.copy()
    b[: shape[0] // 3, : shape[1] // 3] = 255 - b[: shape[0] // 3, : shape[1] // 3]
    heat = diff_heatmap(a, b)
    assert heat.shape == (shape[0], shape[1], 3) and heat.dtype == np.uint8
    brightness = heat.astype(int).sum(axis=-1)
    assert brightness[0, 0] > brightness[-1, -1]
    flat = diff_heatmap(a, a.copy())
    assert (flat == flat[0, 0]).all()


def test_heatmap_without_skimage_shows_the_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    a = _smooth()
    b = a.copy()
    b[:10, :10] = 0
    heat = diff_heatmap(a, b).astype(int).sum(axis=-1)
    assert heat[:10, :10].min() > heat[20:, 20:].max()


def test_heatmap_fixed_scale() -> None:
    a = _smooth()
    faint = diff_heatmap(a, _noisy(a, 2), scale=1.0)
    loud = diff_heatmap(a, _noisy(a, 2))
    assert faint.astype(int).sum() < loud.astype(int).sum()


def test_auto_uses_skimage_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_torch_path(*args: object) -> list[float]:
        raise AssertionError("torch path used")

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(quality, "_torch_ssim_frames", no_torch_path)
    big = _smooth(512, 512)[..., 0]
    assert quality._resolve_method("auto", 10**8) == "skimage"
    assert ssim(big, _noisy(big, 10)) == _reference_ssim(big, _noisy(big, 10))
    with pytest.raises(ImportError, match="needs torch"):
        ssim(big, big, method="torch")


def test_auto_picks_torch_for_large_images_or_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    used: list[tuple[int, ...]] = []
    real = ssim_torch.torch_ssim_frames

    def spy(out: Array, ref: Array, data_range: int) -> tuple[list[float], list[int]]:
        used.append(out.shape)
        return real(out, ref, data_range)

    monkeypatch.setattr(quality, "_torch_ssim_frames", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    small = _random((64, 64, 3))
    ssim(small, small)
    assert used == []
    frames = [_random((256, 256, 3), seed=i) for i in range(4)]  # 4 x 256^2 = 512^2 pixels
    compare_frames(frames, frames)
    assert used == [(4, 256, 256, 3)]  # one batch
    used.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert quality._resolve_method("auto", 64 * 64) == "torch"


def test_import_pulls_no_heavy_modules() -> None:
    code = (
        "import sys, pytest_omni_perf.quality\n"
        "heavy = {'numpy', 'skimage', 'scipy', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def _frames(dims: tuple[int, ...], count: int, constant: bool, seed: int) -> list[Array]:
    rng = np.random.default_rng(seed)
    if constant:
        return [np.full(dims, rng.integers(0, 256), np.uint8) for _ in range(count)]
    return [rng.integers(0, 256, dims, dtype=np.uint8) for _ in range(count)]


@settings(max_examples=60, deadline=None, database=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), channels=st.sampled_from([None, 1, 3, 4]),
       count=st.integers(1, 3), constant=st.booleans(), seed=st.integers(0, 2**16))
def test_any_output_is_measured_or_says_why(h: int, w: int, channels: int | None, count: int,
                                            constant: bool, seed: int) -> None:
    """Odd sizes, one channel or four, constant images, one frame or a few: SSIM where its
    11x11 window fits (both implementations agree), else "not applicable" and PSNR alone."""
    dims = (h, w) if channels is None else (h, w, channels)
    out, ref = _frames(dims, count, constant, seed), _frames(dims, count, constant, seed + 1)
    result = compare_frames(out, ref, method="skimage")
    diff = np.stack(out).astype(np.int64) - np.stack(ref).astype(np.int64)
    mse = float((diff * diff).mean())
    assert result.comparable
    assert result.psnr_mean == (math.inf if mse == 0 else pytest.approx(
        10 * math.log10(255**2 / mse), rel=1e-12))
    if min(h, w) < 11:
        shape = "x".join(map(str, dims))
        assert result.not_applicable is not None
        assert f"output is {shape}, smaller than SSIM's 11x11 window" in result.not_applicable
        assert (result.ssim_mean, result.ssim_min, result.worst_frame) == (None, None, None)
        assert "min_ssim bound cannot be checked" in (result.explain("x") or "")
        return
    assert result.not_applicable is None and result.explain("x") is None
    assert result.ssim_mean is not None and -1.0 <= result.ssim_mean <= 1.0
    assert len(result.per_frame_ssim) == count and result.worst_frame in range(count)
    by_torch = compare_frames(out, ref, method="torch")
    assert by_torch.per_frame_ssim == pytest.approx(result.per_frame_ssim, abs=1e-9)


def test_one_channel_in_any_layout_has_the_ssim_of_its_grey_picture() -> None:
    grey = _smooth()[..., 1]
    noisy = _noisy(grey, 20)
    flat = compare_frames([grey], [noisy])
    assert flat.ssim_mean == pytest.approx(_reference_ssim(grey, noisy), abs=1e-12)
    for layout in (lambda a: a[..., None], lambda a: np.repeat(a[..., None], 3, axis=2)):
        other = compare_frames([layout(grey)], [layout(noisy)])
        assert other.ssim_mean == pytest.approx(flat.ssim_mean, abs=1e-12)
        assert other.psnr_mean == pytest.approx(flat.psnr_mean, rel=1e-12)


def test_constant_images_and_one_frame_videos() -> None:
    black, grey = np.zeros((32, 24, 3), np.uint8), np.full((32, 24, 3), 128, np.uint8)
    same = compare_frames([black], [black.copy()])
    assert same.ssim_mean == pytest.approx(1.0) and same.psnr_mean == math.inf
    apart = compare_frames([black], [grey])
    assert apart.ssim_mean is not None and 0.0 <= apart.ssim_mean < 0.01
    assert apart.psnr_mean == pytest.approx(10 * math.log10(255**2 / 128**2))
    video = compare_frames(np.stack([black]), np.stack([grey]))
    assert video == apart
