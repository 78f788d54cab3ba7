"""Where a history lives: an SQLite file (``sqlite3``) or a database URL (SQLAlchemy Core).

Both run the same SQL text with ``:name`` parameters, which ``sqlite3`` and SQLAlchemy's
``text()`` both bind, so the store has one set of queries. The file form uses the standard
library alone: the history is on by default, and the plugin's only required dependency is
pytest. SQLAlchemy (and a driver such as ``psycopg``) is needed only for a URL and comes
with the ``history`` extra.

Concurrency: SQLite runs in WAL mode with a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction, so two pytest sessions appending at once wait for each
other instead of failing or losing rows. A file that is not an SQLite database, or an SQLite
database that is not a history, raises :class:`HistoryError` before anything is written to it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pytest_omni_perf.history.schema import DDL, SCHEMA_TABLE, SCHEMA_VERSION, schema_problem

if TYPE_CHECKING:
    import sqlalchemy

Value = str | int | float | None
Row = tuple[Value, ...]
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another session's transaction on the same SQLite file."""


class HistoryError(Exception):
    """The history cannot be used; the message names the file or URL and what is wrong."""


class Transaction(Protocol):
    """One open transaction: run statements, read rows."""

    def execute(self, sql: str, params: Mapping[str, Value] | None = None) -> list[Row]:
        """Run ``sql`` with ``:name`` parameters; the rows it returns (``[]`` for writes)."""
        ...


class Database(Protocol):
    """A connection to one history, whichever database holds it."""

    where: str
    """The file path or the URL (password hidden), for messages."""

    def transaction(self, write: bool = True) -> AbstractContextManager[Transaction]:
        """A transaction, committed on normal exit, rolled back on an exception;
        ``write=False``: one that only reads (it takes no write lock)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class _SqliteTx:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Mapping[str, Value] | None = None) -> list[Row]:
        return [tuple(row) for row in self._connection.execute(sql, dict(params or {}))]


class SqliteDatabase:
    """A history in one SQLite file; the file and its folder are made when absent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        if path.exists() and not path.is_file():
            raise HistoryError(f"history {path}: not a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), not the module's.
        self._connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._prepare()
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            raise HistoryError(f"history {path} is not a usable SQLite database ({exc}); "
                               "it was left untouched: move it away or name another file "
                               "with --omni-history") from None
        except HistoryError:
            self._connection.close()
            raise

    def _prepare(self) -> None:
        # Check before anything that writes: even switching to WAL rewrites the header of
        # a database that is not ours.
        with self.transaction() as tx:
            tables = {str(r[0]) for r in tx.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            versions = [int(str(r[0])) for r in tx.execute(f"SELECT version FROM {SCHEMA_TABLE}")
                        ] if SCHEMA_TABLE in tables else []
            if (problem := schema_problem(tables, versions, shared=False)) is not None:
                raise HistoryError(f"history {self.path}: {problem}; it was left untouched")
            if SCHEMA_TABLE not in tables:
                create(tx)
        self._connection.execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Transaction]:
        """Writes: ``BEGIN IMMEDIATE`` takes the write lock at once (waiting up to the busy
        timeout), so a read-then-write transaction never fails half way on a lock."""
        self._connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield _SqliteTx(self._connection)
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")

    def close(self) -> None:
        self._connection.close()


class _AlchemyTx:
    def __init__(self, connection: sqlalchemy.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Mapping[str, Value] | None = None) -> list[Row]:
        import sqlalchemy

        result = self._connection.execute(sqlalchemy.text(sql), dict(params or {}))
        return [tuple(row) for row in result] if result.returns_rows else []


class SqlAlchemyDatabase:
    """A history in a database named by an SQLAlchemy URL (``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        try:
            import sqlalchemy
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
        except ImportError:
            raise HistoryError(f"history {url.split('://')[0]}://...: a database URL needs "
                               "SQLAlchemy and a driver: pip install "
                               "pytest-omni-perf[history]") from None
        try:
            self._engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise HistoryError(f"history URL {url!r}: {exc}") from None
        self.where = self._engine.url.render_as_string(hide_password=True)
        try:
            self._prepare()
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise HistoryError(f"history {self.where}: {exc}") from None
        except HistoryError:
            self._engine.dispose()
            raise

    def _prepare(self) -> None:
        import sqlalchemy

        with self.transaction() as tx:
            if self._engine.dialect.name == "postgresql":
                # Two sessions creating the tables at once collide inside PostgreSQL's
                # catalog even with IF NOT EXISTS; one transaction-scoped lock orders them.
                tx.execute("SELECT pg_advisory_xact_lock(7011219)")
            tables = set(sqlalchemy.inspect(self._connection_of(tx)).get_table_names())
            versions = [int(str(r[0])) for r in tx.execute(f"SELECT version FROM {SCHEMA_TABLE}")
                        ] if SCHEMA_TABLE in tables else []
            if (problem := schema_problem(tables, versions, shared=True)) is not None:
                raise HistoryError(f"history {self.where}: {problem}; it was left untouched")
            if SCHEMA_TABLE not in tables:
                create(tx)

    @staticmethod
    def _connection_of(tx: Transaction) -> sqlalchemy.Connection:
        assert isinstance(tx, _AlchemyTx)
        return tx._connection

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Transaction]:
        if write:
            with self._engine.begin() as connection:
                yield _AlchemyTx(connection)
        else:
            with self._engine.connect() as connection:  # rolled back on close: reads only
                yield _AlchemyTx(connection)

    def close(self) -> None:
        self._engine.dispose()


def create(tx: Transaction) -> None:
    """Create the tables and the one schema-version row."""
    import datetime

    for statement in DDL:
        tx.execute(statement)
    if not tx.execute(f"SELECT version FROM {SCHEMA_TABLE}"):
        tx.execute(f"INSERT INTO {SCHEMA_TABLE} (version, created) VALUES (:v, :c)",
                   {"v": SCHEMA_VERSION,
                    "c": datetime.datetime.now(datetime.timezone.utc).isoformat()})


def is_url(target: str) -> bool:
    """True for a database URL (``dialect[+driver]://...``), False for a file path."""
    scheme, sep, _ = target.partition("://")
    return bool(sep) and scheme.replace("+", "").replace("_", "").isalnum() and len(scheme) > 1


def open_database(target: str | Path) -> Database:
    """The history at ``target``: a database URL, or a path to an SQLite file.

    Raises HistoryError naming ``target`` when it is unreachable, not a history, or of
    another schema version; nothing is written in that case.
    """
    if isinstance(target, str) and is_url(target):
        if target.startswith("sqlite:///"):
            return SqliteDatabase(Path(target[len("sqlite:///"):]))
        return SqlAlchemyDatabase(target)
    return SqliteDatabase(Path(target))


def placeholders(columns: Sequence[str]) -> str:
    """``(a, b) VALUES (:a, :b)`` for an INSERT of ``columns``."""
    return f"({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
