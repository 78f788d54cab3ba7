"""``--omni-list-profiles``: every profile with what it asks of the hardware and engine."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_omni_perf.profiles import Profile
from pytest_omni_perf.escape import shell_line, terminal_text


def format_profiles(profiles: Mapping[str, Profile]) -> str:
    """Human-readable listing, grouped by the guide's method."""
    lines: list[str] = []
    for name, profile in sorted(profiles.items(), key=lambda kv: (kv[1].method, kv[0])):
        info = profile.describe()
        lines.append(f"{name}  [{terminal_text(profile.method or 'user')}"
                     f"{', lossy' if profile.lossy else ''}]  {terminal_text(profile.description)}")
        lines.append(f"    baseline: {profile.baseline or '(reference)'}"
                     f"   requires: {info['requires'] or 'nothing'}")
        lines.append(f"    bounds:   {info['bounds']}")
        kwargs = ", ".join(f"{k}={v!r}" for k, v in info["omni_kwargs"].items())
        lines.append(f"    Omni(model, {kwargs})")
        lines.append(f"    vllm serve MODEL --omni {shell_line(info['serve_args'])}".rstrip())
        if profile.request:
            lines.append(f"    request:  {dict(profile.request)}")
        if profile.source != "<built-in profiles.toml>":
            lines.append(f"    from:     {terminal_text(profile.source)}")
    return "\n".join(lines)
