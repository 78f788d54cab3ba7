"""HTML fact rows for the PSNR and pixel-difference bounds and for parity with another
backend (``omni_bounds(parity=...)``), beside the SSIM rows of html_report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_omni_perf.escape import html_text as escape
from pytest_omni_perf.report.terminal import psnr_text

Row = tuple[str, str, tuple[str, ...]]


def _bound(op: str, value: Any, suffix: str = "") -> str:
    return "" if value is None else f" (bound {op} {value:g}{suffix})"


def pixels_text(quality: Mapping[str, Any] | None, bounds: Mapping[str, Any]) -> str:
    """``PSNR 34.12 dB (bound ≥ 30 dB), mean |difference| 0.81, p99 3 (0-255)``."""
    if not quality or not quality.get("comparable", True):
        return "-"
    return (f'PSNR {escape(psnr_text(quality))}{_bound("≥", bounds.get("min_psnr"), " dB")}, '
            f'mean |difference| {_number(quality.get("mean_abs_diff"))}'
            f'{_bound("≤", bounds.get("max_mean_abs_diff"))}, p99 '
            f'{_number(quality.get("p99_abs_diff"))}{_bound("≤", bounds.get("max_p99_abs_diff"))}'
            " (pixel values, 0-255)")


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def rows(result: Mapping[str, Any]) -> list[Row]:
    """The pixel row against the baseline profile, and the parity rows when it ran."""
    bounds = result.get("bounds") or {}
    found: list[Row] = []
    if result.get("quality"):
        found.append(("PSNR, pixel difference vs baseline profile",
                      pixels_text(result.get("quality"), bounds), ("psnr", "pixel_diff")))
    if result.get("stored_quality"):
        found.append(("PSNR, pixel difference vs stored image",
                      pixels_text(result.get("stored_quality"), bounds),
                      ("stored_psnr", "stored_pixel_diff")))
    parity = result.get("parity")
    if not parity:
        return found
    backend = escape(str(parity.get("backend")))
    ratio = parity.get("latency_ratio") or {}
    latency = "-" if not ratio else (
        f'{ratio["estimate"]:.3f}x [{ratio["low"]:.3f}, {ratio["high"]:.3f}] '
        f'({ratio["confidence"]:.0%} CI, {ratio["rounds"]} rounds)')
    median = (parity.get("measurement") or {}).get("latency", {}).get("median")
    quality = parity.get("quality") or {}
    ssim = "not applicable" if quality.get("not_applicable") else _number(
        quality.get("ssim_mean"))
    found += [
        (f"latency vs {backend} (parity)",
         f"{latency} that of {backend} (its median {_number(median)} s), same profile "
         "and request in this session"
         + _bound("≤", bounds.get("max_latency_ratio"), "x"), ("parity_latency",)),
        (f"output vs {backend} (parity)",
         f"SSIM {ssim}{_bound('≥', bounds.get('min_ssim'))}; "
         + pixels_text(quality, bounds), ("parity_ssim", "parity_psnr", "parity_pixel_diff")),
    ]
    return found
