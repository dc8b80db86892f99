"""Alembic environment: runs the migrations on the connection that ``open_store`` hands over.

Run from code, never from an alembic.ini: ``drainwatch.store.migrate(engine)``. To write the
next migration, autogenerate against a scratch database at the current head::

    from alembic import command
    from sqlalchemy import create_engine
    from drainwatch.store import alembic_config, migrate
    engine = create_engine("sqlite:///scratch.db")
    migrate(engine)
    with engine.begin() as conn:
        command.revision(alembic_config(conn), "what changed", autogenerate=True, rev_id="0002")

then replace any drainwatch type in the result by plain SQLAlchemy types (see 0001_initial.py),
so that a migration keeps meaning what it meant when it was written.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from drainwatch.store.schema import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: later migrations copy and move its tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "drainwatch migrations run through drainwatch.store.migrate(), "
            "which hands alembic an open connection"
        )
    run_migrations(connection)


main()
