"""The watched UTXO set: one row per output paying a watched wallet, with its creating and
spending blocks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Plain SQLAlchemy types only (see 0001_initial.py): ``AMOUNT`` is what
``drainwatch.store.schema.Amount`` becomes on each backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric(78, 0).with_variant(sa.Text(), "sqlite")
TEXT = sa.Text()


def upgrade() -> None:
    op.create_table(
        "utxos",
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("txid", TEXT, nullable=False),
        sa.Column("vout", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("wallet", TEXT, nullable=False),
        sa.Column("address", TEXT, nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("block_height", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", TEXT, nullable=False),
        sa.Column("spent_by", TEXT, nullable=True),
        sa.Column("spent_height", sa.BigInteger(), nullable=True),
        sa.Column("spent_hash", TEXT, nullable=True),
        sa.PrimaryKeyConstraint("chain", "txid", "vout"),
    )
    op.create_index("ix_utxos_spent", "utxos", ["chain", "spent_height"])
    op.create_index("ix_utxos_block", "utxos", ["chain", "block_height"])
    op.create_index("ix_utxos_wallet", "utxos", ["chain", "wallet"])


def downgrade() -> None:
    op.drop_table("utxos")
