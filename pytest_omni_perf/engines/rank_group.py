"""One engine made of several worker processes: the ranks of a torch.distributed group.

Multi-GPU profiles (Ulysses, Ring, tensor parallel) need one process per GPU, all running
the same request in lock-step. The coordinator (pytest) sends each message to every rank,
then waits on all of them at once: a rank that dies or fails takes the whole group down at
once (the others would otherwise wait in a collective until NCCL's own timeout), and the
error carries that rank's log tail. Rank 0's output is the request's output.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn

from pytest_omni_perf.engines.base import (
    EngineError, EngineInfo, EngineSpec, GenerationOutput, GenerationRequest, ProfileUnsupported,
)
from pytest_omni_perf.engines.hosting import IsolatedEngine

_POLL_S = 0.2


class RankGroupEngine:
    """``world_size`` IsolatedEngines started and driven together.

    ``rank_env(rank)`` gives each rank's extra environment (rendezvous address, rank);
    ``rank_kwargs(rank)`` its runner's keyword arguments.
    """

    def __init__(self, spec: EngineSpec, factory: str, world_size: int, *,
                 rank_kwargs: Callable[[int], Mapping[str, Any]],
                 rank_env: Callable[[int], Mapping[str, str]], device: str) -> None:
        self.spec = spec
        self.world_size = world_size
        self.device = device
        self.ranks = [
            IsolatedEngine(spec, factory, rank_kwargs(rank), env=rank_env(rank), device=device,
                           log_tag=f"-rank{rank}")
            for rank in range(world_size)]

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        try:
            for rank in self.ranks:
                rank.spawn()
            answers = self._all("start", [r.start_payload() for r in self.ranks],
                                self.spec.start_timeout_s, "start")
            for rank, info in zip(self.ranks, answers):
                rank.started(info)
        except BaseException:
            self.kill()
            raise

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        payload = request.payload()
        outputs: list[GenerationOutput] = self._all(
            "generate", [payload] * self.world_size, self.spec.request_timeout_s, "request")
        first = outputs[0]
        metrics = dict(first.engine_metrics)
        # The request is done when the slowest rank is done; memory per GPU is the largest.
        metrics["rank_latency_s"] = [round(o.engine_latency_s, 6) for o in outputs]
        peaks = [o.engine_metrics.get("torch_peak_bytes") for o in outputs]
        if all(isinstance(p, int) for p in peaks):
            metrics["rank_torch_peak_bytes"] = peaks
            metrics["torch_peak_bytes"] = max(p for p in peaks if isinstance(p, int))
        return GenerationOutput(frames=first.frames,
                                engine_latency_s=max(o.engine_latency_s for o in outputs),
                                engine_metrics=metrics)

    def stop(self) -> None:
        live = [r for r in self.ranks if r.alive and r.connection is not None]
        try:
            if live:
                self._all("stop", [None] * len(live), 30.0, "stop", ranks=live)
        except (EngineError, ProfileUnsupported):
            pass  # ranks that cannot stop politely are killed below
        finally:
            self.kill()

    def kill(self) -> None:
        for rank in self.ranks:
            rank.kill()

    def describe(self) -> EngineInfo:
        info = self.ranks[0].describe()
        applied = {**info.applied, "ranks": self.world_size}
        # The ranks start side by side: rank 0's phases stand for the group's start.
        return EngineInfo(backend=info.backend, model=info.model, pids=tuple(self.pids()),
                          applied=applied, versions=info.versions, device=info.device,
                          startup=info.startup)

    def pids(self) -> list[int]:
        """Every rank's process tree: all of them hold this engine's memory."""
        return [pid for rank in self.ranks for pid in rank.pids()]

    @property
    def alive(self) -> bool:
        return all(rank.alive for rank in self.ranks)

    # -- protocol ---------------------------------------------------------------------------
    def _all(self, op: str, payloads: list[Any], timeout_s: float, what: str,
             ranks: list[IsolatedEngine] | None = None) -> list[Any]:
        """Send ``op`` to every rank, then collect every answer (in rank order)."""
        ranks = ranks or self.ranks
        for rank, payload in zip(ranks, payloads):
            self._guard(rank, functools.partial(rank.send, op, payload, what))
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(answers) < len(ranks):
            pending = [i for i in range(len(ranks)) if i not in answers]
            conns = [c for i in pending if (c := ranks[i].connection) is not None]
            ready = set(map(id, wait(conns, _POLL_S))) if conns else set()
            for i in pending:
                rank = ranks[i]
                conn: Connection | None = rank.connection
                has_answer = conn is not None and id(conn) in ready
                if has_answer or not rank.alive:
                    # answer_ready raises the rank's death; answer raises its failure.
                    if self._guard(rank, functools.partial(rank.answer_ready, 0, what)):
                        answers[i] = self._guard(rank, functools.partial(rank.answer, what))
            if len(answers) < len(ranks) and time.monotonic() > deadline:
                late = ranks[next(i for i in range(len(ranks)) if i not in answers)]
                self._fail(late, late.timed_out(timeout_s, what))
        return [answers[i] for i in range(len(ranks))]

    def _guard(self, rank: IsolatedEngine, step: Callable[[], Any]) -> Any:
        """Run ``step``; if it fails, take the whole group down and say which rank failed."""
        try:
            return step()
        except ProfileUnsupported:
            self.kill()
            raise
        except EngineError as exc:
            self._fail(rank, exc)

    def _fail(self, rank: IsolatedEngine, exc: EngineError) -> NoReturn:
        self.kill()
        raise EngineError(f"rank {self.ranks.index(rank)} of {self.world_size}: {exc.args[0]}; "
                          "the other ranks were stopped with it", log_tail=exc.log_tail) from None
