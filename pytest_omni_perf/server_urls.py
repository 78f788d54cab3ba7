"""``--omni-server-url``: which running server measures which profile.

``URL`` serves the one profile named with ``--omni-profile``; ``NAME=URL,NAME=URL`` gives a
profile and its baseline profile a server each (their rounds interleave as usual). Checked
at configure time, so a run that cannot mean anything stops before collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import pytest

from pytest_omni_perf.engines.base import ProfileUnsupported


def parse_server_urls(text: str) -> tuple[str | None, dict[str, str]]:
    """``(URL, {})`` or ``(None, {NAME: URL, ...})``; ValueError for anything else."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("expected URL or NAME=URL pairs")
    pairs: dict[str, str] = {}
    for part in parts:
        name, eq, url = (p.strip() for p in part.partition("="))
        if not eq or "/" in name or ":" in name:  # no NAME= before the URL
            if len(parts) > 1:
                raise ValueError(f"several servers are NAME=URL pairs, got {part!r}")
            return checked_url(part), {}
        if not name or name in pairs:
            raise ValueError(f"expected NAME=URL with each NAME once, got {part!r}")
        pairs[name] = checked_url(url)
    return None, pairs


def checked_url(url: str) -> str:
    """``url`` without a trailing slash when it is http(s)://HOST[:PORT][/PATH]."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s)://HOST[:PORT] URL, got {url!r}")
    return url.rstrip("/")


def attached(text: str, backend: str, names: tuple[str, ...], *, command_given: bool
             ) -> tuple[tuple[str, ...], dict[str, str]]:
    """(profile names to measure, profile -> URL); UsageError for what cannot be meant: a
    bare URL without exactly one profile named, a profile asked for with no server, or
    flags that only apply to servers the plugin starts. Without --omni-profile, the
    NAME=URL form measures every profile it names."""
    try:
        single, pairs = parse_server_urls(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--omni-server-url: {exc}") from None
    if backend not in ("auto", "omni-server"):
        raise pytest.UsageError(f"--omni-server-url measures running servers (the omni-server "
                                f"backend), not --omni-backend={backend}")
    if command_given:
        raise pytest.UsageError("--omni-server-command and --omni-server-url exclude each "
                                "other: the plugin starts no server while attached")
    if single is not None:
        if len(names) != 1 or names[0] == "all":
            raise pytest.UsageError(
                f"--omni-server-url={single} measures one profile: name the one the server "
                f"runs with --omni-profile=NAME (got {','.join(names) or 'none'}), or give "
                "NAME=URL pairs")
        return names, {names[0]: single}
    if not names:
        return tuple(pairs), pairs
    missing = [n for n in names if n not in pairs]
    if missing:
        raise pytest.UsageError(
            f"--omni-profile asks for {', '.join(missing)}, which --omni-server-url gives no "
            f"server ({', '.join(pairs)} have one): add NAME=URL for each, or leave them out")
    return names, pairs


def url_for(server_urls: Mapping[str, str], profile: str) -> str:
    """``profile``'s running server when attached, else "" (the plugin starts one).

    A profile without one while others have one (the baseline profile of a measured one)
    is skipped, naming the fix, rather than failing the run: measuring it needs a server
    the plugin does not start while attached, and one started beside the attached ones
    would not be comparable with them (another host, another launch).
    """
    if not server_urls:
        return ""
    if profile not in server_urls:
        raise ProfileUnsupported(
            f"profile {profile!r} has no running server: --omni-server-url names "
            f"{', '.join(server_urls)}; add {profile}=URL to measure it (no server is "
            "started while attached)")
    return server_urls[profile]
