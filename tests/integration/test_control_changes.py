"""Changes of control of watched wallets, on real chains (eth-tester and anvil), end to end:
an approval from the cold wallet, an owner added to a multisig, and two upgrades that emit
nothing (a proxy's EIP-1967 slot, a Safe's singleton in slot 0) are all alerted, critically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alerts.rules import RulePolicy, WalletBook
from drainwatch import codec
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.drill_contracts import (
    APPROVER_INITCODE,
    EIP1967_SLOT,
    OWNER_ADDER_INITCODE,
    slot_writer_initcode,
)
from drainwatch.events import ControlChangeSeen
from drainwatch.model import (
    Alert,
    AlertState,
    Chain,
    ChainKind,
    ControlKind,
    Custody,
    CustodyKind,
    Severity,
    Wallet,
    WalletRole,
)
from drainwatch.ports import Message
from drainwatch.store import open_store
from tests.fixtures.evm_nodes import EvmNode
from tests.fixtures.processing import make_processor
from watchers.evm.follower import EvmFollower

TOPIC = "c.events"


class Sink:
    def __init__(self) -> None:
        self.alerts: list[tuple[Alert, str, str]] = []

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        self.alerts.append((alert, text_en, text_ja))


def _word(address: str) -> str:
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def test_control_changes_of_watched_wallets_are_alerted(evm_node: EvmNode, tmp_path: Path) -> None:
    node = evm_node
    cold, attacker, outsider = node.accounts[2], node.accounts[7], node.accounts[3]
    token = node.deploy(APPROVER_INITCODE)
    safe = node.deploy(OWNER_ADDER_INITCODE)
    proxy = node.deploy(slot_writer_initcode(EIP1967_SLOT))
    safe_proxy = node.deploy(slot_writer_initcode("0"))
    multisig = Custody(CustodyKind.MULTISIG, 2, ("a", "b", "c"))
    book = WalletBook(
        [
            Wallet("eth-cold", "dev", WalletRole.COLD, multisig, (cold,), allowlist=(outsider,)),
            Wallet("eth-safe", "dev", WalletRole.COLD, multisig, (safe, safe_proxy)),
            Wallet("eth-proxy", "dev", WalletRole.WARM, Custody(CustodyKind.MPC), (proxy,)),
        ]
    )
    chain = Chain("dev", ChainKind.EVM, "devnet", "ETH", 18, confirmations=0)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    bus = InProcessBus()
    sink = Sink()
    processor = make_processor(
        store, book, {"dev": chain}, {}, RulePolicy(), [sink], lambda: datetime.now(UTC)
    )
    seen: list[ControlChangeSeen] = []

    def handle(message: Message) -> None:
        event = codec.loads_event(message.value)
        if isinstance(event, ControlChangeSeen):
            seen.append(event)
        processor.handle_message(message)

    sub = bus.subscribe(TOPIC, "p")
    follower = EvmFollower(
        chain,
        node.rpc,
        store,
        bus,
        TOPIC,
        [a for w in book.wallets for a in w.addresses],
        start_height=node.head() + 1,
        safes=book.multisig_addresses("dev"),
    )
    approve_planned = node.send(cold, token, 0, _word(outsider) + f"{5:064x}")
    approve = node.send(cold, token, 0, _word(attacker) + f"{2**256 - 1:064x}")
    add_owner = node.send(outsider, safe, 0, _word(attacker))
    node.send(outsider, proxy, 0, _word(attacker))  # silent upgrade: storage only
    node.send(outsider, safe_proxy, 0, _word(attacker))  # silent singleton swap
    follower.step()
    sub.poll(handle)

    kinds = {(e.change.kind, e.change.wallet_address) for e in seen}
    assert kinds == {
        (ControlKind.APPROVAL, cold.lower()),
        (ControlKind.OWNER_ADDED, safe.lower()),
        (ControlKind.IMPLEMENTATION_CHANGED, proxy.lower()),
        (ControlKind.MASTER_COPY_CHANGED, safe_proxy.lower()),
        (ControlKind.APPROVAL, cold.lower()),
    }
    by_tx = {e.change.tx_hash: e.change for e in seen if e.change.tx_hash}
    assert by_tx[approve.lower()].value == 2**256 - 1
    assert by_tx[add_owner.lower()].subject == attacker.lower()
    silent = [e.change for e in seen if e.change.tx_hash is None]
    assert {c.subject for c in silent} == {attacker.lower()}
    assert {c.index for c in silent} == {"slot:eip1967", "slot:0"}

    # The planned approval (to an allowlisted spender) raises nothing; the rest are critical.
    rules = sorted(a.rule_id for a, _, _ in sink.alerts)
    assert rules == [
        "control/approval",
        "control/implementation_changed",
        "control/master_copy_changed",
        "control/owner_added",
    ]
    assert all(a.severity is Severity.CRITICAL for a, _, _ in sink.alerts)
    assert all(a.state is AlertState.CONFIRMED for a, _, _ in sink.alerts)
    assert approve_planned.lower() not in {a.tx_hash for a, _, _ in sink.alerts}
    texts = {a.rule_id: (en, ja) for a, en, ja in sink.alerts}
    assert "Multisig owner added" in texts["control/owner_added"][0]
    assert "マルチシグ署名者の追加" in texts["control/owner_added"][1]
    assert "Proxy implementation changed" in texts["control/implementation_changed"][0]
    assert "プロキシ実装の変更" in texts["control/implementation_changed"][1]
    stored = store.control_changes(chain="dev")
    assert len(stored) == len(seen)

    # Nothing changes in the next blocks: no new control change, no repeated alert.
    node.mine(2)
    follower.step()
    seen.clear()
    sub.poll(handle)
    assert seen == [] and len(sink.alerts) == 4


def test_a_proxy_deployed_in_a_block_is_its_first_state_not_an_upgrade(evm_node: EvmNode) -> None:
    """Backfilling through the block that deployed a watched proxy: its constructor set the
    implementation, which is no change; a later upgrade still is."""
    from drainwatch.drill_contracts import _initcode
    from watchers.evm.mapping import parse_block
    from watchers.evm.slots import ImplementationWatch

    node = evm_node
    first_impl = "11" * 20
    runtime = slot_writer_initcode(EIP1967_SLOT).removeprefix("0x")[22:]  # the runtime part
    constructor = "73" + first_impl + "7f" + EIP1967_SLOT + "55"  # SSTORE(slot, impl)
    initcode = "0x" + constructor + _initcode(runtime)[2:].replace("600b", "6042", 1)
    proxy = node.deploy(initcode)
    deployed_at = node.head()

    def block(height: int) -> object:
        return parse_block(node.rpc.call("eth_getBlockByNumber", [hex(height), True]))

    stored = node.rpc.call("eth_getStorageAt", [proxy, "0x" + EIP1967_SLOT, hex(deployed_at)])
    assert int(stored, 16) == int(first_impl, 16)  # the constructor did set it
    watch = ImplementationWatch("dev", node.rpc, [proxy])
    assert watch.changes(block(deployed_at)) == []  # type: ignore[arg-type]
    node.send(node.accounts[3], proxy, 0, _word(node.accounts[7]))
    [change] = watch.changes(block(node.head()))  # type: ignore[arg-type]
    assert change.kind is ControlKind.IMPLEMENTATION_CHANGED
    assert change.subject == node.accounts[7].lower()
