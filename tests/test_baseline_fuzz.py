"""Property tests of the baseline reader: whatever bytes or JSON a baseline folder holds
(hand-edited, merged, truncated), reading it and using what was read raise only the
plugin's BaselineError (or the size mismatch the harness reports), and never write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_omni_perf import stored_metrics
from pytest_omni_perf.baseline_view import apply_view, choose_view, comparable
from pytest_omni_perf.baselines import METRICS, BaselineError, BaselineStore, CorruptBaseline
from pytest_omni_perf.measure.stats import Arm, ratio_interval
from pytest_omni_perf.quality import ImageSizeMismatch, compare_frames

NODE = "tests/test_fuzz.py::test_image[eager]"
FRAMES = [np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)]
SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_metrics() -> dict[str, Any]:
    """What the harness stores for a 16x16 image (see harness._stored_metrics)."""
    return {"view": choose_view(FRAMES), "nodeid": NODE, "profile": "eager",
            "request": {"width": 16, "height": 16}, "samples_s": [0.1, 0.11, 0.12],
            "latency": {"median": 0.11}, "memory": {"kind": "rss", "peak_bytes": 2**20},
            "speedup": 1.0, "baseline_median_s": 0.11}


def _json() -> Any:
    scalars = (st.none() | st.booleans() | st.integers(-3, 40) | st.integers()
               | st.floats(allow_nan=False) | st.text(max_size=6))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=10)


FIELDS = ["view", "samples_s", "latency", "memory", "speedup", "baseline_median_s",
          "schema_version", "hardware_key", "frames", "request"]
VIEW_KEYS = ["scale", "frames", "source_frames", "source_shape", "x"]


@st.composite
def _edited(draw: st.DrawFn) -> dict[str, Any]:
    """A stored document with some fields (or fields of its view) replaced by anything."""
    doc = _valid_metrics()
    doc.update({"schema_version": 1, "hardware_key": "cpu", "frames": 1})
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        doc[key] = draw(_json())
    for key in draw(st.lists(st.sampled_from(VIEW_KEYS), max_size=2)):
        if isinstance(doc.get("view"), dict):
            doc["view"][key] = draw(_json() | st.lists(st.integers(-2, 20), max_size=3))
    return doc


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _use(metrics: dict[str, Any], stored_frames: list[Any]) -> None:
    """What the verdict does with a loaded baseline (verdict._intervals, _against_stored)."""
    view = metrics.get("view") or {}
    try:
        if comparable(FRAMES, view) is None:
            compare_frames(apply_view(FRAMES, view), stored_frames)
    except ImageSizeMismatch:
        pass  # reported to the user as "cannot compare with the stored baseline"
    for relative in (True, False):
        then = stored_metrics.stored_arm(metrics, relative=relative)
        if then is not None:
            now = (0.1, 0.12, 0.11, 0.1, 0.13)
            ratio_interval(Arm(now, (0.2,) * 5, paired=True) if relative else Arm(now), then)
    memory = metrics.get("memory") or {}
    if memory.get("kind") == "rss" and memory.get("peak_bytes"):
        float(memory["peak_bytes"]) / 2**30


def _read_and_use(store: BaselineStore) -> None:
    """Load as the harness does; only BaselineError may come out."""
    stored = store.load(NODE, "eager")
    assert stored is not None
    if (why := stored_metrics.problem(stored.metrics)) is not None:
        raise CorruptBaseline(stored.path, METRICS, f"{METRICS}: {why}")
    _use(stored.metrics, stored.frames)


@pytest.fixture
def store(tmp_path: Path) -> BaselineStore:
    """A store holding one valid baseline of a 16x16 image."""
    store = BaselineStore(tmp_path, "cpu")
    store.save(NODE, "eager", _valid_metrics(), apply_view(FRAMES, choose_view(FRAMES)))
    return store


def test_the_valid_baseline_reads_and_compares(store: BaselineStore) -> None:
    _read_and_use(store)  # the property tests below start from this document


@SETTINGS
@given(doc=_edited())
def test_edited_metrics_raise_only_baseline_error(store: BaselineStore, doc: dict[str, Any]
                                                  ) -> None:
    metrics = store.folder(NODE, "eager") / METRICS
    metrics.write_text(json.dumps(doc))
    before = _snapshot(store.root)
    try:
        _read_and_use(store)
    except BaselineError:
        pass
    assert _snapshot(store.root) == before


@SETTINGS
@given(data=st.binary(max_size=300), which=st.sampled_from([METRICS, "frame_000.png"]),
       keep=st.integers(0, 400))
def test_arbitrary_bytes_raise_only_baseline_error(store: BaselineStore, data: bytes,
                                                   which: str, keep: int) -> None:
    path = store.folder(NODE, "eager") / which
    original = path.read_bytes()
    # Random bytes, or the real file cut short and followed by them (a torn copy).
    path.write_bytes(original[:keep] + data)
    before = _snapshot(store.root)
    try:
        _read_and_use(store)
    except BaselineError:
        pass
    finally:
        assert _snapshot(store.root) == before
        path.write_bytes(original)


@settings(max_examples=40, deadline=None, database=None)
@given(long=st.integers(1, 1500), short=st.integers(1, 24), wide=st.booleans(),
       channels=st.sampled_from([None, 1, 3, 4]), count=st.integers(1, 11))
def test_any_recorded_output_is_readable_by_the_compare_run(
        tmp_path_factory: pytest.TempPathFactory, long: int, short: int, wide: bool,
        channels: int | None, count: int) -> None:
    """Whatever output a record run stores (thin, tiny, grey, RGBA, a video), the compare run
    reads it as a valid baseline and compares the same output with it."""
    h, w = (short, long) if wide else (long, short)
    dims = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(h * 7 + w)
    frames = [rng.integers(0, 256, dims, dtype=np.uint8) for _ in range(count)]
    store = BaselineStore(tmp_path_factory.mktemp("bl"), "cpu")
    view = choose_view(frames)
    store.save(NODE, "eager", {**_valid_metrics(), "view": view}, apply_view(frames, view))
    stored = store.load(NODE, "eager")
    assert stored is not None and stored_metrics.problem(stored.metrics) is None
    assert comparable(frames, stored.metrics["view"]) is None
    result = compare_frames(apply_view(frames, stored.metrics["view"]), stored.frames)
    assert result.comparable and result.psnr_mean == float("inf")
    assert result.ssim_mean == pytest.approx(1.0) or result.not_applicable is not None
