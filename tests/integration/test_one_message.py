"""One Slack message per leak, from the mempool to confirmation, also when the mempool reading
and the block's event have different keys (an EVM token transfer read from a pending
transaction's calldata, ``pending:N``, then mined as the block's log, ``log:N``): the block's
alert takes over the reading's message, which moves on in place with its news in the thread."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.blocks import CardMaker
from alerts.notifier import Notifier
from alerts.rules import RulePolicy, WalletBook
from alerts.slack import SlackSink
from drainwatch.events import BlockConfirmed, BlockDisconnected, TransferSeen
from drainwatch.model import (
    AlertState,
    BlockRef,
    Chain,
    ChainKind,
    Custody,
    CustodyKind,
    Transfer,
    TransferKind,
    TransferStatus,
    Wallet,
    WalletRole,
)
from drainwatch.processor import Processor
from drainwatch.store import SqlStore, open_store
from tests.fixtures.slack_stub import TOKEN, SlackStub

CHANNEL = "C0ALERTS01"
COLD = "0x" + "c0" * 20
ATTACKER = "0x" + "a7" * 20
TOKEN_CONTRACT = "0x" + "70" * 20
TX = "0x" + "ab" * 32
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CHAIN = Chain("eth", ChainKind.EVM, "devnet", "ETH", 18, confirmations=2)
BOOK = WalletBook(
    [Wallet("cold", "eth", WalletRole.COLD, Custody(CustodyKind.MULTISIG, 2), (COLD,))]
)


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    with SlackStub() as stub:
        yield stub


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'one.db'}")
    yield opened
    opened.close()


def _processor(store: SqlStore, slack: SlackStub) -> Processor:
    sink = SlackSink("slack:#security-alerts", "#security-alerts", TOKEN, base_url=slack.base_url)
    notifier = Notifier(store, [sink], CardMaker({"eth": CHAIN}, {}, BOOK), clock=lambda: T0)
    return Processor(
        store,
        BOOK,
        {"eth": CHAIN},
        {},
        RulePolicy(),
        notifier.sink_names,
        lambda: T0,
        on_commit=notifier.deliver_all,
    )


def _drain(index: str, status: TransferStatus, block: BlockRef | None = None) -> Transfer:
    return Transfer(
        "eth",
        TX,
        index,
        COLD,
        ATTACKER,
        TOKEN_CONTRACT,
        5 * 10**6,
        TransferKind.TOKEN,
        status,
        block,
        T0 if block else None,
    )


def test_a_token_drain_seen_pending_then_mined_is_one_message(
    store: SqlStore, slack: SlackStub
) -> None:
    processor = _processor(store, slack)
    reading = _drain("pending:0", TransferStatus.PENDING)
    processor.handle(TransferSeen(reading))
    [message] = slack.top_level(CHANNEL)
    assert "state pending" in message["text"]

    block = BlockRef(10, "0x" + "10" * 32)
    processor.handle(TransferSeen(_drain("log:3", TransferStatus.PROVISIONAL, block)))
    # The mempool's verdict on the reading comes after the block's events.
    processor.handle(TransferSeen(replace(reading, status=TransferStatus.SUPERSEDED, block=block)))
    processor.handle(BlockConfirmed("eth", block))

    [moved] = slack.top_level(CHANNEL)
    assert moved["ts"] == message["ts"]
    assert "state confirmed" in moved["text"] and "log:3" not in moved["text"]
    assert "superseded" not in moved["text"]
    news = [r["text"] for r in slack.replies(CHANNEL, message["ts"])]
    assert any("pending → provisional" in n for n in news)
    assert any("provisional → confirmed" in n for n in news)
    assert not any("superseded" in n for n in news)
    reading_alert, block_alert = sorted(store.alerts(), key=lambda a: a.subject[2], reverse=True)
    assert reading_alert.state is AlertState.SUPERSEDED  # kept in the store, not announced
    assert ("continues", reading_alert.id) in block_alert.facts

    # A reorg retracts the block's alert: still the same message.
    processor.handle(BlockDisconnected("eth", block))
    [retracted] = slack.top_level(CHANNEL)
    assert retracted["ts"] == message["ts"] and "RETRACTED" in retracted["text"]


def test_a_block_alert_without_a_reading_posts_its_own_message(
    store: SqlStore, slack: SlackStub
) -> None:
    processor = _processor(store, slack)
    block = BlockRef(10, "0x" + "10" * 32)
    processor.handle(TransferSeen(_drain("log:3", TransferStatus.PROVISIONAL, block)))
    other = replace(_drain("pending:0", TransferStatus.PENDING), tx_hash="0x" + "cd" * 32)
    processor.handle(TransferSeen(other))  # another transaction's reading: not taken over
    assert len(slack.top_level(CHANNEL)) == 2
    assert all(not dict(a.facts).get("continues") for a in store.alerts())
