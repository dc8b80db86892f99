"""The EVM follower and the processor against real Solidity contracts on anvil.

The contracts (tests/fixtures/solidity/) are compiled by solc-js in the test set-up: an ERC-20,
a forwarder that moves ETH by internal calls, a Safe-like contract wallet (a proxy delegating to
a singleton kept in slot 0) and a UUPS vault behind an EIP-1967 proxy. Every way value and
control leave the watched wallets is exercised once -- token transfers, an approval and the pull
it allows, internal ETH transfers, owner and threshold changes, a silent singleton swap and an
announced upgrade -- and each must be detected, stored and alerted exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alerts.rules import (
    BALANCE_FALL,
    COLD_OUTFLOW,
    UNPLANNED_OUTFLOW,
    RulePolicy,
    WalletBook,
)
from drainwatch import codec
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.events import ControlChangeSeen, TransferSeen
from drainwatch.model import (
    Alert,
    AlertState,
    Chain,
    ChainKind,
    ControlKind,
    Custody,
    CustodyKind,
    Severity,
    TransferKind,
    TransferStatus,
    Wallet,
    WalletRole,
)
from drainwatch.ports import Message
from drainwatch.store import open_store
from tests.fixtures.evm_nodes import AnvilNode
from tests.fixtures.processing import make_processor
from tests.fixtures.solc import Contract, SolcJs, event_topic
from watchers.evm.follower import EvmFollower
from watchers.evm.slots import EIP1967_IMPLEMENTATION_SLOT
from watchers.jsonrpc import HttpJsonRpc

TOPIC = "sol.events"
ETH = 10**18
TOKENS = 10**18
MAX_UINT = 2**256 - 1


class Sink:
    def __init__(self) -> None:
        self.alerts: list[tuple[Alert, str, str]] = []

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        self.alerts.append((alert, text_en, text_ja))


class Chainside:
    """Deploys and calls the compiled contracts on anvil through ``AnvilNode``."""

    def __init__(self, node: AnvilNode, contracts: dict[str, Contract]) -> None:
        self.node = node
        self.contracts = contracts

    def deploy(self, name: str, *args: Any) -> str:
        # Deployments need more gas than AnvilNode.send's fixed 200,000: let anvil estimate it.
        tx = {"from": self.node.accounts[0], "data": self.contracts[name].initcode(*args)}
        receipt = self._mined(str(self.node.rpc.call("eth_sendTransaction", [tx])))
        address = receipt["contractAddress"]
        assert address, f"deploying {name} created no contract"
        return str(address)

    def transact(
        self, sender: str, to: str, name: str, function: str, *args: Any, value: int = 0
    ) -> str:
        """Send a call (through AnvilNode.send, which waits for the receipt); it must succeed."""
        tx = self.node.send(sender, to, value, self.contracts[name].calldata(function, *args))
        receipt = self.node.rpc.call("eth_getTransactionReceipt", [tx])
        assert receipt["status"] == "0x1", f"{name}.{function} reverted in {tx}"
        return tx.lower()

    def read(self, to: str, name: str, function: str, *args: Any) -> Any:
        data = self.contracts[name].calldata(function, *args)
        result = self.node.rpc.call("eth_call", [{"to": to, "data": data}, "latest"])
        (value,) = self.contracts[name].decode_result(function, str(result))
        return value

    def storage(self, address: str, slot: str) -> str:
        word = str(self.node.rpc.call("eth_getStorageAt", [address, slot, "latest"]))
        return "0x" + word.removeprefix("0x").rjust(64, "0")[-40:]

    def _mined(self, tx_hash: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while (receipt := self.node.rpc.call("eth_getTransactionReceipt", [tx_hash])) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"anvil did not mine {tx_hash} within 10 s")
            time.sleep(0.01)
        assert receipt["status"] == "0x1", f"transaction {tx_hash} reverted"
        return dict(receipt)


def test_contract_events_compiled_by_solc_are_detected_and_alerted(
    anvil_url: str, solc: SolcJs, tmp_path: Path
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    chainside = Chainside(node, solc.compile_fixtures())
    accounts = [a.lower() for a in node.accounts]
    deployer, cold, outsider = accounts[0], accounts[2], accounts[3]
    signer1, signer2, signer3 = accounts[4], accounts[5], accounts[6]
    attacker, vault_owner = accounts[7], accounts[8]

    # --- set-up, before the follower's first block --------------------------------------------
    token = chainside.deploy("Token", cold, 1_000_000 * TOKENS).lower()
    forwarder = chainside.deploy("Forwarder").lower()
    singleton = chainside.deploy("WalletSingleton").lower()
    rogue_singleton = chainside.deploy("WalletSingleton").lower()
    swapper = chainside.deploy("SingletonSwapper").lower()
    setup = chainside.contracts["WalletSingleton"].calldata("setup", [signer1, signer2, signer3], 2)
    safe = chainside.deploy("WalletProxy", singleton, bytes.fromhex(setup[2:])).lower()
    vault_v1 = chainside.deploy("VaultV1").lower()
    vault_v2 = chainside.deploy("VaultV2").lower()
    init = chainside.contracts["VaultV1"].calldata("initialize", vault_owner)
    vault = chainside.deploy("UUPSProxy", vault_v1, bytes.fromhex(init[2:])).lower()
    node.send(deployer, safe, 10 * ETH)  # through the proxy's delegated receive()
    node.send(deployer, forwarder, 3 * ETH)
    assert chainside.storage(safe, "0x0") == singleton
    assert chainside.read(safe, "WalletSingleton", "threshold") == 2
    assert chainside.read(safe, "WalletSingleton", "isOwner", signer1) is True
    assert chainside.read(vault, "VaultV1", "version") == 1
    assert chainside.read(vault, "VaultV1", "owner") == vault_owner
    assert int(node.rpc.call("eth_getBalance", [safe, "latest"]), 16) == 10 * ETH

    book = WalletBook(
        [
            Wallet("eth-cold", "dev", WalletRole.COLD, Custody(CustodyKind.HSM), (cold,)),
            Wallet(
                "eth-safe",
                "dev",
                WalletRole.COLD,
                Custody(CustodyKind.MULTISIG, 2, ("s1", "s2", "s3")),
                (safe,),
            ),
            Wallet("eth-hot", "dev", WalletRole.HOT, Custody(CustodyKind.SINGLE_KEY), (forwarder,)),
            Wallet("eth-vault", "dev", WalletRole.WARM, Custody(CustodyKind.MPC), (vault,)),
        ]
    )
    chain = Chain("dev", ChainKind.EVM, "devnet", "ETH", 18, confirmations=0)
    store = open_store(f"sqlite:///{tmp_path / 'sol.db'}")
    bus = InProcessBus()
    sink = Sink()
    processor = make_processor(
        store, book, {"dev": chain}, {}, RulePolicy(), [sink], lambda: datetime.now(UTC)
    )
    transfers: list[TransferSeen] = []
    changes: list[ControlChangeSeen] = []

    def handle(messages: Sequence[Message]) -> None:
        # A poll's batch at a time, as the pipeline hands them over (Pipeline.drain).
        for message in messages:
            event = codec.loads_event(message.value)
            if isinstance(event, TransferSeen):
                transfers.append(event)
            elif isinstance(event, ControlChangeSeen):
                changes.append(event)
        processor.handle_messages(messages)

    sub = bus.subscribe(TOPIC, "p")
    start = node.head() + 1
    follower = EvmFollower(
        chain,
        node.rpc,
        store,
        bus,
        TOPIC,
        book.addresses("dev"),
        start_height=start,
        safes=book.multisig_addresses("dev"),
        # As wired in production: the balances of the wallets a block moved value out of.
        wallets={a: w.name for w in book.wallets for a in w.addresses},
    )

    # --- what happens to the watched wallets ---------------------------------------------------
    sent = chainside.transact(cold, token, "Token", "transfer", attacker, 1_000 * TOKENS)
    approved = chainside.transact(cold, token, "Token", "approve", attacker, MAX_UINT)
    pulled = chainside.transact(
        attacker, token, "Token", "transferFrom", cold, attacker, 500 * TOKENS
    )
    forwarded = chainside.transact(cold, forwarder, "Forwarder", "forward", attacker, value=1 * ETH)
    swept = chainside.transact(deployer, forwarder, "Forwarder", "sweep", outsider, 2 * ETH)
    executed = chainside.transact(
        signer1, safe, "WalletSingleton", "execute", attacker, 4 * ETH, b""
    )
    added = chainside.transact(signer1, safe, "WalletSingleton", "addOwner", attacker)
    removed = chainside.transact(signer1, safe, "WalletSingleton", "removeOwner", signer3)
    lowered = chainside.transact(signer1, safe, "WalletSingleton", "changeThreshold", 1)
    swap = chainside.contracts["SingletonSwapper"].calldata("swap", rogue_singleton)
    swapped = chainside.transact(
        attacker, safe, "WalletSingleton", "executeDelegate", swapper, bytes.fromhex(swap[2:])
    )
    swap_block = node.head()
    upgraded = chainside.transact(vault_owner, vault, "VaultV1", "upgradeTo", vault_v2)
    upgrade_block = node.head()

    # The chain did what the calls say: the swap emitted nothing, the upgrade its one event.
    assert chainside.storage(safe, "0x0") == rogue_singleton
    assert chainside.read(safe, "WalletSingleton", "threshold") == 1  # same storage, new code
    assert chainside.storage(vault, EIP1967_IMPLEMENTATION_SLOT) == vault_v2
    assert chainside.read(vault, "VaultV1", "version") == 2
    assert node.rpc.call("eth_getTransactionReceipt", [swapped])["logs"] == []
    upgrade_logs = node.rpc.call("eth_getTransactionReceipt", [upgraded])["logs"]
    assert [log["topics"][0] for log in upgrade_logs] == [event_topic("Upgraded(address)")]

    assert follower.step() == node.head() - start + 1
    sub.poll_batch(handle)

    # --- transfers: by log (TOKEN), by tx value (NATIVE), by trace (INTERNAL) -----------------
    seen_transfers = {
        (
            e.transfer.kind,
            e.transfer.tx_hash,
            e.transfer.from_address,
            e.transfer.to_address,
            e.transfer.asset,
            e.transfer.amount,
        )
        for e in transfers
    }
    assert seen_transfers == {
        (TransferKind.TOKEN, sent, cold, attacker, token, 1_000 * TOKENS),
        (TransferKind.TOKEN, pulled, cold, attacker, token, 500 * TOKENS),
        (TransferKind.NATIVE, forwarded, cold, forwarder, "native", 1 * ETH),
        (TransferKind.INTERNAL, forwarded, forwarder, attacker, "native", 1 * ETH),
        (TransferKind.INTERNAL, swept, forwarder, outsider, "native", 2 * ETH),
        (TransferKind.INTERNAL, executed, safe, attacker, "native", 4 * ETH),
    }
    assert len(transfers) == len(seen_transfers)
    assert all(e.transfer.status is TransferStatus.CONFIRMED for e in transfers)
    assert {t.key for t in store.transfers(chain="dev")} == {e.transfer.key for e in transfers}

    # --- control changes: by log, and by storage for what announces nothing -------------------
    seen_changes = {
        (c.kind, c.wallet_address, c.tx_hash, c.subject, c.value, c.contract)
        for c in (e.change for e in changes)
    }
    assert seen_changes == {
        (ControlKind.APPROVAL, cold, approved, attacker, MAX_UINT, token),
        (ControlKind.OWNER_ADDED, safe, added, attacker, None, None),
        (ControlKind.OWNER_REMOVED, safe, removed, signer3, None, None),
        (ControlKind.THRESHOLD_CHANGED, safe, lowered, None, 1, None),
        (ControlKind.MASTER_COPY_CHANGED, safe, None, rogue_singleton, None, None),
        (ControlKind.IMPLEMENTATION_CHANGED, vault, upgraded, vault_v2, None, None),
        (ControlKind.IMPLEMENTATION_CHANGED, vault, None, vault_v2, None, None),
    }
    assert len(changes) == len(seen_changes)
    from_storage = {c.index: c.block for c in (e.change for e in changes) if c.tx_hash is None}
    assert {k: b.height if b else None for k, b in from_storage.items()} == {
        "slot:0": swap_block,
        "slot:eip1967": upgrade_block,
    }
    assert len(store.control_changes(chain="dev")) == len(changes)

    # --- alerts: cold outflows and every control change critical; a refill of an own wallet
    # none (planned); the hot wallet's unannounced payments unplanned; a fall of a wallet's
    # balance by more than a fifth (the safe 10 -> 6 ETH, the hot contract 3 -> 1 ETH) too ----
    alerted = sorted((a.rule_id, a.severity, a.tx_hash or "") for a, _, _ in sink.alerts)
    critical, high = Severity.CRITICAL, Severity.HIGH
    assert alerted == sorted(
        [
            (COLD_OUTFLOW, critical, sent),
            (COLD_OUTFLOW, critical, pulled),
            (COLD_OUTFLOW, critical, executed),
            (BALANCE_FALL, high, executed),
            (UNPLANNED_OUTFLOW, high, forwarded),  # the hot contract's internal payment out
            (UNPLANNED_OUTFLOW, high, swept),
            (BALANCE_FALL, high, swept),
            ("control/approval", critical, approved),
            ("control/owner_added", critical, added),
            ("control/owner_removed", critical, removed),
            ("control/threshold_changed", critical, lowered),
            ("control/master_copy_changed", critical, ""),
            ("control/implementation_changed", critical, upgraded),
            ("control/implementation_changed", critical, ""),  # the same upgrade, in storage
        ]
    )
    # The refill (cold -> the exchange's own hot contract) is stored, and alerts nothing.
    assert (forwarded, cold, forwarder) in {
        (t.tx_hash, t.from_address, t.to_address) for t in store.transfers(chain="dev")
    }
    falls = {a.tx_hash: dict(a.facts) for a, _, _ in sink.alerts if a.rule_id == BALANCE_FALL}
    assert {tx: (f["balance_before"], f["balance_after"]) for tx, f in falls.items()} == {
        executed: (str(10 * ETH), str(6 * ETH)),
        swept: (str(3 * ETH), str(1 * ETH)),
    }
    assert all(a.state is AlertState.CONFIRMED for a, _, _ in sink.alerts)
    by_wallet = {(a.rule_id, a.tx_hash): a.wallet for a, _, _ in sink.alerts}
    assert by_wallet[(UNPLANNED_OUTFLOW, forwarded)] == "eth-hot"
    assert by_wallet[(BALANCE_FALL, executed)] == "eth-safe"
    assert by_wallet[(COLD_OUTFLOW, executed)] == "eth-safe"
    assert by_wallet[("control/master_copy_changed", None)] == "eth-safe"
    assert by_wallet[("control/implementation_changed", upgraded)] == "eth-vault"
    assert len({a.id for a, _, _ in sink.alerts}) == len(sink.alerts)
    assert {a.id for a in store.alerts()} == {a.id for a, _, _ in sink.alerts}

    # --- a second step over quiet blocks: nothing new, nothing twice --------------------------
    node.mine(2)
    assert follower.step() == 2
    transfers.clear()
    changes.clear()
    sub.poll_batch(handle)
    assert transfers == [] and changes == []
    assert len(sink.alerts) == 14


def test_compiled_output_is_cached_for_the_session(solc: SolcJs) -> None:
    first = solc.compile_fixtures()
    again = solc.compile_fixtures()
    assert solc.last_was_cached and solc.last_compile_seconds < 0.5
    assert again == first
    assert {"Token", "Forwarder", "WalletProxy", "WalletSingleton", "UUPSProxy"} <= set(first)
