"""Live engines of the session: started on first use, reused across tests, and evicted so
that one engine holds a device set at a time, or two when the caller knows a baseline and a
profile fit side by side (then their rounds interleave).

Profiles whose engine options are equal share one engine (``fewer_steps`` differs from
``eager`` only in its requests): their rounds then interleave in one process, which no
per-process slow stretch can tell apart, and the second engine start is saved. Only engines
of the built-in adapters are shared; ``--omni-separate-engines`` turns it off.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pytest_omni_perf.engines.base import (
    Engine, EngineSpec, GenerationRequest, ProfileUnsupported,
)

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
    largest_request: tuple[int, str] | None = None
    """(pixels x frames, "1024x1024") of the largest request served so far, or None."""
    identity: str = ""
    """What the engine does, as far as sharing goes (``sharing_identity``); "" when its
    engine may act on more than its options and is never shared."""

    @property
    def cold_start_s(self) -> float | None:
        """Engine start plus first request: what a fresh deployment waits for."""
        return None if self.first_request_s is None else self.start_s + self.first_request_s

    def served(self, request: GenerationRequest) -> None:
        """Count one request and remember it if it is the largest so far."""
        self.requests += 1
        size = request.size()
        if self.largest_request is None or size[0] > self.largest_request[0]:
            self.largest_request = size

    def larger_than(self, request: GenerationRequest) -> str:
        """The larger request served before ("1024x1024"), or "" when none was larger."""
        larger = self.largest_request
        return larger[1] if larger is not None and larger[0] > request.size()[0] else ""

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


def sharing_identity(spec: EngineSpec) -> str:
    """Everything but the profile's name that makes an engine what it is: two specs with
    the same identity start engines that answer every request alike."""
    return json.dumps([spec.model, spec.backend, list(spec.devices), spec.server_url,
                       spec.server_command, spec.launch, spec.in_process,
                       dict(spec.options)], sort_keys=True, default=repr)


class EnginePool:
    """Starts, reuses and stops engines; remembers profiles an engine cannot run."""

    def __init__(self, make: Callable[[EngineSpec], tuple[Engine, bool]],
                 on_progress: Callable[[str], None] = lambda _: None, *,
                 share: bool = True) -> None:
        """``make``: an unstarted engine for a spec, and whether its behaviour follows from
        the spec's options alone (``factory.make_engine``). ``share``: let profiles of equal
        options use one such engine."""
        self._make = make
        self._live: OrderedDict[EngineKey, LiveEngine] = OrderedDict()
        self._lent: dict[EngineKey, EngineKey] = {}
        """A profile's key -> the key of the engine of equal options it was given."""
        self._unsupported: dict[EngineKey, str] = {}
        self._progress = on_progress
        self._share = share
        self.starts = 0

    def get(self, spec: EngineSpec, capacity: int = 1) -> LiveEngine:
        """The live engine for ``spec``, started if needed (ProfileUnsupported / EngineError).

        ``capacity``: how many engines may share ``spec``'s devices once it runs (the caller
        knows when a baseline and a profile fit side by side).
        """
        key = engine_key(spec)
        if key in self._unsupported:
            raise ProfileUnsupported(self._unsupported[key])
        live = self._live.get(self._lent.get(key, key)) or self._equal_engine(spec)
        if live is not None and live.alive:
            if live.key != key:
                self._lent[key] = live.key
            self._live.move_to_end(live.key)
            return live
        if live is not None:  # died since last use: a fresh one replaces it
            self.stop(live.key)
        self._evict_for(spec, capacity)
        name = f"{spec.model}[{spec.profile_name}]"
        announced = False
        try:
            engine, option_determined = self._make(spec)
            self._progress(f"starting {name} ({spec.backend}) ...")
            announced = True
            began = time.perf_counter()
            engine.start()
        except ProfileUnsupported as exc:
            self._unsupported[key] = str(exc)
            if announced:  # a "starting" line with no "started" after it read as a hang
                self._progress(f"not started {name}: skipped, {exc}")
            raise
        elapsed = time.perf_counter() - began
        self._progress(f"started {name} in {elapsed:.1f} s")
        self.starts += 1
        live = LiveEngine(engine=engine, key=key, start_s=elapsed,
                          identity=sharing_identity(spec) if option_determined else "")
        self._live[key] = live
        return live

    def shares(self, spec: EngineSpec, other: EngineSpec) -> bool:
        """``spec`` would run in the live engine that ``other`` runs in."""
        live = self._live.get(self._lent.get(engine_key(other), engine_key(other)))
        return self._share and live is not None and bool(live.identity) \
            and live.identity == sharing_identity(spec)

    def _equal_engine(self, spec: EngineSpec) -> LiveEngine | None:
        if not self._share:
            return None
        identity = sharing_identity(spec)
        return next((live for live in reversed(self._live.values())
                     if live.identity == identity and live.alive), None)

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
        self._lent = {k: v for k, v in self._lent.items() if v != key and k != key}
        if live is not None:
            live.engine.stop()

    def discard(self, spec: EngineSpec) -> None:
        """Stop the engine of ``spec``, its own or the one of equal options it was given
        (after a failure, so the next test gets a fresh one)."""
        key = engine_key(spec)
        self.stop(self._lent.get(key, key))

    def close(self) -> None:
        for key in list(self._live):
            self.stop(key)

    def snapshot(self) -> dict[str, Any]:
        return {"engine_starts": self.starts, "live": [list(k[:3]) for k in self._live]}
