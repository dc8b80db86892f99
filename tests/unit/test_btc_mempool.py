"""Pending Bitcoin spends and their verdicts (replaced, evicted, mined, beaten by a conflict),
with real mainnet transactions behind a fake node transport (the JSON-RPC answers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from drainwatch.addresses import MAINNET
from drainwatch.errors import MalformedRpcResponse, RpcError
from drainwatch.events import Event, TransferSeen, UtxoSpendSeen
from drainwatch.model import (
    BlockRef,
    Custody,
    CustodyKind,
    TransferStatus,
    Utxo,
    Wallet,
    WalletRole,
)
from watchers.bitcoin.block import Tx, parse_block, parse_tx
from watchers.bitcoin.derive import ScriptBook
from watchers.bitcoin.mempool import BitcoinMempool
from watchers.bitcoin.node import BitcoinNode
from watchers.bitcoin.utxos import UtxoScanner

COLD = "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"
REF = BlockRef(1, "00" * 32)


class FakeNode:
    """Answers as Bitcoin Core would: the mempool listing, raw transactions, gettxout."""

    endpoint = "fake://node"

    def __init__(self) -> None:
        self.mempool: dict[str, Tx] = {}
        self.unspent: set[tuple[str, int]] = set()
        self.gone_on_read: set[str] = set()

    def call(self, method: str, params: Sequence[Any]) -> Any:
        if method == "getrawmempool":
            return list(self.mempool)
        if method == "getrawtransaction":
            txid = params[0]
            if txid in self.gone_on_read or txid not in self.mempool:
                raise RpcError(f"{self.endpoint}: getrawtransaction returned error -5: No such")
            return self.mempool[txid].serialize().hex()
        if method == "gettxout":
            return {"value": 1} if (params[0], params[1]) in self.unspent else None
        if method == "getblockcount":
            return 100
        raise AssertionError(method)


@pytest.fixture(scope="module")
def tx(shared_data: Path) -> Tx:
    raw = (shared_data / "bitcoin" / "mainnet-blocks" / "block481815.raw").read_bytes()
    return parse_block(raw).txs[5]


@pytest.fixture(scope="module")
def other(shared_data: Path) -> Tx:
    raw = (shared_data / "bitcoin" / "mainnet-blocks" / "block481815.raw").read_bytes()
    return parse_block(raw).txs[6]


def _variant(tx: Tx, locktime: int) -> Tx:
    """The same inputs, another transaction (a replacement): another locktime."""
    raw = tx.serialize()
    return parse_tx(raw[:-4] + locktime.to_bytes(4, "little"))


def _setup(tx: Tx) -> tuple[FakeNode, BitcoinMempool, UtxoScanner]:
    wallet = Wallet("cold", "btc", WalletRole.COLD, Custody(CustodyKind.SINGLE_KEY), (COLD,))
    first = tx.inputs[0]
    coin = Utxo("btc", first.prev_txid, first.prev_vout, "cold", COLD, 10**8, REF)
    scanner = UtxoScanner("btc", ScriptBook([wallet], MAINNET), MAINNET, [coin])
    node = FakeNode()
    return node, BitcoinMempool(BitcoinNode(node), scanner), scanner


def _statuses(events: list[Event]) -> dict[str, set[TransferStatus]]:
    out: dict[str, set[TransferStatus]] = {}
    for e in events:
        if isinstance(e, TransferSeen):
            out.setdefault(e.transfer.tx_hash, set()).add(e.transfer.status)
        elif isinstance(e, UtxoSpendSeen):
            out.setdefault(e.spend.txid, set()).add(e.spend.status)
    return out


def test_a_spend_is_pending_at_once_and_seen_once(tx: Tx) -> None:
    node, mempool, _ = _setup(tx)
    node.mempool[tx.txid] = tx
    assert _statuses(mempool.poll(0)) == {tx.txid: {TransferStatus.PENDING}}
    mempool.published()
    assert mempool.poll(0) == []  # still there: nothing new
    assert mempool.pending_txids == {tx.txid}


def test_a_replacement_in_the_mempool_orphans_the_original(tx: Tx) -> None:
    node, mempool, _ = _setup(tx)
    node.mempool[tx.txid] = tx
    mempool.poll(0)
    mempool.published()
    bump = _variant(tx, 123)
    assert bump.txid != tx.txid
    node.mempool = {bump.txid: bump}
    assert _statuses(mempool.poll(0)) == {
        bump.txid: {TransferStatus.PENDING},
        tx.txid: {TransferStatus.ORPHANED},
    }


def test_an_evicted_spend_waits_for_the_chain_before_it_is_orphaned(tx: Tx) -> None:
    """Gone from the mempool, its coin still unspent: evicted, or a lagging backend. It is
    withdrawn once the watcher has passed the node's head of that moment without a block
    carrying it; never at once, which would retract a mined leak's alert."""
    node, mempool, _ = _setup(tx)
    node.mempool[tx.txid] = tx
    mempool.poll(0)
    mempool.published()
    node.mempool = {}
    node.unspent = {(tx.inputs[0].prev_txid, tx.inputs[0].prev_vout)}
    assert mempool.poll(99) == []
    assert _statuses(mempool.poll(100)) == {tx.txid: {TransferStatus.ORPHANED}}


def test_a_node_failing_in_the_middle_of_a_poll_loses_no_event(tx: Tx, other: Tx) -> None:
    node, mempool, scanner = _setup(tx)
    first = other.inputs[0]
    scanner.load([Utxo("btc", first.prev_txid, first.prev_vout, "cold", COLD, 5, REF)])
    scanner.coins[tx.inputs[0].outpoint] = scanner.coins[first.outpoint]
    node.mempool[tx.txid] = tx
    mempool.poll(0)
    mempool.published()
    node.mempool = {other.txid: other}  # a new pending spend; tx left (its verdict: the head)
    real = node.call

    def head_fails(method: str, params: Sequence[Any]) -> Any:
        if method == "getblockcount":
            raise RpcError("fake://node: timed out")
        return real(method, params)

    node.call = head_fails  # type: ignore[method-assign]
    with pytest.raises(RpcError):
        mempool.poll(0)
    node.call = real  # type: ignore[method-assign]
    assert _statuses(mempool.poll(0)) == {other.txid: {TransferStatus.PENDING}}
    mempool.published()
    assert _statuses(mempool.poll(100)) == {tx.txid: {TransferStatus.ORPHANED}}


def test_a_mined_spend_waits_for_its_block_and_a_beaten_one_is_orphaned(tx: Tx) -> None:
    coin = tx.inputs[0].outpoint
    for spender, verdict in ((tx, {}), (_variant(tx, 7), {tx.txid: {TransferStatus.ORPHANED}})):
        node, mempool, _ = _setup(tx)
        node.mempool[tx.txid] = tx
        mempool.poll(0)
        mempool.published()
        node.mempool = {}  # the coin is spent at the node's tip: mined, by it or a conflict
        assert mempool.poll(0) == []
        mined = {spender.txid}
        assert mempool.verdicts({b"\x00" * 36: "other"}, set()) == ([], [])  # not its block
        events, done = mempool.verdicts({coin: spender.txid}, mined)
        assert _statuses(events) == verdict and done == [tx.txid]
        # Nothing is settled until the block is through: a failed block gives it again.
        assert mempool.verdicts({coin: spender.txid}, mined) == (events, done)
        mempool.settled(done)
        assert mempool.verdicts({coin: spender.txid}, mined) == ([], [])  # settled once
        assert mempool.poll(10**6) == []  # and never withdrawn later either


def test_a_spend_that_no_block_settles_is_orphaned_once_the_watcher_passes_its_time(
    tx: Tx,
) -> None:
    node, mempool, _ = _setup(tx)
    node.mempool[tx.txid] = tx
    mempool.poll(0)
    mempool.published()
    node.mempool = {}  # gone, its coin spent or vanished (a reorg), and no block settles it
    assert mempool.poll(99) == []  # the node's head when it left is 100 (FakeNode)
    assert _statuses(mempool.poll(100)) == {tx.txid: {TransferStatus.ORPHANED}}


def test_events_are_handed_out_again_until_published(tx: Tx) -> None:
    node, mempool, _ = _setup(tx)
    node.mempool[tx.txid] = tx
    first = mempool.poll(0)
    assert _statuses(first) == {tx.txid: {TransferStatus.PENDING}}
    assert mempool.poll(0) == first  # the bus refused them: again
    mempool.published()
    assert mempool.poll(0) == []


def test_a_spend_read_before_its_coin_was_known_is_read_again(tx: Tx) -> None:
    node, mempool, scanner = _setup(tx)
    known = scanner.coins
    scanner.coins = {}  # the coin's block is not yet at its confirmation depth
    node.mempool[tx.txid] = tx
    assert mempool.poll(0) == []
    scanner.coins = known  # the block is processed: the coin is known
    mempool.coins_known(known)
    assert _statuses(mempool.poll(0)) == {tx.txid: {TransferStatus.PENDING}}


def test_pending_spends_of_an_earlier_run_are_settled_after_a_restart(tx: Tx) -> None:
    _, mempool, scanner = _setup(tx)
    events = scanner.scan_pending(tx)
    assert events is not None
    stored = [e.transfer for e in events if isinstance(e, TransferSeen)]
    mempool.restore(stored, head=50)
    assert mempool.poll(49) == []  # it may be in a block the watcher has not reached
    assert _statuses(mempool.poll(50)) == {tx.txid: {TransferStatus.ORPHANED}}
    # Restored, then found in a block the watcher scans: settled, never withdrawn.
    _, mined_later, _ = _setup(tx)
    mined_later.restore(stored, head=50)
    _, done = mined_later.verdicts({}, {tx.txid})
    mined_later.settled(done)
    assert mined_later.poll(10**6) == []
    # One still in the mempool is simply pending again.
    node2, mempool2, _ = _setup(tx)
    node2.mempool[tx.txid] = tx
    mempool2.restore(stored, head=50)
    assert _statuses(mempool2.poll(50)) == {tx.txid: {TransferStatus.PENDING}}


def test_a_transaction_gone_between_listing_and_reading_is_skipped(tx: Tx) -> None:
    node, mempool, _ = _setup(tx)
    other = _variant(tx, 9)
    node.mempool = {tx.txid: tx, other.txid: other}
    node.gone_on_read = {other.txid}
    assert set(_statuses(mempool.poll(0))) == {tx.txid}


def test_garbage_from_the_node_is_a_malformed_answer(tx: Tx) -> None:
    node, mempool, _ = _setup(tx)
    node.call = lambda method, params: ["not a txid"]  # type: ignore[method-assign]
    with pytest.raises(MalformedRpcResponse, match="getrawmempool"):
        mempool.poll(0)
