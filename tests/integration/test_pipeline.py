"""Follower → bus → processor → store and alerts, on a real in-process chain: the cold-wallet
alert is raised once, survives a replay without a second delivery, and is retracted by a reorg."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alerts.rules import RulePolicy, WalletBook
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.model import (
    Alert,
    AlertState,
    Chain,
    ChainKind,
    Custody,
    CustodyKind,
    Severity,
    Wallet,
    WalletRole,
)
from drainwatch.processor import Processor
from drainwatch.store import open_store
from tests.fixtures.evm_nodes import EthTesterNode
from watchers.evm.follower import EvmFollower

TOPIC = "t.events"


class RecordingSink:
    def __init__(self) -> None:
        self.seen: list[tuple[Alert, str, str]] = []

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        self.seen.append((alert, text_en, text_ja))


def test_cold_drain_alert_once_then_retracted_by_reorg(tmp_path: Path) -> None:
    node = EthTesterNode()
    hot, cold, attacker = node.accounts[1], node.accounts[2], node.accounts[7]
    chain = Chain("devchain", ChainKind.EVM, "devnet", "ETH", 18, confirmations=0)
    book = WalletBook(
        [
            Wallet("eth-hot", "devchain", WalletRole.HOT, Custody(CustodyKind.SINGLE_KEY), (hot,)),
            Wallet(
                "eth-cold",
                "devchain",
                WalletRole.COLD,
                Custody(CustodyKind.MULTISIG, 2, ("a", "b", "c")),
                (cold,),
            ),
        ]
    )
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    bus = InProcessBus()
    sink = RecordingSink()
    processor = Processor(
        store, book, {"devchain": chain}, {}, RulePolicy(), [sink], lambda: datetime.now(UTC)
    )
    sub = bus.subscribe(TOPIC, "processor")
    follower = EvmFollower(chain, node.rpc, store, bus, TOPIC, [hot, cold], start_height=1)

    node.send(cold, hot, 10**18)  # refill: a warning, not a leak
    snap = node.snapshot()
    drain = node.send(cold, attacker, 4_000 * 10**18)
    follower.step()
    sub.poll(processor.handle_message)

    assert [(a.severity, a.state) for a, _, _ in sink.seen] == [
        (Severity.WARNING, AlertState.CONFIRMED),
        (Severity.CRITICAL, AlertState.CONFIRMED),
    ]
    critical, text_en, text_ja = sink.seen[1]
    assert critical.tx_hash == drain.lower()
    assert "4,000 ETH" in text_en and "eth-cold" in text_en and drain.lower() in text_en
    assert "4,000 ETH" in text_ja and "コールドウォレット" in text_ja

    # A replay of everything (a consumer restarted before committing) delivers nothing new.
    replay = bus.subscribe(TOPIC, "replayer")
    replay.poll(processor.handle_message)
    assert len(sink.seen) == 2
    assert len(store.alerts()) == 2

    # The drain's block is replaced: its alert is retracted, once.
    node.revert(snap)
    node.send(hot, attacker, 1)
    node.mine(2)
    follower.step()
    sub.poll(processor.handle_message)
    assert [(a.id, a.state) for a, _, _ in sink.seen[2:]] == [(critical.id, AlertState.RETRACTED)]
    assert "RETRACTED" in sink.seen[2][1] and "取消" in sink.seen[2][2]
    stored = {a.id: a for a in store.alerts()}
    assert stored[critical.id].state is AlertState.RETRACTED
    assert stored[sink.seen[0][0].id].state is AlertState.CONFIRMED
