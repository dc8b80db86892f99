"""The outbox in SQL: the statements behind ``SqlStore``'s delivery methods.

Every change of an alert is written here, one row per sink, in the transaction that writes the
change; notifiers then work through the rows. A row is leased (``claimed_until``) to the
notifier sending it by a conditional update, so two notifiers on one store never send one row
at the same time, and a notifier that died mid-send leaves a lease that runs out. Every method
runs on the caller's connection or session: inside ``SqlStore.batch()`` it is part of the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Table, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from drainwatch import codec
from drainwatch.errors import CodecError
from drainwatch.model import Alert, AlertState
from drainwatch.ports import Delivery
from drainwatch.store.schema import DeliveryRefRow, OutboxRow

log = logging.getLogger(__name__)

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


def due(session: Session, sink: str, now: datetime, limit: int) -> list[Delivery]:
    """The oldest undelivered row of each alert of ``sink``, when it is due and not leased."""
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
        .limit(limit)
    )
    due_rows: list[Delivery] = []
    for row in session.scalars(query):
        try:
            due_rows.append(_delivery(row))
        except CodecError as exc:
            # Written by a newer drainwatch (a rolling upgrade), or damaged: it stays in the
            # outbox, reported, and holds up only its own alert's later rows.
            log.error(
                "outbox row %d (alert %s, %s) cannot be read: %s; it waits for a drainwatch "
                "that reads it / 送信キューの行を読み取れません（新しいバージョンで処理されます）",
                row.id,
                row.alert_id,
                row.sink,
                exc,
            )
    return due_rows


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
    query = select(OutboxRow).where(OutboxRow.alert_id == alert_id).order_by(OutboxRow.id)
    return [(_delivery(r), r.delivered_at, r.last_error) for r in session.scalars(query)]


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
