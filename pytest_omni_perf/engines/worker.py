"""Engine worker process: ``python -m pytest_omni_perf.engines.worker FD``.

Hosts one runner (an object with ``load``, ``generate``, ``close``, ``versions``) built by a
factory named in the ``start`` message, and answers requests over the socket ``FD`` that the
parent passed in. Python objects travel pickled over that private socket pair; nothing
pickled is ever written to disk.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from pytest_omni_perf.engines.base import GenerationRequest, ProfileUnsupported


def build_runner(factory: str, kwargs: dict[str, Any]) -> Any:
    """Call ``module:function`` with ``kwargs``; the result is the runner."""
    module_name, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


def serve(conn: Connection) -> None:
    """Answer messages until ``stop`` or until the parent goes away."""
    runner: Any = None
    while True:
        try:
            op, payload = conn.recv()
        except (EOFError, OSError):
            break  # the parent died or closed the socket: nobody is left to answer
        try:
            if op == "start":
                runner = build_runner(payload["factory"], payload["kwargs"])
                applied = runner.load()
                conn.send(("ok", {"applied": applied, "versions": runner.versions(),
                                  "pid": os.getpid()}))
            elif op == "generate":
                conn.send(("ok", runner.generate(GenerationRequest(**payload))))
            elif op == "stop":
                if runner is not None:
                    runner.close()
                conn.send(("ok", None))
                break
            else:
                conn.send(("error", f"unknown operation {op!r}"))
        except ProfileUnsupported as exc:
            conn.send(("unsupported", str(exc)))
        except BaseException:  # report everything, including KeyboardInterrupt, then go on
            traceback.print_exc()
            conn.send(("error", traceback.format_exc()))


def main(argv: list[str]) -> int:
    conn = Connection(int(argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
