"""Initial schema: blocks, transfers, checkpoints, alerts, incidents, timeline entries.

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

AMOUNT = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")
TIME = sa.DateTime(timezone=True)
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CHAIN = sa.String(64)
HASH = sa.String(130)
ADDRESS = sa.String(130)
NAME = sa.String(200)
ENUM = sa.String(16)


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("chain", CHAIN, nullable=False),
        sa.Column("hash", HASH, nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("parent_hash", HASH, nullable=False),
        sa.Column("block_time", TIME, nullable=False),
        sa.Column("orphaned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "hash"),
    )
    op.create_index("ix_blocks_chain_height", "blocks", ["chain", "height"])
    _create_transfers()
    op.create_table(
        "checkpoints",
        sa.Column("chain", CHAIN, nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("hash", HASH, nullable=False),
        sa.PrimaryKeyConstraint("chain"),
    )
    _create_alerts()
    _create_incidents()


def _create_transfers() -> None:
    op.create_table(
        "transfers",
        sa.Column("chain", CHAIN, nullable=False),
        sa.Column("tx_hash", HASH, nullable=False),
        sa.Column("tx_index", sa.String(100), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("from_address", ADDRESS, nullable=False),
        sa.Column("to_address", ADDRESS, nullable=False),
        sa.Column("from_lower", ADDRESS, nullable=False),
        sa.Column("to_lower", ADDRESS, nullable=False),
        sa.Column("asset", ADDRESS, nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", HASH, nullable=True),
        sa.Column("block_time", TIME, nullable=True),
        sa.PrimaryKeyConstraint("chain", "tx_hash", "tx_index"),
    )
    op.create_index("ix_transfers_from", "transfers", ["from_lower", "chain"])
    op.create_index("ix_transfers_to", "transfers", ["to_lower", "chain"])
    op.create_index("ix_transfers_block", "transfers", ["chain", "block_hash"])
    op.create_index("ix_transfers_position", "transfers", ["position"])


def _create_alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", NAME, nullable=False),
        sa.Column("rule_id", NAME, nullable=False),
        sa.Column("severity", ENUM, nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("chain", CHAIN, nullable=False),
        sa.Column("wallet", NAME, nullable=False),
        sa.Column("subject_0", NAME, nullable=False),
        sa.Column("subject_1", NAME, nullable=False),
        sa.Column("subject_2", NAME, nullable=False),
        sa.Column("raised_at", TIME, nullable=False),
        sa.Column("tx_hash", HASH, nullable=True),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", HASH, nullable=True),
        sa.Column("asset", ADDRESS, nullable=True),
        sa.Column("amount", AMOUNT, nullable=True),
        sa.Column("counterparty", ADDRESS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])


def _create_incidents() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", NAME, nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("opened_at", TIME, nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("from_alert", NAME, nullable=True),
        sa.Column("exercise", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "timeline_entries",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", NAME, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("actor", NAME, nullable=True),
        sa.Column("section", NAME, nullable=True),
        sa.Column("ref", sa.String(500), nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "at", "digest", name="uq_timeline_entries_key"),
    )


def downgrade() -> None:
    for table in ("timeline_entries", "incidents", "alerts", "checkpoints", "transfers", "blocks"):
        op.drop_table(table)
