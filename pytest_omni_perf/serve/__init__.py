"""The shipped server: ``python -m pytest_omni_perf.serve MODEL --omni --port P [flags]``.

A stand-in for ``vllm serve MODEL --omni`` over the diffusers engine, on FastAPI + uvicorn:
``cli`` (bind, load, run; its flags are ``pytest_omni_perf.serve_flags``), ``app`` (routes),
``protocol`` (request models: the one place fields are checked), ``state`` (runner, rules,
jobs). What the ``omni-server`` client shares with it lives in
``pytest_omni_perf.omni_wire``; nothing here imports the client.
"""

from __future__ import annotations

from pytest_omni_perf.serve.cli import main
from pytest_omni_perf.serve_flags import build_parser, options_from_args

__all__ = ["build_parser", "main", "options_from_args"]
