"""The store's tables, as SQLAlchemy 2 typed declarative models.

The migrations in ``drainwatch/migrations`` must create exactly this; a test compares them.
Two column types carry the values that the two backends would otherwise change:

- ``Amount``: an ``int`` of up to 78 digits (2**256 - 1). PostgreSQL keeps it in NUMERIC(78, 0);
  SQLite's NUMERIC affinity would turn it into a lossy float, so there it is decimal text.
- ``UtcDateTime``: an aware datetime. PostgreSQL keeps ``timestamptz``; SQLite has no time zone,
  so the value is stored as naive UTC (whose text form still sorts in time order) and read back
  as aware UTC.

Every string column is ``Text``: SQLite never enforces a VARCHAR length and PostgreSQL always
does, so a length limit would only make the two backends disagree about which values they keep.
PostgreSQL indexes ``text`` as well as ``varchar`` (one B-tree entry, all key columns together,
must stay under about 2.7 kB: far above any hash, address or transfer index).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

MAX_AMOUNT = 2**256 - 1
AMOUNT_DIGITS = 78  # len(str(2**256 - 1))


class Amount(TypeDecorator[int]):
    """Base units, exact on both backends (see the module docstring)."""

    impl = Numeric(AMOUNT_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(Numeric(AMOUNT_DIGITS, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        # bool is an int too, and a float would already have lost digits: refuse both.
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"an amount is an int of base units, not {type(value).__name__}")
        if not 0 <= value <= MAX_AMOUNT:
            raise ValueError(f"amount {value} is outside 0 .. 2**256-1")
        return str(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out (see the module docstring)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every time in drainwatch carries a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQLite only auto-numbers an INTEGER PRIMARY KEY (the rowid), not a BIGINT one.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class BlockRow(Base):
    __tablename__ = "blocks"
    __table_args__ = (Index("ix_blocks_chain_height", "chain", "height"),)

    chain: Mapped[str] = mapped_column(Text, primary_key=True)
    hash: Mapped[str] = mapped_column(Text, primary_key=True)
    height: Mapped[int] = mapped_column(BigInteger)
    parent_hash: Mapped[str] = mapped_column(Text)
    block_time: Mapped[datetime] = mapped_column(UtcDateTime)
    orphaned: Mapped[bool] = mapped_column(Boolean, default=False)
    # Reached the chain's confirmations (its BlockConfirmed was published). Blocks recorded
    # before migration 0003 were all processed at their confirmation depth: true.
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())


class TransferRow(Base):
    """``position`` numbers the transfers in the order they entered their current block: the
    order inside a block, since the model carries no position of a transaction in its block."""

    __tablename__ = "transfers"
    __table_args__ = (
        Index("ix_transfers_from", "from_lower", "chain"),
        Index("ix_transfers_to", "to_lower", "chain"),
        Index("ix_transfers_block", "chain", "block_hash"),
        Index("ix_transfers_position", "position"),
    )

    chain: Mapped[str] = mapped_column(Text, primary_key=True)
    tx_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    tx_index: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    from_address: Mapped[str] = mapped_column(Text)
    to_address: Mapped[str] = mapped_column(Text)
    # Lower-cased copies, so that a case-insensitive lookup is a plain indexed equality on both
    # backends (EVM addresses arrive in checksum case or lower case).
    from_lower: Mapped[str] = mapped_column(Text)
    to_lower: Mapped[str] = mapped_column(Text)
    asset: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Amount)
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    block_height: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(Text)
    block_time: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ControlChangeRow(Base):
    """A ``drainwatch.model.ControlChange``, keyed as its ``key``: (chain, anchor, index).

    ``anchor`` is the transaction hash, or the block hash for a change seen in storage (which
    has no transaction); ``tx_hash`` keeps which of the two it was. ``position`` orders the
    changes inside a block, as ``TransferRow.position`` does the transfers.
    """

    __tablename__ = "control_changes"
    __table_args__ = (
        Index("ix_control_changes_wallet", "wallet_lower", "chain"),
        Index("ix_control_changes_block", "chain", "block_hash"),
        Index("ix_control_changes_position", "position"),
    )

    chain: Mapped[str] = mapped_column(Text, primary_key=True)
    anchor: Mapped[str] = mapped_column(Text, primary_key=True)
    change_index: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str | None] = mapped_column(Text)
    wallet_address: Mapped[str] = mapped_column(Text)
    # Lower-cased copy, for a case-insensitive lookup by plain indexed equality (see transfers).
    wallet_lower: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    value: Mapped[int | None] = mapped_column(Amount)
    contract: Mapped[str | None] = mapped_column(Text)
    block_height: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(Text)
    block_time: Mapped[datetime | None] = mapped_column(UtcDateTime)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"

    chain: Mapped[str] = mapped_column(Text, primary_key=True)
    height: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(Text)


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_raised_at", "raised_at"),
        Index("ix_alerts_block", "chain", "block_hash"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    rule_id: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
    chain: Mapped[str] = mapped_column(Text)
    wallet: Mapped[str] = mapped_column(Text)
    subject_0: Mapped[str] = mapped_column(Text)
    subject_1: Mapped[str] = mapped_column(Text)
    subject_2: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime)
    tx_hash: Mapped[str | None] = mapped_column(Text)
    block_height: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(Text)
    asset: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[int | None] = mapped_column(Amount)
    counterparty: Mapped[str | None] = mapped_column(Text)
    # ``Alert.facts`` as a JSON list of [name, value] pairs.
    facts: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    acked_by: Mapped[str | None] = mapped_column(Text)
    acked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxRow(Base):
    """One delivery of one alert to one sink (a Slack channel, a webhook, the console), written
    in the same transaction as the alert change it announces, before anything is sent.

    ``payload`` is the alert as it was then (canonical JSON), ``previous_state`` what it was
    before (None for its first delivery), ``news`` what else happened (``ack``). A sink works
    through its rows in ``id`` order, one alert's rows strictly in order. ``claimed_until``
    leases a row to one notifier while it sends (a crashed notifier's lease runs out);
    ``attempts`` counts the claims, so that an attempt after a first one knows a message may
    already have gone out."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "sink", "delivered_at", "id"),
        Index("ix_outbox_alert", "alert_id", "sink"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(Text)
    sink: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    previous_state: Mapped[str | None] = mapped_column(Text)
    news: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryRefRow(Base):
    """Where a sink put an alert's message (a Slack channel id and ``ts``), once known: later
    states update that message and reply in its thread."""

    __tablename__ = "delivery_refs"

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    alert_id: Mapped[str] = mapped_column(Text, primary_key=True)
    ref: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ExpectationRow(Base):
    """A ``drainwatch.model.Expectation``, keyed by the exchange's reference, and the outflow
    that used it (``consumed_*``: the transfer's key), if any."""

    __tablename__ = "expectations"
    __table_args__ = (
        Index("ix_expectations_wallet", "chain", "wallet"),
        Index("ix_expectations_consumer", "consumed_chain", "consumed_tx"),
    )

    reference: Mapped[str] = mapped_column(Text, primary_key=True)
    chain: Mapped[str] = mapped_column(Text)
    wallet: Mapped[str] = mapped_column(Text)
    destination: Mapped[str] = mapped_column(Text)
    asset: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Amount)
    valid_until: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(Text)
    consumed_chain: Mapped[str | None] = mapped_column(Text)
    consumed_tx: Mapped[str | None] = mapped_column(Text)
    consumed_index: Mapped[str | None] = mapped_column(Text)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BalanceRow(Base):
    """A ``drainwatch.model.Balance``. Rows of orphaned blocks are left in place and ignored
    (joined with ``blocks``)."""

    __tablename__ = "balances"
    __table_args__ = (Index("ix_balances_time", "chain", "wallet", "asset", "block_time"),)

    chain: Mapped[str] = mapped_column(Text, primary_key=True)
    wallet: Mapped[str] = mapped_column(Text, primary_key=True)
    asset: Mapped[str] = mapped_column(Text, primary_key=True)
    block_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    block_height: Mapped[int] = mapped_column(BigInteger)
    block_time: Mapped[datetime] = mapped_column(UtcDateTime)
    amount: Mapped[int] = mapped_column(Amount)
    before: Mapped[int] = mapped_column(Amount)


class IncidentRow(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(Text)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    from_alert: Mapped[str | None] = mapped_column(Text)
    exercise: Mapped[bool] = mapped_column(Boolean)


class TimelineEntryRow(Base):
    """``digest`` hashes everything but the incident and the time, so that the natural key
    (incident, at, digest) stays short however long the text is."""

    __tablename__ = "timeline_entries"
    __table_args__ = (
        UniqueConstraint("incident_id", "at", "digest", name="uq_timeline_entries_key"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(Text, ForeignKey("incidents.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    digest: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(Text)
    section: Mapped[str | None] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(Text)


class UtxoRow(Base):
    """A ``drainwatch.model.Utxo``: a watched output, keyed by its outpoint (chain, txid, vout).

    The creating block and the spending block are both kept (a spend is a row update, never a
    delete), so that the balance at any height since the first applied block is one query:
    created at or below it and not spent at or below it. A reorg deletes what the replaced
    blocks created and clears what they spent.
    """

    __tablename__ = "utxos"
    __table_args__ = (
        Index("ix_utxos_spent", "chain", "spent_height"),
        Index("ix_utxos_block", "chain", "block_height"),
        Index("ix_utxos_wallet", "chain", "wallet"),
    )

    chain: Mapped[str] = mapped_column(Text, primary_key=True)
    txid: Mapped[str] = mapped_column(Text, primary_key=True)
    # A vout is a 32-bit unsigned number: above PostgreSQL's INTEGER.
    vout: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    wallet: Mapped[str] = mapped_column(Text)
    address: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(Amount)
    block_height: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(Text)
    spent_by: Mapped[str | None] = mapped_column(Text)
    spent_height: Mapped[int | None] = mapped_column(BigInteger)
    spent_hash: Mapped[str | None] = mapped_column(Text)
