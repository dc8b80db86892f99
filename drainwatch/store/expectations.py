"""The expectations in SQL: the statements behind ``SqlStore``'s expectation methods.

A row is an announced outflow keyed by the exchange's reference, with the key of the outflow
that used it (``consumed_*``). Every method runs on the caller's connection or session, so
inside ``SqlStore.batch()`` it is part of the batch's transaction.

Adding checks every reference against the stored rows before inserting anything, so that a
conflict keeps nothing of the call even inside a batch; the insert itself is ``ON CONFLICT DO
NOTHING`` and checked again afterwards, for a writer that stored the same reference meanwhile.
Consuming is a compare-and-set on the current consumer: two processors racing for one
expectation cannot both win it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from drainwatch.errors import ExpectationConflict
from drainwatch.model import PENDING_INDEX, Expectation, TransferStatus
from drainwatch.ports import ExpectationRecord
from drainwatch.store.schema import ExpectationRow, TransferRow

_TABLE: Table = ExpectationRow.__table__  # type: ignore[assignment]
_FIELDS = ("chain", "wallet", "destination", "asset", "amount", "valid_until")
#: References looked up per statement: well under every backend's limit on bound parameters.
_CHUNK = 500
#: Compare-and-set rounds before giving up on a reference that keeps changing hands.
_ROUNDS = 5

Key = tuple[str, str, str]


class ExpectationTable:
    def __init__(self, *, postgres: bool) -> None:
        self._postgres = postgres
        insert = postgresql.insert(_TABLE) if postgres else sqlite.insert(_TABLE)
        self._insert = insert.on_conflict_do_nothing(index_elements=["reference"])

    def add(self, conn: Connection, records: list[ExpectationRecord]) -> int:
        """See ``Store.add_expectations``."""
        wanted: dict[str, ExpectationRecord] = {}
        for record in records:
            earlier = wanted.get(record.expectation.reference)
            if earlier is not None:
                _check_same(earlier.expectation, record.expectation)
                continue
            wanted[record.expectation.reference] = record
        if not wanted:
            return 0
        stored = _stored(conn, list(wanted))
        for reference, record in wanted.items():
            if reference in stored:
                _check_same(stored[reference], record.expectation)
        new = [_to_row(r) for ref, r in wanted.items() if ref not in stored]
        if not new:
            return 0
        inserted = int(conn.execute(self._insert, new).rowcount)
        if inserted != len(new):  # another writer stored some of them meanwhile
            raced = _stored(conn, [row["reference"] for row in new])
            for row in new:
                _check_same(raced[row["reference"]], wanted[row["reference"]].expectation)
        return inserted

    def listed(
        self, session: Session, chain: str | None, wallet: str | None
    ) -> list[ExpectationRecord]:
        """See ``Store.expectations``: by arrival; an orphaned consumer shows as none."""
        query = select(ExpectationRow, TransferRow.status).outerjoin(
            TransferRow,
            and_(
                TransferRow.chain == ExpectationRow.consumed_chain,
                TransferRow.tx_hash == ExpectationRow.consumed_tx,
                TransferRow.tx_index == ExpectationRow.consumed_index,
            ),
        )
        if chain is not None:
            query = query.where(ExpectationRow.chain == chain)
        if wallet is not None:
            query = query.where(ExpectationRow.wallet == wallet)
        query = query.order_by(ExpectationRow.created_at, ExpectationRow.reference)
        return [_record(row, status) for row, status in session.execute(query)]

    def candidates(
        self, session: Session, chain: str, wallet: str, asset: str, amount: int
    ) -> list[ExpectationRecord]:
        """See ``Store.expectation_candidates``: what one outflow could match, from the
        (chain, wallet) index, whatever the number of expectations ever stored."""
        query = (
            select(ExpectationRow, TransferRow.status)
            .outerjoin(
                TransferRow,
                and_(
                    TransferRow.chain == ExpectationRow.consumed_chain,
                    TransferRow.tx_hash == ExpectationRow.consumed_tx,
                    TransferRow.tx_index == ExpectationRow.consumed_index,
                ),
            )
            .where(
                ExpectationRow.chain == chain,
                ExpectationRow.wallet == wallet,
                ExpectationRow.asset == asset,
                ExpectationRow.amount == amount,
            )
            .order_by(ExpectationRow.created_at, ExpectationRow.reference)
        )
        return [_record(row, status) for row, status in session.execute(query)]

    def consume(self, conn: Connection, reference: str, transfer: Key, at: datetime) -> bool:
        """See ``Store.consume_expectation`` and the module docstring."""
        for _ in range(_ROUNDS):
            row = conn.execute(
                select(
                    ExpectationRow.consumed_chain,
                    ExpectationRow.consumed_tx,
                    ExpectationRow.consumed_index,
                ).where(ExpectationRow.reference == reference)
            ).first()
            if row is None:
                return False
            current: Key | None = None
            if row[0] is not None:
                current = (row[0], row[1] or "", row[2] or "")
            if current == transfer:
                return True
            if current is not None and not _may_take_over(conn, current, transfer):
                return False
            claimed = conn.execute(
                update(ExpectationRow)
                .where(ExpectationRow.reference == reference, *_consumer_is(current))
                .values(
                    consumed_chain=transfer[0],
                    consumed_tx=transfer[1],
                    consumed_index=transfer[2],
                    consumed_at=at,
                )
            )
            if claimed.rowcount == 1:
                return True
        return False


def _may_take_over(conn: Connection, current: Key, transfer: Key) -> bool:
    """The current consumer lets go: its outflow was orphaned (or withdrawn from the mempool),
    is not stored, or is a pending calldata reading of the very transaction now mined."""
    chain, tx_hash, index = current
    if index.startswith(PENDING_INDEX) and (chain, tx_hash) == transfer[:2]:
        return True
    status = conn.scalar(
        select(TransferRow.status).where(
            TransferRow.chain == chain,
            TransferRow.tx_hash == tx_hash,
            TransferRow.tx_index == index,
        )
    )
    return status is None or status == TransferStatus.ORPHANED.value


def _consumer_is(current: Key | None) -> list[Any]:
    if current is None:
        return [ExpectationRow.consumed_chain.is_(None)]
    return [
        ExpectationRow.consumed_chain == current[0],
        ExpectationRow.consumed_tx == current[1],
        ExpectationRow.consumed_index == current[2],
    ]


def _stored(conn: Connection, references: Sequence[str]) -> dict[str, Expectation]:
    found: dict[str, Expectation] = {}
    for start in range(0, len(references), _CHUNK):
        chunk = references[start : start + _CHUNK]
        query = select(ExpectationRow).where(ExpectationRow.reference.in_(chunk))
        for row in conn.execute(query):
            found[row.reference] = _expectation(row)
    return found


def _check_same(stored: Expectation, given: Expectation) -> None:
    if stored == given:
        return
    differing = [name for name in _FIELDS if getattr(stored, name) != getattr(given, name)]
    shown = "; ".join(
        f"{name} {getattr(stored, name)} stored, {getattr(given, name)} now" for name in differing
    )
    raise ExpectationConflict(
        f"expectation reference {given.reference!r} is already registered with other values "
        f"({shown}): a reference names one outflow / 参照 {given.reference!r} は別の内容で"
        "登録済みです（1 つの参照は 1 件の送金を表します）"
    )


def _to_row(record: ExpectationRecord) -> dict[str, Any]:
    e = record.expectation
    return {
        "reference": e.reference,
        "chain": e.chain,
        "wallet": e.wallet,
        "destination": e.destination,
        "asset": e.asset,
        "amount": e.amount,
        "valid_until": e.valid_until,
        "created_at": record.created_at,
        "source": record.source,
        "consumed_chain": None,
        "consumed_tx": None,
        "consumed_index": None,
        "consumed_at": None,
    }


def _expectation(row: Any) -> Expectation:
    return Expectation(
        reference=row.reference,
        chain=row.chain,
        wallet=row.wallet,
        destination=row.destination,
        asset=row.asset,
        amount=row.amount,
        valid_until=row.valid_until,
    )


def _record(row: ExpectationRow, status: str | None) -> ExpectationRecord:
    consumer: Key | None = None
    if row.consumed_chain is not None and status != TransferStatus.ORPHANED.value:
        consumer = (row.consumed_chain, row.consumed_tx or "", row.consumed_index or "")
    return ExpectationRecord(_expectation(row), row.created_at, row.source, consumer)
