"""The Store port's outbox contract, on SQLite and PostgreSQL: rows per sink, leases that run
out, retries, one alert's rows strictly in order, and the record of where a message went."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from drainwatch.model import Alert, AlertState, BlockRef, Severity
from drainwatch.store import SqlStore
from tests.contract.test_store import StoreFactory, new_store  # noqa: F401 (the fixture)

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
JST = timezone(timedelta(hours=9))
LEASE = timedelta(seconds=60)
SINKS = ["console", "slack:#security-alerts"]


@pytest.fixture
def outbox_store(new_store: StoreFactory, request: pytest.FixtureRequest) -> Iterator[SqlStore]:  # noqa: F811
    """An empty store; on PostgreSQL the outbox tables are emptied too (the shared fixture
    empties the tables that predate them)."""
    store = new_store()
    if request.node.callspec.params.get("new_store") == "postgres":
        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE outbox, delivery_refs RESTART IDENTITY")
    yield store


def alert(alert_id: str = "a1", state: AlertState = AlertState.PENDING) -> Alert:
    return Alert(
        id=alert_id,
        rule_id="cold_outflow",
        severity=Severity.CRITICAL,
        state=state,
        chain="eth",
        wallet="cold1",
        subject=("eth", "0xabc", "tx"),
        raised_at=T0,
        tx_hash="0xabc",
        block=None if state is AlertState.PENDING else BlockRef(7, "0xb7"),
        amount=2**256 - 1,
        counterparty="0xdead",
        facts=(("label", "mixer 「X」"),),
    )


def test_one_row_per_sink_carrying_the_alert_as_it_was(outbox_store: SqlStore) -> None:
    first = alert()
    outbox_store.enqueue_delivery(first, SINKS, None, None, T0)
    later = replace(first, state=AlertState.PROVISIONAL, acked_by="yamada", acked_at=T0)
    outbox_store.enqueue_delivery(later, SINKS, AlertState.PENDING, "ack", T0)

    for sink in SINKS:
        (row,) = outbox_store.due_deliveries(sink, T0)
        assert (row.sink, row.alert, row.previous_state, row.news) == (sink, first, None, None)
        assert (row.created_at, row.attempts) == (T0, 0)
    rows = [d for d, _, _ in outbox_store.outbox("a1")]
    assert [(d.sink, d.alert, d.previous_state, d.news) for d in rows] == [
        ("console", first, None, None),
        ("slack:#security-alerts", first, None, None),
        ("console", later, AlertState.PENDING, "ack"),
        ("slack:#security-alerts", later, AlertState.PENDING, "ack"),
    ]
    assert outbox_store.outbox_backlog() == {"console": 2, "slack:#security-alerts": 2}


def test_no_sinks_no_rows(outbox_store: SqlStore) -> None:
    outbox_store.enqueue_delivery(alert(), [], None, None, T0)
    assert outbox_store.outbox("a1") == []
    assert outbox_store.outbox_backlog() == {}
    assert outbox_store.next_delivery_at("console") is None


def test_only_the_oldest_row_of_each_alert_is_due(outbox_store: SqlStore) -> None:
    for alert_id in ("a1", "a2"):
        outbox_store.enqueue_delivery(alert(alert_id), ["console"], None, None, T0)
        provisional = alert(alert_id, AlertState.PROVISIONAL)
        outbox_store.enqueue_delivery(provisional, ["console"], AlertState.PENDING, None, T0)
    due = outbox_store.due_deliveries("console", T0)
    assert [(d.alert.id, d.alert.state) for d in due] == [
        ("a1", AlertState.PENDING),
        ("a2", AlertState.PENDING),
    ]
    # a1's first row fails and waits: its second row must wait too, a2 is not held up
    first = due[0]
    assert outbox_store.claim_delivery(first.id, T0, T0 + LEASE) == 1
    outbox_store.retry_delivery(first.id, "HTTP 500", T0 + timedelta(seconds=30))
    assert [d.alert.id for d in outbox_store.due_deliveries("console", T0)] == ["a2"]
    later = outbox_store.due_deliveries("console", T0 + timedelta(seconds=30))
    assert (later[0].id, later[0].attempts) == (first.id, 1)
    outbox_store.finish_delivery(first.id, T0 + timedelta(seconds=31))
    after = outbox_store.due_deliveries("console", T0 + timedelta(seconds=31))
    assert [(d.alert.id, d.alert.state) for d in after] == [
        ("a1", AlertState.PROVISIONAL),
        ("a2", AlertState.PENDING),
    ]


def test_due_rows_oldest_first_up_to_the_limit(outbox_store: SqlStore) -> None:
    for i in range(5):
        outbox_store.enqueue_delivery(alert(f"a{i}"), ["console"], None, None, T0)
    due = outbox_store.due_deliveries("console", T0, limit=3)
    assert [d.alert.id for d in due] == ["a0", "a1", "a2"]
    assert [d.id for d in due] == sorted(d.id for d in due)
    assert outbox_store.due_deliveries("webhook:https://x.example/", T0) == []


def test_a_lease_hides_the_row_until_it_runs_out(outbox_store: SqlStore) -> None:
    outbox_store.enqueue_delivery(alert(), ["console"], None, None, T0)
    (row,) = outbox_store.due_deliveries("console", T0)
    assert outbox_store.claim_delivery(row.id, T0, T0 + LEASE) == 1
    assert outbox_store.claim_delivery(row.id, T0, T0 + LEASE) is None  # a second notifier
    assert outbox_store.due_deliveries("console", T0 + timedelta(seconds=59)) == []
    # the notifier died: its lease runs out, the next claim counts a second attempt
    (again,) = outbox_store.due_deliveries("console", T0 + LEASE)
    assert (again.id, again.attempts) == (row.id, 1)
    assert outbox_store.claim_delivery(row.id, T0 + LEASE, T0 + 2 * LEASE) == 2
    assert outbox_store.outbox_backlog() == {"console": 1}


def test_finished_rows_are_gone_for_good(outbox_store: SqlStore) -> None:
    outbox_store.enqueue_delivery(alert(), ["console"], None, None, T0)
    (row,) = outbox_store.due_deliveries("console", T0)
    outbox_store.claim_delivery(row.id, T0, T0 + LEASE)
    outbox_store.finish_delivery(row.id, T0 + timedelta(seconds=1))
    later = T0 + timedelta(hours=1)
    assert outbox_store.due_deliveries("console", later) == []
    assert outbox_store.claim_delivery(row.id, later, later + LEASE) is None
    outbox_store.retry_delivery(row.id, "late failure report", later)  # changes nothing
    assert outbox_store.due_deliveries("console", later) == []
    assert outbox_store.outbox_backlog() == {}
    assert outbox_store.next_delivery_at("console") is None
    ((_, delivered_at, error),) = outbox_store.outbox("a1")
    assert (delivered_at, error) == (T0 + timedelta(seconds=1), None)


def test_a_retry_releases_the_lease_and_waits(outbox_store: SqlStore) -> None:
    outbox_store.enqueue_delivery(alert(), ["console"], None, None, T0)
    (row,) = outbox_store.due_deliveries("console", T0)
    assert outbox_store.next_delivery_at("console") == T0
    outbox_store.claim_delivery(row.id, T0, T0 + LEASE)
    when = T0 + timedelta(seconds=5)
    outbox_store.retry_delivery(row.id, "Slack chat.postMessage: HTTP 500 " + "x" * 2000, when)
    assert outbox_store.next_delivery_at("console") == when
    assert outbox_store.due_deliveries("console", when - timedelta(seconds=1)) == []
    (again,) = outbox_store.due_deliveries("console", when)
    assert again.attempts == 1
    # the lease is released: the retry can be claimed before the old lease would have run out
    assert outbox_store.claim_delivery(row.id, when, when + LEASE) == 2
    ((_, delivered_at, error),) = outbox_store.outbox("a1")
    assert delivered_at is None
    assert error is not None and error.startswith("Slack chat.postMessage: HTTP 500")
    assert len(error) <= 500


def test_times_in_any_zone(outbox_store: SqlStore) -> None:
    outbox_store.enqueue_delivery(alert(), ["console"], None, None, T0.astimezone(JST))
    (row,) = outbox_store.due_deliveries("console", T0.astimezone(JST))
    assert row.created_at == T0
    assert outbox_store.due_deliveries("console", (T0 - timedelta(seconds=1)).astimezone(JST)) == []
    assert outbox_store.next_delivery_at("console") == T0


def test_enqueue_is_part_of_the_batch(outbox_store: SqlStore) -> None:
    with pytest.raises(RuntimeError), outbox_store.batch():
        outbox_store.save_alert(alert())
        outbox_store.enqueue_delivery(alert(), SINKS, None, None, T0)
        assert len(outbox_store.outbox("a1")) == 2  # the batch sees its own rows
        raise RuntimeError("the processor failed")
    assert outbox_store.get_alert("a1") is None
    assert outbox_store.outbox("a1") == []
    with outbox_store.batch():
        outbox_store.save_alert(alert())
        outbox_store.enqueue_delivery(alert(), SINKS, None, None, T0)
    assert len(outbox_store.due_deliveries("console", T0)) == 1


def test_delivery_ref_first_record_stays(outbox_store: SqlStore) -> None:
    assert outbox_store.delivery_ref("slack:#security-alerts", "a1") is None
    outbox_store.set_delivery_ref("slack:#security-alerts", "a1", "C0ALERTS01:1.000100", T0)
    outbox_store.set_delivery_ref("slack:#security-alerts", "a1", "C0ALERTS01:2.000200", T0)
    assert outbox_store.delivery_ref("slack:#security-alerts", "a1") == "C0ALERTS01:1.000100"
    assert outbox_store.delivery_ref("slack:#other", "a1") is None
    assert outbox_store.delivery_ref("slack:#security-alerts", "a2") is None


def test_ref_and_finish_in_one_batch(outbox_store: SqlStore) -> None:
    outbox_store.enqueue_delivery(alert(), ["slack:#a"], None, None, T0)
    (row,) = outbox_store.due_deliveries("slack:#a", T0)
    outbox_store.claim_delivery(row.id, T0, T0 + LEASE)
    with pytest.raises(RuntimeError), outbox_store.batch():
        outbox_store.set_delivery_ref("slack:#a", "a1", "C1:1.0", T0)
        outbox_store.finish_delivery(row.id, T0)
        raise RuntimeError("killed")
    assert outbox_store.delivery_ref("slack:#a", "a1") is None
    assert outbox_store.outbox_backlog() == {"slack:#a": 1}


def test_one_claim_wins_among_racing_notifiers(outbox_store: SqlStore) -> None:
    for i in range(20):
        outbox_store.enqueue_delivery(alert(f"a{i}"), ["console"], None, None, T0)
    rows = outbox_store.due_deliveries("console", T0)
    won: list[int] = []
    barrier = threading.Barrier(4)

    def notifier() -> None:
        barrier.wait()
        for row in rows:
            if outbox_store.claim_delivery(row.id, T0, T0 + LEASE) is not None:
                won.append(row.id)

    threads = [threading.Thread(target=notifier) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == sorted(r.id for r in rows)


def test_unreadable_rows_are_put_aside_and_hold_up_only_their_alert(
    outbox_store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A row this version cannot read (a newer drainwatch wrote it during a rolling upgrade:
    an unknown field, or a state it does not know) is reported once and put aside for an hour:
    the others go out, the sink never sees it, and it is kept for a version that reads it."""
    from sqlalchemy import update

    from drainwatch.store.schema import OutboxRow

    for n in range(1, 61):
        outbox_store.enqueue_delivery(alert(f"a{n:02d}"), ["console"], None, None, T0)
    newer = alert("b1", AlertState.PROVISIONAL)
    outbox_store.enqueue_delivery(newer, ["console"], AlertState.PENDING, None, T0)
    with outbox_store._write("test") as conn:  # what a newer version wrote
        for n in range(1, 56):  # more than a notifier's batch, at the head of the queue
            conn.execute(
                update(OutboxRow)
                .where(OutboxRow.alert_id == f"a{n:02d}")
                .values(payload='{"from_the_future": 1}')
            )
        conn.execute(
            update(OutboxRow).where(OutboxRow.alert_id == "b1").values(previous_state="escalated")
        )
    due = outbox_store.due_deliveries("console", T0, limit=50)
    assert [d.alert.id for d in due] == [f"a{n:02d}" for n in range(56, 61)]
    assert sum("cannot be read" in r.getMessage() or "unreadable" in r.getMessage()
               for r in caplog.records) == 56  # fmt: skip
    caplog.clear()
    assert [d.alert.id for d in outbox_store.due_deliveries("console", T0)] == [
        f"a{n:02d}" for n in range(56, 61)
    ]
    assert caplog.records == []  # put aside: not reported again at every poll
    later = outbox_store.due_deliveries("console", T0 + timedelta(hours=2))
    assert len(later) == 5  # still there for a version that reads them (and still unreadable)
    assert outbox_store.outbox_backlog() == {"console": 61}
    outbox_store.save_alert(alert("a01"))
    [(shown, delivered, error)] = outbox_store.outbox("a01")  # what `drainwatch alerts` lists
    assert shown.alert.id == "a01" and delivered is None
    assert error is not None and error.startswith("unreadable")
