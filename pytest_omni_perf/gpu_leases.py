"""Cross-process leases on physical GPUs: one ``flock``-ed file per GPU in a machine-wide folder.

Why ``flock``: the kernel drops a lock when the last descriptor of its open file goes away, so
a crashed xdist worker or a killed pytest session never leaves a GPU held, and there is no
stale-lock cleanup to get wrong. Why all-or-nothing: two processes that each want 2 of 4 GPUs
and each grab one would wait for each other forever; taking all n or none cannot deadlock.
Why a queue: without one, a request for 2 GPUs can starve behind a stream of 1-GPU requests
that always find one of the two busy. Waiters take tickets (files locked by their owner, named
by the time they began waiting) and only the oldest one tries to take GPUs.

Holders write who they are (pid, xdist worker, test id) into the lock file, so a test that
gives up waiting can say who holds what. Linux/macOS only (``fcntl``), like the rest of the
process handling.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_FOLDER = Path(tempfile.gettempdir()) / "pytest-omni-perf-gpus"
_TICKET_PREFIX = "wait-"


class LeaseTimeout(Exception):
    """The GPUs did not come free in time; the message names who holds them."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or waits for) GPUs: written into lock and ticket files for messages."""

    pid: int
    worker: str
    """The xdist worker id (``gw0``), or ``main`` without xdist."""
    test: str
    since: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            raw: Any = json.loads(text)
            return cls(pid=int(raw["pid"]), worker=str(raw["worker"]), test=str(raw["test"]),
                       since=float(raw["since"]))
        except (ValueError, KeyError, TypeError):
            return None  # written half-way, or by another version: describe it as unknown

    def describe(self, now: float | None = None) -> str:
        age = (time.time() if now is None else now) - self.since
        return f"pid {self.pid} ({self.worker}) for {self.test or '?'}, {age:.0f} s ago"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _write(fd: int, text: str) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    except OSError:
        pass  # a read-only lock file (another user's): the lock works, the label is lost


class Lease:
    """GPUs held by this process until :meth:`release` (or until it dies)."""

    def __init__(self, devices: tuple[int, ...], fds: dict[int, int]) -> None:
        self.devices = devices
        self._fds = fds

    @property
    def fds(self) -> tuple[int, ...]:
        """The locked descriptors: a child that inherits them keeps the GPUs locked while
        it lives, even after this process is gone."""
        return tuple(self._fds.values())

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def relabel(self, holder: Holder) -> None:
        """Say which test uses the GPUs now (a lease outlives one test)."""
        for fd in self._fds.values():
            _write(fd, holder.to_json())

    def release(self) -> None:
        """Unlock explicitly (a child holding a copy of a descriptor must not keep the lock)
        and close. Safe to call twice."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease(devices={self.devices}, held={self.held})"


@dataclasses.dataclass(frozen=True)
class Ticket:
    """A live waiter: its place in the queue, what it wants and who it is."""

    name: str
    n: int
    pool: tuple[int, ...]
    holder: Holder | None


class LeaseDir:
    """The machine-wide folder of lock files (``gpu-<index>.lock``) and waiters' tickets."""

    def __init__(self, folder: Path = DEFAULT_FOLDER) -> None:
        self.folder = folder

    def _ensure(self) -> None:
        if self.folder.is_dir():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            # Shared by every user's pytest on this machine, like /tmp itself.
            self.folder.chmod(0o1777)
        except OSError:
            pass

    def lock_path(self, index: int) -> Path:
        return self.folder / f"gpu-{index}.lock"

    def _open(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:
            # Another user's file: flock needs no write access, only the label is lost.
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o666)  # umask would keep other users out of a shared lock
        except OSError:
            pass
        return fd

    # -- taking GPUs ------------------------------------------------------------------------
    def try_acquire(self, pool: Sequence[int], n: int, holder: Holder) -> Lease | None:
        """``n`` GPUs of ``pool`` (lowest free indices first) or None, never a part."""
        if n < 1 or n > len(pool):
            raise ValueError(f"cannot lease {n} GPU(s) from a pool of {list(pool)}")
        self._ensure()
        taken: dict[int, int] = {}
        for index in pool:
            fd = self._open(self.lock_path(index))
            if _try_lock(fd):
                taken[index] = fd
                if len(taken) == n:
                    break
            else:
                os.close(fd)
        lease = Lease(tuple(taken), taken)
        if len(taken) < n:
            lease.release()  # all or nothing: a partial hold is what deadlocks two waiters
            return None
        lease.relabel(holder)
        return lease

    def acquire(self, pool: Sequence[int], n: int, holder: Holder, timeout_s: float, *,
                poll_s: float = 0.05, max_poll_s: float = 0.5,
                sleep: Callable[[float], None] = time.sleep) -> Lease:
        """Wait up to ``timeout_s`` for ``n`` GPUs of ``pool``, first come first served;
        LeaseTimeout naming the holders and the waiters ahead when they do not come free."""
        if not self.tickets(pool) and (lease := self.try_acquire(pool, n, holder)) is not None:
            return lease
        deadline = time.monotonic() + timeout_s
        began = time.monotonic()
        ticket_fd, ticket = self._take_ticket(pool, n, holder)
        delay = poll_s
        try:
            while True:
                ahead = [t for t in self.tickets(pool) if t.name < ticket]
                if not ahead and (lease := self.try_acquire(pool, n, holder)) is not None:
                    return lease
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LeaseTimeout(self._timeout_message(
                        pool, n, time.monotonic() - began, ahead))
                # Jitter keeps two waiters that started together from polling in lockstep.
                sleep(min(left, delay * random.uniform(0.8, 1.2)))
                delay = min(max_poll_s, delay * 2)
        finally:
            self._drop_ticket(ticket_fd, ticket)

    # -- the queue --------------------------------------------------------------------------
    def _take_ticket(self, pool: Sequence[int], n: int, holder: Holder) -> tuple[int, str]:
        self._ensure()
        name = f"{_TICKET_PREFIX}{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}.json"
        temp = self.folder / f".{name}"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _write(fd, json.dumps({"n": n, "pool": list(pool), "holder": json.loads(holder.to_json())}))
        # Locked before it gets its public name, so nobody can mistake it for a dead waiter's.
        os.rename(temp, self.folder / name)
        return fd, name

    def _drop_ticket(self, fd: int, name: str) -> None:
        try:
            (self.folder / name).unlink()
        except FileNotFoundError:
            pass
        os.close(fd)

    def tickets(self, pool: Sequence[int] = ()) -> list[Ticket]:
        """Live waiters, oldest first (only those wanting GPUs of ``pool``, when given);
        tickets of dead waiters (their lock is gone) are removed on the way."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob(f"{_TICKET_PREFIX}*.json")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # its waiter is done
            try:
                if _try_lock(fd):
                    path.unlink(missing_ok=True)  # its waiter died while waiting
                    continue
                raw: Any = json.loads(os.pread(fd, 65536, 0) or b"{}")
            except ValueError:
                raw = {}
            finally:
                os.close(fd)
            wanted = tuple(int(i) for i in raw.get("pool", ()))
            if pool and wanted and not set(pool) & set(wanted):
                continue
            holder = raw.get("holder")
            found.append(Ticket(path.name, int(raw.get("n", 0)), wanted,
                                Holder.from_json(json.dumps(holder)) if holder else None))
        return found

    def waited_for(self, devices: Sequence[int]) -> bool:
        """Whether another process waits for GPUs that include any of ``devices``."""
        return bool(devices) and any(t.holder is None or t.holder.pid != os.getpid()
                                     for t in self.tickets(devices))

    # -- who holds what ---------------------------------------------------------------------
    def holders(self, pool: Sequence[int]) -> dict[int, Holder | None]:
        """GPUs of ``pool`` held now (by anyone, this process too) and their holder's label."""
        held: dict[int, Holder | None] = {}
        for index in pool:
            path = self.lock_path(index)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if _try_lock(fd):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    continue
                held[index] = Holder.from_json(os.pread(fd, 65536, 0).decode(errors="replace"))
            finally:
                os.close(fd)
        return held

    def _timeout_message(self, pool: Sequence[int], n: int, waited_s: float,
                         ahead: Sequence[Ticket]) -> str:
        now = time.time()
        held = self.holders(pool)
        parts = [f"GPU {i}: held by " + (h.describe(now) if h else "an unlabelled holder")
                 for i, h in sorted(held.items())]
        free = [i for i in pool if i not in held]
        if free:
            parts.append(f"free: GPU {', '.join(map(str, free))}")
        for t in ahead:
            who = t.holder.describe(now) if t.holder else "an unlabelled waiter"
            parts.append(f"queued ahead: {who}, waiting for {t.n} GPU(s)")
        return (f"waited {waited_s:.1f} s for {n} of GPUs {list(pool)} (locks in {self.folder})"
                f" and they did not come free; " + "; ".join(parts) + ". Raise --omni-gpu-wait, "
                "or end the process named above.")
