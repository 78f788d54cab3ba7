"""Texts of the stored-baseline violations, as pure functions (verdict.py calls them).

A reader of "recorded for another request" wants the fields that changed, not two whole
dicts in different key orders; a reader of "no stored baseline" wants the test id once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def request_diff(stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """``width: 128 -> 256, seed: (absent) -> 1``: only the fields that differ, sorted."""
    stored = stored or {}
    changes = []
    for key in sorted(set(stored) | set(current)):
        before, after = stored.get(key, _MISSING), current.get(key, _MISSING)
        if before != after:
            changes.append(f"{key}: {_show(before)} -> {_show(after)}")
    return ", ".join(changes) or "no field differs"


def _show(value: object) -> str:
    return "(absent)" if value is _MISSING else repr(value)


def baseline_label(nodeid: str, name: str) -> str:
    """``t.py::test[eager]`` for an unlabelled request, ``t.py::test[eager] @ 2`` for
    another; the profile is in the node id already, so it is not shown twice."""
    profile, _, label = name.partition("@")
    shown = nodeid if nodeid.endswith(f"[{profile}]") else f"{nodeid} [{profile}]"
    return f"{shown} @ {label}" if label else shown
