"""Live engines of the session: started on first use, reused across tests, and evicted so
that one engine holds a device set at a time, or two when the caller knows a baseline and a
profile fit side by side (then their rounds interleave).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pytest_omni_perf.engines.base import Engine, EngineSpec, ProfileUnsupported

EngineKey = tuple[str, str, str, tuple[int, ...]]


@dataclasses.dataclass
class LiveEngine:
    """A started engine and the facts about its start."""

    engine: Engine
    key: EngineKey
    start_s: float
    """Wall time of ``start()``: process spawn, model load, profile application."""
    first_request_s: float | None = None
    """Latency of the first request after start (compile happens here)."""
    requests: int = 0

    @property
    def cold_start_s(self) -> float | None:
        """Engine start plus first request: what a fresh deployment waits for."""
        return None if self.first_request_s is None else self.start_s + self.first_request_s

    def pids(self) -> list[int]:
        pids: Callable[[], list[int]] | None = getattr(self.engine, "pids", None)
        return pids() if pids is not None else list(self.engine.describe().pids)

    @property
    def alive(self) -> bool:
        return bool(getattr(self.engine, "alive", True))


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return not a or not b or bool(set(a) & set(b))


def engine_key(spec: EngineSpec) -> EngineKey:
    return (spec.model, spec.profile_name, spec.backend, spec.devices)


class EnginePool:
    """Starts, reuses and stops engines; remembers profiles an engine cannot run."""

    def __init__(self, make: Callable[[EngineSpec], Engine],
                 on_progress: Callable[[str], None] = lambda _: None) -> None:
        self._make = make
        self._live: OrderedDict[EngineKey, LiveEngine] = OrderedDict()
        self._unsupported: dict[EngineKey, str] = {}
        self._progress = on_progress
        self.starts = 0

    def get(self, spec: EngineSpec, capacity: int = 1) -> LiveEngine:
        """The live engine for ``spec``, started if needed (ProfileUnsupported / EngineError).

        ``capacity``: how many engines may share ``spec``'s devices once it runs (the caller
        knows when a baseline and a profile fit side by side).
        """
        key = engine_key(spec)
        if key in self._unsupported:
            raise ProfileUnsupported(self._unsupported[key])
        live = self._live.get(key)
        if live is not None and live.alive:
            self._live.move_to_end(key)
            return live
        if live is not None:  # died since last use: a fresh one replaces it
            self.stop(key)
        self._evict_for(spec, capacity)
        try:
            engine = self._make(spec)
            self._progress(f"starting {spec.model}[{spec.profile_name}] ({spec.backend}) ...")
            began = time.perf_counter()
            engine.start()
        except ProfileUnsupported as exc:
            self._unsupported[key] = str(exc)
            raise
        elapsed = time.perf_counter() - began
        self._progress(f"started {spec.model}[{spec.profile_name}] in {elapsed:.1f} s")
        self.starts += 1
        live = LiveEngine(engine=engine, key=key, start_s=elapsed)
        self._live[key] = live
        return live

    def progress(self, message: str) -> None:
        """Tell the user what a long wait is for (engine start, first request's compile)."""
        self._progress(message)

    @property
    def live_count(self) -> int:
        """Engines started and not stopped (a dead one counts until it is replaced)."""
        return len(self._live)

    def _evict_for(self, spec: EngineSpec, capacity: int) -> None:
        # Overlapping sets share a GPU too: a 2-GPU profile on (0, 1) evicts the 1-GPU
        # baseline that ran on (0,) before it. () is "whatever is visible" and overlaps all.
        sharing = [k for k in self._live if _overlap(k[3], spec.devices)]
        while sharing and len(sharing) >= capacity:
            self.stop(sharing.pop(0))

    def stop(self, key: EngineKey) -> None:
        live = self._live.pop(key, None)
        if live is not None:
            live.engine.stop()

    def discard(self, spec: EngineSpec) -> None:
        """Stop the engine of ``spec`` (after a failure, so the next test gets a fresh one)."""
        self.stop(engine_key(spec))

    def close(self) -> None:
        for key in list(self._live):
            self.stop(key)

    def snapshot(self) -> dict[str, Any]:
        return {"engine_starts": self.starts, "live": [list(k[:3]) for k in self._live]}
