"""Alert delivery and planned outflows: the outbox, where each sink put an alert's message,
the exchange's expectations, wallets' balances after outflows, an alert's facts and
acknowledgement, and which blocks have reached their confirmations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Plain SQLAlchemy types only (see 0001_initial.py). Blocks recorded before this revision were
processed at their confirmation depth, so they start out confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric(78, 0).with_variant(sa.Text(), "sqlite")
TEXT = sa.Text()
TIME = sa.DateTime(timezone=True)
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.add_column(
            sa.Column("confirmed", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("facts", TEXT, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("acked_by", TEXT, nullable=True))
        batch.add_column(sa.Column("acked_at", TIME, nullable=True))
    op.create_table(
        "outbox",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("alert_id", TEXT, nullable=False),
        sa.Column("sink", TEXT, nullable=False),
        sa.Column("payload", TEXT, nullable=False),
        sa.Column("previous_state", TEXT, nullable=True),
        sa.Column("news", TEXT, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("claimed_until", TIME, nullable=True),
        sa.Column("delivered_at", TIME, nullable=True),
        sa.Column("last_error", TEXT, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_due", "outbox", ["sink", "delivered_at", "id"])
    op.create_index("ix_outbox_alert", "outbox", ["alert_id", "sink"])
    op.create_table(
        "delivery_refs",
        sa.Column("sink", TEXT, nullable=False),
        sa.Column("alert_id", TEXT, nullable=False),
        sa.Column("ref", TEXT, nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("sink", "alert_id"),
    )
    op.create_table(
        "expectations",
        sa.Column("reference", TEXT, nullable=False),
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("wallet", TEXT, nullable=False),
        sa.Column("destination", TEXT, nullable=False),
        sa.Column("asset", TEXT, nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("valid_until", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("source", TEXT, nullable=False),
        sa.Column("consumed_chain", TEXT, nullable=True),
        sa.Column("consumed_tx", TEXT, nullable=True),
        sa.Column("consumed_index", TEXT, nullable=True),
        sa.Column("consumed_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("reference"),
    )
    op.create_table(
        "balances",
        sa.Column("chain", TEXT, nullable=False),
        sa.Column("wallet", TEXT, nullable=False),
        sa.Column("asset", TEXT, nullable=False),
        sa.Column("block_hash", TEXT, nullable=False),
        sa.Column("block_height", sa.BigInteger(), nullable=False),
        sa.Column("block_time", TIME, nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("before", AMOUNT, nullable=False),
        sa.PrimaryKeyConstraint("chain", "wallet", "asset", "block_hash"),
    )
    op.create_index("ix_balances_time", "balances", ["chain", "wallet", "asset", "block_time"])
    op.create_index("ix_expectations_wallet", "expectations", ["chain", "wallet"])
    op.create_index("ix_expectations_consumer", "expectations", ["consumed_chain", "consumed_tx"])


def downgrade() -> None:
    op.drop_table("balances")
    op.drop_table("expectations")
    op.drop_table("delivery_refs")
    op.drop_table("outbox")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("acked_at")
        batch.drop_column("acked_by")
        batch.drop_column("facts")
    with op.batch_alter_table("blocks") as batch:
        batch.drop_column("confirmed")
