"""The notifier's rules, on an in-memory SQLite store with a hand-moved clock and sinks that
fail on demand: retries with capped back-off, refusals, a 429 that pauses its whole sink, one
alert's rows in order while a blocked alert holds no other up, and refs recorded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from alerts.notifier import Notifier, shown
from drainwatch.errors import DeliveryError
from drainwatch.model import AlertState
from drainwatch.ports import AlertCard, Delivery
from drainwatch.store import SqlStore, open_store
from tests.fixtures.outbox import T0, alert, cards


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeSink:
    """Records each send; raises the next planned error of the alert, if any."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[str, AlertState, int, str | None]] = []
        self.failures: dict[str, list[Exception]] = {}

    def send(self, delivery: Delivery, card: AlertCard, previous_ref: str | None) -> str | None:
        assert card.wallet == "cold1" and delivery.alert.id in card.text_en
        self.sent.append((delivery.alert.id, delivery.alert.state, delivery.attempts, previous_ref))
        planned = self.failures.get(delivery.alert.id)
        if planned:
            raise planned.pop(0)
        return f"ref:{delivery.alert.id}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path}/store.db")
    yield opened
    opened.close()


def notifier(store: SqlStore, clock: Clock, *sinks: FakeSink) -> Notifier:
    return Notifier(store, sinks, cards(), clock=clock, max_retry_seconds=8, first_retry_seconds=1)


def test_delivers_in_order_and_records_the_ref(store: SqlStore) -> None:
    clock, sink = Clock(), FakeSink("console")
    first = alert(1)
    store.enqueue_delivery(first, ["console"], None, None, T0)
    second = replace(first, state=AlertState.PROVISIONAL)
    store.enqueue_delivery(second, ["console"], AlertState.PENDING, None, T0)
    work = notifier(store, clock, sink)
    assert work.deliver_due() == 1  # the second row becomes due once the first is delivered
    assert work.deliver_due() == 1
    assert work.deliver_due() == 0
    assert sink.sent == [
        ("alert-0001", AlertState.PENDING, 1, None),
        ("alert-0001", AlertState.PROVISIONAL, 1, "ref:alert-0001"),
    ]
    assert store.delivery_ref("console", "alert-0001") == "ref:alert-0001"
    assert store.outbox_backlog() == {}


def test_any_failure_is_a_retry_with_capped_back_off(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock, sink = Clock(), FakeSink("console")
    store.enqueue_delivery(alert(1), ["console"], None, None, T0)
    sink.failures["alert-0001"] = [RuntimeError("boom")] + [DeliveryError("HTTP 500")] * 5
    work = notifier(store, clock, sink)
    waits = []
    for _ in range(6):
        assert work.deliver_due() == 0
        due = store.next_delivery_at("console")
        assert due is not None
        waits.append((due - clock.now).total_seconds())
        clock.now = due
    assert waits == [1, 2, 4, 8, 8, 8]
    assert work.deliver_due() == 1
    assert [attempts for _, _, attempts, _ in sink.sent] == [1, 2, 3, 4, 5, 6, 7]
    assert "alert alert-0001 to console (attempt 1) failed: RuntimeError: boom" in caplog.text


def test_a_refusal_waits_the_longest_and_says_so(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock, sink = Clock(), FakeSink("webhook:https://hooks.example/T0/secret-path?key=k")
    store.enqueue_delivery(alert(1), [sink.name], None, None, T0)
    sink.failures["alert-0001"] = [DeliveryError("webhook: HTTP 403", refused=True)]
    with caplog.at_level(logging.ERROR):
        notifier(store, clock, sink).deliver_due()
    assert store.next_delivery_at(sink.name) == T0 + timedelta(seconds=8)
    assert "refused" in caplog.text and "拒否" in caplog.text
    assert "secret-path" not in caplog.text and "key=k" not in caplog.text
    ((_, delivered, error),) = store.outbox("alert-0001")
    assert (delivered, error) == (None, "webhook: HTTP 403")


def test_retry_after_pauses_the_whole_sink_only(store: SqlStore) -> None:
    clock, slack, console = Clock(), FakeSink("slack:#a"), FakeSink("console")
    for n in (1, 2, 3):
        store.enqueue_delivery(alert(n), ["slack:#a", "console"], None, None, T0)
    slack.failures["alert-0001"] = [DeliveryError("HTTP 429", retry_after=30)]
    work = notifier(store, clock, slack, console)
    assert work.deliver_due() == 3  # the console's three; Slack stops at its first 429
    assert [a for a, *_ in slack.sent] == ["alert-0001"]
    assert work.wait_seconds() == 1.0  # still polls the store every second
    clock.advance(29)
    assert work.deliver_due() == 0 and len(slack.sent) == 1
    clock.advance(1)
    assert work.deliver_due() == 3
    assert [a for a, *_ in slack.sent] == ["alert-0001", "alert-0001", "alert-0002", "alert-0003"]


def test_a_blocked_alert_holds_no_other_up(store: SqlStore) -> None:
    clock, sink = Clock(), FakeSink("console")
    for n in (1, 2):
        store.enqueue_delivery(alert(n), ["console"], None, None, T0)
        later = alert(n, AlertState.PROVISIONAL)
        store.enqueue_delivery(later, ["console"], AlertState.PENDING, None, T0)
    sink.failures["alert-0001"] = [DeliveryError("HTTP 500")] * 3
    work = notifier(store, clock, sink)
    for _ in range(3):
        work.deliver_due()
    sent = [(a, s) for a, s, *_ in sink.sent]
    assert ("alert-0002", AlertState.PROVISIONAL) in sent
    assert ("alert-0001", AlertState.PROVISIONAL) not in sent  # waits behind its first row
    for _ in range(10):
        clock.advance(10)
        work.deliver_due()
    assert store.outbox_backlog() == {}
    mine = [s for a, s, *_ in sink.sent if a == "alert-0001"]
    assert mine[-2:] == [AlertState.PENDING, AlertState.PROVISIONAL]


def test_a_ref_reported_with_a_failure_is_kept(store: SqlStore) -> None:
    clock, sink = Clock(), FakeSink("slack:#a")
    store.enqueue_delivery(alert(1), ["slack:#a"], None, None, T0)
    sink.failures["alert-0001"] = [DeliveryError("reply failed", ref="C1:1.000001")]
    work = notifier(store, clock, sink)
    work.deliver_due()
    assert store.delivery_ref("slack:#a", "alert-0001") == "C1:1.000001"
    clock.advance(1)
    work.deliver_due()
    assert sink.sent[-1][2:] == (2, "C1:1.000001")


def test_a_row_leased_elsewhere_is_left_alone(store: SqlStore) -> None:
    clock, sink = Clock(), FakeSink("console")
    store.enqueue_delivery(alert(1), ["console"], None, None, T0)
    (row,) = store.due_deliveries("console", T0)
    assert store.claim_delivery(row.id, T0, T0 + timedelta(seconds=120)) == 1
    work = notifier(store, clock, sink)
    assert work.deliver_due() == 0 and sink.sent == []
    clock.advance(120)  # that notifier died: its lease ran out
    assert work.deliver_due() == 1
    assert sink.sent == [("alert-0001", AlertState.PENDING, 2, None)]


def test_run_delivers_when_woken_and_stops(store: SqlStore) -> None:
    sink = FakeSink("console")
    work = Notifier(store, [sink], cards(), clock=lambda: datetime.now(T0.tzinfo))
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=work.run, args=(stop, wake))
    thread.start()
    try:
        store.enqueue_delivery(alert(1), ["console"], None, None, datetime.now(T0.tzinfo))
        wake.set()
        for _ in range(100):
            if store.outbox_backlog() == {}:
                break
            threading.Event().wait(0.05)
        assert [a for a, *_ in sink.sent] == ["alert-0001"]
    finally:
        stop.set()
        wake.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_webhook_names_are_shortened_for_logs() -> None:
    assert (
        shown("webhook:https://hooks.example/T0/B0/xyz?token=s")
        == "webhook:https://hooks.example/…"
    )
    assert shown("slack:#security-alerts") == "slack:#security-alerts"
    assert shown("console") == "console"
