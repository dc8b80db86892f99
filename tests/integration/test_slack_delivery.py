"""Slack delivery through slack-sdk against the local Slack stub: one message per alert with
its metadata, updated in place, news as thread replies; and under 429, 500 and dropped-answer
storms, in the end every alert appears exactly once, in its last state, with each reply once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.notifier import Notifier
from alerts.slack import SlackSink
from drainwatch.model import AlertState
from drainwatch.ports import Store
from drainwatch.store import SqlStore, open_store
from tests.fixtures.outbox import (
    LIFECYCLES,
    alert,
    cards,
    check_channel,
    enqueue_lifecycle,
    enqueue_lifecycle_step,
    expected_replies,
    expected_text,
)
from tests.fixtures.slack_stub import TOKEN, SlackStub

CHANNEL = "C0ALERTS01"
SINK = "slack:#security-alerts"


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub(seed=5) as running:
        for n in range(7):  # other people's messages: the history search must page past them
            running.call("chat.postMessage", {"channel": CHANNEL, "text": f"hello {n}"})
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path}/store.db")
    yield opened
    opened.close()


class Clock:
    """The real time, plus what a test has skipped."""

    def __init__(self) -> None:
        self.skipped = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skipped


def slack(stub: SlackStub, channel: str = "#security-alerts", token: str = TOKEN) -> SlackSink:
    return SlackSink(SINK, channel, token, base_url=stub.base_url, timeout=5)


def notifier(store: Store, sink: SlackSink, clock: Clock | None = None) -> Notifier:
    return Notifier(store, [sink], cards(), clock=clock or Clock(), max_retry_seconds=0.2,
                    first_retry_seconds=0.02)  # fmt: skip


def drain(work: Notifier, store: Store, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while store.outbox_backlog() and time.monotonic() < deadline:
        if not work.deliver_due():
            time.sleep(min(work.wait_seconds(), 0.05))
    assert store.outbox_backlog() == {}


def test_one_message_updated_in_place_with_news_in_its_thread(
    stub: SlackStub, store: SqlStore
) -> None:
    work = notifier(store, slack(stub))
    final = enqueue_lifecycle(store, 2, [SINK], Clock()(), steps=0)
    drain(work, store)
    (message,) = [m for m in stub.top_level(CHANNEL) if "metadata" in m]
    assert message["metadata"]["event_payload"] == {"alert_id": final.id}
    fields = [f["text"] for f in message["blocks"][2]["fields"]]
    assert any("未承認 / pending" in f for f in fields)
    assert any("<https://explorer.example/tx/0x" in f for f in fields)
    for state, said in LIFECYCLES[2]:
        before = final.state
        final = replace(final, state=state) if said is None else replace(final, acked_by="yamada")
        store.enqueue_delivery(final, [SINK], before, said, Clock()())
        drain(work, store)
    check_channel(stub, CHANNEL, SINK, store, {final.id: final})
    texts = [r["text"] for r in stub.replies(CHANNEL, message["ts"])]
    assert [t.splitlines()[1].split("  (")[0] for t in texts] == [
        "pending → provisional",
        "provisional → confirmed",
        "acknowledged by yamada",
    ]
    assert stub.calls["conversations.history"] == stub.calls["conversations.replies"] == 0


def test_channel_given_by_id_needs_no_lookup(stub: SlackStub, store: SqlStore) -> None:
    store.enqueue_delivery(alert(1), [SINK], None, None, Clock()())
    drain(notifier(store, slack(stub, channel=CHANNEL)), store)
    assert stub.calls["conversations.list"] == 0
    assert len(stub.top_level(CHANNEL)) == 8


def test_a_post_whose_answer_was_lost_is_found_not_repeated(
    stub: SlackStub, store: SqlStore
) -> None:
    final = enqueue_lifecycle(store, 0, [SINK], Clock()())
    stub.fail("drop", times=1, methods=["chat.postMessage"])
    stub.fail("drop", times=1, methods=["chat.update"])
    work = notifier(store, slack(stub))
    assert work.deliver_due() == 0
    for n in range(7):  # the channel went on: the search must page back to the message
        stub.call("chat.postMessage", {"channel": CHANNEL, "text": f"later {n}"})
    drain(work, store)
    check_channel(stub, CHANNEL, SINK, store, {final.id: final})
    replies = len(expected_replies(store, SINK, final.id))
    assert stub.calls["chat.postMessage"] == 1 + replies  # the dropped post was not repeated
    assert stub.calls["conversations.history"] == 3  # paged past the later messages, once


def test_a_reply_whose_answer_was_lost_is_not_repeated(stub: SlackStub, store: SqlStore) -> None:
    work = notifier(store, slack(stub))
    first = alert(1)
    store.enqueue_delivery(first, [SINK], None, None, Clock()())
    drain(work, store)
    later = replace(first, state=AlertState.PROVISIONAL)
    store.enqueue_delivery(later, [SINK], AlertState.PENDING, None, Clock()())
    stub.fail("drop", times=1, methods=["chat.postMessage"])
    drain(work, store)
    assert stub.calls["conversations.replies"] >= 1
    check_channel(stub, CHANNEL, SINK, store, {later.id: later})


def test_a_deleted_message_is_posted_again(stub: SlackStub, store: SqlStore) -> None:
    work = notifier(store, slack(stub))
    first = alert(1)
    store.enqueue_delivery(first, [SINK], None, None, Clock()())
    drain(work, store)
    (message,) = [m for m in stub.top_level(CHANNEL) if "metadata" in m]
    stub.delete(CHANNEL, message["ts"])
    later = replace(first, state=AlertState.PROVISIONAL)
    store.enqueue_delivery(later, [SINK], AlertState.PENDING, None, Clock()())
    drain(work, store)
    (again,) = [m for m in stub.top_level(CHANNEL) if "metadata" in m]
    assert again["text"] == expected_text(later)


def test_retry_after_pauses_the_whole_channel(stub: SlackStub, store: SqlStore) -> None:
    clock = Clock()
    for n in range(3):
        store.enqueue_delivery(alert(n), [SINK], None, None, clock())
    stub.fail("429", times=1, methods=["chat.postMessage"], retry_after="30")
    work = notifier(store, slack(stub, channel=CHANNEL), clock)
    assert work.deliver_due() == 0
    calls = sum(stub.calls.values())
    assert work.deliver_due() == 0
    assert sum(stub.calls.values()) == calls  # nothing sent to Slack while it asked to wait
    clock.skipped += timedelta(seconds=30)
    assert work.deliver_due() == 3


@pytest.mark.parametrize("kind", ["429", "500", "drop", "mixed"])
def test_storm_every_alert_exactly_once_in_its_last_state(
    stub: SlackStub, store: SqlStore, kind: str
) -> None:
    chance = 0.1 if kind == "mixed" else 0.3  # a send takes several calls: each may fail
    if kind in ("429", "mixed"):
        stub.fail("429", probability=chance, retry_after="0.05")
    if kind in ("500", "mixed"):
        stub.fail("500", probability=chance)
    if kind in ("drop", "mixed"):
        stub.fail("drop", probability=chance)
    work = notifier(store, slack(stub))
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=work.run, args=(stop, wake))
    thread.start()
    finals = {}
    try:
        for step in range(3):  # changes keep coming while the storm goes on
            for n in range(12):
                finals[alert(n).id] = enqueue_lifecycle_step(store, n, step, [SINK])
            wake.set()
            time.sleep(0.2)
        deadline = time.monotonic() + 40
        while store.outbox_backlog() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        wake.set()
        thread.join(timeout=20)
    assert store.outbox_backlog() == {}
    check_channel(stub, CHANNEL, SINK, store, {k: v for k, v in finals.items() if v is not None})


def test_refusals_and_secrets(
    stub: SlackStub, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store.enqueue_delivery(alert(1), [SINK], None, None, clock())
    with caplog.at_level(logging.DEBUG):
        notifier(store, slack(stub, token="xoxb-wrong-secret"), clock).deliver_due()
        clock.skipped += timedelta(seconds=1)
        notifier(store, slack(stub, channel="#no-such-channel"), clock).deliver_due()
    assert "invalid_auth" in caplog.text and "#no-such-channel not found" in caplog.text
    assert "xoxb-wrong-secret" not in caplog.text and TOKEN not in caplog.text
    ((_, delivered, error),) = store.outbox("alert-0001")
    assert delivered is None and error is not None


def test_long_texts_stay_within_block_kit_limits(stub: SlackStub, store: SqlStore) -> None:
    noisy = replace(alert(1), facts=(("label", "x" * 5000),), rule_id="r" * 400)
    store.enqueue_delivery(noisy, [SINK], None, None, Clock()())
    drain(notifier(store, slack(stub)), store)
    (message,) = [m for m in stub.top_level(CHANNEL) if "metadata" in m]
    assert len(message["blocks"]) <= 50
