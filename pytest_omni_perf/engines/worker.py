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
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from pytest_omni_perf.engines.base import GenerationRequest, ProfileUnsupported


def build_runner(factory: str, kwargs: dict[str, Any]) -> Any:
    """Call ``module:function`` with ``kwargs``; the result is the runner."""
    module_name, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


def startup_report(runner: Any, main_began: float | None,
                   preloaded_s: float = 0.0) -> dict[str, Any]:
    """The phases the runner measured (``startup_phases()``, where it has one) and
    ``worker_s``, this process's time from ``main`` to now: the parent subtracts it from its
    wait to learn the process launch (engines/startup.py). ``preloaded_s``: imports a zygote
    made for this start before forking it (``zygote.py``), counted in ``imports_s``."""
    phases = getattr(runner, "startup_phases", None)
    reported = phases() if callable(phases) else None
    report: dict[str, Any] = dict(reported) if isinstance(reported, dict) else {}
    if preloaded_s and isinstance(report.get("imports_s"), (int, float)):
        report["imports_s"] += preloaded_s
    if main_began is not None:
        report["worker_s"] = time.perf_counter() - main_began
    return report


def serve(conn: Connection, main_began: float | None = None, preloaded_s: float = 0.0) -> None:
    """Answer messages until ``stop`` or until the parent goes away (``main_began``: the
    perf_counter when ``main`` began, for the start-up phases; ``preloaded_s``: see
    ``startup_report``)."""
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
                versions = runner.versions()
                conn.send(("ok", {"applied": applied, "versions": versions, "pid": os.getpid(),
                                  "startup": startup_report(runner, main_began,
                                                             preloaded_s)}))
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


def main(argv: list[str], *, began: float | None = None, preloaded_s: float = 0.0) -> int:
    """Serve the socket ``argv[1]``. ``began``: when this worker's own time began (a
    zygote's fork passes the moment before its preload; else now, the end of the process
    launch, start-up phase (a)); ``preloaded_s``: see ``startup_report``."""
    began = time.perf_counter() if began is None else began
    conn = Connection(int(argv[1]))
    try:
        serve(conn, began, preloaded_s)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
