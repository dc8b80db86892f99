"""The migrations create exactly what drainwatch.store.schema declares, on both backends.

These need a database (a SQLite file, and a fresh database on the real PostgreSQL), not only
the pure core: they live here because the migrations are checked alongside the schema models.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, String, Text, create_engine, inspect, text

from drainwatch.model import BlockRef, Utxo
from drainwatch.store import MIGRATIONS, alembic_config, migrate, open_store
from drainwatch.store.schema import Base
from tests.fixtures.postgres import PgServer

TABLES = {
    "blocks",
    "transfers",
    "control_changes",
    "checkpoints",
    "alerts",
    "incidents",
    "timeline_entries",
    "utxos",
    "outbox",
    "delivery_refs",
    "expectations",
    "balances",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database that has never seen a migration."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    server: PgServer = request.getfixturevalue("postgres_server")
    with server.database("drainwatch_migration") as url:
        yield url


def _engine(url: str) -> Engine:
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_one_head_and_no_alembic_ini_needed() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == ["0003"]
    assert not list(MIGRATIONS.glob("*.ini"))


def test_migrated_database_matches_the_models(empty_database: str) -> None:
    open_store(empty_database).close()
    engine = _engine(empty_database)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    engine.dispose()


def test_no_string_column_has_a_length_limit(empty_database: str) -> None:
    """PostgreSQL enforces VARCHAR lengths and SQLite ignores them: every string is TEXT."""
    open_store(empty_database).close()
    engine = _engine(empty_database)
    inspector = inspect(engine)
    limited = [
        f"{table}.{column['name']} {column['type']}"
        for table in sorted(TABLES)
        for column in inspector.get_columns(table)
        if isinstance(column["type"], String) and not isinstance(column["type"], Text)
    ]
    engine.dispose()
    assert limited == []


def test_alerts_are_indexed_by_block(empty_database: str) -> None:
    open_store(empty_database).close()
    engine = _engine(empty_database)
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("alerts")}
    engine.dispose()
    assert indexes["ix_alerts_block"] == ["chain", "block_hash"]


def test_control_changes_are_keyed_and_indexed(empty_database: str) -> None:
    open_store(empty_database).close()
    engine = _engine(empty_database)
    inspector = inspect(engine)
    key = inspector.get_pk_constraint("control_changes")["constrained_columns"]
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("control_changes")}
    engine.dispose()
    assert key == ["chain", "anchor", "change_index"]
    assert indexes == {
        "ix_control_changes_wallet": ["wallet_lower", "chain"],
        "ix_control_changes_block": ["chain", "block_hash"],
        "ix_control_changes_position": ["position"],
    }


def test_utxos_are_keyed_and_indexed(empty_database: str) -> None:
    open_store(empty_database).close()
    engine = _engine(empty_database)
    inspector = inspect(engine)
    key = inspector.get_pk_constraint("utxos")["constrained_columns"]
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("utxos")}
    engine.dispose()
    assert key == ["chain", "txid", "vout"]
    assert indexes == {
        "ix_utxos_spent": ["chain", "spent_height"],
        "ix_utxos_block": ["chain", "block_height"],
        "ix_utxos_wallet": ["chain", "wallet"],
    }


def test_upgrading_a_0001_store_keeps_its_data(empty_database: str) -> None:
    """A store written by the previous release gains the UTXO set and loses nothing."""
    engine = _engine(empty_database)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    assert _revision(engine) == "0001"
    assert "utxos" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO checkpoints (chain, height, hash) VALUES ('btc', 7, '00b7')")
        )
    engine.dispose()
    store = open_store(empty_database)
    assert store.get_checkpoint("btc") == BlockRef(7, "00b7")
    block = BlockRef(8, "00b8")
    paid = Utxo("btc", "aa", 0, "hot", "bc1qhot", 2**70, block)
    store.apply_utxo_block("btc", block, [paid], [])
    assert store.utxo_balances("btc") == {"hot": 2**70}
    store.close()
    engine = _engine(empty_database)
    assert _revision(engine) == "0003"
    engine.dispose()


def test_upgrading_a_0002_store_keeps_its_blocks_confirmed_and_its_alerts(
    empty_database: str,
) -> None:
    """Blocks recorded by the previous release were processed at their confirmation depth:
    they stay confirmed; its alerts gain empty facts and no acknowledgement."""
    engine = _engine(empty_database)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
        conn.execute(
            text(
                "INSERT INTO blocks (chain, hash, height, parent_hash, block_time, orphaned) "
                "VALUES ('eth', '0xb9', 9, '0xb8', '2026-01-01 00:00:00', false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO alerts (id, rule_id, severity, state, chain, wallet, subject_0, "
                "subject_1, subject_2, raised_at) VALUES ('A-1', 'cold-outflow', 'critical', "
                "'confirmed', 'eth', 'cold', 'eth', '0xt', 'native', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    store = open_store(empty_database)
    assert store.unconfirmed_blocks("eth", 100) == []
    alert = store.get_alert("A-1")
    assert alert is not None and alert.facts == () and alert.acked_by is None
    store.close()


def test_downgrade_to_0001_removes_only_the_utxos(empty_database: str) -> None:
    open_store(empty_database).close()
    engine = _engine(empty_database)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    after_0001 = TABLES - {"utxos", "outbox", "delivery_refs", "expectations", "balances"}
    assert set(inspect(engine).get_table_names()) == after_0001 | {"alembic_version"}
    assert _revision(engine) == "0001"
    engine.dispose()


def test_reopening_a_migrated_database_is_a_no_op(empty_database: str) -> None:
    store = open_store(empty_database)
    store.set_checkpoint("eth", BlockRef(3, "0xb3"))
    store.close()
    engine = _engine(empty_database)
    assert _revision(engine) == "0003"
    migrate(engine)  # again: nothing to do, nothing lost
    assert _revision(engine) == "0003"
    engine.dispose()
    reopened = open_store(empty_database)
    assert reopened.get_checkpoint("eth") == BlockRef(3, "0xb3")
    reopened.close()


def test_downgrade_removes_every_table(empty_database: str) -> None:
    open_store(empty_database).close()
    engine = _engine(empty_database)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert _revision(engine) is None
    engine.dispose()
