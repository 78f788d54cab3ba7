"""The stand-in runner of tests/standin.py, telling where it runs (for tests/test_zygote.py).

Its ``load`` adds ``where`` to what the engine applied: its pid, its parent's pid and
command line (a zygote or pytest) and the environment variables below as it sees them; with
``WHERE_LOG=path`` it also appends that as one JSON line, for a pytester run to read later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import psutil

import standin

SHOWN = ("CUDA_VISIBLE_DEVICES", "PYTEST_CURRENT_TEST", "OMNI_TEST_MARK",
         "PYTORCH_NVML_BASED_CUDA_CHECK")


class WhereRunner(standin.StandinRunner):
    def load(self) -> dict[str, Any]:
        applied = super().load()
        parent = psutil.Process().parent()
        where = {"pid": os.getpid(), "ppid": os.getppid(),
                 "parent": " ".join(parent.cmdline()) if parent is not None else "",
                 "env": {name: os.environ.get(name) for name in SHOWN}}
        if log := os.environ.get("WHERE_LOG"):
            with open(log, "a") as handle:
                handle.write(json.dumps(where) + "\n")
        return {**applied, "where": where}


def make(profile: str, options: Mapping[str, Any]) -> WhereRunner:
    return WhereRunner(profile, options)
