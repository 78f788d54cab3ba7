"""Options outside the canonical set, passed through to vLLM-Omni as written.

vLLM-Omni has hundreds of options (``step_execution``, ``max_num_seqs``, ``deploy_config``,
``diffusion_attention_backend``, ``gpu_memory_utilization``, ...); the canonical set
(``canonical.CANONICAL_OPTIONS``) covers those a profile's measurement depends on and that
the diffusers backend can honour. Any other option of a profile's ``options`` table, or of a
case file's ``serve_args``, travels to vLLM-Omni unchanged: as an ``Omni(**kwargs)`` keyword
(its snake_case name) and as a ``vllm serve --omni`` flag (dashes). Whether the installed
vLLM-Omni knows it is decided against its own parser and config dataclasses
(``engines.omni_options``); here is only what needs no vLLM-Omni: names, values, spellings,
and the messages. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

# vLLM's own option names: letters, digits, dashes or underscores, starting with a letter.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}")
# A name this close to a canonical field is taken for a typo of it, not a pass-through
# option. The contract tests check that no real vLLM-Omni 0.30 option is that close
# (the nearest, no_enable_expert_parallel, is 0.94).
_TYPO_RATIO = 0.95


def option_name(key: str) -> str:
    """The snake_case name of an option however it is spelled (``--deploy-config``,
    ``deploy-config``, ``deploy_config`` -> ``deploy_config``)."""
    return key.lstrip("-").replace("-", "_")


def flag_of(key: str) -> str:
    """The ``vllm serve`` flag of an option (``deploy_config`` -> ``--deploy-config``)."""
    return "--" + option_name(key).replace("_", "-")


def name_problem(key: str, canonical_names: Iterable[str]) -> str | None:
    """Why ``key`` cannot be a pass-through option name, or None.

    Refused: what is not an option name at all, and near-misses of a canonical field
    (``ulysses_degre``), which would otherwise pass through and measure the defaults.
    """
    if not _NAME.fullmatch(key):
        return "not an option name (letters, digits, - and _, starting with a letter)"
    close = difflib.get_close_matches(option_name(key), list(canonical_names), 1, _TYPO_RATIO)
    if close:
        return f"unknown option; did you mean {close[0]}?"
    return None


def value_problem(value: Any, path: str = "") -> str | None:
    """Why ``value`` cannot be passed on (JSON-able scalars, lists and tables only)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path + ': ' if path else ''}expected a finite number, got {value!r}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return None
    items = value.items() if isinstance(value, Mapping) else (
        enumerate(value) if isinstance(value, list) else None)
    if items is None:
        return (f"{path + ': ' if path else ''}expected a string, number, boolean, list or "
                f"table, got {type(value).__name__}")
    for key, item in items:
        if (why := value_problem(item, f"{path}.{key}" if path else str(key))) is not None:
            return why
    return None


def split(options: Mapping[str, Any], canonical_names: Iterable[str]
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (canonical, pass-through), each in the order given."""
    names = set(canonical_names)
    canonical = {k: v for k, v in options.items() if k in names}
    return canonical, {k: v for k, v in options.items() if k not in names}


def argv(options: Mapping[str, Any], *, keep_spelling: bool = False) -> list[str]:
    """Pass-through options as ``vllm serve`` flags: ``true`` -> ``--flag``, ``false`` and
    None left out (the flag's default, as vLLM-Omni's own case runner does), tables and
    lists as JSON, anything else as text. ``keep_spelling`` keeps a case file's key as
    written (``--deploy_config``: vLLM's parser takes both spellings); profiles' snake_case
    names become dashed flags."""
    tokens: list[str] = []
    for key, value in options.items():
        if value is False or value is None:
            continue
        tokens.append(f"--{key.lstrip('-')}" if keep_spelling else flag_of(key))
        if value is not True:
            tokens.append(json.dumps(value, sort_keys=True, separators=(",", ":"))
                          if isinstance(value, (dict, list)) else str(value))
    return tokens


@dataclasses.dataclass(frozen=True)
class KnownOptions:
    """What an installed vLLM-Omni accepts, read from its parser and config dataclasses."""

    version: str
    flags: frozenset[str]
    """Option strings of ``vllm serve --omni`` (``--deploy-config``, ``-tp``, ...)."""
    kwargs: frozenset[str]
    """Names ``Omni(**kwargs)`` takes: the serve parser's dests (the server hands them to
    ``AsyncOmni`` as keywords) and the fields of OmniDiffusionConfig and
    DiffusionParallelConfig."""

    def unknown(self, keys: Iterable[str], *, online: bool) -> list[str]:
        """Of ``keys``, those this release does not take as a serve flag (``online``) or as
        an ``Omni`` keyword, in the order given."""
        if online:
            return [k for k in keys if flag_of(k) not in self.flags]
        return [k for k in keys if option_name(k) not in self.kwargs]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "flags": sorted(self.flags),
                "kwargs": sorted(self.kwargs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KnownOptions:
        return cls(str(data["version"]), frozenset(data["flags"]), frozenset(data["kwargs"]))


def unknown_message(keys: Iterable[str], version: str, *, online: bool) -> str:
    """The failure of options an installed vLLM-Omni does not know."""
    names = ", ".join(keys)
    where = ("has no such `vllm serve --omni` flag" if online else
             "takes no such Omni(...) keyword (neither a serve option nor an "
             "OmniDiffusionConfig / DiffusionParallelConfig field)")
    return (f"option(s) {names}: the installed vLLM-Omni {version} {where}; check the "
            "spelling, or the release that introduced it")


def diffusers_reason(options: Mapping[str, Any], canonical_names: Iterable[str]
                     ) -> str | None:
    """Why the diffusers backend skips a profile with pass-through options, or None."""
    _, rest = split(options, canonical_names)
    if not rest:
        return None
    return (f"pass-through option(s) {', '.join(rest)}: vLLM-Omni options the diffusers "
            "backend cannot honour (run them with --omni-backend=omni or omni-server)")
