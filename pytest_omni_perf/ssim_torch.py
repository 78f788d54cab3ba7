"""SSIM of integer frame stacks in float64 with torch (CUDA when available), batched.

The same quantity as scikit-image's ``structural_similarity`` with the fixed parameters of
:mod:`pytest_omni_perf.quality` (Gaussian sigma 1.5, an 11-tap window, K1 0.01, K2 0.03),
to about 1e-15; quality.py chooses between the two. torch is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy.typing as npt

    Frame = npt.NDArray[Any]

SIGMA = 1.5
RADIUS = 5  # int(3.5 * 1.5 + 0.5): skimage's truncate=3.5 gives the 11-tap window
WINDOW = 2 * RADIUS + 1
"""Side of the Gaussian window in pixels: the smallest image side SSIM is defined for."""
K1 = 0.01
K2 = 0.03
# Elements (planes x rows x columns) one torch pass works on. Small on CPU so the eleven
# in-place passes stay in cache; large on GPU where kernel launches are the cost.
_CPU_CHUNK = 1 << 18
_GPU_CHUNK = 1 << 25


def gaussian_weights() -> list[float]:
    # Same kernel as scipy.ndimage.gaussian_filter1d (which skimage uses).
    w = [math.exp(-0.5 * (k / SIGMA) ** 2) for k in range(-RADIUS, RADIUS + 1)]
    total = sum(w)
    return [x / total for x in w]


def torch_ssim_frames(
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
    """The work of :func:`torch_ssim_frames`, on ``device`` with the threads it set."""
    n, h, w, c = out.shape
    weights = gaussian_weights()
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    taps = 2 * RADIUS
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
