"""Follower → bus → processor → store and alerts, on a real in-process chain: the cold-wallet
alert is raised once, survives a replay without a second delivery, and is retracted by a reorg."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.rules import RulePolicy, WalletBook
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.errors import MalformedRpcResponse, RetriableRpcError, RpcError
from drainwatch.events import BlockDisconnected, Event, TransferSeen
from drainwatch.model import (
    Alert,
    AlertState,
    BlockRef,
    Chain,
    ChainKind,
    Custody,
    CustodyKind,
    Severity,
    Transfer,
    TransferKind,
    TransferStatus,
    Wallet,
    WalletRole,
)
from drainwatch.store import open_store
from tests.fixtures.evm_nodes import EthTesterNode
from tests.fixtures.faults import Clock, FailingStore
from tests.fixtures.processing import make_processor
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
    processor = make_processor(
        store, book, {"devchain": chain}, {}, RulePolicy(), [sink], lambda: datetime.now(UTC)
    )
    sub = bus.subscribe(TOPIC, "processor")
    follower = EvmFollower(chain, node.rpc, store, bus, TOPIC, [hot, cold], start_height=1)

    refill = node.send(cold, hot, 10**18)  # a refill of an own wallet: planned, no alert
    payout = node.send(hot, attacker, 10**15)  # announced by no expectation: unplanned
    snap = node.snapshot()
    drain = node.send(cold, attacker, 4_000 * 10**18)
    follower.step()
    sub.poll(processor.handle_message)

    assert [(a.rule_id, a.severity, a.state, a.tx_hash) for a, _, _ in sink.seen] == [
        ("unplanned-outflow", Severity.HIGH, AlertState.CONFIRMED, payout.lower()),
        ("cold-outflow", Severity.CRITICAL, AlertState.CONFIRMED, drain.lower()),
    ]
    assert refill.lower() not in {a.tx_hash for a in store.alerts()}
    assert refill.lower() in {t.tx_hash for t in store.transfers()}  # seen, just not alerted
    critical, text_en, text_ja = sink.seen[1]
    assert "4,000 ETH" in text_en and "eth-cold" in text_en and drain.lower() in text_en
    assert "4,000 ETH" in text_ja and "コールドウォレット" in text_ja

    # A replay of everything (a consumer restarted before committing) delivers nothing new.
    replay = bus.subscribe(TOPIC, "replayer")
    replay.poll(processor.handle_message)
    assert len(sink.seen) == 2
    assert len(store.alerts()) == 2
    assert store.outbox_backlog() == {}

    # The drain's block is replaced: its alert is retracted, once; the payout's block stays.
    node.revert(snap)
    other = node.send(node.accounts[5], node.accounts[6], 1)  # a new block at the same height
    node.mine(2)
    follower.step()
    sub.poll(processor.handle_message)
    assert [(a.id, a.state) for a, _, _ in sink.seen[2:]] == [(critical.id, AlertState.RETRACTED)]
    assert "RETRACTED" in sink.seen[2][1] and "取消" in sink.seen[2][2]
    stored = {a.id: a for a in store.alerts()}
    assert stored[critical.id].state is AlertState.RETRACTED
    assert stored[sink.seen[0][0].id].state is AlertState.CONFIRMED
    assert other.lower() not in {a.tx_hash for a in store.alerts()}


CONFIG = """\
exchange: {{name: T}}
store: {{url: "sqlite:///{db}"}}
chains:
  {chain}:
    kind: evm
    network: devnet
    chain_id: 131277322940537
    rpc: [{{url: "ethtester://in-process"}}]
    confirmations: 0
  other:
    kind: evm
    network: devnet
    chain_id: 131277322940537
    rpc: [{{url: "ethtester://in-process"}}]
    confirmations: 0
wallets:
  cold:
    chain: {chain}
    role: cold
    custody: {{kind: multisig, threshold: 2, signers: [a, b, c]}}
    addresses: ["{cold}"]
  other-cold:
    chain: other
    role: cold
    custody: {{kind: multisig, threshold: 2, signers: [a, b, c]}}
    addresses: ["{other_cold}"]
"""


class FlakySink(RecordingSink):
    """Fails its first delivery, as a terminal or a channel can."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("delivery failed")
        super().deliver(alert, text_en, text_ja)


def _app(tmp_path: Path, node: EthTesterNode, other: EthTesterNode):  # type: ignore[no-untyped-def]
    from drainwatch.config import load_config_text
    from drainwatch.wiring import build_app

    text = CONFIG.format(
        db=tmp_path / "dw.db", chain="devchain", cold=node.accounts[2], other_cold=other.accounts[3]
    )
    return build_app(load_config_text(text))


def test_nothing_is_lost_when_processing_fails_with_the_in_process_bus(tmp_path: Path) -> None:
    """The in-process bus keeps nothing: the watcher's checkpoint must not pass a block whose
    events the processor has not handled, or a crash loses the alert for good. (A channel that
    fails is no processing failure: the alert is kept and its row waits in the outbox.)"""
    from alerts.blocks import CardMaker
    from alerts.notifier import Notifier
    from drainwatch.errors import StoreError
    from drainwatch.wiring import build_pipeline, delivery_sinks

    node, other = EthTesterNode(), EthTesterNode()
    drain = node.send(node.accounts[2], node.accounts[7], 10**18)
    overrides = {"devchain": node.rpc, "other": other.rpc}
    starts = {"devchain": 1, "other": 1}
    app = _app(tmp_path, node, other)
    failing = FailingStore(app.store, "save_alert")  # the database goes away mid-batch
    app.store = failing  # type: ignore[assignment]
    sink = RecordingSink()
    pipeline = build_pipeline(app, [sink], rpc_overrides=overrides, start_heights=starts)
    with pytest.raises(StoreError, match="injected"):
        pipeline.run_once()
    assert failing.failed
    checkpoint = app.store.get_checkpoint("devchain")
    assert checkpoint is None or checkpoint.height < node.head()
    assert app.store.alerts() == [] and app.store.transfers() == [] and sink.seen == []
    app.close()

    app = _app(tmp_path, node, other)  # a restart: a new process, the same store
    flaky = FlakySink()
    pipeline = build_pipeline(app, [flaky], rpc_overrides=overrides, start_heights=starts)
    pipeline.run_once()
    # The processing went through; the channel failed: the alert is kept and waits.
    assert flaky.failed and flaky.seen == []
    [alert] = app.store.alerts()
    assert alert.tx_hash == drain.lower()
    [(row, delivered_at, error)] = app.store.outbox(alert.id)
    assert (row.sink, delivered_at) == ("observer:FlakySink:0", None)
    assert error is not None and "delivery failed" in error
    assert app.store.outbox_backlog() == {"observer:FlakySink:0": 1}
    checkpoint = app.store.get_checkpoint("devchain")
    assert checkpoint is not None and checkpoint.height == node.head()
    assert pipeline.deliver() == 0  # not before its retry time
    # Once its retry time has come, the channel gets it, once.
    later = Notifier(
        app.store,
        delivery_sinks([flaky]),
        CardMaker(app.chains, app.assets, app.book),
        clock=lambda: datetime.now(UTC) + timedelta(seconds=60),
    )
    assert later.deliver_all() == 1
    assert [a.tx_hash for a, _, _ in flaky.seen] == [drain.lower()]
    assert app.store.outbox_backlog() == {}
    pipeline.run_once()
    assert [a.tx_hash for a in app.store.alerts()] == [drain.lower()]
    assert len(flaky.seen) == 1
    app.close()


@pytest.mark.parametrize(
    "failure",
    [
        RetriableRpcError("dead node: connection refused"),
        RpcError("dead node: HTTP 401"),
        MalformedRpcResponse("dead node", "eth_blockNumber", "an HTML page"),
    ],
    ids=["down", "refused", "garbage"],
)
def test_one_failing_chain_does_not_stop_the_others(tmp_path: Path, failure: Exception) -> None:
    from drainwatch.wiring import build_pipeline

    node, other = EthTesterNode(), EthTesterNode()

    class Dead:
        endpoint = "dead node"

        def call(self, method: str, params: object) -> object:
            raise failure

    drain = other.send(other.accounts[3], other.accounts[7], 10**18)
    app = _app(tmp_path, node, other)
    sink = RecordingSink()
    pipeline = build_pipeline(
        app,
        [sink],
        rpc_overrides={"devchain": Dead(), "other": other.rpc},
        start_heights={"devchain": 1, "other": 1},
    )
    failures: list[str] = []
    pipeline.run_once(on_error=lambda chain, exc, pause: failures.append(chain))
    assert failures == ["devchain"]
    assert [a.tx_hash for a, _, _ in sink.seen] == [drain.lower()]
    pipeline.run_once(on_error=lambda chain, exc, pause: failures.append(chain))
    assert failures == ["devchain"]  # in its pause: not hammered on every round
    app.close()


def _book(cold: str) -> WalletBook:
    return WalletBook(
        [
            Wallet(
                "eth-cold",
                "devchain",
                WalletRole.COLD,
                Custody(CustodyKind.MULTISIG, 2, ("a", "b", "c")),
                (cold,),
            )
        ]
    )


def _processor(  # type: ignore[no-untyped-def]
    tmp_path: Path,
    sink: RecordingSink,
    chains: dict[str, Chain] | None = None,
    *,
    fail: tuple[str, int] | None = None,
):
    """A processor on a new store; ``fail``: (store method, call number) to fail once."""
    cold = "0x" + "c0" * 20
    if chains is None:
        chains = {"devchain": Chain("devchain", ChainKind.EVM, "devnet", "ETH", 18)}
    store: Any = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    if fail is not None:
        store = FailingStore(store, *fail)
    processor = make_processor(
        store, _book(cold), chains, {}, RulePolicy(), [sink], lambda: datetime.now(UTC)
    )
    return processor, store, cold


def _seen(cold: str, block: BlockRef) -> TransferSeen:
    return TransferSeen(
        Transfer(
            "devchain",
            "0x" + "ab" * 32,
            "tx",
            cold,
            "0x" + "99" * 20,
            "native",
            5 * 10**18,
            TransferKind.NATIVE,
            TransferStatus.CONFIRMED,
            block,
            datetime.now(UTC),
        )
    )


def test_an_alert_follows_its_transaction_into_a_new_block(tmp_path: Path) -> None:
    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    b1, b2 = BlockRef(10, "0x" + "01" * 32), BlockRef(10, "0x" + "02" * 32)
    processor.handle(_seen(cold, b1))
    processor.handle(BlockDisconnected("devchain", b1))
    processor.handle(_seen(cold, b2))  # re-mined in the block that replaced b1
    processor.handle(BlockDisconnected("devchain", b2))  # and that one goes too
    assert [(a.state, a.block) for a, _, _ in sink.seen] == [
        (AlertState.CONFIRMED, b1),
        (AlertState.RETRACTED, b1),
        (AlertState.CONFIRMED, b2),
        (AlertState.RETRACTED, b2),
    ]
    [stored] = store.alerts()
    assert (stored.state, stored.block) == (AlertState.RETRACTED, b2)
    processor.handle(BlockDisconnected("devchain", b2))  # a replay changes nothing
    assert len(sink.seen) == 4


def test_an_unreadable_message_stops_the_consumer_uncommitted(tmp_path: Path) -> None:
    from drainwatch import codec
    from drainwatch.errors import BusError

    sink = RecordingSink()
    processor, _store, cold = _processor(tmp_path, sink)
    bus = InProcessBus()
    sub = bus.subscribe("t", "g")
    newer = {**codec.encode_event(_seen(cold, BlockRef(1, "0x" + "01" * 32))), "version": 2}
    bus.publish("t", "devchain", json.dumps(newer).encode())
    for _ in range(2):  # seen again: never skipped
        with pytest.raises(BusError, match=r"t\[0\]@0"):
            sub.poll(processor.handle_message)
    assert sub.backlog() == 1 and sink.seen == []


def test_an_alert_of_a_chain_no_longer_configured_is_still_delivered(tmp_path: Path) -> None:
    sink = RecordingSink()
    processor, _store, cold = _processor(tmp_path, sink, chains={})
    processor.handle(_seen(cold, BlockRef(3, "0x" + "03" * 32)))
    [(_alert, text_en, _)] = sink.seen
    assert "5,000,000,000,000,000,000 base units" in text_en


def test_a_late_mempool_sighting_does_not_send_a_confirmed_alert_back(tmp_path: Path) -> None:
    from dataclasses import replace

    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    confirmed = _seen(cold, BlockRef(5, "0x" + "05" * 32))
    processor.handle(confirmed)
    pending = replace(confirmed.transfer, status=TransferStatus.PENDING, block=None)
    processor.handle(TransferSeen(pending))
    assert [a.state for a, _, _ in sink.seen] == [AlertState.CONFIRMED]
    [stored] = store.alerts()
    assert stored.state is AlertState.CONFIRMED
    [transfer] = store.transfers()
    assert transfer.status is TransferStatus.CONFIRMED


def test_a_mempool_withdrawal_never_unconfirms_a_mined_leak(tmp_path: Path) -> None:
    """A node a block behind answers "no receipt": the mempool watch withdraws the transaction
    (orphaned, no block). What a block already carries stays confirmed, and so does its alert."""
    from dataclasses import replace

    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    confirmed = _seen(cold, BlockRef(5, "0x" + "05" * 32))
    processor.handle(confirmed)
    withdrawn = replace(confirmed.transfer, status=TransferStatus.ORPHANED, block=None)
    processor.handle(TransferSeen(withdrawn))
    assert [a.state for a, _, _ in sink.seen] == [AlertState.CONFIRMED]
    [transfer] = store.transfers()
    assert transfer.status is TransferStatus.CONFIRMED and transfer.block is not None
    # The watcher's own retraction still works.
    processor.handle(BlockDisconnected("devchain", BlockRef(5, "0x" + "05" * 32)))
    assert [a.state for a, _, _ in sink.seen][-1] is AlertState.RETRACTED


# -- a batch of messages: one store transaction, offsets committed only after it -----------------


def _leak(cold: str, tx: int, block: BlockRef) -> TransferSeen:
    seen = _seen(cold, block)
    return TransferSeen(replace(seen.transfer, tx_hash=f"0x{tx:064x}"))


def _publish(bus: InProcessBus, *events: Event) -> None:
    from drainwatch import codec

    for event in events:
        bus.publish(TOPIC, "devchain", codec.dumps_event(event))


def test_a_failure_in_the_middle_of_a_batch_keeps_nothing_and_commits_nothing(
    tmp_path: Path,
) -> None:
    """The store fails on the second of three leaks: the first leak's transfer and alert are
    not kept either, nothing is sent (alerts go out only after the commit), and no offset
    moves; the next drain applies the whole batch again and sends each alert once."""
    from drainwatch.errors import StoreError
    from drainwatch.pipeline import Pipeline

    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink, fail=("save_alert", 2))
    bus = InProcessBus()
    subscription = bus.subscribe(TOPIC, "processor")
    pipeline = Pipeline(processor, subscription, poll_timeout=0.0)
    block = BlockRef(4, "0x" + "04" * 32)
    leaks = [_leak(cold, tx, block) for tx in (1, 2, 3)]
    _publish(bus, *leaks)

    with pytest.raises(StoreError, match="injected"):
        pipeline.drain()
    assert store.failed and store.calls == 2  # it failed on the second leak's alert
    assert sink.seen == []  # nothing was sent of the batch that was not kept
    assert store.transfers() == [] and store.alerts() == []  # nothing kept
    assert store.outbox_backlog() == {}
    assert subscription.backlog() == 3

    assert pipeline.drain() == 3
    # Each alert saved and sent once.
    assert [a.tx_hash for a, _, _ in sink.seen] == [leak.transfer.tx_hash for leak in leaks]
    assert [t.tx_hash for t in store.transfers()] == [leak.transfer.tx_hash for leak in leaks]
    assert len(store.alerts()) == 3 and subscription.backlog() == 0
    assert store.outbox_backlog() == {}
    assert pipeline.drain() == 0


class FailingSink(RecordingSink):
    """Fails on its ``fail_at``-th delivery (counted from 1), once."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail_at = fail_at

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("the channel is down")
        super().deliver(alert, text_en, text_ja)


def test_a_failing_sink_fails_no_processing_and_loses_no_alert(tmp_path: Path) -> None:
    """The channel fails on the second of three leaks: the batch is applied and committed all
    the same, the failed alert waits in the outbox, and goes out once (after its retry time)
    when the channel is back, without sending the others again."""
    from alerts.blocks import CardMaker
    from alerts.notifier import Notifier
    from drainwatch.pipeline import Pipeline
    from drainwatch.processor import Processor
    from drainwatch.wiring import delivery_sinks

    sink = FailingSink(fail_at=2)
    clock = Clock(datetime(2026, 11, 22, 9, 0, tzinfo=UTC))
    cold = "0x" + "c0" * 20
    book = _book(cold)
    chains = {"devchain": Chain("devchain", ChainKind.EVM, "devnet", "ETH", 18)}
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    notifier = Notifier(
        store,
        delivery_sinks([sink]),
        CardMaker(chains, {}, book),
        clock=clock,
        first_retry_seconds=5,
    )
    processor = Processor(
        store,
        book,
        chains,
        {},
        RulePolicy(),
        notifier.sink_names,
        clock,
        on_commit=notifier.deliver_all,
    )
    bus = InProcessBus()
    subscription = bus.subscribe(TOPIC, "processor")
    pipeline = Pipeline(processor, subscription, poll_timeout=0.0, notifier=notifier)
    leaks = [_leak(cold, tx, BlockRef(4, "0x" + "04" * 32)) for tx in (1, 2, 3)]
    _publish(bus, *leaks)

    assert pipeline.drain() == 3
    hashes = [leak.transfer.tx_hash for leak in leaks]
    assert [a.tx_hash for a, _, _ in sink.seen] == [hashes[0], hashes[2]]
    assert [t.tx_hash for t in store.transfers()] == hashes  # all kept
    assert sorted(a.tx_hash for a in store.alerts()) == sorted(hashes)
    assert subscription.backlog() == 0  # and committed
    assert store.outbox_backlog() == {"observer:FailingSink:0": 1}
    waiting = next(a for a in store.alerts() if a.tx_hash == hashes[1])
    [(row, delivered_at, error)] = store.outbox(waiting.id)
    assert (row.sink, row.attempts, delivered_at) == ("observer:FailingSink:0", 1, None)
    assert error is not None and "channel is down" in error

    clock.advance(4)
    assert pipeline.deliver() == 0  # its retry time has not come
    clock.advance(2)
    assert pipeline.deliver() == 1
    assert [a.tx_hash for a, _, _ in sink.seen] == [hashes[0], hashes[2], hashes[1]]
    assert store.outbox_backlog() == {}
    [(_, delivered_at, _)] = store.outbox(waiting.id)
    assert delivered_at == clock.now
    assert pipeline.deliver() == 0 and len(sink.seen) == 3


def test_a_block_disconnected_after_its_transfers_in_one_batch(tmp_path: Path) -> None:
    """Order holds inside a batch: the leak is stored and alerted, then retracted with its
    block, and a block that replaces it raises the alert again, all in one transaction."""
    from drainwatch.pipeline import Pipeline

    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    bus = InProcessBus()
    subscription = bus.subscribe(TOPIC, "processor")
    b1, b2 = BlockRef(10, "0x" + "01" * 32), BlockRef(10, "0x" + "02" * 32)
    _publish(
        bus, _seen(cold, b1), BlockDisconnected("devchain", b1), _seen(cold, b2), _seen(cold, b2)
    )
    batches: list[int] = []
    handle = processor.handle_messages
    while subscription.poll_batch(lambda b: (batches.append(len(b)), handle(b)), timeout=0):
        pass
    assert batches == [4], "the drain was not one batch"
    assert [(a.state, a.block) for a, _, _ in sink.seen] == [
        (AlertState.CONFIRMED, b1),
        (AlertState.RETRACTED, b1),
        (AlertState.CONFIRMED, b2),
    ]
    [stored] = store.alerts()
    assert (stored.state, stored.block) == (AlertState.CONFIRMED, b2)
    [transfer] = store.transfers()
    assert (transfer.status, transfer.block) == (TransferStatus.CONFIRMED, b2)

    # The batch replayed (a restart before the commit) re-runs the same states (see the
    # processor: intermediate updates may repeat) and ends where it was.
    replay = bus.subscribe(TOPIC, "replayer")
    assert Pipeline(processor, replay, poll_timeout=0.0).drain() == 4
    assert (sink.seen[-1][0].state, sink.seen[-1][0].block) == (AlertState.CONFIRMED, b2)
    assert store.alerts() == [stored] and store.transfers() == [transfer]


def test_an_unreadable_message_in_a_batch_after_a_leak(tmp_path: Path) -> None:
    """The leak before it is applied and alerted (it must not wait for an upgrade); the batch
    stays uncommitted, and its replays deliver nothing twice."""
    from drainwatch import codec
    from drainwatch.errors import BusError
    from drainwatch.pipeline import Pipeline

    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    bus = InProcessBus()
    subscription = bus.subscribe(TOPIC, "processor")
    pipeline = Pipeline(processor, subscription, poll_timeout=0.0)
    leak = _leak(cold, 1, BlockRef(2, "0x" + "02" * 32))
    newer = {**codec.encode_event(_leak(cold, 2, BlockRef(3, "0x" + "03" * 32))), "version": 2}
    _publish(bus, leak)
    bus.publish(TOPIC, "devchain", json.dumps(newer).encode())
    for _ in range(2):
        with pytest.raises(BusError, match=rf"{TOPIC}\[0\]@1"):
            pipeline.drain()
        assert subscription.backlog() == 2
    assert [a.tx_hash for a, _, _ in sink.seen] == [leak.transfer.tx_hash]
    assert [t.tx_hash for t in store.transfers()] == [leak.transfer.tx_hash]
    assert len(store.alerts()) == 1


def test_a_mempool_sighting_after_its_block_in_one_batch_does_not_demote(tmp_path: Path) -> None:
    """Sightings of one batch are stored together, but a key seen twice is never reduced to
    its last sighting: the pending one after the confirmed one changes nothing, as it would
    one event at a time."""
    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    confirmed = _seen(cold, BlockRef(5, "0x" + "05" * 32))
    pending = TransferSeen(replace(confirmed.transfer, status=TransferStatus.PENDING, block=None))
    other = _leak(cold, 9, BlockRef(5, "0x" + "05" * 32))
    processor.handle_events([confirmed, other, pending, other])
    assert [t.status for t in store.transfers()] == [TransferStatus.CONFIRMED] * 2
    assert [(a.tx_hash, a.state) for a, _, _ in sink.seen] == [
        (confirmed.transfer.tx_hash, AlertState.CONFIRMED),
        (other.transfer.tx_hash, AlertState.CONFIRMED),
    ]


def test_a_block_disconnected_then_connected_again_in_one_batch(tmp_path: Path) -> None:
    """The disconnect sees the facts before it and none after it: the block back on the best
    chain leaves its transfer confirmed and its alert raised again."""
    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    b1 = BlockRef(6, "0x" + "06" * 32)
    processor.handle_events([_seen(cold, b1), BlockDisconnected("devchain", b1), _seen(cold, b1)])
    assert [a.state for a, _, _ in sink.seen] == [
        AlertState.CONFIRMED,
        AlertState.RETRACTED,
        AlertState.CONFIRMED,
    ]
    [transfer] = store.transfers()
    assert (transfer.status, transfer.block) == (TransferStatus.CONFIRMED, b1)
    assert [a.state for a in store.alerts()] == [AlertState.CONFIRMED]


# -- balances: the followers publish a block's BalanceSeen before its transfers ----------------


def _drained_block(tmp_path: Path) -> tuple[Any, Any, list[Event]]:
    """A cold wallet's 5 ETH leaves in block 7, and its balance falls from 6 ETH to 1 ETH: the
    events in the order the followers publish them (balances, then transfers)."""
    from drainwatch.events import BalanceSeen
    from drainwatch.model import Balance

    sink = RecordingSink()
    processor, store, cold = _processor(tmp_path, sink)
    block = BlockRef(7, "0x" + "07" * 32)
    leak = _seen(cold, block)
    when = leak.transfer.block_time
    assert when is not None
    store.record_block("devchain", block, "0x" + "06" * 32, when)
    balance = Balance("devchain", "eth-cold", "native", 10**18, 6 * 10**18, block, when)
    return processor, sink, [BalanceSeen(balance), leak]


def test_a_balance_fall_is_raised_when_the_block_comes_in_one_batch(tmp_path: Path) -> None:
    processor, sink, events = _drained_block(tmp_path)
    processor.handle_events(events)
    assert sorted(a.rule_id for a, _, _ in sink.seen) == ["balance-fall", "cold-outflow"]


def test_a_balance_fall_is_raised_when_the_block_comes_one_event_at_a_time(
    tmp_path: Path,
) -> None:
    """One message at a time (a poll cut at max_messages, a Kafka poll racing the follower):
    the balance, published first, is stored before the transfer's rules read it."""
    processor, sink, events = _drained_block(tmp_path)
    for event in events:
        processor.handle(event)
    assert sorted(a.rule_id for a, _, _ in sink.seen) == ["balance-fall", "cold-outflow"]
