"""What the installed vLLM-Omni release can run: the 0.26 / 0.30 differences that matter.

The adapters map profiles onto option names both releases share (docs/vllm-omni-api.md), so
most profiles need no bridge. What remains are features 0.26 lacks, where 0.26 would not
refuse the option at config time but fail later (a worker that dies at start-up) or fall
back silently. Those are refused here, before anything starts, as skips with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import metadata
from typing import Any

# (option, value, first release that has it, why)
_NEEDS: tuple[tuple[str, Any, tuple[int, int], str], ...] = (
    ("cache_backend", "sea_cache", (0, 30),
     "cache_backend='sea_cache' needs vLLM-Omni 0.30 (0.26's cache selector has no "
     "sea_cache and fails when the worker starts)"),
    ("quantization", "gguf", (0, 30),
     "quantization='gguf' needs vLLM-Omni 0.30 with vllm-gguf-plugin (0.26 has no GGUF "
     "loading path)"),
)


def release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string such as ``0.26.0`` or ``0.30.1.dev3+g1a2b``."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else None


def installed_version() -> str | None:
    """The installed vllm-omni distribution's version, or None (not installed)."""
    try:
        return metadata.version("vllm-omni")
    except metadata.PackageNotFoundError:
        return None


def version_reason(options: Mapping[str, Any], version: str | None) -> str | None:
    """Why vLLM-Omni ``version`` cannot run ``options`` (None: it can, or unknown version)."""
    have = release(version) if version else None
    if have is None:
        return None
    for name, value, first, why in _NEEDS:
        if options.get(name) == value and have < first:
            return f"vLLM-Omni {version}: {why}"
    return None
