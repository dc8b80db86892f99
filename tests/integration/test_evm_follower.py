"""The EVM follower on real chains (eth-tester in process and anvil): what it publishes, what it
stores, confirmations, restarts and reorgs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alerts.rules import RulePolicy, WalletBook
from drainwatch import codec
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.drill_contracts import EMITTER_INITCODE, FORWARDER_INITCODE
from drainwatch.errors import ConfigError, RpcError
from drainwatch.events import (
    BalanceSeen,
    BlockConfirmed,
    BlockConnected,
    BlockDisconnected,
    Event,
    TransferSeen,
)
from drainwatch.model import Chain, ChainKind, TransferKind, TransferStatus
from drainwatch.ports import JsonRpc, Message, Store
from drainwatch.processor import Processor
from drainwatch.store import open_store
from tests.fixtures.evm_nodes import AnvilNode, EvmNode
from watchers.evm.follower import EvmFollower, NodeInconsistent, ReorgTooDeep, chain_id_check
from watchers.follow import STALL_LIMIT
from watchers.jsonrpc import HttpJsonRpc
from watchers.rpc_stack import FailoverRpc

TOPIC = "test.events"


def _now() -> datetime:
    return datetime.now(UTC)


ETH = 10**18


def _chain(confirmations: int) -> Chain:
    return Chain(
        name="devchain",
        kind=ChainKind.EVM,
        network="devnet",
        native_symbol="ETH",
        native_decimals=18,
        confirmations=confirmations,
    )


class Rig:
    def __init__(self, node: EvmNode, store: Store, confirmations: int = 0) -> None:
        self.node = node
        self.store = store
        self.bus = InProcessBus()
        self.hot, self.cold = node.accounts[1], node.accounts[2]
        self.outsider, self.attacker = node.accounts[3], node.accounts[4]
        self.chain = _chain(confirmations)
        self.sub = self.bus.subscribe(TOPIC, "test")
        # The real processor stores what the follower publishes (no rules needed here).
        self.processor = Processor(
            store, WalletBook([]), {}, {}, RulePolicy(cold_outflow=False), [], clock=_now
        )
        self.start = node.head() + 1

    def follower(self) -> EvmFollower:
        return EvmFollower(
            self.chain,
            self.node.rpc,
            self.store,
            self.bus,
            TOPIC,
            [self.hot, self.cold],
            start_height=self.start,
        )

    def events(self) -> list[Event]:
        out: list[Event] = []

        def handle(message: Message) -> None:
            out.append(codec.loads_event(message.value))
            self.processor.handle_message(message)

        self.sub.poll(handle, timeout=0.1)
        return out


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'store.db'}")


def _transfers(events: list[Event]) -> list[tuple[str, str, str, int]]:
    return [
        (e.transfer.tx_hash, e.transfer.from_address, e.transfer.to_address, e.transfer.amount)
        for e in events
        if isinstance(e, TransferSeen)
    ]


def test_publishes_native_transfers_of_watched_wallets(evm_node: EvmNode, store: Store) -> None:
    rig = Rig(evm_node, store)
    reverter = evm_node.deploy_reverter()
    rig.start = evm_node.head() + 1
    inflow = evm_node.send(rig.outsider, rig.hot, 3 * ETH)
    outflow = evm_node.send(rig.hot, rig.attacker, 2 * ETH)
    evm_node.send(rig.outsider, rig.attacker, 1 * ETH)  # not ours
    evm_node.send(rig.hot, reverter, 1 * ETH)  # reverted: moves nothing
    evm_node.send(rig.cold, rig.attacker, 0)  # no value
    sweep = evm_node.send(rig.hot, rig.cold, 1)
    processed = rig.follower().step()
    assert processed == evm_node.head() - rig.start + 1
    hot, cold, attacker = rig.hot.lower(), rig.cold.lower(), rig.attacker.lower()
    assert _transfers(rig.events()) == [
        (inflow.lower(), rig.outsider.lower(), hot, 3 * ETH),
        (outflow.lower(), hot, attacker, 2 * ETH),
        (sweep.lower(), hot, cold, 1),
    ]
    stored = store.transfers(address=rig.hot)
    assert [t.tx_hash for t in stored] == [inflow.lower(), outflow.lower(), sweep.lower()]
    assert all(t.status is TransferStatus.CONFIRMED for t in stored)


def test_publishes_at_once_as_provisional_and_confirms_at_the_depth(
    evm_node: EvmNode, store: Store
) -> None:
    """A block's transfers go out as soon as the node has the block (provisional), and a
    BlockConfirmed moves them to confirmed once the block has its confirmations (bitcoind's
    count: its own block included), exactly once."""
    rig = Rig(evm_node, store, confirmations=3)
    tx = evm_node.send(rig.hot, rig.attacker, 5)
    block = evm_node.head()
    rig.follower().step()
    first = rig.events()
    assert [(t[0], t[3]) for t in _transfers(first)] == [(tx.lower(), 5)]
    assert {e.transfer.status for e in first if isinstance(e, TransferSeen)} == {
        TransferStatus.PROVISIONAL
    }
    assert not [e for e in first if isinstance(e, BlockConfirmed)]
    assert [t.status for t in store.transfers(address=rig.hot)] == [TransferStatus.PROVISIONAL]
    evm_node.mine(1)  # two confirmations: not yet
    rig.follower().step()
    assert not [e for e in rig.events() if isinstance(e, BlockConfirmed | TransferSeen)]
    evm_node.mine(1)  # three
    rig.follower().step()
    confirmed = [e.block.height for e in rig.events() if isinstance(e, BlockConfirmed)]
    assert confirmed == list(range(rig.start, block + 1))
    assert [t.status for t in store.transfers(address=rig.hot)] == [TransferStatus.CONFIRMED]
    rig.follower().step()  # a restart: nothing confirmed twice
    assert not [e for e in rig.events() if isinstance(e, BlockConfirmed)]


def test_blocks_already_deep_are_published_confirmed(evm_node: EvmNode, store: Store) -> None:
    """Catching up, a block that has its confirmations already is published confirmed, with no
    BlockConfirmed after it."""
    rig = Rig(evm_node, store, confirmations=2)
    tx = evm_node.send(rig.hot, rig.attacker, 5)
    evm_node.mine(3)
    rig.follower().step()
    events = rig.events()
    statuses = {
        e.transfer.tx_hash: e.transfer.status for e in events if isinstance(e, TransferSeen)
    }
    assert statuses == {tx.lower(): TransferStatus.CONFIRMED}
    assert not [e for e in events if isinstance(e, BlockConfirmed)]
    head = evm_node.head()  # the only block with fewer than two confirmations
    assert [b.height for b in store.unconfirmed_blocks("devchain", head)] == [head]


def test_balances_after_an_outflow_come_first_and_are_the_nodes(
    evm_node: EvmNode, store: Store
) -> None:
    """A block with an outflow of a watched wallet carries that wallet's balance after the
    block and before it, read from the node, ahead of the block's transfers (a consumer of the
    transfers has the balance already); an inflow alone reads nothing."""
    rig = Rig(evm_node, store)
    evm_node.send(rig.outsider, rig.hot, 3 * ETH)  # an inflow: no balance read
    before = int(evm_node.rpc.call("eth_getBalance", [rig.hot, "latest"]), 16)
    evm_node.send(rig.hot, rig.attacker, 2 * ETH)
    height = evm_node.head()
    after = int(evm_node.rpc.call("eth_getBalance", [rig.hot, hex(height)]), 16)
    follower = EvmFollower(
        rig.chain,
        evm_node.rpc,
        store,
        rig.bus,
        TOPIC,
        [rig.hot, rig.cold],
        start_height=rig.start,
        wallets={rig.hot: "hot", rig.cold: "cold"},
    )
    follower.step()
    events = rig.events()
    balances = [e for e in events if isinstance(e, BalanceSeen)]
    assert [(b.balance.wallet, b.balance.asset) for b in balances] == [("hot", "native")]
    [seen] = balances
    assert (seen.balance.before, seen.balance.amount, seen.balance.block.height) == (
        before,
        after,
        height,
    )
    in_block = [e for e in events if getattr(e, "transfer", None) is not None]
    drain = next(e for e in in_block if e.transfer.amount == 2 * ETH)  # type: ignore[union-attr]
    assert events.index(seen) < events.index(drain)
    assert store.balances("devchain", "hot", "native", seen.balance.block_time) == [seen.balance]


def test_restart_resumes_from_the_checkpoint_without_gaps(evm_node: EvmNode, store: Store) -> None:
    rig = Rig(evm_node, store)
    first = evm_node.send(rig.hot, rig.attacker, 7)
    rig.follower().step()
    second = evm_node.send(rig.hot, rig.attacker, 8)
    evm_node.mine(3)
    rig.follower().step()  # a new follower, as after a restart
    events = rig.events()
    assert [t[0] for t in _transfers(events)] == [first.lower(), second.lower()]
    heights = [e.block.height for e in events if isinstance(e, BlockConnected)]
    assert heights == list(range(rig.start, evm_node.head() + 1))


def test_a_reorg_orphans_what_it_replaced(evm_node: EvmNode, store: Store) -> None:
    rig = Rig(evm_node, store)
    follower = rig.follower()
    evm_node.send(rig.outsider, rig.hot, 1)
    snap = evm_node.snapshot()
    lost = evm_node.send(rig.hot, rig.attacker, 111)
    follower.step()
    before = rig.events()
    [lost_block] = [
        e.transfer.block for e in before if isinstance(e, TransferSeen) and e.transfer.amount == 111
    ]
    evm_node.revert(snap)
    kept = evm_node.send(rig.hot, rig.outsider, 222)
    evm_node.mine(2)
    follower.step()
    after = rig.events()
    assert follower.reorgs == 1
    assert [e.block for e in after if isinstance(e, BlockDisconnected)] == [lost_block]
    assert [t[0] for t in _transfers(after)] == [kept.lower()]
    by_hash = {t.tx_hash: t for t in store.transfers(chain="devchain")}
    assert by_hash[lost.lower()].status is TransferStatus.ORPHANED
    assert by_hash[kept.lower()].status is TransferStatus.CONFIRMED
    checkpoint = store.get_checkpoint("devchain")
    assert checkpoint is not None and checkpoint.height == evm_node.head()


class Tampered:
    """A node whose answers a test can bend, one method at a time."""

    def __init__(self, rpc: JsonRpc) -> None:
        self._rpc = rpc
        self.endpoint = rpc.endpoint
        self.bend: dict[str, Callable[[Sequence[Any], Any], Any]] = {}

    def call(self, method: str, params: Sequence[Any]) -> Any:
        result = self._rpc.call(method, params)
        bend = self.bend.get(method)
        return bend(params, result) if bend else result


def _withhold(node: Tampered) -> None:
    """The node has the block but not yet what its value transfers are read from: receipts
    (eth-tester: full block and receipts) or traces (anvil: header and trace_block)."""
    node.bend["eth_getTransactionReceipt"] = lambda p, r: None
    node.bend["trace_block"] = lambda p, r: None


def _follower(rig: Rig, rpc: JsonRpc, **kw: Any) -> EvmFollower:
    return EvmFollower(
        rig.chain, rpc, rig.store, rig.bus, TOPIC, [rig.hot, rig.cold], start_height=rig.start, **kw
    )


def test_a_crash_after_publishing_is_retracted_if_the_block_goes(
    evm_node: EvmNode, store: Store
) -> None:
    rig = Rig(evm_node, store)
    snap = evm_node.snapshot()
    lost = evm_node.send(rig.hot, rig.attacker, 333)

    def die() -> None:
        raise SystemExit("killed after publishing, before the checkpoint")

    with pytest.raises(SystemExit):
        _follower(rig, evm_node.rpc, after_publish=die).step()
    # The checkpoint stays below the block in hand: set before it, never moved past it.
    checkpoint = store.get_checkpoint("devchain")
    assert checkpoint is not None and checkpoint.height == rig.start - 1
    published = rig.events()
    assert [t[0] for t in _transfers(published)] == [lost.lower()]
    evm_node.revert(snap)
    evm_node.send(rig.hot, rig.outsider, 1)
    evm_node.mine(1)
    rig.follower().step()
    after = rig.events()
    assert [e.block.height for e in after if isinstance(e, BlockDisconnected)] == [rig.start]
    [stored] = [t for t in store.transfers(chain="devchain") if t.tx_hash == lost.lower()]
    assert stored.status is TransferStatus.ORPHANED


def test_a_node_that_contradicts_itself_is_retried_not_retracted(
    evm_node: EvmNode, store: Store
) -> None:
    rig = Rig(evm_node, store)
    evm_node.send(rig.hot, rig.attacker, 5)
    rig.follower().step()
    rig.events()
    tip = store.get_checkpoint("devchain")
    assert tip is not None
    evm_node.send(rig.hot, rig.attacker, 6)
    node = Tampered(evm_node.rpc)
    # A lagging backend answers the next block with a parent we never saw, while another
    # still reports our tip: no reorg can be concluded from that.
    node.bend["eth_getBlockByNumber"] = lambda p, r: (
        dict(r, parentHash="0x" + "ee" * 32) if r and int(p[0], 16) == tip.height + 1 else r
    )
    with pytest.raises(NodeInconsistent):
        _follower(rig, node).step()
    assert rig.events() == [] and store.get_checkpoint("devchain") == tip
    assert all(t.status is TransferStatus.CONFIRMED for t in store.transfers())


def test_a_missing_receipt_holds_the_block_back(evm_node: EvmNode, store: Store) -> None:
    rig = Rig(evm_node, store)
    tx = evm_node.send(rig.hot, rig.attacker, 9)
    node = Tampered(evm_node.rpc)
    _withhold(node)
    assert _follower(rig, node).step() == 0
    checkpoint = store.get_checkpoint("devchain")
    assert rig.events() == [] and checkpoint is not None and checkpoint.height == rig.start - 1
    node.bend.clear()
    assert _follower(rig, node).step() == 1
    assert [t[0] for t in _transfers(rig.events())] == [tx.lower()]


def test_a_reorg_deeper_than_the_window_changes_nothing(evm_node: EvmNode, store: Store) -> None:
    rig = Rig(evm_node, store)
    snap = evm_node.snapshot()
    for value in (1, 2, 3):
        evm_node.send(rig.hot, rig.attacker, value)
    follower = _follower(rig, evm_node.rpc, max_reorg_depth=2)
    follower.step()
    rig.events()
    tip = store.get_checkpoint("devchain")
    evm_node.revert(snap)
    for value in (4, 5, 6, 7):
        evm_node.send(rig.hot, rig.outsider, value)
    with pytest.raises(ReorgTooDeep, match="Nothing was retracted"):
        follower.step()
    assert rig.events() == [] and store.get_checkpoint("devchain") == tip


def test_an_endpoint_on_another_chain_is_refused(anvil_url: str) -> None:
    rpc = FailoverRpc([HttpJsonRpc(anvil_url)], verify=chain_id_check("ethereum", 1))
    with pytest.raises(ConfigError) as err:
        rpc.call("eth_blockNumber", [])
    assert err.value.path == "chains.ethereum.chain_id" and "31337" in str(err.value)
    ok = FailoverRpc([HttpJsonRpc(anvil_url)], verify=chain_id_check("dev", 31337))
    assert int(ok.call("eth_blockNumber", []), 16) >= 0


def test_token_and_internal_transfers_of_watched_wallets(evm_node: EvmNode, store: Store) -> None:
    """A token drain from the cold wallet (an ERC-20 Transfer log) and a contract wallet that
    moves ETH by an internal call (only traces show it) both come out, with their positions."""
    rig = Rig(evm_node, store)
    token = evm_node.deploy(EMITTER_INITCODE)
    contract_wallet = evm_node.deploy(FORWARDER_INITCODE)  # a watched wallet that is a contract
    rig.start = evm_node.head() + 1
    drain = evm_node.token_transfer(token, rig.cold, rig.attacker, 2**200 + 7)
    moved = evm_node.forward(contract_wallet, rig.outsider, rig.attacker, 3 * ETH)
    notices: list[str] = []
    follower = EvmFollower(
        rig.chain,
        evm_node.rpc,
        store,
        rig.bus,
        TOPIC,
        [rig.hot, rig.cold, contract_wallet],
        start_height=rig.start,
        notice=notices.append,  # what the operator is told
    )
    follower.step()
    follower.step()  # a second pass says nothing twice
    seen = [e.transfer for e in rig.events() if isinstance(e, TransferSeen)]
    by_kind = {(t.kind, t.tx_hash): t for t in seen}
    token_move = by_kind[(TransferKind.TOKEN, drain.lower())]
    assert (token_move.from_address, token_move.to_address) == (
        rig.cold.lower(),
        rig.attacker.lower(),
    )
    assert token_move.asset == token.lower() and token_move.amount == 2**200 + 7
    assert token_move.index.startswith("log:")
    inflow = by_kind[(TransferKind.NATIVE, moved.lower())]
    assert inflow.to_address == contract_wallet.lower() and inflow.amount == 3 * ETH
    if evm_node.name == "anvil":  # anvil offers both trace dialects
        internal = by_kind[(TransferKind.INTERNAL, moved.lower())]
        assert (internal.from_address, internal.to_address, internal.amount, internal.index) == (
            contract_wallet.lower(),
            rig.attacker.lower(),
            3 * ETH,
            "trace:0",
        )
        assert notices == []
    else:  # eth-tester has no tracing: said once, and the rest goes on
        assert (TransferKind.INTERNAL, moved.lower()) not in by_kind
        # Said once each: no tracing, and (eth-tester) no mempool either.
        assert len(notices) == 2 and any("internal transfers" in n for n in notices)
        assert any("no mempool" in n for n in notices)
    stored = {(t.kind, t.tx_hash) for t in store.transfers(chain="devchain")}
    assert stored == set(by_kind)


def test_the_trace_block_dialect_gives_the_same_internal_transfers(anvil_url: str) -> None:
    """trace_block is preferred where offered (cheaper); a node with only the callTracer
    (geth) is probed and used, and both give the same transfers."""
    from watchers.evm.extract import BlockExtractor, TraceDialect
    from watchers.evm.mapping import parse_block

    node = AnvilNode(HttpJsonRpc(anvil_url))
    wallet = node.deploy(FORWARDER_INITCODE)
    node.forward(wallet, node.accounts[3], node.accounts[4], 5)
    raw = node.rpc.call("eth_getBlockByNumber", [hex(node.head()), True])
    block = parse_block(raw)
    geth_only = Tampered(node.rpc)

    def no_parity(params: Sequence[Any], result: Any) -> Any:
        raise RpcError("the method trace_block does not exist (-32601)")

    geth_only.bend["trace_block"] = no_parity
    parity = BlockExtractor("dev", node.rpc, frozenset({wallet.lower()}))
    geth = BlockExtractor("dev", geth_only, frozenset({wallet.lower()}))
    got_parity, got_geth = parity.transfers(block), geth.transfers(block)
    assert (parity.dialect, geth.dialect) == (TraceDialect.PARITY, TraceDialect.GETH)
    assert got_parity == got_geth and got_geth is not None
    assert [t.amount for t in got_geth if t.kind is TransferKind.INTERNAL] == [5]


def test_a_receipt_that_never_comes_is_an_error_not_a_silent_halt(
    evm_node: EvmNode, store: Store
) -> None:
    rig = Rig(evm_node, store)
    evm_node.send(rig.hot, rig.attacker, 9)
    node = Tampered(evm_node.rpc)
    _withhold(node)
    follower = _follower(rig, node)
    for _ in range(STALL_LIMIT - 1):
        assert follower.step() == 0
    with pytest.raises(NodeInconsistent, match="held back"):
        follower.step()


def test_a_second_reorg_under_the_first_blocks_does_not_wedge_the_chain(
    evm_node: EvmNode, store: Store
) -> None:
    """After a reorg of the very first blocks the checkpoint is a block never published; when
    that one is replaced too, the watcher steps below it instead of stopping for good."""
    rig = Rig(evm_node, store)
    snap = evm_node.snapshot()
    evm_node.send(rig.outsider, rig.attacker, 1)
    rig.start = evm_node.head() + 1
    lost = evm_node.send(rig.hot, rig.attacker, 111)
    follower = rig.follower()
    follower.step()
    evm_node.revert(snap)
    snap = evm_node.snapshot()
    evm_node.send(rig.outsider, rig.attacker, 2)
    evm_node.send(rig.hot, rig.attacker, 222)
    evm_node.mine(1)  # longer than the branch we saw: the reorg is noticed
    node = Tampered(evm_node.rpc)
    _withhold(node)  # held back mid-way
    _follower(rig, node).step()
    evm_node.revert(snap)
    evm_node.send(rig.outsider, rig.attacker, 3)
    kept = evm_node.send(rig.hot, rig.attacker, 333)
    evm_node.mine(1)
    rig.follower().step()
    events = rig.events()
    assert kept.lower() in [t[0] for t in _transfers(events)]
    statuses = {t.tx_hash: t.status for t in store.transfers(chain="devchain")}
    assert statuses[lost.lower()] is TransferStatus.ORPHANED
    assert statuses[kept.lower()] is TransferStatus.CONFIRMED
    checkpoint = store.get_checkpoint("devchain")
    assert checkpoint is not None and checkpoint.height == evm_node.head()


def test_a_failover_to_a_node_of_another_kind_is_probed_again(anvil_url: str) -> None:
    """The primary traced with trace_block; the backup only offers the callTracer (geth): the
    watcher notices the method is gone, probes again and goes on tracing."""
    from watchers.evm.extract import BlockExtractor, TraceDialect
    from watchers.evm.mapping import parse_block

    node = AnvilNode(HttpJsonRpc(anvil_url))
    wallet = node.deploy(FORWARDER_INITCODE)
    rpc = Tampered(node.rpc)
    extractor = BlockExtractor("dev", rpc, frozenset({wallet.lower()}))

    def block_with_forward(value: int) -> Any:
        node.forward(wallet, node.accounts[3], node.accounts[4], value)
        return parse_block(rpc.call("eth_getBlockByNumber", [hex(node.head()), True]))

    first = extractor.transfers(block_with_forward(5))
    assert extractor.dialect is TraceDialect.PARITY and first is not None

    def gone(params: Sequence[Any], result: Any) -> Any:
        raise RpcError("backup: trace_block returned error -32601: not found")

    rpc.bend["trace_block"] = gone
    second = extractor.transfers(block_with_forward(6))
    assert extractor.dialect is TraceDialect.GETH
    assert second is not None and [t.amount for t in second if t.kind is TransferKind.INTERNAL] == [
        6
    ]


def test_a_block_without_state_is_a_coverage_gap_not_the_end_of_tracing(anvil_url: str) -> None:
    from watchers.evm.extract import BlockExtractor, TraceDialect
    from watchers.evm.mapping import parse_block

    node = AnvilNode(HttpJsonRpc(anvil_url))
    wallet = node.deploy(FORWARDER_INITCODE)
    rpc = Tampered(node.rpc)
    notices: list[str] = []
    extractor = BlockExtractor("dev", rpc, frozenset({wallet.lower()}), notice=notices.append)

    def pruned(params: Sequence[Any], result: Any) -> Any:
        raise RpcError("node: returned error -32000: required historical state unavailable")

    rpc.bend["trace_block"] = pruned
    node.forward(wallet, node.accounts[3], node.accounts[4], 7)
    old = parse_block(rpc.call("eth_getBlockByNumber", [hex(node.head()), True]))
    facts = extractor.transfers(old)
    assert facts is not None and not any(t.kind is TransferKind.INTERNAL for t in facts)
    assert len(notices) == 1 and "NOT covered" in notices[0]
    assert extractor.dialect is TraceDialect.PARITY  # still a tracing node
    rpc.bend.clear()
    node.forward(wallet, node.accounts[3], node.accounts[4], 8)
    recent = parse_block(rpc.call("eth_getBlockByNumber", [hex(node.head()), True]))
    found = extractor.transfers(recent)
    assert found is not None and [t.amount for t in found if t.kind is TransferKind.INTERNAL] == [8]


def test_header_and_traces_give_what_full_block_and_receipts_give(anvil_url: str) -> None:
    """On a node offering trace_block only the header and the traces are read; the transfers
    are those of the full-block-and-receipts route, for every kind of transaction in one block:
    payment out and in, a reverted payment, a creation carrying value, a contract paying on,
    a value-0 call."""
    from watchers.evm.extract import BlockExtractor, TraceDialect

    node = AnvilNode(HttpJsonRpc(anvil_url))
    hot, outsider, attacker = node.accounts[1], node.accounts[3], node.accounts[4]
    wallet = node.deploy(FORWARDER_INITCODE)
    reverter = node.deploy_reverter()
    rpc = node.rpc
    rpc.call("evm_setAutomine", [False])
    try:
        sent = [
            {"from": hot, "to": attacker, "value": hex(7)},
            {"from": outsider, "to": hot, "value": hex(8)},
            {"from": hot, "to": reverter, "value": hex(9), "gas": hex(100_000)},
            {"from": hot, "value": hex(10), "data": "0x00"},  # creation: pays the new contract
            {"from": outsider, "to": wallet, "value": hex(11), "data": "0x" + "00" * 12 + hot[2:]},
            {"from": hot, "to": wallet, "value": "0x0", "data": "0x" + "00" * 12 + attacker[2:]},
        ]
        for tx in sent:
            rpc.call("eth_sendTransaction", [tx])
        rpc.call("evm_mine", [])
    finally:
        rpc.call("evm_setAutomine", [True])
    height = node.head()
    watched = frozenset({hot.lower(), wallet.lower()})
    traced = BlockExtractor("dev", rpc, watched)
    header = traced.fetch(height)  # the first fetch: header form, the dialect still unknown
    assert header is not None and not header.full and len(header.tx_hashes) == len(sent)
    by_traces = traced.transfers(header)
    assert traced.dialect is TraceDialect.PARITY
    geth_only = Tampered(rpc)

    def no_parity(params: Sequence[Any], result: Any) -> Any:
        raise RpcError("the method trace_block does not exist (-32601)")

    geth_only.bend["trace_block"] = no_parity
    by_receipts = BlockExtractor("dev", geth_only, watched)
    by_receipts.dialect = TraceDialect.GETH
    full = by_receipts.fetch(height)
    assert full is not None and full.full
    assert by_traces is not None and by_traces == by_receipts.transfers(full)
    assert sorted(t.amount for t in by_traces) == [7, 8, 10, 11, 11]  # 9 was reverted


def test_traces_that_miss_a_transaction_fall_back_to_receipts(anvil_url: str) -> None:
    """A node whose traces do not cover the block's transactions one for one (a chain with
    system transactions, or a bug): the native value comes from the full block and receipts,
    and the block's internal transfers are reported as a gap, never silently dropped."""
    from watchers.evm.extract import BlockExtractor

    node = AnvilNode(HttpJsonRpc(anvil_url))
    hot, outsider, attacker = node.accounts[1], node.accounts[3], node.accounts[4]
    node.rpc.call("evm_setAutomine", [False])
    try:
        tx = node.rpc.call("eth_sendTransaction", [{"from": hot, "to": attacker, "value": hex(12)}])
        other = node.rpc.call(
            "eth_sendTransaction", [{"from": outsider, "to": attacker, "value": hex(1)}]
        )
        node.rpc.call("evm_mine", [])
    finally:
        node.rpc.call("evm_setAutomine", [True])
    short = Tampered(node.rpc)
    # The traces of one of the block's two transactions are missing.
    short.bend["trace_block"] = lambda p, r: [t for t in r if t.get("transactionHash") != other]
    notices: list[str] = []
    extractor = BlockExtractor("dev", short, frozenset({hot.lower()}), notice=notices.append)
    block = extractor.fetch(node.head())
    assert block is not None and not block.full
    transfers = extractor.transfers(block)
    assert transfers is not None
    assert [(t.tx_hash, t.amount) for t in transfers] == [(tx.lower(), 12)]
    assert len(notices) == 1 and "NOT covered" in notices[0]


def test_empty_traces_for_a_block_with_transactions_are_not_ready(anvil_url: str) -> None:
    """A backend that has the header but answers [] for the block's traces (it has not
    executed it yet): the block waits, it is never taken as one that moved nothing."""
    from watchers.evm.extract import BlockExtractor

    node = AnvilNode(HttpJsonRpc(anvil_url))
    hot, attacker = node.accounts[1], node.accounts[4]
    node.send(hot, attacker, 12)
    behind = Tampered(node.rpc)
    behind.bend["trace_block"] = lambda p, r: []
    extractor = BlockExtractor("dev", behind, frozenset({hot.lower()}))
    block = extractor.fetch(node.head())
    assert block is not None and extractor.transfers(block) is None
    behind.bend.clear()
    block = extractor.fetch(node.head())
    assert block is not None
    assert [t.amount for t in extractor.transfers(block) or []] == [12]


def test_a_node_without_traces_is_asked_again_and_the_gap_is_named(anvil_url: str) -> None:
    """What a backup without traces answered while the primary was down is not final: asked
    again after a while, and the blocks followed without traces are named for a backfill."""
    from watchers.evm.extract import REPROBE_SECONDS, BlockExtractor, TraceDialect

    node = AnvilNode(HttpJsonRpc(anvil_url))
    hot, attacker = node.accounts[1], node.accounts[4]
    now = [0.0]
    flaky = Tampered(node.rpc)

    def missing(params: Sequence[Any], result: Any) -> Any:
        raise RpcError("the method does not exist (-32601)")

    flaky.bend["trace_block"] = flaky.bend["debug_traceBlockByNumber"] = missing
    notices: list[str] = []
    extractor = BlockExtractor(
        "dev", flaky, frozenset({hot.lower()}), notice=notices.append, clock=lambda: now[0]
    )
    heights = []
    for _ in range(2):
        node.send(hot, attacker, 1)
        heights.append(node.head())
        block = extractor.fetch(heights[-1])
        assert block is not None and extractor.transfers(block) is not None
    assert extractor.dialect is TraceDialect.NONE and len(notices) == 1
    flaky.bend.clear()  # the traces come back (the primary is up again)
    node.send(hot, attacker, 1)
    block = extractor.fetch(node.head())
    assert block is not None and extractor.transfers(block) is not None
    assert extractor.dialect is TraceDialect.NONE  # not asked again before its time
    now[0] += REPROBE_SECONDS
    node.send(hot, attacker, 1)
    block = extractor.fetch(node.head())
    assert block is not None and extractor.transfers(block) is not None
    assert extractor.dialect is TraceDialect.PARITY
    assert f"--from {heights[0]} --to {node.head() - 1}" in notices[-1]


def test_logs_are_asked_for_by_watched_address_and_split_when_refused(anvil_url: str) -> None:
    """Only the logs that can concern a watched address are asked for (a busy block's other
    token transfers never cross the wire), and a node that refuses a filter as too large is
    asked again with the addresses in halves: nothing is lost either way."""
    from drainwatch.drill_contracts import EMITTER_INITCODE
    from watchers.evm.extract import BlockExtractor

    node = AnvilNode(HttpJsonRpc(anvil_url))
    hot, cold, outsider, attacker = (node.accounts[i] for i in (1, 2, 3, 4))
    token = node.deploy(EMITTER_INITCODE)
    rpc = node.rpc
    rpc.call("evm_setAutomine", [False])
    try:
        for sender, to, amount in (
            (cold, attacker, 7),
            (outsider, attacker, 8),
            (attacker, hot, 9),
        ):
            data = "0x" + to.lower().removeprefix("0x").rjust(64, "0") + f"{amount:064x}"
            tx = {"from": sender, "to": token, "data": data, "gas": hex(100_000)}
            rpc.call("eth_sendTransaction", [tx])
        rpc.call("evm_mine", [])
    finally:
        rpc.call("evm_setAutomine", [True])
    answered: list[Any] = []
    refusing = Tampered(rpc)

    def too_large(params: Sequence[Any], result: Any) -> Any:
        query = params[0]
        filters = query.get("address") or query["topics"][-1]
        if len(filters) > 1:
            raise RpcError("query returned more than 10000 results (-32005)")
        answered.extend(result)
        return result

    refusing.bend["eth_getLogs"] = too_large
    extractor = BlockExtractor("dev", refusing, frozenset({hot.lower(), cold.lower()}))
    block = extractor.fetch(node.head())
    assert block is not None
    transfers = extractor.transfers(block)
    assert transfers is not None
    assert sorted(t.amount for t in transfers if t.kind is TransferKind.TOKEN) == [7, 9]
    outsider_word = "0x" + "0" * 24 + outsider.lower()[2:]
    assert answered and all(outsider_word not in entry["topics"] for entry in answered)
