"""Stored-baseline messages: the fields of a changed request, the test named once."""

from __future__ import annotations

from pytest_omni_perf.baseline_messages import baseline_label, request_diff


def test_request_diff_names_only_the_changed_fields() -> None:
    stored = {"width": 128, "height": 128, "seed": 0, "prompt": "a cat"}
    current = {"prompt": "a cat", "seed": 0, "height": 128, "width": 256, "num_frames": 9}
    assert request_diff(stored, current) == "num_frames: (absent) -> 9, width: 128 -> 256"
    assert request_diff(current, current) == "no field differs"
    assert request_diff(None, {"width": 1}) == "width: (absent) -> 1"


def test_baseline_label_shows_the_profile_once() -> None:
    assert baseline_label("t.py::test_x[eager]", "eager") == "t.py::test_x[eager]"
    assert baseline_label("t.py::test_x[eager]", "eager@2") == "t.py::test_x[eager] @ 2"
    # A test not parametrized by profile (a harness built by hand) still names it.
    assert baseline_label("t.py::test_x", "eager") == "t.py::test_x [eager]"
