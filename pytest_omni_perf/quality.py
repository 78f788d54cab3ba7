"""Image and video quality metrics: SSIM, PSNR, absolute pixel differences, a diff heat map.

SSIM uses fixed parameters so numbers are comparable across runs, machines and the two
implementations: scikit-image's ``structural_similarity`` with ``gaussian_weights=True``,
``sigma=1.5`` (an 11-tap window, truncate 3.5), ``use_sample_covariance=False``,
``K1=0.01``, ``K2=0.03``, ``data_range`` of the dtype (255 for uint8) and
``channel_axis=-1`` (per-channel SSIM, averaged), as in Wang et al. 2004. These are listed
in :data:`SSIM_PARAMETERS`.

``method="torch"`` computes the same quantity in float64 with separable Gaussian passes in
torch (CUDA when available; pytest_omni_perf.ssim_torch), batching the frames of a video; it
matches scikit-image to about 1e-15. scikit-image, numpy and torch are imported only inside
the functions that need them, so the plugin loads without them.

What the metrics cannot take is reported, not raised, by :func:`compare_frames`: an output
smaller than the 11x11 window has no SSIM under these parameters (scikit-image refuses it,
and a smaller window would give numbers not comparable with every other result), so its
SSIM is "not applicable" with the reason while PSNR, which has no window, is still computed;
outputs that differ from the reference in frame count, size, channels or dtype cannot be
compared at all (``comparable`` False). Single-channel (HxW or HxWx1), odd-sized and
constant images, and one-frame videos, are measured like any other.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.pixel_diff import abs_diff
from pytest_omni_perf.ssim_torch import K1 as _K1
from pytest_omni_perf.ssim_torch import K2 as _K2
from pytest_omni_perf.ssim_torch import SIGMA as _SIGMA
from pytest_omni_perf.ssim_torch import WINDOW
from pytest_omni_perf.ssim_torch import torch_ssim_frames as _torch_ssim_frames

if TYPE_CHECKING:
    import numpy.typing as npt

    Frame = npt.NDArray[Any]

SSIM_PARAMETERS: dict[str, Any] = {
    "implementation": "skimage.metrics.structural_similarity",
    "gaussian_weights": True,
    "sigma": 1.5,
    "win_size": 11,
    "use_sample_covariance": False,
    "K1": 0.01,
    "K2": 0.03,
    "data_range": 255,
    "channel_axis": -1,
}
"""The fixed SSIM parameters (``data_range`` shown for uint8: it is the dtype's range)."""

_METHODS = ("auto", "skimage", "torch")
AUTO_TORCH_MIN_PIXELS = 512 * 512
"""``method="auto"`` uses torch on CPU from this many pixels (all frames together) up."""


class ImageSizeMismatch(ValueError):
    """Output and reference differ in size or frame count, so they cannot be compared."""


@dataclasses.dataclass(frozen=True)
class QualityResult:
    """SSIM/PSNR of an output against its reference; an image is a one-frame video.

    ``psnr_mean`` is the PSNR of the mean squared error over all frames, so one identical
    frame does not make a video's PSNR infinite; it is ``inf`` only when all are identical.
    When ``not_applicable`` gives a reason, the SSIM fields are None (and ``per_frame_ssim``
    empty); when ``comparable`` is False as well, ``psnr_mean`` is None too.
    """

    ssim_mean: float | None
    ssim_min: float | None
    psnr_mean: float | None
    per_frame_ssim: tuple[float, ...]
    worst_frame: int | None
    not_applicable: str | None = None
    """Why SSIM (or, when not ``comparable``, every metric) was not computed."""
    comparable: bool = True
    """False when output and reference differ in frame count, size, channels or dtype."""
    mean_abs_diff: float | None = None
    """Mean |output - reference| over every channel sample, in pixel values (0-255 for
    uint8; ``pixel_diff``); None when not ``comparable``."""
    p99_abs_diff: float | None = None
    """Its 99th percentile (numpy's linear interpolation), in the same units."""
    identical: bool = False
    """Every sample equal: why ``psnr_mean`` is ``inf`` (JSON reports write it as null)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``psnr_mean`` may be ``inf``: ``identical`` says so, and the JSON
        report writes it as null, since strict JSON has no infinity)."""
        return dataclasses.asdict(self)

    def explain(self, against: str) -> str | None:
        """A sentence for the report when a metric was not computed, naming ``against``
        (what the output was compared with); None when everything was computed."""
        if self.not_applicable is None:
            return None
        if not self.comparable:
            return f"cannot compare the output with {against}: {self.not_applicable}"
        psnr = "inf" if self.psnr_mean in (None, math.inf) else f"{self.psnr_mean:.2f} dB"
        return (f"SSIM against {against} is not applicable ({self.not_applicable}): PSNR "
                f"{psnr} only, and a min_ssim bound cannot be checked on this output")


def _not_comparable(reason: str) -> QualityResult:
    return QualityResult(None, None, None, (), None, not_applicable=reason, comparable=False)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _pair_problem(a: Frame, b: Frame, where: str = "") -> tuple[type[Exception], str] | None:
    """Why output ``a`` and reference ``b`` cannot be compared at all: (error class, text)."""
    import numpy as np

    if a.shape != b.shape:
        return ImageSizeMismatch, (f"{where}output is {_shape_text(a.shape)} but the reference "
                                   f"is {_shape_text(b.shape)}")
    if a.ndim not in (2, 3) or 0 in a.shape:
        return ValueError, f"{where}expected an HxW or HxWxC image, got shape {a.shape}"
    if a.dtype != b.dtype:
        return TypeError, f"{where}output is {a.dtype} but the reference is {b.dtype}"
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        return TypeError, (f"{where}expected integer images (uint8), got {a.dtype}: the data "
                           "range of a float image is ambiguous")
    return None


def _window_problem(shape: tuple[int, ...], where: str = "") -> str | None:
    """Why SSIM's window does not fit an image of ``shape``, or None."""
    if min(shape[:2]) >= WINDOW:
        return None
    return f"{where}output is {_shape_text(shape)}, smaller than SSIM's {WINDOW}x{WINDOW} window"


def _data_range(a: Frame) -> int:
    import numpy as np

    info = np.iinfo(a.dtype)
    return int(info.max) - int(info.min)


def _check_pair(a: Frame, b: Frame, where: str = "", *, window: bool = True) -> int:
    """Validate one output/reference pair or raise; return the data range of their dtype.

    ``window``: also require the image to hold one SSIM window (ValueError otherwise).
    """
    if (problem := _pair_problem(a, b, where)) is not None:
        error, text = problem
        raise error(text)
    if window and _window_problem(a.shape) is not None:
        raise ValueError(f"{where}SSIM needs images of at least {WINDOW}x{WINDOW} pixels (its "
                         f"Gaussian window), got {_shape_text(a.shape)}")
    return _data_range(a)


def _torch_or_none() -> Any:
    """The torch module, or None when it cannot be imported (not installed or blocked)."""
    try:
        import torch
    except (ImportError, OSError):
        return None
    return torch


def _resolve_method(method: str, pixels: int) -> str:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if method == "skimage":
        return method
    torch = _torch_or_none()
    if torch is None:
        if method == "torch":
            raise ImportError("SSIM method='torch' needs torch, which cannot be imported here")
        return "skimage"
    if method == "torch" or pixels >= AUTO_TORCH_MIN_PIXELS:
        return "torch"
    # Only ask about a GPU when torch was already loaded by someone else: importing torch
    # costs seconds, more than skimage needs for a small image.
    return "torch" if "torch" in sys.modules and torch.cuda.is_available() else "skimage"


def _skimage_ssim(a: Frame, b: Frame, data_range: int, *, full: bool = False) -> Any:
    """skimage's SSIM with the fixed parameters (``full``: also the local SSIM map)."""
    from skimage.metrics import structural_similarity

    return structural_similarity(  # type: ignore[no-untyped-call]
        a,
        b,
        gaussian_weights=True,
        sigma=_SIGMA,
        use_sample_covariance=False,
        K1=_K1,
        K2=_K2,
        data_range=data_range,
        channel_axis=-1 if a.ndim == 3 else None,
        full=full,
    )


def _as_hwc(frame: Frame) -> Frame:
    return frame[:, :, None] if frame.ndim == 2 else frame


def ssim(a: Frame, b: Frame, *, method: str = "auto") -> float:
    """Mean SSIM of image ``a`` (output) against ``b`` (reference), HxWxC or HxW integers.

    ``method``: ``"skimage"`` (the reference), ``"torch"`` (float64, CUDA when available)
    or ``"auto"`` (torch for large images or when a GPU is available, else skimage).
    Raises :class:`ImageSizeMismatch` for different shapes.
    """
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    data_range = _check_pair(a, b)
    if _resolve_method(method, a.shape[0] * a.shape[1]) == "skimage":
        return float(_skimage_ssim(a, b, data_range))
    scores, _ = _torch_ssim_frames(
        np.ascontiguousarray(_as_hwc(a)[None]), np.ascontiguousarray(_as_hwc(b)[None]), data_range
    )
    return scores[0]


def _sse(a: Frame, b: Frame) -> int:
    import numpy as np

    d = (a.astype(np.int64) - b.astype(np.int64)).ravel()
    return int(np.dot(d, d))


def _psnr_from_mse(mse: float, data_range: int) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def psnr(a: Frame, b: Frame) -> float:
    """PSNR in dB of ``a`` against ``b`` over the dtype's data range (255 for uint8).

    ``inf`` for identical images; :class:`ImageSizeMismatch` for different shapes.
    """
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    data_range = _check_pair(a, b, window=False)
    return _psnr_from_mse(_sse(a, b) / a.size, data_range)


def _stacked(given: Any, frames: list[Frame], idx: list[int]) -> Frame:
    """The frames ``idx`` as one NxHxWxC array, without copying a video passed as one."""
    import numpy as np

    if len(idx) == len(frames) and isinstance(given, np.ndarray) and given.ndim == 4:
        return np.ascontiguousarray(given)
    return np.stack([_as_hwc(frames[i]) for i in idx])


def compare_frames(
    output: Sequence[Frame] | Frame, reference: Sequence[Frame] | Frame, *, method: str = "auto"
) -> QualityResult:
    """Compare an output with its reference frame by frame (an image is one frame).

    Frames are HxWxC (or HxW) integer arrays; a NxHxWxC array also works as a sequence.
    Never raises for what the frames are: a pair the metrics cannot take comes back with
    ``not_applicable`` saying why (see the module docstring). The torch path computes all
    frames of one size in batched passes. ValueError only for an unknown ``method``.
    """
    import numpy as np

    outs = [np.asarray(f) for f in output]
    refs = [np.asarray(f) for f in reference]
    if len(outs) != len(refs):
        return _not_comparable(f"output has {len(outs)} frames, reference {len(refs)}")
    if not outs:
        return _not_comparable("output and reference have no frames")
    many = len(outs) > 1
    for i, (o, r) in enumerate(zip(outs, refs)):
        if (problem := _pair_problem(o, r, f"frame {i}: " if many else "")) is not None:
            return _not_comparable(problem[1])
    ranges = [_data_range(o) for o in outs]
    diff = abs_diff(outs, refs)
    # One data range for the clip's PSNR: frames of a video share a dtype.
    size = sum(o.size for o in outs)
    small = [(i, why) for i, o in enumerate(outs)
             if (why := _window_problem(o.shape, f"frame {i}: " if many else "")) is not None]
    if small:
        mse = math.fsum(_sse(o, r) for o, r in zip(outs, refs)) / size
        return QualityResult(None, None, _psnr_from_mse(mse, max(ranges)), (), None,
                             not_applicable=small[0][1], mean_abs_diff=diff.mean,
                             p99_abs_diff=diff.p99, identical=diff.identical)
    pixels = sum(o.shape[0] * o.shape[1] for o in outs)
    scores: list[float] = [0.0] * len(outs)
    errors: list[int] = [0] * len(outs)
    if _resolve_method(method, pixels) == "skimage":
        scores = [float(_skimage_ssim(o, r, d)) for o, r, d in zip(outs, refs, ranges)]
        errors = [_sse(o, r) for o, r in zip(outs, refs)]
    else:
        groups: dict[tuple[tuple[int, ...], str], list[int]] = {}
        for i, o in enumerate(outs):
            groups.setdefault((_as_hwc(o).shape, o.dtype.str), []).append(i)
        for idx in groups.values():
            got, sse = _torch_ssim_frames(
                _stacked(output, outs, idx), _stacked(reference, refs, idx), ranges[idx[0]]
            )
            for i, score, err in zip(idx, got, sse):
                scores[i], errors[i] = score, err
    psnr_value = _psnr_from_mse(sum(errors) / size, max(ranges))
    worst = min(range(len(scores)), key=scores.__getitem__)
    return QualityResult(
        ssim_mean=math.fsum(scores) / len(scores),
        ssim_min=scores[worst],
        psnr_mean=psnr_value,
        per_frame_ssim=tuple(scores),
        worst_frame=worst,
        mean_abs_diff=diff.mean,
        p99_abs_diff=diff.p99,
        identical=diff.identical,
    )


# Anchor colours of the heat map, dark (equal) to bright (different): black, purple,
# red, orange, pale yellow, like matplotlib's "inferno" but without matplotlib.
_COLORMAP = (
    (0.0, (0, 0, 4)),
    (0.25, (87, 16, 110)),
    (0.5, (188, 55, 84)),
    (0.75, (249, 142, 9)),
    (1.0, (252, 255, 164)),
)


def _colorize(values: Frame) -> Frame:
    import numpy as np

    stops = [s for s, _ in _COLORMAP]
    channels = [
        np.interp(values, stops, [rgb[ch] for _, rgb in _COLORMAP]) for ch in range(3)
    ]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def diff_heatmap(a: Frame, b: Frame, *, scale: float | None = None) -> Frame:
    """An HxWx3 uint8 picture of where ``a`` differs from ``b``, for HTML reports.

    Shows the local dissimilarity ``1 - SSIM`` (scikit-image's full SSIM map, averaged over
    channels); falls back to the absolute difference when the image is smaller than the
    SSIM window or scikit-image is missing. Values are divided by ``scale`` (default: the
    map's maximum, so the pattern of a small difference stays visible; identical images
    give an all-dark map).
    """
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    data_range = _check_pair(a, b, window=False)
    dissimilarity: Frame | None = None
    if _window_problem(a.shape) is None:
        try:
            smap = _skimage_ssim(a, b, data_range, full=True)[1]
            dissimilarity = 1.0 - np.asarray(smap, dtype=np.float64)
        except ImportError:
            pass  # without scikit-image the plain difference still shows where
    if dissimilarity is None:
        dissimilarity = np.abs(a.astype(np.float64) - b.astype(np.float64)) / data_range
    if dissimilarity.ndim == 3:
        dissimilarity = dissimilarity.mean(axis=-1)
    dissimilarity = np.clip(dissimilarity, 0.0, None)
    top = float(dissimilarity.max()) if scale is None else float(scale)
    values = np.clip(dissimilarity / top, 0.0, 1.0) if top > 0 else np.zeros_like(dissimilarity)
    return _colorize(values)
