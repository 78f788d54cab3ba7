"""The options the installed vLLM-Omni knows, read from its own parser and config dataclasses,
and the check of pass-through options against them (``passthrough``).

``read_installed`` builds vLLM-Omni's ``vllm serve --omni`` argument parser (as ``vllm
serve`` does: ``OmniServeCommand.subparser_init`` on its ``TrackingArgumentParser``) and reads
the fields of ``OmniDiffusionConfig`` and ``DiffusionParallelConfig``. That imports vLLM
(seconds, ~14 s on a CPU build), so the plugin does it in a child Python, once per release:
``known_options`` keeps the answer in the cache folder, keyed by the vLLM-Omni version.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_omni_perf.passthrough import KnownOptions, unknown_message

# One answer per process and release; the disk cache spares other processes the import.
_MEMO: dict[tuple[str, str], KnownOptions | str] = {}
_READ_TIMEOUT_S = 300.0


def build_root_parser() -> Any:
    """vLLM-Omni's ``vllm`` argument parser with its ``serve`` command, built as ``vllm
    serve`` builds it (imports vLLM; ``parse_args(["serve", MODEL, "--omni", ...])``)."""
    from vllm_omni.entrypoints.cli.serve import OmniServeCommand, _ensure_vllm_platform
    from vllm_omni.utils.tracking_parser import TrackingArgumentParser

    _ensure_vllm_platform()
    root = TrackingArgumentParser(prog="vllm")
    OmniServeCommand().subparser_init(root.add_subparsers(dest="subparser"))
    return root


def serve_parser(root: Any) -> Any:
    """The ``serve`` subparser of a ``vllm`` root parser."""
    import argparse

    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]
    raise LookupError("the vllm parser has no 'serve' command")


def read_installed(root: Any = None) -> KnownOptions:
    """The options of the vLLM-Omni importable here (imports it; on a CPU-only machine the
    caller must first make it importable, see ``tests/contract/vllm_omni_cpu_shim.py``).
    ``root``: a parser from ``build_root_parser`` already built (it takes seconds)."""
    import dataclasses

    from vllm_omni.diffusion.data import DiffusionParallelConfig, OmniDiffusionConfig

    from pytest_omni_perf.engines.omni_compat import installed_version

    serve = serve_parser(root if root is not None else build_root_parser())
    flags = frozenset(s for s in serve._option_string_actions if s.startswith("-"))
    dests = {a.dest for a in serve._actions if a.option_strings}
    fields = {f.name for cls in (OmniDiffusionConfig, DiffusionParallelConfig)
              for f in dataclasses.fields(cls)}
    return KnownOptions(installed_version() or "unknown", flags, frozenset(dests | fields))


def known_options(version: str, cache_dir: Path | None,
                  timeout_s: float = _READ_TIMEOUT_S) -> KnownOptions | str:
    """The installed vLLM-Omni ``version``'s options, or why they could not be read.

    Read in a child Python (``read_installed``), then kept in ``cache_dir`` (default: the
    built-in models' cache folder) as ``vllm-omni-options-<version>.json`` and in this
    process.
    """
    if cache_dir is None:
        from pytest_omni_perf.builtin_models import default_cache_dir

        cache_dir = default_cache_dir()
    key = (version, str(cache_dir))
    if key in _MEMO:
        return _MEMO[key]
    cached = cache_dir / f"vllm-omni-options-{version}.json"
    answer: KnownOptions | str
    try:
        answer = KnownOptions.from_json(json.loads(cached.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        answer = _read_in_child(timeout_s)
        if isinstance(answer, KnownOptions):
            from pytest_omni_perf.atomic_files import write_atomic

            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(cached, json.dumps(answer.to_json()))
            except OSError:
                pass  # a read-only cache only costs the next process the import
    _MEMO[key] = answer
    return answer


def _read_in_child(timeout_s: float) -> KnownOptions | str:
    from pytest_omni_perf.engines.parent_death import guarded

    code = ("import json\n"
            "from pytest_omni_perf.engines.omni_options import read_installed\n"
            "print(json.dumps(read_installed().to_json()))\n")
    try:
        done = subprocess.run(guarded([sys.executable, "-c", code]), capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"reading its options failed ({exc})"
    try:
        return KnownOptions.from_json(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, KeyError, TypeError):
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"reading its options failed: {last[:300]}"


def check(options: Mapping[str, Any], *, online: bool, cache_dir: Path | None
          ) -> tuple[str | None, str | None]:
    """(failure, note) for the pass-through ``options`` against the installed vLLM-Omni.

    failure names the options this release does not know and its version; note says what
    was checked, or why nothing was (vLLM-Omni not installed, its options unreadable).
    """
    if not options:
        return None, None
    from pytest_omni_perf.engines.omni_compat import installed_version

    names = ", ".join(options)
    version = installed_version()
    if version is None:
        return None, (f"pass-through option(s) {names} not checked: vLLM-Omni is not "
                      "installed here")
    known = known_options(version, cache_dir)
    if isinstance(known, str):
        return None, (f"pass-through option(s) {names} not checked against vLLM-Omni "
                      f"{version}: {known}")
    if missing := known.unknown(options, online=online):
        return unknown_message(missing, version, online=online), None
    spelled = "`vllm serve --omni` flags" if online else "Omni(...) keywords"
    return None, f"pass-through option(s) {names}: {spelled} of vLLM-Omni {version}"


def refuse_unknown(options: Mapping[str, Any], *, online: bool, cache_dir: str) -> str:
    """Check a profile's pass-through options before an engine starts: EngineError (the test
    fails) naming those the installed vLLM-Omni does not know; else the note to report."""
    from pytest_omni_perf.canonical import CANONICAL_OPTIONS
    from pytest_omni_perf.engines.base import EngineError
    from pytest_omni_perf.passthrough import split

    _, rest = split(options, CANONICAL_OPTIONS)
    failure, note = check(rest, online=online, cache_dir=Path(cache_dir) if cache_dir else None)
    if failure is not None:
        raise EngineError(failure)
    return note or ""
