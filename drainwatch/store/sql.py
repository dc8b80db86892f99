"""``SqlStore``: the ``drainwatch.ports.Store`` port on SQLite or PostgreSQL.

Every write is an ``INSERT ... ON CONFLICT`` on the row's natural key, so that replaying an
event once more changes nothing and reports 0. A batch of transfers (or of control changes) is
one statement executed for many rows in one transaction: no statement is compiled, nor waited
for, row by row.

Each call is its own transaction, except inside ``batch()``: there every call of the thread
that opened it runs on the batch's one connection, in its one transaction (a commit costs a
disk flush on SQLite, far more than the statements of a block's events).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from drainwatch.errors import StoreError
from drainwatch.model import (
    Alert,
    AlertState,
    Balance,
    BlockRef,
    ControlChange,
    Incident,
    TimelineEntry,
    Transfer,
    TransferStatus,
    Utxo,
)
from drainwatch.ports import Delivery, ExpectationRecord
from drainwatch.store import outbox as outbox_sql
from drainwatch.store.expectations import ExpectationTable
from drainwatch.store.rows import (
    alert_from_row,
    alert_to_row,
    control_change_from_row,
    control_change_to_row,
    incident_from_row,
    incident_to_row,
    timeline_digest,
    timeline_entry_from_row,
    transfer_from_row,
    transfer_to_row,
    utxo_from_row,
)
from drainwatch.store.schema import (
    AlertRow,
    BalanceRow,
    Base,
    BlockRow,
    CheckpointRow,
    ControlChangeRow,
    DeliveryRefRow,
    IncidentRow,
    TimelineEntryRow,
    TransferRow,
)
from drainwatch.store.utxo_set import UtxoSet

#: Serialise the writers of transfers, and of control changes, on PostgreSQL so that positions
#: never tie (SQLite writers are serialised by its write lock already). Any constants work; these
#: spell "drainw" and "dwctrl".
_POSITION_LOCK = 0x647261696E77
_CONTROL_POSITION_LOCK = 0x64776374726C

#: Execution options of writes: SQLite begins them IMMEDIATE (see __init__), and rowcount is
#: kept for INSERT too (SQLAlchemy otherwise promises it for UPDATE and DELETE only).
WRITE = {"drainwatch_write": True, "preserve_rowcount": True}

#: The columns ``update_alert`` overwrites.
_ALERT_UPDATABLE = (
    "state",
    "tx_hash",
    "block_height",
    "block_hash",
    "asset",
    "amount",
    "counterparty",
    "facts",
)

_CONFIRMED = TransferStatus.CONFIRMED.value
log = logging.getLogger(__name__)
#: How long an outbox row this version cannot read waits before it is looked at again.
_UNREADABLE_WAIT = timedelta(hours=1)
_PROVISIONAL = TransferStatus.PROVISIONAL.value
_ORPHANED = TransferStatus.ORPHANED.value
_MINED_STATUSES = (
    _CONFIRMED,
    _PROVISIONAL,
    TransferStatus.SUPERSEDED.value,
    TransferStatus.EXECUTED.value,
)


def describe(url: URL) -> str:
    """Where the store lives, for messages: never the password."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database}" if url.database else "sqlite in memory"
    return f"postgresql at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def reason(exc: SQLAlchemyError) -> str:
    """The driver's own first line: SQLAlchemy's text adds the statement and its parameters."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


class SqlStore:
    """The store port over an engine whose database is already migrated (see ``open_store``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**WRITE)
        self._postgres = engine.dialect.name == "postgresql"
        self._where = describe(engine.url)
        # The connection of the batch the current thread has open, if any.
        self._batches = threading.local()
        self._statements: dict[str, tuple[Any, Any]] = {}
        self._utxos = UtxoSet(postgres=self._postgres)
        self._expectations = ExpectationTable(postgres=self._postgres)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """See the port: one write transaction (on SQLite begun IMMEDIATE, so holding the write
        lock until the end) for every call of this thread inside the block."""
        if self._batch() is not None:
            yield  # joins the outer batch, which commits or rolls back
            return
        with self._guard("batch"), self._writer.begin() as conn:
            self._batches.conn = conn
            try:
                yield
            finally:
                self._batches.conn = None

    def _batch(self) -> Connection | None:
        conn: Connection | None = getattr(self._batches, "conn", None)
        return conn

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(f"store: {action} failed on {self._where}: {reason(exc)}") from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        batch = self._batch()
        if batch is not None:
            with self._guard(action):
                yield batch
            return
        with self._guard(action), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self, action: str) -> Iterator[Session]:
        # In a batch, on its connection: the reads must see the batch's own writes. The session
        # joins the batch's transaction and leaves it open when it closes.
        bind = self._batch() or self._engine
        with self._guard(action), Session(bind) as session:
            yield session

    def _insert(self, entity: type[Base]) -> sqlite.Insert | postgresql.Insert:
        return postgresql.insert(entity) if self._postgres else sqlite.insert(entity)

    # -- blocks and checkpoints ----------------------------------------------------------------

    def record_block(
        self,
        chain: str,
        block: BlockRef,
        parent_hash: str,
        block_time: datetime,
        *,
        confirmed: bool = False,
    ) -> None:
        stmt = self._insert(BlockRow).values(
            chain=chain,
            hash=block.hash,
            height=block.height,
            parent_hash=parent_hash,
            block_time=block_time,
            orphaned=False,
            confirmed=confirmed,
        )
        # Recording a block again means it is back on the best chain: clear its orphaned flag.
        # Its events come again as provisional, so it must reach its confirmations again too.
        stmt = stmt.on_conflict_do_update(
            index_elements=["chain", "hash"], set_={"orphaned": False, "confirmed": confirmed}
        )
        with self._write("record_block") as conn:
            conn.execute(stmt)

    def recent_blocks(self, chain: str, limit: int) -> list[tuple[BlockRef, str]]:
        query = (
            select(BlockRow)
            .where(BlockRow.chain == chain, BlockRow.orphaned.is_(False))
            .order_by(BlockRow.height.desc(), BlockRow.hash)
            .limit(limit)
        )
        with self._read("recent_blocks") as session:
            rows = session.scalars(query).all()
        return [(BlockRef(r.height, r.hash), r.parent_hash) for r in rows]

    def orphan_block(self, chain: str, block: BlockRef) -> int:
        """See the port: the block, its transfers and its control changes, and what it created
        and spent in the UTXO set; returns how many transfers and control changes changed."""
        with self._write("orphan_block") as conn:
            conn.execute(
                update(BlockRow)
                .where(BlockRow.chain == chain, BlockRow.hash == block.hash)
                .values(orphaned=True)
            )
            self._utxos.undo_block(conn, chain, block)
            return self._orphan_events(conn, chain, block)

    def orphan_transfers(self, chain: str, block: BlockRef) -> int:
        """See the port: the block's transfers and control changes, not the block row."""
        with self._write("orphan_transfers") as conn:
            return self._orphan_events(conn, chain, block)

    @staticmethod
    def _orphan_events(conn: Connection, chain: str, block: BlockRef) -> int:
        return _move_events(conn, chain, block, _ORPHANED)

    def get_checkpoint(self, chain: str) -> BlockRef | None:
        with self._read("get_checkpoint") as session:
            row = session.get(CheckpointRow, chain)
        return None if row is None else BlockRef(row.height, row.hash)

    def set_checkpoint(self, chain: str, block: BlockRef) -> None:
        stmt = self._insert(CheckpointRow).values(chain=chain, height=block.height, hash=block.hash)
        stmt = stmt.on_conflict_do_update(
            index_elements=["chain"],
            set_={"height": stmt.excluded.height, "hash": stmt.excluded.hash},
        )
        with self._write("set_checkpoint") as conn:
            conn.execute(stmt)

    # -- transfers -----------------------------------------------------------------------------

    def upsert_transfers(self, transfers: Iterable[Transfer]) -> int:
        """See the port. The key fixes the movement itself (parties, asset, amount, kind): only
        its status and block change, and a confirmed transfer is never sent back to pending."""
        # The last sighting of a key in one call wins, as if they had come one call each; it also
        # keeps PostgreSQL from refusing a statement that would update one row twice.
        latest = {t.key: t for t in transfers}
        rows = [transfer_to_row(t) for t in latest.values()]
        return self._upsert_positioned(
            "upsert_transfers", TransferRow, rows, ["chain", "tx_hash", "tx_index"], _POSITION_LOCK
        )

    def _upsert_positioned(
        self, action: str, entity: type[Base], rows: list[dict[str, Any]], key: list[str], lock: int
    ) -> int:
        """Upsert ``rows`` (unique on ``key``) of a table with a ``position`` and a status."""
        if not rows:
            return 0
        statement, last_position = self._positioned_statements(entity, key)
        with self._write(action) as conn:
            if self._postgres:
                conn.execute(select(func.pg_advisory_xact_lock(lock)))
            start = conn.scalar(last_position) or 0
            for position, row in enumerate(rows, start=start + 1):
                row["position"] = position
            # executemany of one cached statement: SQLAlchemy sends PostgreSQL multi-row
            # batches ("insertmanyvalues"), and sqlite3 steps it in C without re-parsing.
            return int(conn.execute(statement, rows).rowcount)

    def _positioned_statements(self, entity: type[Base], key: list[str]) -> tuple[Any, Any]:
        """The upsert and the last-position query of a table, built once: building them costs
        more than running them (a processor upserts one event at a time)."""
        statements = self._statements.get(entity.__tablename__)
        if statements is None:
            table = Base.metadata.tables[entity.__tablename__]  # Core: no ORM bulk path
            last_position = select(func.coalesce(func.max(table.c.position), 0))
            statements = (self._upsert_statement(table, key), last_position)
            self._statements[entity.__tablename__] = statements
        return statements

    def _upsert_statement(self, table: Table, key: list[str]) -> Any:
        """Insert, or move a known key to its new status and block (never confirmed back to
        pending); only those change: the key fixes the rest of the row."""
        stmt = postgresql.insert(table) if self._postgres else sqlite.insert(table)
        new, old = stmt.excluded, table.c
        moved = or_(
            old.status.is_distinct_from(new.status),
            old.block_hash.is_distinct_from(new.block_hash),
            old.block_height.is_distinct_from(new.block_height),
            old.block_time.is_distinct_from(new.block_time),
        )
        # A mempool verdict (pending, or withdrawn: no block either way) never changes a row a
        # block carries: only the watcher's orphan_block does, after a reorg; after that the
        # row may become pending again. A node a block behind must not unconfirm a leak.
        unmined = and_(*(old.status != status for status in _MINED_STATUSES))
        # A replayed provisional sighting of a block that has since reached its confirmations
        # leaves the row confirmed.
        unconfirmed = or_(
            old.status != _CONFIRMED,
            new.status != _PROVISIONAL,
            old.block_hash.is_distinct_from(new.block_hash),
        )
        not_demoted = and_(or_(new.block_hash.is_not(None), unmined), unconfirmed)
        return stmt.on_conflict_do_update(
            index_elements=key,
            set_={
                "status": new.status,
                "block_height": new.block_height,
                "block_hash": new.block_hash,
                "block_time": new.block_time,
                # A row that enters another block takes its place at that block's end.
                "position": _if_distinct(
                    old.block_hash, new.block_hash, new.position, old.position
                ),
            },
            where=and_(moved, not_demoted),
        )

    def transfers(
        self,
        chain: str | None = None,
        address: str | None = None,
        addresses: Sequence[str] | None = None,
    ) -> list[Transfer]:
        query = select(TransferRow)
        if chain is not None:
            query = query.where(TransferRow.chain == chain)
        if address is not None or addresses is not None:
            wanted = sorted({a.lower() for a in _addresses(address, addresses)})
            query = query.where(
                or_(TransferRow.from_lower.in_(wanted), TransferRow.to_lower.in_(wanted))
            )
        query = query.order_by(
            TransferRow.block_height.asc().nulls_last(),
            TransferRow.position,
            TransferRow.chain,
            TransferRow.tx_hash,
            TransferRow.tx_index,
        )
        with self._read("transfers") as session:
            return [transfer_from_row(r) for r in session.scalars(query)]

    # -- control changes -----------------------------------------------------------------------

    def upsert_control_changes(self, changes: Iterable[ControlChange]) -> int:
        """See the port: as ``upsert_transfers``, keyed on ``ControlChange.key``."""
        latest = {c.key: c for c in changes}
        rows = [control_change_to_row(c) for c in latest.values()]
        return self._upsert_positioned(
            "upsert_control_changes",
            ControlChangeRow,
            rows,
            ["chain", "anchor", "change_index"],
            _CONTROL_POSITION_LOCK,
        )

    def control_changes(
        self, chain: str | None = None, address: str | None = None
    ) -> list[ControlChange]:
        query = select(ControlChangeRow)
        if chain is not None:
            query = query.where(ControlChangeRow.chain == chain)
        if address is not None:
            query = query.where(ControlChangeRow.wallet_lower == address.lower())
        query = query.order_by(
            ControlChangeRow.block_height.asc().nulls_last(),
            ControlChangeRow.position,
            ControlChangeRow.chain,
            ControlChangeRow.anchor,
            ControlChangeRow.change_index,
        )
        with self._read("control_changes") as session:
            return [control_change_from_row(r) for r in session.scalars(query)]

    # -- the watched UTXO set (Bitcoin) -------------------------------------------------------

    def apply_utxo_block(
        self,
        chain: str,
        block: BlockRef,
        created: Iterable[Utxo],
        spent: Iterable[tuple[str, int, str]],
    ) -> None:
        with self._write("apply_utxo_block") as conn:
            self._utxos.apply_block(conn, chain, block, created, spent)

    def rewind_utxos(self, chain: str, height: int) -> int:
        with self._write("rewind_utxos") as conn:
            return self._utxos.rewind(conn, chain, height)

    def utxos(
        self, chain: str, *, wallet: str | None = None, unspent_only: bool = False
    ) -> list[Utxo]:
        query = self._utxos.query(chain, wallet, unspent_only)
        with self._read("utxos") as session:
            return [utxo_from_row(r) for r in session.scalars(query)]

    def utxo_balances(self, chain: str, height: int | None = None) -> dict[str, int]:
        with self._read("utxo_balances") as session:
            return self._utxos.balances(session, chain, height)

    def unconfirmed_blocks(self, chain: str, up_to: int) -> list[BlockRef]:
        query = (
            select(BlockRow.height, BlockRow.hash)
            .where(
                BlockRow.chain == chain,
                BlockRow.height <= up_to,
                BlockRow.orphaned.is_(False),
                BlockRow.confirmed.is_(False),
            )
            .order_by(BlockRow.height)
        )
        with self._read("unconfirmed_blocks") as session:
            return [BlockRef(h, hash_) for h, hash_ in session.execute(query)]

    def mark_block_confirmed(self, chain: str, block: BlockRef) -> None:
        stmt = (
            update(BlockRow)
            .where(BlockRow.chain == chain, BlockRow.hash == block.hash)
            .values(confirmed=True)
        )
        with self._write("mark_block_confirmed") as conn:
            conn.execute(stmt)

    def confirm_block(self, chain: str, block: BlockRef) -> int:
        with self._write("confirm_block") as conn:
            return _move_events(conn, chain, block, _CONFIRMED, only=_PROVISIONAL)

    # -- alerts --------------------------------------------------------------------------------

    def save_alert(self, alert: Alert) -> bool:
        stmt = self._insert(AlertRow).values(alert_to_row(alert))
        stmt = stmt.on_conflict_do_nothing(index_elements=["id"])
        with self._write("save_alert") as conn:
            return conn.execute(stmt).rowcount == 1

    def set_alert_state(self, alert_id: str, state: AlertState) -> None:
        stmt = update(AlertRow).where(AlertRow.id == alert_id).values(state=state.value)
        with self._write("set_alert_state") as conn:
            found = conn.execute(stmt).rowcount
        if not found:
            raise StoreError(f"store: no alert with id {alert_id!r} on {self._where}")

    def update_alert(self, alert: Alert) -> None:
        """See the port: the state and what the alert is about now (transaction, block, asset,
        amount, counterparty) are overwritten; what names it (rule, severity, chain, wallet,
        subject, raised_at) stays as first saved."""
        row = alert_to_row(alert)
        values = {name: row[name] for name in _ALERT_UPDATABLE}
        stmt = update(AlertRow).where(AlertRow.id == alert.id).values(values)
        with self._write("update_alert") as conn:
            found = conn.execute(stmt).rowcount
        if not found:
            raise StoreError(f"store: no alert with id {alert.id!r} on {self._where}")

    def get_alert(self, alert_id: str) -> Alert | None:
        with self._read("get_alert") as session:
            row = session.get(AlertRow, alert_id)
        return None if row is None else alert_from_row(row)

    def alerts(self) -> list[Alert]:
        query = select(AlertRow).order_by(AlertRow.raised_at, AlertRow.id)
        with self._read("alerts") as session:
            return [alert_from_row(r) for r in session.scalars(query)]

    def alerts_in_block(self, chain: str, block: BlockRef) -> list[Alert]:
        query = (
            select(AlertRow)
            .where(
                AlertRow.chain == chain,
                AlertRow.block_hash == block.hash,
                AlertRow.block_height == block.height,
            )
            .order_by(AlertRow.raised_at, AlertRow.id)
        )
        with self._read("alerts_in_block") as session:
            return [alert_from_row(r) for r in session.scalars(query)]

    def ack_alert(self, alert_id: str, by: str, at: datetime) -> Alert | None:
        stmt = (
            update(AlertRow)
            .where(AlertRow.id == alert_id, AlertRow.acked_by.is_(None))
            .values(acked_by=by, acked_at=at)
        )
        with self._write("ack_alert") as conn:
            conn.execute(stmt)
        return self.get_alert(alert_id)

    # -- the outbox ----------------------------------------------------------------------------

    def enqueue_delivery(
        self,
        alert: Alert,
        sinks: Sequence[str],
        previous_state: AlertState | None,
        news: str | None,
        at: datetime,
    ) -> None:
        with self._write("enqueue_delivery") as conn:
            outbox_sql.enqueue(conn, alert, sinks, previous_state, news, at)

    def due_deliveries(self, sink: str, now: datetime, limit: int = 100) -> list[Delivery]:
        with self._read("due_deliveries") as session:
            rows, unreadable = outbox_sql.due(session, sink, now, limit)
        if unreadable:
            # Written by a newer drainwatch (a rolling upgrade) or damaged: reported, and put
            # aside for an hour, so that they hold up neither the sink nor the notifier's sleep.
            for delivery_id, why in unreadable:
                log.error(
                    "outbox row %d for %s %s; it waits for a drainwatch that reads it / "
                    "送信キューの行を読み取れません（読み取れるバージョンで配信されます）",
                    delivery_id,
                    sink.partition(":")[0],
                    why,
                )
            with self._write("park_deliveries") as conn:
                outbox_sql.park(conn, unreadable, now + _UNREADABLE_WAIT)
        return rows

    def claim_delivery(self, delivery_id: int, now: datetime, until: datetime) -> int | None:
        with self._write("claim_delivery") as conn:
            return outbox_sql.claim(conn, delivery_id, now, until)

    def finish_delivery(self, delivery_id: int, at: datetime) -> None:
        with self._write("finish_delivery") as conn:
            outbox_sql.finish(conn, delivery_id, at)

    def retry_delivery(self, delivery_id: int, error: str, at: datetime) -> None:
        with self._write("retry_delivery") as conn:
            outbox_sql.retry(conn, delivery_id, error, at)

    def next_delivery_at(self, sink: str) -> datetime | None:
        with self._read("next_delivery_at") as session:
            return outbox_sql.next_due(session, sink)

    def outbox_backlog(self) -> dict[str, int]:
        with self._read("outbox_backlog") as session:
            return outbox_sql.backlog(session)

    def outbox(self, alert_id: str) -> list[tuple[Delivery, datetime | None, str | None]]:
        with self._read("outbox") as session:
            return outbox_sql.of_alert(session, alert_id)

    def delivery_ref(self, sink: str, alert_id: str) -> str | None:
        with self._read("delivery_ref") as session:
            return outbox_sql.ref(session, sink, alert_id)

    def set_delivery_ref(self, sink: str, alert_id: str, ref: str, at: datetime) -> None:
        stmt = self._insert(DeliveryRefRow).values(
            sink=sink, alert_id=alert_id, ref=ref, recorded_at=at
        )
        stmt = stmt.on_conflict_do_nothing(index_elements=["sink", "alert_id"])
        with self._write("set_delivery_ref") as conn:
            conn.execute(stmt)

    # -- balances ------------------------------------------------------------------------------

    def upsert_balances(self, balances: Iterable[Balance]) -> int:
        latest = {b.key: b for b in balances}
        if not latest:
            return 0
        rows = [
            {
                "chain": b.chain,
                "wallet": b.wallet,
                "asset": b.asset,
                "block_hash": b.block.hash,
                "block_height": b.block.height,
                "block_time": b.block_time,
                "amount": b.amount,
                "before": b.before,
            }
            for b in latest.values()
        ]
        stmt = self._insert(BalanceRow)
        stmt = stmt.on_conflict_do_update(
            index_elements=["chain", "wallet", "asset", "block_hash"],
            set_={"amount": stmt.excluded.amount, "before": stmt.excluded.before},
            where=or_(
                BalanceRow.amount != stmt.excluded.amount,
                BalanceRow.before != stmt.excluded.before,
            ),
        )
        with self._write("upsert_balances") as conn:
            return int(conn.execute(stmt, rows).rowcount)

    def balances(self, chain: str, wallet: str, asset: str, since: datetime) -> list[Balance]:
        query = (
            select(BalanceRow)
            .join(
                BlockRow,
                and_(BlockRow.chain == BalanceRow.chain, BlockRow.hash == BalanceRow.block_hash),
            )
            .where(
                BalanceRow.chain == chain,
                BalanceRow.wallet == wallet,
                BalanceRow.asset == asset,
                BalanceRow.block_time >= since,
                BlockRow.orphaned.is_(False),
            )
            .order_by(BalanceRow.block_height, BalanceRow.block_hash)
        )
        with self._read("balances") as session:
            return [
                Balance(
                    r.chain,
                    r.wallet,
                    r.asset,
                    r.amount,
                    r.before,
                    BlockRef(r.block_height, r.block_hash),
                    r.block_time,
                )
                for r in session.scalars(query)
            ]

    # -- expectations --------------------------------------------------------------------------

    def add_expectations(self, records: Iterable[ExpectationRecord]) -> int:
        with self._write("add_expectations") as conn:
            return self._expectations.add(conn, list(records))

    def expectations(
        self, chain: str | None = None, wallet: str | None = None
    ) -> list[ExpectationRecord]:
        with self._read("expectations") as session:
            return self._expectations.listed(session, chain, wallet)

    def expectation_candidates(
        self, chain: str, wallet: str, asset: str, amount: int
    ) -> list[ExpectationRecord]:
        with self._read("expectation_candidates") as session:
            return self._expectations.candidates(session, chain, wallet, asset, amount)

    def consume_expectation(
        self, reference: str, transfer: tuple[str, str, str], at: datetime
    ) -> bool:
        with self._write("consume_expectation") as conn:
            return self._expectations.consume(conn, reference, transfer, at)

    # -- incidents -----------------------------------------------------------------------------

    def save_incident(self, incident: Incident) -> None:
        values = incident_to_row(incident)
        stmt = self._insert(IncidentRow).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={name: stmt.excluded[name] for name in values if name != "id"},
        )
        with self._write("save_incident") as conn:
            conn.execute(stmt)

    def incidents(self) -> list[Incident]:
        query = select(IncidentRow).order_by(IncidentRow.opened_at, IncidentRow.id)
        with self._read("incidents") as session:
            return [incident_from_row(r) for r in session.scalars(query)]

    def add_timeline_entry(self, entry: TimelineEntry) -> bool:
        stmt = self._insert(TimelineEntryRow).values(
            incident_id=entry.incident_id,
            at=entry.at,
            digest=timeline_digest(entry),
            kind=entry.kind.value,
            text=entry.text,
            actor=entry.actor,
            section=entry.section,
            ref=entry.ref,
        )
        stmt = stmt.on_conflict_do_nothing(index_elements=["incident_id", "at", "digest"])
        with self._write("add_timeline_entry") as conn:
            return conn.execute(stmt).rowcount == 1

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        query = (
            select(TimelineEntryRow)
            .where(TimelineEntryRow.incident_id == incident_id)
            .order_by(TimelineEntryRow.at, TimelineEntryRow.id)
        )
        with self._read("timeline") as session:
            return [timeline_entry_from_row(r) for r in session.scalars(query)]

    def close(self) -> None:
        self._engine.dispose()


def _move_events(
    conn: Connection, chain: str, block: BlockRef, to: str, *, only: str | None = None
) -> int:
    """Move the transfers and control changes of ``block`` to status ``to`` (those at status
    ``only``, or any not at ``to`` already); returns how many changed."""
    changed = 0
    for entity in (TransferRow, ControlChangeRow):
        status = entity.status != to if only is None else entity.status == only
        result = conn.execute(
            update(entity)
            .where(entity.chain == chain, entity.block_hash == block.hash, status)
            .values(status=to)
        )
        changed += int(result.rowcount)
    return changed


def _addresses(address: str | None, addresses: Sequence[str] | None) -> list[str]:
    return ([] if address is None else [address]) + list(addresses or [])


def _if_distinct(a: Any, b: Any, then: Any, otherwise: Any) -> Any:
    return case((a.is_distinct_from(b), then), else_=otherwise)
