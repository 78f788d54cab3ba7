"""The command line of a vLLM-Omni-compatible server: the template filled in, the flags read
back (where it binds, which port), and where a client reaches it."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from typing import Any

from pytest_omni_perf.canonical import serve_args

SHIPPED_SERVER = "pytest_omni_perf.serve"
"""The module of the shipped server, as it appears in a server command."""


def command_argv(template: str, model: str, port: int | None,
                 options: Mapping[str, Any]) -> list[str]:
    """The server's argv: the template with ``{model}``/``{port}`` filled, then the profile
    flags. Only these placeholders (and ``{python}``, this interpreter) are replaced, so JSON
    braces in a template survive.

    The shipped server must run in the plugin's own environment: a bare ``python -m
    pytest_omni_perf.serve`` becomes this interpreter, as the first ``python`` on PATH may
    be another one (an unactivated venv) without torch.
    """
    text = template.replace("{python}", shlex.quote(sys.executable))
    text = text.replace("{model}", shlex.quote(model))
    if port is not None:
        text = text.replace("{port}", str(port))
    argv = shlex.split(text)
    if argv[:1] in (["python"], ["python3"]) and argv[1:3] == ["-m", "pytest_omni_perf.serve"]:
        argv[0] = sys.executable
    return [*argv, *serve_args(options)]


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``--flag V`` or ``--flag=V`` in argv (the last one wins), else None."""
    found = None
    for index, token in enumerate(argv):
        if token == flag and index + 1 < len(argv):
            found = argv[index + 1]
        elif token.startswith(flag + "="):
            found = token[len(flag) + 1:]
    return found


def connect_host(bind_host: str | None) -> str:
    """Where to reach a server bound to ``bind_host`` from this machine."""
    if bind_host in (None, "", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host
