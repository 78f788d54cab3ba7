"""The URL form against a real PostgreSQL server that this module starts (initdb + pg_ctl
from /usr/lib/postgresql/*/bin on a temp folder, a unix socket only, no TCP), through
SQLAlchemy and psycopg. Skips, naming why, where no server can be started."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_omni_perf.history import HistoryError, HistoryStore
from test_history_store import append, reported


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                    "(Debian: apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_user() -> tuple[Callable[[], None] | None, str]:
    """PostgreSQL refuses to run as root: there, run it as the 'postgres' (or 'nobody')
    account. (preexec function or None, user name)."""
    if os.geteuid() != 0:
        return None, pwd.getpwuid(os.geteuid()).pw_name
    for name in ("postgres", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue

        def drop(uid: int = account.pw_uid, gid: int = account.pw_gid) -> None:
            os.setgid(gid)
            os.setuid(uid)
        return drop, name
    pytest.skip("running as root and no 'postgres' or 'nobody' account to run PostgreSQL as")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg://USER@/postgres?host=SOCKET_DIR`` of a fresh server."""
    pytest.importorskip("sqlalchemy", reason="pip install pytest-omni-perf[history]")
    pytest.importorskip("psycopg", reason="pip install pytest-omni-perf[history]")
    bin_dir = _bin()
    preexec, user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="omni-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if preexec is not None:
        account = pwd.getpwnam(user)
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, preexec_fn=preexec, capture_output=True, text=True,
                              timeout=120, cwd=root)

    try:
        made = run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user,
                   "--no-sync")
        if made.returncode != 0:
            pytest.skip(f"initdb failed: {made.stderr.strip()[-500:]}")
        started = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                      "-o", f"-k {sockets} -c listen_addresses='' -F", "start")
        if started.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            pytest.skip(f"PostgreSQL did not start: {started.stderr.strip()} {log[-500:]}")
        yield f"postgresql+psycopg://{user}@/postgres?host={sockets}"
    finally:
        if (data / "postmaster.pid").exists():
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_rows_round_trip_through_postgresql(postgres_url: str) -> None:
    with HistoryStore.open(postgres_url) as store:
        assert "postgresql+psycopg://" in store.where
        first = append(store, [reported(median=0.2), reported(label="large", median=0.4)],
                       when="2026-01-01T00:00:00+00:00", commit="c1", new_level=True)
        append(store, [reported(median=0.21, verdict="inconclusive", latency_extra={
            "estimate": 0.205, "ci_low": 0.2, "ci_high": 0.22})],
            when="2026-01-02T00:00:00+00:00", accepted=False)
    # A second connection (as another session would) sees both runs, typed as written.
    with HistoryStore.open(postgres_url) as store:
        assert store.count() == (2, 3)
        rows = store.results()
        assert [(r["median_s"], r["estimate_s"], r["ci_high"], r["outcome"], r["git_commit"])
                for r in rows] == [(0.2, None, None, "pass", "c1"),
                                   (0.4, None, None, "pass", "c1"),
                                   (0.21, 0.205, 0.22, "inconclusive", None)]
        assert rows[0]["memory_peak_bytes"] == 2**30
        key = ("t.py::test_a[eager]", "eager", "", "cpu")
        assert [p.run_id for p in store.recent_accepted(*key, 5)] == [first]
        assert store.accept(rows[2]["run_id"].__str__(), new_level=True) == 1
        assert [p.value for p in store.recent_accepted(*key, 5)] == [0.205]
        series = store.series(test="test_a")
        assert sorted(len(points) for points in series.values()) == [1, 2]


def test_a_table_of_another_schema_version_is_refused(postgres_url: str) -> None:
    import sqlalchemy

    HistoryStore.open(postgres_url).close()  # the tables exist whichever test runs first
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE omni_perf_schema SET version = 9"))
    try:
        with pytest.raises(HistoryError, match="schema version 9, but this pytest-omni-perf "
                           "reads version 1"):
            HistoryStore.open(postgres_url)
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE omni_perf_schema SET version = 1"))
        engine.dispose()
