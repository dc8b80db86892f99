"""The story ``drainwatch drill`` plays on its anvil node, scene by scene, and what each scene
expects the pipeline to have reported.

Every scene drives the chain only (transactions, mining, a snapshot and a revert); what it checks
is what the real pipeline delivered to the console sink and kept in the store. A scene returns a
``Check``: the summary names every check that failed and the drill exits 1.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from alerts.console import ConsoleSink
from alerts.rules import COLD_OUTFLOW, CONTROL_PREFIX
from drainwatch.devnode import DevNode
from drainwatch.drill_contracts import (
    APPROVE_SELECTOR,
    TRANSFER_SELECTOR,
    token_call,
    vault_payment,
)
from drainwatch.model import Alert, AlertState, Severity, TransferStatus
from drainwatch.pipeline import Pipeline
from drainwatch.ports import Store
from drainwatch.units import format_amount
from watchers.rpc_stack import FailoverRpc

ETH = 10**18
USD = 10**6  # the drill stablecoin has 6 decimals
CONFIRMATIONS = 2


@dataclass(frozen=True)
class Actors:
    funder: str
    hot: str
    cold: str
    customers: list[str]
    attacker: str
    token: str
    vault: str


@dataclass(frozen=True)
class Check:
    """One thing the drill expects drainwatch to have shown, in both languages."""

    en: str
    ja: str
    ok: bool


@dataclass
class Facts:
    """What the summary reports besides the checks."""

    drain_tx: str = ""
    drain_amount: int = 0
    token_drain_tx: str = ""
    token_drain_amount: int = 0
    detection_seconds: float | None = None


class RecordingSink(ConsoleSink):
    """The console sink, also keeping every delivery (an alert once per state it reaches) and
    when it was delivered."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.deliveries: list[tuple[Alert, float]] = []

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        super().deliver(alert, text_en, text_ja)
        self.deliveries.append((alert, time.monotonic()))

    def of(self, tx_hash: str) -> list[Alert]:
        return [a for a, _ in self.deliveries if a.tx_hash == tx_hash]

    def first_at(self, tx_hash: str) -> float | None:
        return next((at for a, at in self.deliveries if a.tx_hash == tx_hash), None)


@dataclass
class Scenes:
    node: DevNode
    rpc: FailoverRpc
    dead_url: str  # the config's first endpoint, where nothing listens
    pipeline: Pipeline
    store: Store
    actors: Actors
    sink: RecordingSink
    rng: random.Random
    say: Callable[[str, str], None]
    facts: Facts = field(default_factory=Facts)

    def play(self) -> list[Check]:
        return [
            self.failover(),
            self.normal_life(),
            self.cold_drain(),
            self.internal_transfer(),
            self.control_change(),
            self.reorg(),
            self.pending(),
        ]

    def settle(self) -> float:
        """Mine what the mempool holds and the blocks that confirm it, let the pipeline catch
        up; the time the confirming block existed."""
        self.node.mine(CONFIRMATIONS)
        mined_at = time.monotonic()
        self.pipeline.run_once()
        return mined_at

    def token(self, selector: str, sender: str, to: str, amount: int) -> str:
        return self.node.send(sender, self.actors.token, 0, token_call(selector, to, amount))

    def failover(self) -> Check:
        dead = self.dead_url
        self.say("== ノードへの接続 ==", "== Connecting to the node ==")
        self.rpc.verify_all()  # what `watch` does first: every endpoint's chain id
        self.pipeline.run_once()  # the blocks of the drill's deployments
        count, used = self.rpc.failovers, self.rpc.endpoint
        ok = count >= 1 and used == self.node.url
        if ok:
            self.say(
                f"設定の 1 番目のエンドポイント {dead} は停止中（接続拒否）。監視は 2 番目の "
                f"{used}（anvil）に切り替わりました（切替 {count} 回）",
                f"The config's first endpoint {dead} is down (connection refused): the watcher "
                f"failed over to the second, {used} (anvil); failovers: {count}",
            )
        else:
            self.say(
                f"エンドポイントの切替が確認できません（使用中 {used}、切替 {count} 回）",
                f"No failover seen (endpoint in use: {used}, failovers: {count})",
            )
        return Check(
            "failover from the dead endpoint to anvil",
            "停止中のエンドポイントから anvil への切替",
            ok,
        )

    def normal_life(self) -> Check:
        a, node, rng = self.actors, self.node, self.rng
        self.say("== 平常業務: 入金・出金・コールドへの移管 ==", "== Normal life ==")
        node.send(a.funder, a.hot, 300 * ETH)
        node.send(a.funder, a.cold, 5_000 * ETH)
        node.send(a.funder, a.vault, 1_000 * ETH)  # the contract wallet's reserve
        for customer in a.customers:
            node.send(a.funder, customer, 100 * ETH)
        self.token(TRANSFER_SELECTOR, a.funder, a.cold, 3_000_000 * USD)
        node.mine()
        for _ in range(12):
            customer = rng.choice(a.customers)
            if rng.random() < 0.5:
                node.send(customer, a.hot, rng.randint(1, 20) * ETH // 10)
                self.token(TRANSFER_SELECTOR, customer, a.hot, rng.randint(1, 900) * USD)
            else:
                node.send(a.hot, customer, rng.randint(1, 50) * ETH // 10)
                self.token(TRANSFER_SELECTOR, a.hot, customer, rng.randint(1, 500) * USD)
            node.mine()
            self.pipeline.run_once()
        node.send(a.hot, a.cold, 200 * ETH)  # the daily sweep to cold
        self.settle()
        count = len(self.sink.deliveries)
        self.say(f"平常業務の間のアラート: {count} 件", f"Alerts during normal life: {count}")
        return Check("no alert during normal life", "平常業務中のアラートなし", count == 0)

    def cold_drain(self) -> Check:
        a, facts = self.actors, self.facts
        self.say(
            "== 攻撃 (a): コールドウォレットからの流出（ETH と DUSD） ==",
            "== Attack (a): the cold wallet drained (ETH and DUSD) ==",
        )
        facts.drain_amount = 4_800 * ETH
        facts.drain_tx = self.node.send(a.cold, a.attacker, facts.drain_amount)
        facts.token_drain_amount = 2_500_000 * USD
        facts.token_drain_tx = self.token(
            TRANSFER_SELECTOR, a.cold, a.attacker, facts.token_drain_amount
        )
        mined_at = self.settle()
        first = self.sink.first_at(facts.drain_tx)
        if first is not None:
            facts.detection_seconds = first - mined_at
        ok = all(
            self._alerted(tx, COLD_OUTFLOW, Severity.CRITICAL)
            for tx in (facts.drain_tx, facts.token_drain_tx)
        )
        return Check(
            "(a) cold-wallet drain of ETH and DUSD",
            "(a) コールドウォレットからの ETH・DUSD 流出",
            ok,
        )

    def internal_transfer(self) -> Check:
        a = self.actors
        amount = 750 * ETH
        self.say(
            "== 攻撃 (b): コントラクトウォレット eth-vault からの内部送金 ==",
            "== Attack (b): the contract wallet eth-vault pays out through a contract call ==",
        )
        tx = self.node.send(a.attacker, a.vault, 0, vault_payment(a.attacker, amount))
        self.say(
            f"攻撃者が eth-vault を呼び出す取引 {tx} は 0 ETH。"
            f"{format_amount(amount, 18)} ETH の送金はコールトレース（trace_block）にのみ現れます",
            f"The attacker's call {tx} to eth-vault carries 0 ETH: the "
            f"{format_amount(amount, 18)} ETH it pays out shows only in the call trace "
            "(trace_block)",
        )
        self.settle()
        ok = any(
            alert.wallet == "eth-vault" and alert.subject[2].startswith("trace:")
            for alert in self.sink.of(tx)
            if alert.rule_id == COLD_OUTFLOW and alert.severity is Severity.CRITICAL
        )
        return Check(
            "(b) internal transfer out of the contract wallet (traces)",
            "(b) コントラクトウォレットからの内部送金（トレース）",
            ok,
        )

    def control_change(self) -> Check:
        a = self.actors
        self.say(
            "== 攻撃 (c): 権限の変更 — コールドウォレットが攻撃者に DUSD の移動を承認 ==",
            "== Attack (c): a control change — the cold wallet approves the attacker for DUSD ==",
        )
        tx = self.token(APPROVE_SELECTOR, a.cold, a.attacker, 500_000 * USD)
        self.settle()
        ok = self._alerted(tx, CONTROL_PREFIX + "approval", Severity.CRITICAL)
        return Check(
            "(c) control change: token approval to the attacker",
            "(c) 権限の変更: 攻撃者へのトークン承認",
            ok,
        )

    def reorg(self) -> Check:
        a, node = self.actors, self.node
        self.say(
            "== (d) チェーンの再編成: 補充送金を含むブロックが置き換えられる ==",
            "== (d) A chain reorganisation: the block holding a refill is replaced ==",
        )
        snapshot = node.snapshot()
        refill = node.send(a.cold, a.hot, 100 * ETH)
        self.say(
            f"コールドからホットへの補充 {refill}: 承認数 {CONFIRMATIONS} で確定として通知されます"
            "（自社ウォレット宛てのため警告）",
            f"Cold tops up hot, tx {refill}: reported once its block has {CONFIRMATIONS} "
            "confirmations (a warning: the destination is the exchange's own wallet)",
        )
        self.settle()
        before = self.sink.of(refill)
        replaced = before[-1].block if before else None
        raw = node.raw_transaction(refill)
        node.revert(snapshot)
        node.mine(2)  # a competing branch, longer than ours, without the refill
        node.send_raw(raw)  # which goes back to the mempool and is mined two blocks later
        where = f"{replaced.height}" if replaced else "?"
        self.say(
            f"ノードがブロック {where} 以降を別の分岐に置き換えました"
            "（evm_snapshot / evm_revert）。"
            f"補充の取引 {refill} はメモリプールに戻り、新しい分岐で改めて取り込まれます",
            f"The node replaced the blocks from {where} on with another branch (evm_snapshot / "
            f"evm_revert); the refill {refill} went back to the mempool and is mined again on "
            "the new branch",
        )
        self.settle()
        states = [(x.state, x.block) for x in self.sink.of(refill)]
        stored = [x for x in self.store.alerts() if x.tx_hash == refill]
        moved = [t for t in self.store.transfers() if t.tx_hash == refill]
        ok = (
            replaced is not None
            and (AlertState.RETRACTED, replaced) in states
            and len(stored) == 1
            and stored[0].state is AlertState.CONFIRMED
            and stored[0].block not in (None, replaced)
            and len(moved) == 1
            and moved[0].status is TransferStatus.CONFIRMED
        )
        self.say(
            f"同じ取引のアラートは {len(stored)} 件、送金記録は {len(moved)} 件（重複なし）",
            f"Alerts for that transaction in the store: {len(stored)}; transfers: {len(moved)} "
            "(nothing duplicated)",
        )
        return Check(
            "(d) reorg: alert retracted, then re-confirmed once on the new branch",
            "(d) 再編成: アラートを取消し、新しい分岐で 1 件だけ再確定",
            ok,
        )

    def pending(self) -> Check:
        a, node = self.actors, self.node
        self.say(
            "== 攻撃 (e): 未承認の送金をメモリプールで検知 ==",
            "== Attack (e): an outflow seen in the mempool before it is mined ==",
        )
        tx = node.send(a.cold, a.attacker, 150 * ETH)
        head = node.head()
        self.say(
            f"取引 {tx} はまだどのブロックにも入っていません（先頭ブロック {head}）",
            f"Transaction {tx} is in no block yet (head {head})",
        )
        self.pipeline.run_once()  # the blocks are caught up: the mempool is read
        seen_pending = [x.state for x in self.sink.of(tx)] == [AlertState.PENDING]
        self.settle()
        alerts = self.sink.of(tx)
        ok = (
            seen_pending
            and len({x.id for x in alerts}) == 1
            and alerts[-1].state is AlertState.CONFIRMED
        )
        return Check(
            "(e) pending outflow alerted from the mempool, then confirmed",
            "(e) 未承認の送金をメモリプールで検知し、その後確定",
            ok,
        )

    def _alerted(self, tx: str, rule_id: str, severity: Severity) -> bool:
        return any(
            x.rule_id == rule_id and x.severity is severity and x.state is AlertState.CONFIRMED
            for x in self.sink.of(tx)
        )
