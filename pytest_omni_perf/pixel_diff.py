"""Absolute pixel differences of an output against its reference: mean and 99th percentile.

The numbers behind the ``max_mean_abs_diff`` and ``max_p99_abs_diff`` bounds. They are
vLLM-Omni's own closeness measures (``mean_abs_diff`` and ``p99_abs_diff`` of
``assert_images_pixel_close`` in tests/e2e/accuracy/helpers.py of vllm-project/vllm-omni,
commit 1d05e396741a4fe7ee0078201e9ed60fa5537309): the absolute difference of every channel
sample, averaged, and its 99th percentile with numpy's default (linear) interpolation. They
are given here in the frames' own units, 0-255 for the uint8 images every engine returns,
where vLLM-Omni divides by 255 first: multiply its thresholds by 255.

Integer frames only (quality.py checks that first). Differences of 8- and 16-bit samples
are counted in a histogram, so the percentile of a long video costs one pass and no sort.
numpy is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy.typing as npt

    Frame = npt.NDArray[Any]

PERCENTILE = 0.99
_HISTOGRAM_MAX = 1 << 16  # differences of 8- and 16-bit samples fit a histogram


@dataclasses.dataclass(frozen=True)
class AbsDiff:
    """Mean and 99th percentile of |output - reference| over every channel sample of every
    frame, in pixel values (0-255 for uint8); ``identical`` when every sample is equal."""

    mean: float
    p99: float
    identical: bool


def abs_diff(outputs: Sequence[Frame], references: Sequence[Frame]) -> AbsDiff:
    """``AbsDiff`` of frames of equal shapes and integer dtype (checked by the caller)."""
    import numpy as np

    total = sum(int(o.size) for o in outputs)
    if total == 0:
        return AbsDiff(0.0, 0.0, True)
    diffs = [np.abs(o.astype(np.int64) - r.astype(np.int64)).ravel()
             for o, r in zip(outputs, references)]
    top = max(int(d.max()) for d in diffs)
    if top >= _HISTOGRAM_MAX:  # 32-bit samples: sort, as numpy does
        joined = np.concatenate(diffs)
        return AbsDiff(float(joined.mean()), float(np.quantile(joined, PERCENTILE)), top == 0)
    counts = sum(np.bincount(d, minlength=top + 1) for d in diffs)
    values = np.arange(top + 1)
    mean = float(np.dot(counts, values)) / total
    return AbsDiff(mean, _quantile(counts, total, PERCENTILE), top == 0)


def _quantile(counts: Any, total: int, q: float) -> float:
    """numpy's default ('linear') quantile of the sorted samples a histogram describes:
    position h = (n - 1) q, between the samples at floor(h) and floor(h) + 1."""
    import numpy as np

    cumulative = np.cumsum(counts)
    position = (total - 1) * q
    below = math.floor(position)

    def sample(k: int) -> int:  # the k-th smallest sample (0-based)
        return int(np.searchsorted(cumulative, k, side="right"))

    low = sample(below)
    if below + 1 >= total:
        return float(low)
    return low + (position - below) * (sample(below + 1) - low)
