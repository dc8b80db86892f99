"""The durable store: SQLite by default, PostgreSQL in production.

``open_store(url)`` turns a ``store.url`` setting into a ready ``SqlStore``: it checks the URL,
builds the engine and brings the schema up to the newest migration (a no-op when it is there).

    sqlite:///path/to/drainwatch.db       a file (created when missing, in a directory that exists)
    sqlite://                             in memory, for tests: gone when the store closes
    postgresql://user@host:port/database  PostgreSQL through psycopg 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from drainwatch.errors import ConfigError, StoreError
from drainwatch.store.sql import WRITE, SqlStore, describe, reason

__all__ = ["SqlStore", "migrate", "open_store"]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

#: Held while migrating PostgreSQL, so that two processes starting at once do not both create
#: the tables. Any constant works; this one spells "dwmigr".
_MIGRATION_LOCK = 0x64776D696772

_EXPECTED = "expected sqlite:///PATH, sqlite:// or postgresql://USER@HOST:PORT/DATABASE"


def open_store(url: str, *, password: str | None = None, create: bool = True) -> SqlStore:
    """A store on ``url``, migrated to the newest schema.

    ``password`` is the PostgreSQL password, which the wiring reads from the environment
    variable named by ``store.password_env``: it is never part of the configured URL.

    ``create=False`` is for commands that only read: a SQLite file that does not exist is then a
    ``ConfigError`` instead of a new, empty store that would answer "nothing" to every question.
    (PostgreSQL is connected to as usual: its database is never created here either way.)

    Raises ``ConfigError`` for a URL drainwatch cannot use, a SQLite file in a directory that
    does not exist, or (``create=False``) a SQLite file that does not exist; and ``StoreError``
    when the database cannot be reached or migrated. No message contains the password.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_file(parsed, create=create)
    if password is not None:
        parsed = parsed.set(password=password)
    engine = _engine(parsed)
    try:
        if create:
            migrate(engine)
        else:
            _require_current_schema(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"store: cannot open {describe(engine.url)}: {reason(exc)}") from exc
    except ConfigError:
        engine.dispose()
        raise
    return SqlStore(engine)


def _require_current_schema(engine: Engine) -> None:
    """For read-only commands: the schema must already be the newest, checked without a write
    transaction (a reader must never wait on, or take, the watcher's write lock)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise ConfigError(
            "store.url",
            f"the store at {describe(engine.url)} has schema {current or 'none'}, this drainwatch "
            f"reads {head}: run `drainwatch watch` once (it migrates), or check the URL",
        )


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest migration, in one transaction."""
    with engine.execution_options(**WRITE).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        command.upgrade(alembic_config(conn), "head")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini is needed at run time.

    ``env.py`` runs the migrations on ``connection`` when one is given.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        # make_url's own message repeats the URL, and with it any password.
        raise ConfigError("store.url", f"not a database URL: {_EXPECTED}") from None
    # The driver as written: get_driver_name() would answer a default, e.g. psycopg2.
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(
        "store.url",
        f"unsupported database {parsed.drivername!r} (drivers: pysqlite, psycopg): {_EXPECTED}",
    )


def _check_sqlite_file(url: URL, *, create: bool) -> None:
    """Refuse, before sqlite3 would fail or make an empty file, a path that cannot be a store."""
    if url.database in (None, "", ":memory:"):
        return
    path = Path(url.database)
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ConfigError("store.url", f"the directory {parent} {what}")
    if not create and not path.exists():
        raise ConfigError(
            "store.url",
            f"no store at {path}: nothing has been recorded there yet "
            "(run `drainwatch watch` first, or check the path)",
        )


def _engine(url: URL) -> Engine:
    if url.get_backend_name() == "postgresql":
        args: dict[str, Any] = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
        # pre_ping: a long-running watcher outlives server restarts and idle-connection reaping.
        return create_engine(url, pool_pre_ping=True, connect_args=args)
    if url.database in (None, "", ":memory:"):
        # One connection shared by every thread: a second one would see another, empty database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url, connect_args={"timeout": 30})
    _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    """Real SQLite transactions: the sqlite3 module's own would commit each DDL statement of a
    migration at once, and its deferred BEGIN lets two writers dead-lock on their lock upgrade.
    Writers (the WRITE execution option) therefore begin IMMEDIATE, readers DEFERRED."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            # WAL: a reader (the CLI) never blocks the watcher's writes, nor they it.
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("drainwatch_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")
