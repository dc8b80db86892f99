"""The mempool watch on a real anvil with automine off: pending outflows announced once, mined
ones left to the follower, replaced and dropped ones orphaned after the grace period, the filter
fallback, a node with no mempool, and malformed pool answers."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from drainwatch.errors import MalformedRpcResponse, RetriableRpcError, RpcError
from drainwatch.events import ControlChangeSeen, Event, TransferSeen
from drainwatch.model import (
    LAX_ENCODING,
    BlockRef,
    ControlKind,
    Transfer,
    TransferKind,
    TransferStatus,
)
from tests.fixtures.evm_nodes import start_anvil
from tests.fixtures.processing import make_processor
from tests.fixtures.solc import Contract, SolcJs
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


def test_dropped_transaction_is_orphaned_after_the_longer_drop_period(node: Node) -> None:
    """Its sender's nonce has not moved past it: out of the pool for ``grace_polls`` may be a
    lagging node, so it is withdrawn only after ``drop_polls`` (dropped or evicted)."""
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold], grace_polls=2, drop_polls=5)
    tx = node.send(node.cold, node.dest, ETH)
    assert summary(watch.poll()) == [(tx, TransferStatus.PENDING)]
    node.rpc.call("anvil_dropTransaction", [tx])
    assert [watch.poll() for _ in range(4)] == [[], [], [], []]
    assert summary(watch.poll()) == [(tx, TransferStatus.ORPHANED)]
    assert watch.poll() == []


def test_a_transaction_whose_nonce_was_taken_by_another_mined_one_is_withdrawn(
    node: Node,
) -> None:
    """Replaced and the replacement already mined (never seen in the pool): the sender's
    confirmed nonce has passed it and it has no receipt, so it is withdrawn after the grace."""
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold], grace_polls=2, drop_polls=100)
    first = node.send(node.cold, node.dest, ETH)
    assert summary(watch.poll()) == [(first, TransferStatus.PENDING)]
    node.rpc.call("anvil_dropTransaction", [first])
    second = node.send(node.cold, node.outsider, 2 * ETH, nonce="0x0")
    node.mine()
    assert node.receipt(second) is not None and node.receipt(first) is None
    assert watch.poll() == []
    assert summary(watch.poll()) == [(first, TransferStatus.ORPHANED)]


def _hiding(hidden: set[str]) -> Callable[[Any], Any]:
    """A lagging backend's txpool_content: the ``hidden`` hashes are not listed."""

    def rewrite(pool: Any) -> Any:
        pool = copy.deepcopy(pool)
        for part in ("pending", "queued"):
            for by_nonce in pool[part].values():
                for nonce in [n for n, tx in by_nonce.items() if tx["hash"].lower() in hidden]:
                    del by_nonce[nonce]
        return pool

    return rewrite


def test_a_lagging_node_that_does_not_list_a_pending_tx_withdraws_nothing(node: Node) -> None:
    """After a failover, a backend that does not list a transaction still pending (or already
    mined and not yet seen so) must not make it "WITHDRAWN: nothing moved"."""
    rpc = Rewriting(node.rpc)
    watch = MempoolWatch(CHAIN, rpc, [node.cold], grace_polls=2, drop_polls=30)
    tx = node.send(node.cold, node.dest, ETH)
    assert summary(watch.poll()) == [(tx, TransferStatus.PENDING)]
    rpc.rewrite = {"txpool_content": _hiding({tx})}
    assert [watch.poll() for _ in range(6)] == [[]] * 6  # past the grace: nothing withdrawn
    assert "eth_getTransactionCount" in rpc.calls  # the confirmed nonce was asked
    rpc.rewrite = {}
    assert watch.poll() == []  # listed again: still the one announcement
    rpc.rewrite = {"txpool_content": _hiding({tx}), "eth_getTransactionReceipt": lambda r: None}
    node.mine()  # mined, and the lagging backend knows neither that nor the new nonce ...
    rpc.rewrite["eth_getTransactionCount"] = lambda r: "0x0"
    assert [watch.poll() for _ in range(4)] == [[]] * 4
    rpc.rewrite = {}  # ... until a backend that has the block answers
    assert watch.poll() == []  # the native value is the follower's, confirmed from the block
    assert tx not in watch._tracked


def test_a_mined_transaction_listed_again_by_a_lagging_backend_is_not_announced_again(
    node: Node,
) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold])
    approve = "0x095ea7b3" + node.outsider[2:].rjust(64, "0") + "f" * 64
    tx = node.send(node.cold, node.dest, 0, approve)
    before = node.rpc.call("txpool_content", [])
    [pending] = watch.poll()
    assert isinstance(pending, ControlChangeSeen) and pending.change.tx_hash == tx
    node.mine()
    [closed] = watch.poll()
    assert isinstance(closed, ControlChangeSeen)
    assert closed.change.status is TransferStatus.SUPERSEDED
    stale = Rewriting(node.rpc, rewrite={"txpool_content": lambda _: copy.deepcopy(before)})
    watch._rpc = stale  # the failover hands the watch to a backend a block behind
    assert [watch.poll() for _ in range(3)] == [[], [], []]  # not PENDING again, nor withdrawn


def test_contract_calls_tracked_value_and_known_calldata_announced(node: Node) -> None:
    watch = MempoolWatch(CHAIN, node.rpc, [node.cold])
    approve = "0x095ea7b3" + node.outsider[2:].rjust(64, "0") + "f" * 64
    call = node.send(node.cold, node.dest, 0, approve)
    unknown = node.send(node.cold, node.dest, 0, "0x12345678")
    paying = node.send(node.cold, node.dest, 5, "0xd0e30db0")
    creation = node.send(node.cold, None, 7, "0x00")
    events = watch.poll()
    found = [e.transfer for e in events if isinstance(e, TransferSeen)]
    assert [(t.tx_hash, t.amount) for t in found] == [(paying, 5), (creation, 7)]
    [grant] = [e.change for e in events if isinstance(e, ControlChangeSeen)]
    assert (grant.tx_hash, grant.index, grant.kind, grant.subject, grant.value) == (
        call,
        "pending:0",
        ControlKind.APPROVAL,
        node.outsider,
        2**256 - 1,
    )
    assert [(c.hash, c.value) for c in watch.pending_calls()] == [(call, 0), (unknown, 0)]
    node.mine()
    assert found[1].to_address == node.receipt(creation)["contractAddress"].lower()
    [closed] = watch.poll()  # mined: the approval's reading is superseded, the values left alone
    assert isinstance(closed, ControlChangeSeen)
    assert (closed.change.index, closed.change.status) == ("pending:0", TransferStatus.SUPERSEDED)
    assert closed.change.block is not None
    assert closed.change.block.height == int(node.receipt(call)["blockNumber"], 16)
    assert watch.poll() == []
    assert watch.pending_calls() == []


def test_falls_back_to_the_pending_transaction_filter(node: Node) -> None:
    rpc = Rewriting(node.rpc, refuse=["txpool_content"])
    watch = MempoolWatch(CHAIN, rpc, [node.cold], drop_polls=3)
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
    assert [watch.poll(), watch.poll()] == [[], []]
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


def test_queued_transactions_of_watched_senders_count_as_pending(node: Node) -> None:
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
    processor = make_processor(
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


# --- pending calls that carry no value: compiled contracts, each kind mined and dropped --------

MAX_UINT = 2**256 - 1
ZERO = "0x" + "00" * 20


def abi_call(signature: str, *args: Any) -> str:
    """Calldata for ``signature`` (overloads included, which the compiled ABI helper merges)."""
    types = signature[signature.index("(") + 1 : -1].split(",")
    return "0x" + (keccak(text=signature)[:4] + encode(types, list(args))).hex()


def exec_tx(to: str, value: int, data: str, operation: int, safe_tx_gas: int = 0) -> str:
    """A Safe ``execTransaction``; the fixture checks no signatures, three are sent anyway."""
    return abi_call(
        "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)",
        to,
        value,
        bytes.fromhex(data[2:]),
        operation,
        safe_tx_gas,
        0,
        0,
        ZERO,
        ZERO,
        b"\x01" * 65 * 3,
    )


class Kit:
    """anvil (automine off) with the compiled contracts deployed: an ERC-20 and an ERC-1155
    held by the cold wallet, a Safe-like wallet (MiniSafe behind WalletProxy) owned by two
    unwatched signers, and the Bybit-style slot-0 writer."""

    def __init__(self, node: Node, contracts: dict[str, Contract]) -> None:
        self.node, self.contracts = node, contracts
        accounts = node.accounts
        self.deployer, self.signer, self.signer2 = accounts[0], accounts[6], accounts[7]
        self.attacker, self.rogue = accounts[8], accounts[9]
        cold = node.cold
        self.token = self.deploy("AllowanceToken", cold, 10**6 * ETH)
        self.multi = self.deploy("MultiToken", cold, [1, 2, 3], 100)
        singleton = self.deploy("MiniSafe")
        setup = contracts["MiniSafe"].calldata("setup", [self.signer, self.signer2], 1)
        self.safe = self.deploy("WalletProxy", singleton, bytes.fromhex(setup[2:]))
        self.writer = self.deploy("SlotZeroWriter")
        self.mined(node.send(self.deployer, self.safe, 10 * ETH))
        self.mined(
            node.send(cold, self.token, 0, abi_call("transfer(address,uint256)", self.safe, 50))
        )
        # an allowance the attacker got (by phishing, say) before the pull below
        self.mined(
            node.send(
                cold, self.token, 0, abi_call("approve(address,uint256)", self.attacker, 10**3)
            )
        )
        self.watched = [cold, self.safe]

    def deploy(self, name: str, *args: Any) -> str:
        tx = self.node.send(self.deployer, None, 0, self.contracts[name].initcode(*args))
        return str(self.mined(tx)["contractAddress"]).lower()

    def mined(self, tx: str) -> Any:
        self.node.mine()
        receipt = self.node.receipt(tx)
        assert receipt is not None and receipt["status"] == "0x1", f"{tx} failed"
        return receipt

    def slot0(self) -> str:
        word = self.node.rpc.call("eth_getStorageAt", [self.safe, "0x0", "latest"])
        return "0x" + str(word)[-40:]


@pytest.fixture
def kit(node: Node, solc: SolcJs) -> Kit:
    return Kit(node, solc.compile_fixtures())


#: (sender, to, calldata) of each kind, and what its pending announcement must say:
#: (index, kind, from / wallet, to / subject, asset / contract, amount / value).
KINDS: dict[str, Callable[[Kit], tuple[tuple[str, str, str], list[tuple[Any, ...]]]]] = {
    "erc20-transfer": lambda k: (
        (k.node.cold, k.token, abi_call("transfer(address,uint256)", k.attacker, 1000)),
        [("pending:0", TransferKind.TOKEN, k.node.cold, k.attacker, k.token, 1000)],
    ),
    "erc20-pull-by-a-stranger": lambda k: (
        (
            k.attacker,
            k.token,
            abi_call("transferFrom(address,address,uint256)", k.node.cold, k.attacker, 500),
        ),
        [("pending:0", TransferKind.TOKEN, k.node.cold, k.attacker, k.token, 500)],
    ),
    "erc20-approve": lambda k: (
        (k.node.cold, k.token, abi_call("approve(address,uint256)", k.attacker, MAX_UINT)),
        [("pending:0", ControlKind.APPROVAL, k.node.cold, k.attacker, k.token, MAX_UINT)],
    ),
    "erc20-increase-allowance": lambda k: (
        (k.node.cold, k.token, abi_call("increaseAllowance(address,uint256)", k.attacker, 7)),
        [("pending:0", ControlKind.APPROVAL, k.node.cold, k.attacker, k.token, 7)],
    ),
    "erc1155-set-approval-for-all": lambda k: (
        (k.node.cold, k.multi, abi_call("setApprovalForAll(address,bool)", k.attacker, True)),
        [("pending:0", ControlKind.APPROVAL_FOR_ALL, k.node.cold, k.attacker, k.multi, 1)],
    ),
    "erc1155-safe-transfer": lambda k: (
        (
            k.node.cold,
            k.multi,
            abi_call(
                "safeTransferFrom(address,address,uint256,uint256,bytes)",
                k.node.cold,
                k.attacker,
                1,
                40,
                b"",
            ),
        ),
        [("pending:0", TransferKind.TOKEN, k.node.cold, k.attacker, f"{k.multi}/1", 40)],
    ),
    "erc1155-safe-batch-transfer": lambda k: (
        (
            k.node.cold,
            k.multi,
            abi_call(
                "safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)",
                k.node.cold,
                k.attacker,
                [2, 3],
                [10, 20],
                b"",
            ),
        ),
        [
            ("pending:0", TransferKind.TOKEN, k.node.cold, k.attacker, f"{k.multi}/2", 10),
            ("pending:1", TransferKind.TOKEN, k.node.cold, k.attacker, f"{k.multi}/3", 20),
        ],
    ),
    "safe-inner-value": lambda k: (
        (k.signer, k.safe, exec_tx(k.attacker, 4 * ETH, "0x", 0)),
        [("pending:0", TransferKind.INTERNAL, k.safe, k.attacker, "native", 4 * ETH)],
    ),
    "safe-inner-token-transfer": lambda k: (
        (
            k.signer,
            k.safe,
            exec_tx(k.token, 0, abi_call("transfer(address,uint256)", k.attacker, 30), 0),
        ),
        [("pending:0", TransferKind.TOKEN, k.safe, k.attacker, k.token, 30)],
    ),
    "safe-add-owner-with-threshold": lambda k: (
        (
            k.signer,
            k.safe,
            exec_tx(
                k.safe, 0, abi_call("addOwnerWithThreshold(address,uint256)", k.attacker, 2), 0
            ),
        ),
        [
            ("pending:0", ControlKind.OWNER_ADDED, k.safe, k.attacker, None, None),
            ("pending:1", ControlKind.THRESHOLD_CHANGED, k.safe, None, None, 2),
        ],
    ),
    "safe-set-fallback-handler": lambda k: (
        (
            k.signer,
            k.safe,
            exec_tx(k.safe, 0, abi_call("setFallbackHandler(address)", k.rogue), 0),
        ),
        [("pending:0", ControlKind.FALLBACK_HANDLER_CHANGED, k.safe, k.rogue, None, None)],
    ),
    "safe-delegatecall-bybit": lambda k: (
        (
            k.signer,
            k.safe,
            exec_tx(k.writer, 0, abi_call("transfer(address,uint256)", k.rogue, 0), 1, 45746),
        ),
        [("pending:0", ControlKind.DELEGATE_CALL, k.safe, k.writer, None, None)],
    ),
}


def shape(events: list[Event]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, TransferSeen):
            t = e.transfer
            out.append((t.index, t.kind, t.from_address, t.to_address, t.asset, t.amount))
        elif isinstance(e, ControlChangeSeen):
            c = e.change
            out.append((c.index, c.kind, c.wallet_address, c.subject, c.contract, c.value))
    return out


def verdicts(events: list[Event]) -> list[tuple[str, str, TransferStatus, BlockRef | None]]:
    items = [e.transfer if isinstance(e, TransferSeen) else e.change for e in events]  # type: ignore[union-attr]
    return [(i.tx_hash or "", i.index, i.status, i.block) for i in items]


#: Kinds nothing in a block reports: mined, their reading ends EXECUTED (the news itself).
EXECUTED_KINDS = {"safe-set-fallback-handler", "safe-delegatecall-bybit"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_pending_call_is_announced_then_closed_when_mined(kit: Kit, kind: str) -> None:
    (sender, to, data), expected = KINDS[kind](kit)
    watch = MempoolWatch(CHAIN, kit.node.rpc, kit.watched)
    tx = kit.node.send(sender, to, 0, data)
    announced = watch.poll()
    assert shape(announced) == expected
    assert verdicts(announced) == [(tx, x[0], TransferStatus.PENDING, None) for x in expected]
    assert watch.poll() == []
    receipt = kit.mined(tx)
    block = BlockRef(int(receipt["blockNumber"], 16), receipt["blockHash"].lower())
    closed = watch.poll()
    # The same keys, closed: the block's own events (log:N, trace:..., slot:0) take over,
    # except for what no block event reports: that was EXECUTED.
    status = TransferStatus.EXECUTED if kind in EXECUTED_KINDS else TransferStatus.SUPERSEDED
    assert shape(closed) == expected
    assert verdicts(closed) == [(tx, x[0], status, block) for x in expected]
    assert [watch.poll(), watch.poll()] == [[], []]
    if kind == "safe-delegatecall-bybit":
        assert kit.slot0() == kit.rogue  # the chain did what Bybit's Safe did: singleton gone


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_pending_call_dropped_is_withdrawn(kit: Kit, kind: str) -> None:
    (sender, to, data), expected = KINDS[kind](kit)
    watch = MempoolWatch(CHAIN, kit.node.rpc, kit.watched, drop_polls=3)
    tx = kit.node.send(sender, to, 0, data)
    assert shape(watch.poll()) == expected
    kit.node.rpc.call("anvil_dropTransaction", [tx])
    assert [watch.poll(), watch.poll()] == [[], []]  # within the drop period: the nonce is free
    withdrawn = watch.poll()
    assert shape(withdrawn) == expected
    assert verdicts(withdrawn) == [(tx, x[0], TransferStatus.ORPHANED, None) for x in expected]
    kit.node.mine()
    assert kit.node.receipt(tx) is None
    assert [watch.poll(), watch.poll()] == [[], []]


def test_a_safe_transaction_that_fails_inside_or_reverts_is_withdrawn(kit: Kit) -> None:
    watch = MempoolWatch(CHAIN, kit.node.rpc, kit.watched)
    too_much = abi_call("transfer(address,uint256)", kit.attacker, 10**30)  # the Safe holds 50
    # With a gas budget, Safe logs ExecutionFailure in a transaction that succeeds ...
    failed = kit.node.send(kit.signer, kit.safe, 0, exec_tx(kit.token, 0, too_much, 0, 50_000))
    # ... without one, the whole transaction reverts (sent with a gas limit: no estimate).
    # (its signer is not watched: simulated first, it reverts, so it is not even announced)
    reverted = kit.node.send(
        kit.signer, kit.safe, 0, exec_tx(kit.token, 0, too_much, 0), gas=hex(300_000)
    )
    assert [v[:3] for v in verdicts(watch.poll())] == [
        (failed, "pending:0", TransferStatus.PENDING),
    ]
    kit.node.mine()
    assert kit.node.receipt(failed)["status"] == "0x1"
    assert kit.node.receipt(reverted)["status"] == "0x0"
    assert verdicts(watch.poll()) == [
        (failed, "pending:0", TransferStatus.ORPHANED, None),
    ]


def test_transactions_that_concern_no_watched_wallet_are_ignored(kit: Kit) -> None:
    watch = MempoolWatch(CHAIN, kit.node.rpc, [kit.node.cold])  # the Safe is not watched here
    kit.node.send(kit.signer, kit.safe, 0, exec_tx(kit.attacker, ETH, "0x", 0))
    pull = abi_call("transferFrom(address,address,uint256)", kit.attacker, kit.rogue, 1)
    kit.node.send(kit.attacker, kit.token, 0, pull)  # debits no watched wallet
    kit.node.send(kit.node.cold, kit.token, 0, abi_call("balanceOf(address)", kit.node.cold))
    assert watch.poll() == []


def test_pending_alerts_hand_over_to_the_block_and_nothing_stays_pending(
    kit: Kit, tmp_path: Any
) -> None:
    """Follower, processor, store and rules together: a Bybit-style Safe transaction and a cold
    token transfer raise PENDING alerts from the mempool; once mined, those alerts end
    SUPERSEDED (not a second leak) and the block's own alerts are raised, each once."""
    from datetime import UTC, datetime

    from alerts.rules import COLD_OUTFLOW, RulePolicy, WalletBook
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
    from drainwatch.store import open_store
    from watchers.evm.follower import EvmFollower

    delivered: list[tuple[Alert, str, str]] = []

    class Sink:
        def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
            delivered.append((alert, text_en, text_ja))

    book = WalletBook(
        [
            Wallet("eth-cold", CHAIN, WalletRole.COLD, Custody(CustodyKind.HSM), (kit.node.cold,)),
            Wallet(
                "eth-safe",
                CHAIN,
                WalletRole.COLD,
                Custody(CustodyKind.MULTISIG, 1, ("s1", "s2")),
                (kit.safe,),
            ),
        ]
    )
    chain = Chain(CHAIN, ChainKind.EVM, "devnet", "ETH", 18, confirmations=1)
    store = open_store(f"sqlite:///{tmp_path}/p.db")
    bus = InProcessBus()
    processor = make_processor(
        store, book, {CHAIN: chain}, {}, RulePolicy(), [Sink()], lambda: datetime.now(UTC)
    )
    sub = bus.subscribe("t", "p")
    follower = EvmFollower(
        chain,
        kit.node.rpc,
        store,
        bus,
        "t",
        book.addresses(CHAIN),
        start_height=int(kit.node.rpc.call("eth_blockNumber", []), 16) + 1,
        safes=book.multisig_addresses(CHAIN),
    )
    bybit = exec_tx(kit.writer, 0, abi_call("transfer(address,uint256)", kit.rogue, 0), 1, 45746)
    hijack = kit.node.send(kit.signer, kit.safe, 0, bybit)
    leak = kit.node.send(
        kit.node.cold, kit.token, 0, abi_call("transfer(address,uint256)", kit.attacker, 1000)
    )
    follower.step()
    sub.poll(processor.handle_message)
    pending = {(a.rule_id, a.tx_hash): a for a, _, _ in delivered}
    assert {k: (a.state, a.severity) for k, a in pending.items()} == {
        ("control/delegate_call", hijack): (AlertState.PENDING, Severity.CRITICAL),
        (COLD_OUTFLOW, leak): (AlertState.PENDING, Severity.CRITICAL),
    }
    [(_, en, ja)] = [d for d in delivered if d[0].rule_id == "control/delegate_call"]
    assert "DELEGATECALL" in en and "not executed yet" in en and "Bybit" in en
    assert "未実行" in ja and "DELEGATECALL" in ja
    delivered.clear()

    kit.node.mine()
    follower.step()
    sub.poll(processor.handle_message)
    by_id = {a.id: a for a, _, _ in delivered}
    assert len(by_id) == len(delivered)  # nothing delivered twice
    hijacked = pending[("control/delegate_call", hijack)]
    leaked = pending[(COLD_OUTFLOW, leak)]
    # The token transfer has a block event of its own: its pending alert hands over ...
    assert by_id[leaked.id].state is AlertState.SUPERSEDED and by_id[leaked.id].block is not None
    # ... the DELEGATECALL has none: it is news, at full severity, not a quiet hand-over.
    executed = by_id[hijacked.id]
    assert (executed.state, executed.severity) == (AlertState.EXECUTED, Severity.CRITICAL)
    assert executed.block is not None
    confirmed = sorted(
        (a.rule_id, a.tx_hash or "") for a in by_id.values() if a.state is AlertState.CONFIRMED
    )
    assert confirmed == sorted(
        [(COLD_OUTFLOW, leak), ("control/master_copy_changed", "")]  # slot 0, read from storage
    )
    texts = {a.id: (en, ja) for a, en, ja in delivered}
    en, ja = texts[hijacked.id]
    assert en.startswith("[CRITICAL] EXECUTED: ")
    assert f"EXECUTED in block {executed.block.height}" in en and "superseded" not in en
    assert f"ブロック {executed.block.height} で実行されました" in ja
    en, ja = texts[leaked.id]
    assert "the block's own alert takes over" in en and "承認後に確定" in ja
    assert all(a.state is not AlertState.PENDING for a in store.alerts())
    assert kit.slot0() == kit.rogue
    delivered.clear()
    follower.step()
    sub.poll(processor.handle_message)
    assert delivered == []


def test_strangers_cannot_page_for_free(kit: Kit) -> None:
    """A stranger's transaction costs nothing until mined: a nonce-gapped one (queued: it may
    never run) is not read, and an executable one is simulated first (eth_call): one that
    reverts -- no allowance, a Safe transaction no owner signed -- pages no one. Our own
    wallet's transactions are announced as before, even one that will revert."""
    node = kit.node
    rpc = Rewriting(node.rpc)
    watch = MempoolWatch(CHAIN, rpc, kit.watched)
    pull = abi_call("transferFrom(address,address,uint256)", node.cold, kit.attacker, 1)
    # the attacker holds an allowance: this pull would run, if its nonce gap were ever filled
    nonce = int(node.rpc.call("eth_getTransactionCount", [kit.attacker, "pending"]), 16)
    gapped = node.send(kit.attacker, kit.token, 0, pull, nonce=hex(nonce + 5), gas=hex(10**5))
    queued = node.rpc.call("txpool_content", [])["queued"]
    assert gapped in {tx["hash"].lower() for txs in queued.values() for tx in txs.values()}
    # the rogue holds none: executable, but it reverts
    pull_rogue = abi_call("transferFrom(address,address,uint256)", node.cold, kit.rogue, 1)
    node.send(kit.rogue, kit.token, 0, pull_rogue, gas=hex(10**5))
    # a Safe transaction that no owner submitted (MiniSafe's stand-in for bad signatures)
    forged = exec_tx(kit.rogue, ETH, "0x", 0)
    node.send(kit.rogue, kit.safe, 0, forged, gas=hex(3 * 10**5))
    assert watch.poll() == []
    assert rpc.calls.count("eth_call") == 2  # the queued one was not even simulated
    # our own wallet: announced as it is, without simulation (a page is always worth it)
    too_much = abi_call("transfer(address,uint256)", kit.attacker, 10**40)
    own = node.send(node.cold, kit.token, 0, too_much, gas=hex(10**5))
    assert verdicts(watch.poll()) == [(own, "pending:0", TransferStatus.PENDING, None)]
    assert rpc.calls.count("eth_call") == 2
    node.mine()
    assert verdicts(watch.poll()) == [(own, "pending:0", TransferStatus.ORPHANED, None)]
    assert watch.poll() == []


def test_a_dirty_from_pull_of_a_lax_token_is_seen_then_executed(kit: Kit) -> None:
    """An ABI coder v1 token (USDT) masks the address word: transferFrom with dirty high bytes
    in ``from`` still debits the cold wallet. Seen pending (a malformed call on the cold
    wallet: the simulation passes), and EXECUTED once mined."""
    node = kit.node
    lax = kit.deploy("LaxToken", node.cold, 10**6, kit.attacker)
    clean = abi_call("transferFrom(address,address,uint256)", node.cold, kit.attacker, 700)
    dirty = clean[:10] + "ff" * 12 + clean[34:]
    watch = MempoolWatch(CHAIN, node.rpc, kit.watched)
    tx = node.send(kit.attacker, lax, 0, dirty)
    announced = watch.poll()
    assert shape(announced) == [
        ("pending:0", ControlKind.MALFORMED_CALL, node.cold, None, lax, None)
    ]
    receipt = kit.mined(tx)
    block = BlockRef(int(receipt["blockNumber"], 16), receipt["blockHash"].lower())
    assert verdicts(watch.poll()) == [(tx, "pending:0", TransferStatus.EXECUTED, block)]
    [moved] = receipt["logs"]  # the block's own Transfer: from the cold wallet, masked
    assert "0x" + moved["topics"][1][-40:] == node.cold


def test_a_lax_encoded_bybit_delegatecall_is_read_as_the_delegatecall(kit: Kit) -> None:
    """Dirty high bits in ``to`` and ``operation``: a strict decoder refuses them, Safe 1.1.1
    (ABI coder v1) masks them and delegatecalls. Submitted by one of our own signer keys (a
    watched sender: announced without simulation), it is the DELEGATECALL with the
    malformed-encoding note. MiniSafe is compiled with ABI coder v2 and refuses it, so mined it
    reverts (withdrawn); submitted by a stranger, the simulation already says so (no page)."""
    node = kit.node
    data = exec_tx(kit.writer, 0, abi_call("transfer(address,uint256)", kit.rogue, 0), 1, 45746)
    words = [data[10 + 64 * i : 10 + 64 * (i + 1)] for i in range(4)]
    lax = data[:10] + "dead" + words[0][4:] + words[1] + words[2] + "ff" * 31 + "01"
    lax += data[10 + 64 * 4 :]
    watch = MempoolWatch(CHAIN, node.rpc, [*kit.watched, kit.signer])
    tx = node.send(kit.signer, kit.safe, 0, lax, gas=hex(3 * 10**5))
    [event] = watch.poll()
    assert isinstance(event, ControlChangeSeen)
    change = event.change
    assert (change.kind, change.subject, change.value) == (
        ControlKind.DELEGATE_CALL,
        kit.writer,
        LAX_ENCODING,
    )
    node.mine()
    assert node.receipt(tx)["status"] == "0x0"  # a v2 decoder: refused
    assert verdicts(watch.poll()) == [(tx, "pending:0", TransferStatus.ORPHANED, None)]
    stranger = MempoolWatch(CHAIN, node.rpc, kit.watched)
    node.send(kit.signer, kit.safe, 0, lax, gas=hex(3 * 10**5))
    assert stranger.poll() == []


def test_a_mined_reading_is_never_sent_back_to_pending_nor_paged_again(tmp_path: Any) -> None:
    """A lagging backend's late PENDING (or withdrawal) of a reading already SUPERSEDED or
    EXECUTED changes neither the stored fact nor the alert, and delivers nothing."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from alerts.rules import RulePolicy, WalletBook
    from drainwatch.model import (
        AlertState,
        Chain,
        ChainKind,
        ControlChange,
        Custody,
        CustodyKind,
        Wallet,
        WalletRole,
    )
    from drainwatch.store import open_store

    safe, token = "0x" + "1d" * 20, "0x" + "70" * 20
    book = WalletBook(
        [Wallet("safe", CHAIN, WalletRole.COLD, Custody(CustodyKind.MULTISIG, 1, ("a",)), (safe,))]
    )
    chain = Chain(CHAIN, ChainKind.EVM, "devnet", "ETH", 18, confirmations=1)
    delivered: list[tuple[str, AlertState]] = []

    class Sink:
        def deliver(self, alert: Any, text_en: str, text_ja: str) -> None:
            delivered.append((alert.rule_id, alert.state))

    store = open_store(f"sqlite:///{tmp_path}/g.db")
    processor = make_processor(
        store, book, {CHAIN: chain}, {}, RulePolicy(), [Sink()], lambda: datetime.now(UTC)
    )
    block = BlockRef(9, "0x" + "b9" * 32)
    change = ControlChange(
        chain=CHAIN,
        index="pending:0",
        wallet_address=safe,
        kind=ControlKind.DELEGATE_CALL,
        status=TransferStatus.PENDING,
        tx_hash="0x" + "46" * 32,
        subject="0x" + "96" * 20,
    )
    transfer = Transfer(
        chain=CHAIN,
        tx_hash="0x" + "47" * 32,
        index="pending:0",
        from_address=safe,
        to_address="0x" + "99" * 20,
        asset=token,
        amount=5,
        kind=TransferKind.TOKEN,
        status=TransferStatus.PENDING,
    )
    mined_change = replace(change, status=TransferStatus.EXECUTED, block=block)
    mined_transfer = replace(transfer, status=TransferStatus.SUPERSEDED, block=block)
    withdrawn_change = replace(change, status=TransferStatus.ORPHANED)
    withdrawn_transfer = replace(transfer, status=TransferStatus.ORPHANED)
    for event in (
        ControlChangeSeen(change),
        TransferSeen(transfer),
        ControlChangeSeen(mined_change),
        TransferSeen(mined_transfer),
        ControlChangeSeen(change),  # the lagging backend, after the watch forgot them
        TransferSeen(transfer),
        ControlChangeSeen(withdrawn_change),
        TransferSeen(withdrawn_transfer),
    ):
        processor.handle(event)
    assert delivered == [
        ("control/delegate_call", AlertState.PENDING),
        ("cold-outflow", AlertState.PENDING),
        ("control/delegate_call", AlertState.EXECUTED),
        ("cold-outflow", AlertState.SUPERSEDED),
    ]
    assert [c.status for c in store.control_changes(chain=CHAIN)] == [TransferStatus.EXECUTED]
    assert [t.status for t in store.transfers(chain=CHAIN)] == [TransferStatus.SUPERSEDED]
    assert sorted(a.state for a in store.alerts()) == sorted(
        [AlertState.EXECUTED, AlertState.SUPERSEDED]
    )
