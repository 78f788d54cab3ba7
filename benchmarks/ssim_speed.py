"""SSIM speed: the plugin's torch path (CPU, and CUDA when present) against scikit-image.

    python benchmarks/ssim_speed.py [--frames 9] [--repeats 3] [--out results/cpu/ssim-speed.txt]

Two cases, with the SSIM parameters the plugin fixes (``quality.SSIM_PARAMETERS``): one
1024x1024 RGB image, and a video of ``--frames`` 1280x720 RGB frames (81 is the issue's
case; on a CPU, skimage needs about a second per frame, so the default is 9 and the ratio
is per frame alike). Outputs are a random uint8 reference and a noisy copy of it. Every
implementation runs on the same pair, turns alternating, ``--repeats`` times; the medians
and the ratios to scikit-image are printed, with the largest per-frame difference from
scikit-image (must be <= 1e-6). CUDA timings include the copy to the GPU and back, as the
plugin pays it. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_omni_perf import quality  # noqa: E402
from pytest_omni_perf.ssim_torch import torch_ssim_frames  # noqa: E402


def pair(frames: int, height: int, width: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    noise = rng.normal(0, 12, ref.shape)
    out = np.clip(ref + noise, 0, 255).astype(np.uint8)
    return out, ref


def implementations() -> dict[str, Callable[[Any, Any], list[float]]]:
    import torch

    def skimage(out: Any, ref: Any) -> list[float]:
        return [float(quality._skimage_ssim(o, r, 255)) for o, r in zip(out, ref)]

    def on(device: str) -> Callable[[Any, Any], list[float]]:
        return lambda out, ref: torch_ssim_frames(out, ref, 255, device)[0]

    found = {"scikit-image": skimage, "torch cpu": on("cpu")}
    if torch.cuda.is_available():
        found[f"torch cuda ({torch.cuda.get_device_name(0)})"] = on("cuda")
    return found


def bench(name: str, out: Any, ref: Any, repeats: int) -> list[str]:
    impls = implementations()
    times: dict[str, list[float]] = {k: [] for k in impls}
    scores: dict[str, list[float]] = {}
    for fn in impls.values():  # warm-up: imports, CUDA context, cuDNN plans
        fn(out[:1], ref[:1])
    for _ in range(repeats):
        for key, fn in impls.items():
            began = time.perf_counter()
            scores[key] = fn(out, ref)
            times[key].append(time.perf_counter() - began)
    reference = scores["scikit-image"]
    sk = statistics.median(times["scikit-image"])
    lines = [f"{name}: {out.shape[0]} frame(s) of {out.shape[2]}x{out.shape[1]} RGB, "
             f"SSIM {statistics.fmean(reference):.6f}, {repeats} repeats alternating"]
    for key in impls:
        t = statistics.median(times[key])
        diff = max(abs(a - b) for a, b in zip(scores[key], reference))
        lines.append(f"  {key:<40} {t * 1000:10.1f} ms  {sk / t:8.1f}x scikit-image  "
                     f"max |diff| {diff:.1e}{'' if diff <= 1e-6 else '  ABOVE 1e-6'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=9, help="video frames (81 on a GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    import torch

    lines = [f"torch {torch.__version__}, {os.cpu_count()} CPUs (torch path: 1 thread on CPU), "
             f"load average {os.getloadavg()[0]:.1f}"]
    lines += bench("image", *pair(1, 1024, 1024), args.repeats)
    lines += bench("video", *pair(args.frames, 720, 1280), args.repeats)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
