"""The mempool watch on a real anvil with automine off: pending outflows announced once, mined
ones left to the follower, replaced and dropped ones orphaned after the grace period, the filter
fallback, a node with no mempool, and malformed pool answers."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from drainwatch.errors import MalformedRpcResponse, RetriableRpcError, RpcError
from drainwatch.events import Event, TransferSeen
from drainwatch.model import Transfer, TransferKind, TransferStatus
from tests.fixtures.evm_nodes import start_anvil
from watchers.evm.mempool import MempoolSource, MempoolWatch
from watchers.jsonrpc import HttpJsonRpc

ETH = 10**18
CHAIN = "devchain"


class Node:
    """anvil with automine off; sends return at once, leaving the transaction in the pool."""

    def __init__(self, rpc: HttpJsonRpc) -> None:
        self.rpc = rpc
        self.accounts = [a.lower() for a in rpc.call("eth_accounts", [])]
        self.cold, self.outsider, self.dest = self.accounts[1], self.accounts[3], self.accounts[5]
        rpc.call("evm_setAutomine", [False])

    def send(self, sender: str, to: str | None, value: int, data: str = "0x", **extra: Any) -> str:
        tx: dict[str, Any] = {"from": sender, "value": hex(value), "data": data, **extra}
        if to is not None:
            tx["to"] = to
        return str(self.rpc.call("eth_sendTransaction", [tx])).lower()

    def mine(self) -> None:
        self.rpc.call("evm_mine", [])

    def receipt(self, tx_hash: str) -> Any:
        return self.rpc.call("eth_getTransactionReceipt", [tx_hash])


class Rewriting:
    """The node's rpc, with some methods refused (-32601) or their answers rewritten."""

    def __init__(
        self,
        inner: HttpJsonRpc,
        refuse: Sequence[str] = (),
        rewrite: dict[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        self.inner, self.refuse, self.rewrite = inner, set(refuse), rewrite or {}
        self.endpoint = inner.endpoint
        self.calls: list[str] = []

    def call(self, method: str, params: Sequence[Any]) -> Any:
        self.calls.append(method)
        if method in self.refuse:
            raise RpcError(f"{self.endpoint}: {method} returned error -32601: method not found")
        result = self.inner.call(method, params)
        return self.rewrite[method](result) if method in self.rewrite else result


@pytest.fixture
def node() -> Iterator[Node]:
    proc, url = start_anvil()
    try:
        yield Node(HttpJsonRpc(url))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def transfers(events: list[Event]) -> list[Transfer]:
    assert all(isinstance(e, TransferSeen) for e in events)
    return [e.transfer for e in events if isinstance(e, TransferSeen)]


def summary(events: list[Event]) -> list[tuple[str, TransferStatus]]:
    return [(t.tx_hash, t.status) for t in transfers(events)]


def test_pending_outflow_announced_once_and_mined_left_to_the_follower(node: Node) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold.upper().replace("0X", "0x")])
    tx = node.send(node.cold, node.dest, 3 * ETH)
    [t] = transfers(watch.poll())
    assert watch.source is MempoolSource.TXPOOL
    assert t == Transfer(
        chain=CHAIN,
        tx_hash=tx,
        index="tx",
        from_address=node.cold,
        to_address=node.dest,
        asset="native",
        amount=3 * ETH,
        kind=TransferKind.NATIVE,
        status=TransferStatus.PENDING,
        block=None,
        block_time=None,
    )
    assert watch.poll() == []
    node.mine()
    assert node.receipt(tx) is not None
    assert [watch.poll() for _ in range(4)] == [[], [], [], []]


def test_unwatched_senders_and_inflows_are_ignored(node: Node) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold])
    node.send(node.outsider, node.dest, ETH)
    node.send(node.outsider, node.cold, ETH)  # an inflow: the follower's business, not ours
    assert watch.poll() == []


def test_replaced_transaction_is_orphaned_after_the_grace_period(node: Node) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold])
    fees = {"maxFeePerGas": hex(2 * 10**9), "maxPriorityFeePerGas": hex(10**9)}
    first = node.send(node.cold, node.dest, ETH, nonce="0x0", **fees)
    assert summary(watch.poll()) == [(first, TransferStatus.PENDING)]
    bumped = {"maxFeePerGas": hex(4 * 10**9), "maxPriorityFeePerGas": hex(3 * 10**9)}
    second = node.send(node.cold, node.outsider, 2 * ETH, nonce="0x0", **bumped)
    assert second != first
    assert summary(watch.poll()) == [(second, TransferStatus.PENDING)]  # still within grace
    [orphan] = transfers(watch.poll())
    assert (orphan.tx_hash, orphan.status, orphan.block) == (first, TransferStatus.ORPHANED, None)
    assert (orphan.to_address, orphan.amount) == (node.dest, ETH)
    assert watch.poll() == []
    node.mine()
    assert node.receipt(second) is not None and node.receipt(first) is None
    assert [watch.poll() for _ in range(3)] == [[], [], []]


def test_dropped_transaction_is_orphaned(node: Node) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold], grace_polls=3)
    tx = node.send(node.cold, node.dest, ETH)
    assert summary(watch.poll()) == [(tx, TransferStatus.PENDING)]
    node.rpc.call("anvil_dropTransaction", [tx])
    assert [watch.poll(), watch.poll()] == [[], []]
    assert summary(watch.poll()) == [(tx, TransferStatus.ORPHANED)]
    assert watch.poll() == []


def test_contract_calls_tracked_and_only_value_announced(node: Node) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold])
    approve = "0x095ea7b3" + node.outsider[2:].rjust(64, "0") + "f" * 64
    call = node.send(node.cold, node.dest, 0, approve)
    paying = node.send(node.cold, node.dest, 5, "0xd0e30db0")
    creation = node.send(node.cold, None, 7, "0x00")
    found = transfers(watch.poll())
    assert [(t.tx_hash, t.amount) for t in found] == [(paying, 5), (creation, 7)]
    assert [(c.hash, c.value, c.input) for c in watch.pending_calls()] == [(call, 0, approve)]
    node.mine()
    assert found[1].to_address == node.receipt(creation)["contractAddress"].lower()
    assert [watch.poll(), watch.poll()] == [[], []]
    assert watch.pending_calls() == []


def test_falls_back_to_the_pending_transaction_filter(node: Node) -> None:
    rpc = Rewriting(node.rpc, refuse=["txpool_content"])
    watch = MempoolWatch(CHAIN, rpc, [node.cold])
    assert watch.poll() == []  # installs the filter: it reports what arrives from now on
    assert watch.source is MempoolSource.FILTER
    kept = node.send(node.cold, node.dest, ETH)
    dropped = node.send(node.cold, node.dest, 2 * ETH)
    node.send(node.outsider, node.dest, ETH)
    assert summary(watch.poll()) == [
        (kept, TransferStatus.PENDING),
        (dropped, TransferStatus.PENDING),
    ]
    assert watch.poll() == []
    node.rpc.call("anvil_dropTransaction", [dropped])
    assert watch.poll() == []
    assert summary(watch.poll()) == [(dropped, TransferStatus.ORPHANED)]
    node.mine()
    assert [watch.poll(), watch.poll()] == [[], []]
    assert rpc.calls.count("txpool_content") == 1


def test_lost_filter_is_reinstalled(node: Node) -> None:
    rpc = Rewriting(node.rpc, refuse=["txpool_content"])
    watch = MempoolWatch(CHAIN, rpc, [node.cold])
    watch.poll()
    node.rpc.call("eth_uninstallFilter", [watch._filter])
    assert watch.poll() == []
    assert rpc.calls.count("eth_newPendingTransactionFilter") == 2
    tx = node.send(node.cold, node.dest, ETH)
    assert summary(watch.poll()) == [(tx, TransferStatus.PENDING)]


def test_a_node_without_mempool_says_so_once(node: Node) -> None:
    rpc = Rewriting(node.rpc, refuse=["txpool_content", "eth_newPendingTransactionFilter"])
    notices: list[str] = []
    watch = MempoolWatch(CHAIN, rpc, [node.cold], notice=notices.append)
    node.send(node.cold, node.dest, ETH)
    assert [watch.poll() for _ in range(3)] == [[], [], []]
    assert watch.source is MempoolSource.NONE
    assert len(notices) == 1 and "NOT seen" in notices[0] and "メンプール" in notices[0]
    assert len(rpc.calls) == 2


def test_retriable_error_while_probing_propagates_and_probes_again(node: Node) -> None:
    class Flaky(Rewriting):
        def call(self, method: str, params: Sequence[Any]) -> Any:
            if not self.calls:
                self.calls.append(method)
                raise RetriableRpcError("timeout")
            return super().call(method, params)

    watch = MempoolWatch(CHAIN, Flaky(node.rpc), [node.cold])
    with pytest.raises(RetriableRpcError):
        watch.poll()
    assert watch.source is None
    watch.poll()
    assert watch.source is MempoolSource.TXPOOL


def _first_tx(pool: Any) -> dict[str, Any]:
    [by_nonce] = pool["pending"].values()
    [tx] = by_nonce.values()
    return dict(tx)


@pytest.mark.parametrize(
    ("corrupt", "path"),
    [
        (lambda pool: [], "result is not an object"),
        (lambda pool: {"queued": {}}, "result.pending is not an object"),
        (lambda pool: {**pool, "pending": {"cold": {}}}, "result.pending.cold is not an address"),
        (
            lambda pool: {**pool, "pending": {k: [] for k in pool["pending"]}},
            "result.pending.0x70997970c51812dc3a010c7d01b50e0d17dc79c8 is not an object",
        ),
        (
            lambda pool: {
                **pool,
                "pending": {k: {"0x0": _first_tx(pool)} for k in pool["pending"]},
            },
            ".0x0 is not a decimal nonce key",
        ),
        (
            lambda pool: {
                **pool,
                "pending": {k: {"0": {**_first_tx(pool), "value": 5}} for k in pool["pending"]},
            },
            ".0.value is not a hex quantity: 5",
        ),
        (
            lambda pool: {
                **pool,
                "pending": {
                    k: {"0": {**_first_tx(pool), "input": "0xabc"}} for k in pool["pending"]
                },
            },
            ".0.input is not hex data",
        ),
        (
            lambda pool: {
                **pool,
                "pending": {k: {"1": _first_tx(pool)} for k in pool["pending"]},
            },
            ".1 holds a transaction of",
        ),
    ],
)
def test_malformed_txpool_answers_name_the_path(
    node: Node, corrupt: Callable[[Any], Any], path: str
) -> None:
    node.send(node.cold, node.dest, ETH)
    rpc = Rewriting(node.rpc, rewrite={"txpool_content": lambda r: corrupt(copy.deepcopy(r))})
    watch = MempoolWatch(CHAIN, rpc, [node.cold])
    with pytest.raises(MalformedRpcResponse, match="txpool_content") as err:
        watch.poll()
    assert path in str(err.value)


def test_malformed_filter_answers_name_the_path(node: Node) -> None:
    rpc = Rewriting(node.rpc, refuse=["txpool_content"])
    watch = MempoolWatch(CHAIN, rpc, [node.cold])
    watch.poll()
    rpc.rewrite = {"eth_getFilterChanges": len}
    with pytest.raises(MalformedRpcResponse, match="eth_getFilterChanges: result is not a list"):
        watch.poll()
    rpc.rewrite = {}
    watch = MempoolWatch(CHAIN, rpc, [node.cold])
    watch.poll()
    rpc.rewrite = {"eth_getTransactionByHash": lambda r: {**r, "from": None}}
    node.send(node.cold, node.dest, ETH)
    with pytest.raises(MalformedRpcResponse, match=r"result\.from is not a 20-byte") as err:
        watch.poll()
    assert "eth_getTransactionByHash" in str(err.value)


def test_queued_transactions_count_as_pending(node: Node) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold])
    gapped = node.send(node.cold, node.dest, ETH, nonce="0x3")  # nonces 0-2 not sent: queued
    assert summary(watch.poll()) == [(gapped, TransferStatus.PENDING)]
    assert watch.poll() == []


def test_an_error_mid_poll_loses_nothing(node: Node) -> None:
    rpc = Rewriting(node.rpc)
    watch = MempoolWatch(CHAIN, rpc, [node.cold])
    first = node.send(node.cold, node.dest, ETH)
    assert summary(watch.poll()) == [(first, TransferStatus.PENDING)]
    node.rpc.call("anvil_dropTransaction", [first])
    second = node.send(node.cold, node.dest, 2 * ETH)

    def timeout(_: Any) -> Any:
        raise RetriableRpcError("timeout")

    rpc.rewrite = {"eth_getTransactionReceipt": timeout}
    with pytest.raises(RetriableRpcError):
        watch.poll()
    rpc.rewrite = {}
    assert summary(watch.poll()) == [(second, TransferStatus.PENDING)]
    assert summary(watch.poll()) == [(first, TransferStatus.ORPHANED)]


def test_filter_hashes_survive_an_error_while_looking_them_up(node: Node) -> None:
    rpc = Rewriting(node.rpc, refuse=["txpool_content"])
    watch = MempoolWatch(CHAIN, rpc, [node.cold])
    watch.poll()
    tx = node.send(node.cold, node.dest, ETH)

    def timeout(_: Any) -> Any:
        raise RetriableRpcError("timeout")

    rpc.rewrite = {"eth_getTransactionByHash": timeout}
    with pytest.raises(RetriableRpcError):
        watch.poll()  # the node has handed the hash out: it will not list it again
    rpc.rewrite = {}
    assert summary(watch.poll()) == [(tx, TransferStatus.PENDING)]
    assert watch.poll() == []


def test_a_pending_transaction_mined_but_reverted_is_withdrawn(node: Node) -> None:
    """The block will never carry a confirmed transfer for it: the pending one is orphaned."""
    from drainwatch.drill_contracts import REVERTER_INITCODE

    deploy = node.send(node.outsider, None, 0, REVERTER_INITCODE, gas=hex(200_000))
    node.mine()
    reverter = node.receipt(deploy)["contractAddress"]
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold])
    tx = node.send(node.cold, reverter, ETH, gas=hex(100_000))
    assert summary(watch.poll()) == [(tx, TransferStatus.PENDING)]
    node.mine()
    assert node.receipt(tx)["status"] == "0x0"
    assert summary(watch.poll()) == [(tx, TransferStatus.ORPHANED)]
    assert watch.poll() == []


def test_a_cold_drain_is_alerted_from_the_mempool_then_confirmed(node: Node, tmp_path: Any) -> None:
    """The follower announces the drain while it waits in the mempool (alert state pending),
    and the same alert moves to confirmed when the block carries it; a late mempool sighting
    never sends it back."""
    from datetime import UTC, datetime

    from alerts.rules import RulePolicy, WalletBook
    from drainwatch.bus.inprocess import InProcessBus
    from drainwatch.model import (
        AlertState,
        Chain,
        ChainKind,
        Custody,
        CustodyKind,
        Wallet,
        WalletRole,
    )
    from drainwatch.processor import Processor
    from drainwatch.store import open_store
    from watchers.evm.follower import EvmFollower

    seen: list[tuple[str, AlertState]] = []

    class Sink:
        def deliver(self, alert: Any, text_en: str, text_ja: str) -> None:
            seen.append((alert.tx_hash, alert.state))

    cold = Wallet(
        "eth-cold",
        CHAIN,
        WalletRole.COLD,
        Custody(CustodyKind.MULTISIG, 2, ("a", "b")),
        (node.cold,),
    )
    chain = Chain(CHAIN, ChainKind.EVM, "devnet", "ETH", 18, confirmations=1)
    store = open_store(f"sqlite:///{tmp_path}/m.db")
    bus = InProcessBus()
    processor = Processor(
        store,
        WalletBook([cold]),
        {CHAIN: chain},
        {},
        RulePolicy(),
        [Sink()],
        lambda: datetime.now(UTC),
    )
    sub = bus.subscribe("t", "p")
    node.mine()
    head = int(node.rpc.call("eth_blockNumber", []), 16)
    follower = EvmFollower(chain, node.rpc, store, bus, "t", [node.cold], start_height=head + 1)
    drain = node.send(node.cold, node.dest, 7 * ETH)
    follower.step()
    sub.poll(processor.handle_message)
    assert seen == [(drain, AlertState.PENDING)]
    node.mine()
    follower.step()
    sub.poll(processor.handle_message)
    assert seen == [(drain, AlertState.PENDING), (drain, AlertState.CONFIRMED)]
    [stored] = store.transfers(chain=CHAIN)
    assert stored.status.value == "confirmed" and stored.block is not None
