"""Expectations through the inbox directory and through the Kafka topic (a real tansu broker),
stored in a real SQLite store: all or nothing per file, rejected files explained, re-reads and
redeliveries are replays, a malformed message is skipped and never blocks the topic."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.inbox import ExpectationConsumer, Inbox
from alerts.intake import ExpectationParser
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.bus.kafka import KafkaBus
from drainwatch.config import load_config_text
from drainwatch.errors import StoreError
from drainwatch.ports import EventBus, ExpectationRecord
from drainwatch.store import SqlStore, open_store
from tests.unit.test_intake import AWAY, CONFIG

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PARSER = ExpectationParser.for_settings(load_config_text(CONFIG))
TEST_CONSUMER_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    made = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    yield made
    made.close()


def line(ref: str, **kw: Any) -> str:
    doc = {"reference": ref, "wallet": "hot", "destination": AWAY, "asset": "ETH", "amount": "1"}
    doc.update(kw)
    return json.dumps(doc)


def drop(inbox: Path, name: str, lines: Iterable[str]) -> None:
    """As the withdrawal system does: write a dot-file, then rename it."""
    tmp = inbox / f".{name}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(inbox / name)


def refs(store: SqlStore) -> list[str]:
    return [r.expectation.reference for r in store.expectations()]


def test_a_dropped_file_is_stored_then_moved_to_done(tmp_path: Path, store: SqlStore) -> None:
    clock = Clock()
    inbox = Inbox(tmp_path / "inbox", PARSER, store, clock)
    assert inbox.poll() == 0  # empty: nothing to do
    drop(tmp_path / "inbox", "a.jsonl", [line("wd-1"), line("wd-2", amount="2.5")])
    (tmp_path / "inbox" / ".b.jsonl.tmp").write_text(line("wd-3"))  # still being written
    (tmp_path / "inbox" / "notes.txt").write_text("not an expectation file")
    assert inbox.poll() == 2
    assert refs(store) == ["wd-1", "wd-2"]
    assert store.expectations()[0].source == "file:a.jsonl"
    assert (tmp_path / "inbox" / "done" / "a.jsonl").is_file()
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [
        ".b.jsonl.tmp",
        "done",
        "notes.txt",
        "rejected",
    ]
    assert inbox.poll() == 0


def test_a_bad_line_rejects_the_whole_file(tmp_path: Path, store: SqlStore) -> None:
    inbox = Inbox(tmp_path / "inbox", PARSER, store, Clock())
    drop(tmp_path / "inbox", "a.jsonl", [line("wd-1"), line("wd-2", amount="1.5.0")])
    assert inbox.poll() == 0
    assert refs(store) == []
    rejected = tmp_path / "inbox" / "rejected"
    assert (rejected / "a.jsonl").is_file()
    note = (rejected / "a.jsonl.error").read_text()
    assert "a.jsonl: line 2: amount:" in note and "登録されていません" in note


def test_a_file_that_is_not_utf8_is_rejected_naming_the_line(
    tmp_path: Path, store: SqlStore
) -> None:
    inbox = Inbox(tmp_path / "inbox", PARSER, store, Clock())
    (tmp_path / "inbox" / "a.jsonl").write_bytes(line("wd-1").encode() + b"\n\xff\n")
    assert inbox.poll() == 0
    assert "line 2" in (tmp_path / "inbox" / "rejected" / "a.jsonl.error").read_text()


def test_a_conflicting_reference_rejects_the_file(tmp_path: Path, store: SqlStore) -> None:
    inbox = Inbox(tmp_path / "inbox", PARSER, store, Clock())
    drop(tmp_path / "inbox", "a.jsonl", [line("wd-1")])
    drop(tmp_path / "inbox", "b.jsonl", [line("wd-2"), line("wd-1", amount="9")])
    assert inbox.poll() == 1
    assert refs(store) == ["wd-1"]
    note = (tmp_path / "inbox" / "rejected" / "b.jsonl.error").read_text()
    assert "wd-1" in note and "amount" in note


def test_a_file_read_again_is_a_replay(tmp_path: Path, store: SqlStore) -> None:
    """A crash after storing and before moving reads the file again, later: its expectations,
    whose validity counts from arrival, are the same ones, not a conflict."""
    clock = Clock()
    inbox = Inbox(tmp_path / "inbox", PARSER, store, clock)
    lines = [line("wd-1"), line("wd-2", valid_until="2025-03-01T18:00:00Z")]
    drop(tmp_path / "inbox", "a.jsonl", lines)
    assert inbox.poll() == 2
    first = store.expectations()
    clock.now += timedelta(minutes=5)
    drop(tmp_path / "inbox", "a.jsonl", lines)
    assert inbox.poll() == 0
    assert store.expectations() == first
    assert sorted(p.name for p in (tmp_path / "inbox" / "done").iterdir()) == [
        "a.1.jsonl",
        "a.jsonl",
    ]


class FailingOnce:
    """A real store whose next add_expectations fails, as a database gone away would."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.fail = True

    def add_expectations(self, records: Iterable[ExpectationRecord]) -> int:
        if self.fail:
            self.fail = False
            raise StoreError("store: the database went away")
        return self._store.add_expectations(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_store_failure_leaves_the_file_for_the_next_poll(tmp_path: Path, store: SqlStore) -> None:
    inbox = Inbox(tmp_path / "inbox", PARSER, FailingOnce(store), Clock())
    drop(tmp_path / "inbox", "a.jsonl", [line("wd-1")])
    with pytest.raises(StoreError):
        inbox.poll()
    assert (tmp_path / "inbox" / "a.jsonl").is_file()
    assert inbox.poll() == 1


# -- Kafka ---------------------------------------------------------------------------------------


def consume(bus: EventBus, store: Any, topic: str, group: str, clock: Clock) -> ExpectationConsumer:
    return ExpectationConsumer(bus, topic, group, PARSER.parse_json, store, clock)


def poll_until(consumer: ExpectationConsumer, want: int, timeout: float = 30.0) -> int:
    added = 0
    deadline = time.monotonic() + timeout
    while added < want or consumer.backlog() != 0:
        assert time.monotonic() < deadline, f"only {added} of {want} stored"
        added += consumer.poll(timeout=0.5)
    return added


def publish(bus: EventBus, topic: str, values: Iterable[str | bytes]) -> None:
    for i, value in enumerate(values):
        bus.publish(topic, f"k{i}", value if isinstance(value, bytes) else value.encode())
    bus.flush()


def test_messages_in_process(store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    bus = InProcessBus()
    consumer = consume(bus, store, "dw.expectations", "dw.intake", Clock())
    publish(bus, "dw.expectations", [line("wd-1"), "{oops", line("wd-2")])
    with caplog.at_level(logging.ERROR):
        assert consumer.poll() == 2
    assert refs(store) == ["wd-1", "wd-2"] and store.expectations()[0].source == "kafka"
    assert "dw.expectations partition 0 offset 1" in caplog.text
    assert consumer.poll() == 0


@pytest.mark.kafka
def test_messages_on_kafka(
    kafka_broker: str, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = f"test.expectations.{uuid.uuid4().hex[:12]}", f"g.{uuid.uuid4().hex[:8]}"
    bus = KafkaBus([kafka_broker], consumer_options=TEST_CONSUMER_OPTIONS)
    clock = Clock()
    try:
        bus.ensure_topic(topic, 1)
        publish(
            bus,
            topic,
            [
                line("wd-1"),
                b"\xff not json",
                line("wd-2", wallet="nobody"),
                line("wd-3"),
                line("wd-1", amount="7"),  # a conflict: skipped, the others kept
                line("wd-1"),  # delivered twice by the producer: a replay
            ],
        )
        # A first member whose store fails: nothing committed, the next member gets it all.
        failing = consume(bus, FailingOnce(store), topic, group, clock)
        deadline = time.monotonic() + 30
        with pytest.raises(StoreError):
            while time.monotonic() < deadline:
                failing.poll(timeout=0.5)
        failing.close()
        assert refs(store) == []
        consumer = consume(bus, store, topic, group, clock)
        with caplog.at_level(logging.ERROR):
            assert poll_until(consumer, 2) == 2
        assert refs(store) == ["wd-1", "wd-3"]
        assert f"{topic} partition 0 offset 1" in caplog.text
        assert f"{topic} partition 0 offset 2" in caplog.text and "wallet" in caplog.text
        assert f"{topic} partition 0 offset 4" in caplog.text and "amount" in caplog.text
        consumer.close()
        # Everything was committed, the malformed ones too: a new member starts after them.
        publish(bus, topic, [line("wd-4")])
        again = consume(bus, store, topic, group, clock)
        assert poll_until(again, 1) == 1
        assert refs(store) == ["wd-1", "wd-3", "wd-4"]
        again.close()
    finally:
        bus.close()
