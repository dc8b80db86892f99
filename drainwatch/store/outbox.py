"""The outbox in SQL: the statements behind ``SqlStore``'s delivery methods.

Every change of an alert is written here, one row per sink, in the transaction that writes the
change; notifiers then work through the rows. A row is leased (``claimed_until``) to the
notifier sending it by a conditional update, so two notifiers on one store never send one row
at the same time, and a notifier that died mid-send leaves a lease that runs out. Every method
runs on the caller's connection or session: inside ``SqlStore.batch()`` it is part of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Table, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from drainwatch import codec
from drainwatch.errors import CodecError
from drainwatch.model import Alert, AlertState
from drainwatch.ports import Delivery
from drainwatch.store.rows import alert_from_row
from drainwatch.store.schema import AlertRow, DeliveryRefRow, OutboxRow

_TABLE: Table = OutboxRow.__table__  # type: ignore[assignment]
#: The longest error text kept per row: enough for an HTTP status and Slack's error code.
_ERROR_CHARS = 500


def enqueue(
    conn: Connection,
    alert: Alert,
    sinks: Sequence[str],
    previous_state: AlertState | None,
    news: str | None,
    at: datetime,
) -> None:
    if not sinks:
        return
    payload = codec.dumps(alert)
    conn.execute(
        insert(_TABLE),
        [
            {
                "alert_id": alert.id,
                "sink": sink,
                "payload": payload,
                "previous_state": None if previous_state is None else previous_state.value,
                "news": news,
                "created_at": at,
                "attempts": 0,
                "next_attempt_at": at,
                "claimed_until": None,
                "delivered_at": None,
                "last_error": None,
            }
            for sink in sinks
        ],
    )


def due(
    session: Session, sink: str, now: datetime, limit: int
) -> tuple[list[Delivery], list[tuple[int, str]]]:
    """The oldest undelivered row of each alert of ``sink``, when it is due and not leased
    (up to ``limit`` readable ones), and the rows met on the way that cannot be read, as
    (id, why): written by a newer drainwatch (a rolling upgrade) or damaged."""
    earlier = aliased(OutboxRow)
    older_waiting = (
        select(earlier.id)
        .where(
            earlier.sink == OutboxRow.sink,
            earlier.alert_id == OutboxRow.alert_id,
            earlier.delivered_at.is_(None),
            earlier.id < OutboxRow.id,
        )
        .exists()
    )
    query = (
        select(OutboxRow)
        .where(
            OutboxRow.sink == sink,
            OutboxRow.delivered_at.is_(None),
            OutboxRow.next_attempt_at <= now,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until <= now),
            ~older_waiting,
        )
        .order_by(OutboxRow.id)
    )
    due_rows: list[Delivery] = []
    unreadable: list[tuple[int, str]] = []
    for row in session.scalars(query.execution_options(yield_per=limit)):
        try:
            due_rows.append(_delivery(row))
        except (CodecError, ValueError) as exc:
            unreadable.append((row.id, f"unreadable: {exc}"))
        if len(due_rows) >= limit:
            break
    return due_rows, unreadable


def park(conn: Connection, rows: list[tuple[int, str]], until: datetime) -> None:
    """Rows that cannot be read wait until ``until`` with their reason: they stay in the outbox
    (a drainwatch that reads them delivers them), reported once a while, not at every poll."""
    for delivery_id, why in rows:
        conn.execute(
            update(OutboxRow)
            .where(OutboxRow.id == delivery_id, OutboxRow.delivered_at.is_(None))
            .values(next_attempt_at=until, last_error=why[:_ERROR_CHARS])
        )


def claim(conn: Connection, delivery_id: int, now: datetime, until: datetime) -> int | None:
    result = conn.execute(
        update(OutboxRow)
        .where(
            OutboxRow.id == delivery_id,
            OutboxRow.delivered_at.is_(None),
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until <= now),
        )
        .values(claimed_until=until, attempts=OutboxRow.attempts + 1)
    )
    if result.rowcount != 1:
        return None
    attempts = conn.execute(select(OutboxRow.attempts).where(OutboxRow.id == delivery_id))
    return int(attempts.scalar_one())


def finish(conn: Connection, delivery_id: int, at: datetime) -> None:
    conn.execute(
        update(OutboxRow)
        .where(OutboxRow.id == delivery_id)
        .values(delivered_at=at, claimed_until=None, last_error=None)
    )


def retry(conn: Connection, delivery_id: int, error: str, at: datetime) -> None:
    conn.execute(
        update(OutboxRow)
        .where(OutboxRow.id == delivery_id, OutboxRow.delivered_at.is_(None))
        .values(claimed_until=None, next_attempt_at=at, last_error=error[:_ERROR_CHARS])
    )


def next_due(session: Session, sink: str) -> datetime | None:
    query = select(func.min(OutboxRow.next_attempt_at)).where(
        OutboxRow.sink == sink, OutboxRow.delivered_at.is_(None)
    )
    # min() keeps the column's type, so the value comes back as an aware UTC datetime.
    value: datetime | None = session.execute(query).scalar_one_or_none()
    return value


def backlog(session: Session) -> dict[str, int]:
    query = (
        select(OutboxRow.sink, func.count())
        .where(OutboxRow.delivered_at.is_(None))
        .group_by(OutboxRow.sink)
    )
    return {sink: int(count) for sink, count in session.execute(query)}


def of_alert(session: Session, alert_id: str) -> list[tuple[Delivery, datetime | None, str | None]]:
    """Every row of one alert; a row this version cannot read shows the alert as stored now."""
    query = select(OutboxRow).where(OutboxRow.alert_id == alert_id).order_by(OutboxRow.id)
    out: list[tuple[Delivery, datetime | None, str | None]] = []
    for r in session.scalars(query):
        try:
            delivery = _delivery(r)
        except (CodecError, ValueError):
            stored = session.get(AlertRow, alert_id)
            if stored is None:
                continue
            alert = alert_from_row(stored)
            delivery = Delivery(r.id, r.sink, alert, None, r.news, r.created_at, r.attempts)
        out.append((delivery, r.delivered_at, r.last_error))
    return out


def ref(session: Session, sink: str, alert_id: str) -> str | None:
    row = session.get(DeliveryRefRow, (sink, alert_id))
    return None if row is None else row.ref


def _delivery(row: OutboxRow) -> Delivery:
    return Delivery(
        id=row.id,
        sink=row.sink,
        alert=codec.loads(Alert, row.payload),
        previous_state=None if row.previous_state is None else AlertState(row.previous_state),
        news=row.news,
        created_at=row.created_at,
        attempts=row.attempts,
    )
