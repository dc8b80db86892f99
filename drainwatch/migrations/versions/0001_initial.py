"""Initial schema: blocks, transfers, control changes, checkpoints, alerts, incidents, timeline
entries.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Plain SQLAlchemy types only, so that this migration keeps meaning what it meant when it was
written. ``AMOUNT`` and ``TIME`` are what ``drainwatch.store.schema.Amount`` and ``UtcDateTime``
become on each backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric(78, 0).with_variant(sa.Text(), "sqlite")
TIME = sa.DateTime(timezone=True)
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Every string is unbounded text: SQLite would not enforce a VARCHAR length, PostgreSQL would.
TEXT = sa.Text()


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("hash", TEXT, nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("parent_hash", TEXT, nullable=False),
        sa.Column("block_time", TIME, nullable=False),
        sa.Column("orphaned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "hash"),
    )
    op.create_index("ix_blocks_chain_height", "blocks", ["chain", "height"])
    _create_transfers()
    _create_control_changes()
    op.create_table(
        "checkpoints",
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("hash", TEXT, nullable=False),
        sa.PrimaryKeyConstraint("chain"),
    )
    _create_alerts()
    _create_incidents()


def _create_transfers() -> None:
    op.create_table(
        "transfers",
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("tx_hash", TEXT, nullable=False),
        sa.Column("tx_index", TEXT, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("from_address", TEXT, nullable=False),
        sa.Column("to_address", TEXT, nullable=False),
        sa.Column("from_lower", TEXT, nullable=False),
        sa.Column("to_lower", TEXT, nullable=False),
        sa.Column("asset", TEXT, nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("kind", TEXT, nullable=False),
        sa.Column("status", TEXT, nullable=False),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", TEXT, nullable=True),
        sa.Column("block_time", TIME, nullable=True),
        sa.PrimaryKeyConstraint("chain", "tx_hash", "tx_index"),
    )
    op.create_index("ix_transfers_from", "transfers", ["from_lower", "chain"])
    op.create_index("ix_transfers_to", "transfers", ["to_lower", "chain"])
    op.create_index("ix_transfers_block", "transfers", ["chain", "block_hash"])
    op.create_index("ix_transfers_position", "transfers", ["position"])


def _create_control_changes() -> None:
    op.create_table(
        "control_changes",
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("anchor", TEXT, nullable=False),
        sa.Column("change_index", TEXT, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", TEXT, nullable=True),
        sa.Column("wallet_address", TEXT, nullable=False),
        sa.Column("wallet_lower", TEXT, nullable=False),
        sa.Column("kind", TEXT, nullable=False),
        sa.Column("status", TEXT, nullable=False),
        sa.Column("subject", TEXT, nullable=True),
        sa.Column("value", AMOUNT, nullable=True),
        sa.Column("contract", TEXT, nullable=True),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", TEXT, nullable=True),
        sa.Column("block_time", TIME, nullable=True),
        sa.PrimaryKeyConstraint("chain", "anchor", "change_index"),
    )
    op.create_index("ix_control_changes_wallet", "control_changes", ["wallet_lower", "chain"])
    op.create_index("ix_control_changes_block", "control_changes", ["chain", "block_hash"])
    op.create_index("ix_control_changes_position", "control_changes", ["position"])


def _create_alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", TEXT, nullable=False),
        sa.Column("rule_id", TEXT, nullable=False),
        sa.Column("severity", TEXT, nullable=False),
        sa.Column("state", TEXT, nullable=False),
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("wallet", TEXT, nullable=False),
        sa.Column("subject_0", TEXT, nullable=False),
        sa.Column("subject_1", TEXT, nullable=False),
        sa.Column("subject_2", TEXT, nullable=False),
        sa.Column("raised_at", TIME, nullable=False),
        sa.Column("tx_hash", TEXT, nullable=True),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", TEXT, nullable=True),
        sa.Column("asset", TEXT, nullable=True),
        sa.Column("amount", AMOUNT, nullable=True),
        sa.Column("counterparty", TEXT, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])
    op.create_index("ix_alerts_block", "alerts", ["chain", "block_hash"])


def _create_incidents() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", TEXT, nullable=False),
        sa.Column("title", TEXT, nullable=False),
        sa.Column("opened_at", TIME, nullable=False),
        sa.Column("status", TEXT, nullable=False),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("from_alert", TEXT, nullable=True),
        sa.Column("exercise", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "timeline_entries",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", TEXT, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("digest", TEXT, nullable=False),
        sa.Column("kind", TEXT, nullable=False),
        sa.Column("text", TEXT, nullable=False),
        sa.Column("actor", TEXT, nullable=True),
        sa.Column("section", TEXT, nullable=True),
        sa.Column("ref", TEXT, nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "at", "digest", name="uq_timeline_entries_key"),
    )


def downgrade() -> None:
    tables = (
        "timeline_entries",
        "incidents",
        "alerts",
        "checkpoints",
        "control_changes",
        "transfers",
        "blocks",
    )
    for table in tables:
        op.drop_table(table)
