"""Image and video quality metrics: SSIM, PSNR and a diff heat map.

SSIM uses fixed parameters so numbers are comparable across runs, machines and the two
implementations: scikit-image's ``structural_similarity`` with ``gaussian_weights=True``,
``sigma=1.5`` (an 11-tap window, truncate 3.5), ``use_sample_covariance=False``,
``K1=0.01``, ``K2=0.03``, ``data_range`` of the dtype (255 for uint8) and
``channel_axis=-1`` (per-channel SSIM, averaged), as in Wang et al. 2004. These are listed
in :data:`SSIM_PARAMETERS`.

``method="torch"`` computes the same quantity in float64 with separable Gaussian passes in
torch (CUDA when available), batching the frames of a video; it matches scikit-image to
about 1e-15. scikit-image, numpy and torch are imported only inside the functions that need
them, so the plugin loads without them.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
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

_SIGMA = 1.5
_RADIUS = 5  # int(3.5 * 1.5 + 0.5): skimage's truncate=3.5 gives the 11-tap window
_K1 = 0.01
_K2 = 0.03
_METHODS = ("auto", "skimage", "torch")
AUTO_TORCH_MIN_PIXELS = 512 * 512
"""``method="auto"`` uses torch on CPU from this many pixels (all frames together) up."""
# Elements (planes x rows x columns) one torch pass works on. Small on CPU so the eleven
# in-place passes stay in cache; large on GPU where kernel launches are the cost.
_CPU_CHUNK = 1 << 18
_GPU_CHUNK = 1 << 25


class ImageSizeMismatch(ValueError):
    """Output and reference differ in size or frame count, so they cannot be compared."""


@dataclasses.dataclass(frozen=True)
class QualityResult:
    """SSIM/PSNR of an output against its reference; an image is a one-frame video.

    ``psnr_mean`` is the PSNR of the mean squared error over all frames, so one identical
    frame does not make a video's PSNR infinite; it is ``inf`` only when all are identical.
    """

    ssim_mean: float
    ssim_min: float
    psnr_mean: float
    per_frame_ssim: tuple[float, ...]
    worst_frame: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``psnr_mean`` may be ``inf``, which ``json`` writes as Infinity)."""
        return dataclasses.asdict(self)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _check_pair(a: Frame, b: Frame, where: str = "", *, window: bool = True) -> int:
    """Validate one output/reference pair; return the data range of their dtype.

    ``window``: also require the image to hold one SSIM window.
    """
    import numpy as np

    if a.shape != b.shape:
        raise ImageSizeMismatch(
            f"{where}output is {_shape_text(a.shape)} but the reference is "
            f"{_shape_text(b.shape)}"
        )
    if a.ndim not in (2, 3):
        raise ValueError(f"{where}expected an HxW or HxWxC image, got shape {a.shape}")
    if a.dtype != b.dtype:
        raise TypeError(f"{where}output is {a.dtype} but the reference is {b.dtype}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(
            f"{where}expected integer images (uint8), got {a.dtype}: the data range of a "
            "float image is ambiguous"
        )
    if window and min(a.shape[:2]) < 2 * _RADIUS + 1:
        raise ValueError(
            f"{where}SSIM needs images of at least {2 * _RADIUS + 1}x{2 * _RADIUS + 1} "
            f"pixels (its Gaussian window), got {_shape_text(a.shape)}"
        )
    info = np.iinfo(a.dtype)
    return int(info.max) - int(info.min)


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


def _gaussian_weights() -> list[float]:
    # Same kernel as scipy.ndimage.gaussian_filter1d (which skimage uses).
    w = [math.exp(-0.5 * (k / _SIGMA) ** 2) for k in range(-_RADIUS, _RADIUS + 1)]
    total = sum(w)
    return [x / total for x in w]


def _torch_ssim_frames(
    out: Frame, ref: Frame, data_range: int, device_name: str | None = None
) -> tuple[list[float], list[int]]:
    """Per-frame SSIM and sum of squared errors of two NxHxWxC integer stacks, with torch.

    SSIM in float64; the squared errors (for PSNR) in int64, on the same device, because
    on a GPU the CPU's pass over the pixels would cost more than the SSIM itself.

    skimage filters the padded image and then crops the window radius from every edge,
    so the cropped values never see the padding: 'valid' filtering gives the same mean
    without padding at all. Planes (frame x channel) are processed together in chunks.
    """
    import torch

    # ``device_name`` lets benchmarks/ssim_speed.py time the CPU path on a GPU machine.
    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    # from_numpy warns on read-only arrays (np.asarray of a PIL image is one).
    out = out if out.flags.writeable else out.copy()
    ref = ref if ref.flags.writeable else ref.copy()
    # One CPU thread: the passes are memory-bound and small, and OpenMP's barriers made
    # them 5x slower on a loaded 2-core machine (and engines need those cores anyway).
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _torch_ssim_planes(torch, out, ref, device, data_range)
    finally:
        if device.type == "cpu":
            torch.set_num_threads(threads)


def _torch_ssim_planes(
    torch: Any, out: Frame, ref: Frame, device: Any, data_range: int
) -> tuple[list[float], list[int]]:
    """The work of :func:`_torch_ssim_frames`, on ``device`` with the threads it set."""
    n, h, w, c = out.shape
    weights = _gaussian_weights()
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    taps = 2 * _RADIUS
    with torch.inference_mode():
        x_all = torch.from_numpy(out).to(device).permute(0, 3, 1, 2).reshape(n * c, h, w)
        y_all = torch.from_numpy(ref).to(device).permute(0, 3, 1, 2).reshape(n * c, h, w)
        sums = torch.zeros(n * c, dtype=torch.float64, device=device)
        sse = torch.zeros(n * c, dtype=torch.int64, device=device)
        budget = _GPU_CHUNK if device.type == "cuda" else _CPU_CHUNK
        planes = max(1, budget // (h * w))
        # A single plane larger than the budget is cut into row bands with a halo.
        band = h - taps if planes > 1 else max(1, min(h - taps, budget // w - taps))

        kernel = torch.tensor(weights, dtype=torch.float64, device=device).view(1, 1, -1)

        def filt(t: Any) -> Any:
            """'Valid' separable Gaussian filtering of (planes, rows, cols)."""
            p, rows, cols = t.shape[0], t.shape[1] - taps, t.shape[2] - taps
            if device.type == "cuda":
                # cuDNN's conv1d reads each pixel once: 4.6x faster than 11 shifted
                # adds on an H100 (1.2 vs 5.6 ms for 36 planes of 720p).
                conv = torch.nn.functional.conv1d
                o = conv(t.reshape(-1, 1, t.shape[2]), kernel).view(p, -1, cols)
                o = conv(o.transpose(1, 2).reshape(-1, 1, t.shape[1]), kernel)
                return o.view(p, cols, rows).transpose(1, 2)
            # On CPU, float64 convolutions are slow; in-place shifted adds stay in cache.
            o = t[..., :, 0:cols] * weights[0]
            for k in range(1, taps + 1):
                o.add_(t[..., :, k : k + cols], alpha=weights[k])
            r = o[..., 0:rows, :] * weights[0]
            for k in range(1, taps + 1):
                r.add_(o[..., k : k + rows, :], alpha=weights[k])
            return r

        for p0 in range(0, n * c, planes):
            for r0 in range(0, h, band + taps):
                d = x_all[p0 : p0 + planes, r0 : r0 + band + taps].to(torch.int64)
                d.sub_(y_all[p0 : p0 + planes, r0 : r0 + band + taps].to(torch.int64))
                sse[p0 : p0 + planes] += d.mul_(d).sum(dim=(-2, -1))
            for r0 in range(0, h - taps, band):
                rows = slice(r0, min(h, r0 + band + taps))
                x = x_all[p0 : p0 + planes, rows].to(torch.float64)
                y = y_all[p0 : p0 + planes, rows].to(torch.float64)
                ux, uy = filt(x), filt(y)
                uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
                uxuy = ux * uy
                ux.mul_(ux)
                uy.mul_(uy)
                num = (2 * uxuy + c1).mul_(uxy.sub_(uxuy).mul_(2).add_(c2))
                mu2 = ux.add_(uy)
                den = (mu2 + c1).mul_(uxx.add_(uyy).sub_(mu2).add_(c2))
                sums[p0 : p0 + planes] += num.div_(den).sum(dim=(-2, -1))
        per_plane = sums / ((h - taps) * (w - taps))
        scores = per_plane.reshape(n, c).mean(dim=1).cpu().tolist()
        errors = sse.reshape(n, c).sum(dim=1).cpu().tolist()
        return [float(v) for v in scores], [int(v) for v in errors]


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
    A different frame count or frame size raises :class:`ImageSizeMismatch`. The torch
    path computes all frames of one size in batched passes.
    """
    import numpy as np

    outs = [np.asarray(f) for f in output]
    refs = [np.asarray(f) for f in reference]
    if len(outs) != len(refs):
        raise ImageSizeMismatch(f"output has {len(outs)} frames, reference {len(refs)}")
    if not outs:
        raise ValueError("nothing to compare: output and reference have no frames")
    many = len(outs) > 1
    ranges = [
        _check_pair(o, r, f"frame {i}: " if many else "")
        for i, (o, r) in enumerate(zip(outs, refs))
    ]
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
    size = sum(o.size for o in outs)
    # One data range for the clip's PSNR: frames of a video share a dtype.
    psnr_value = _psnr_from_mse(sum(errors) / size, max(ranges))
    worst = min(range(len(scores)), key=scores.__getitem__)
    return QualityResult(
        ssim_mean=math.fsum(scores) / len(scores),
        ssim_min=scores[worst],
        psnr_mean=psnr_value,
        per_frame_ssim=tuple(scores),
        worst_frame=worst,
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
    if min(a.shape[:2]) >= 2 * _RADIUS + 1:
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
