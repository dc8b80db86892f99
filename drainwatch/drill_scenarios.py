"""The story ``drainwatch drill`` plays on its anvil node, scene by scene, and what each scene
expects the pipeline to have reported.

Every scene drives the chain only (transactions, mining, a snapshot and a revert); what it checks
is what the real pipeline delivered to the console sink and kept in the store. A scene returns a
``Check``: the summary names every check that failed and the drill exits 1.
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alerts.console import ConsoleSink
from alerts.rules import (
    BALANCE_FALL,
    COLD_OUTFLOW,
    CONTROL_PREFIX,
    LIMIT_WINDOW,
    UNPLANNED_OUTFLOW,
)
from drainwatch.devnode import DevNode
from drainwatch.drill_contracts import (
    APPROVE_SELECTOR,
    TRANSFER_SELECTOR,
    token_call,
    vault_payment,
)
from drainwatch.drill_expect import Announcer
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
    announcer: Announcer
    config: Path
    facts: Facts = field(default_factory=Facts)

    def play(self) -> list[Check]:
        return [
            self.failover(),
            self.normal_life(),
            self.cold_drain(),
            self.internal_transfer(),
            self.control_change(),
            self.hot_key_misuse(),
            self.reorg(),
            self.pending(),
            self.acknowledge(),
        ]

    def settle(self) -> float:
        """Mine what the mempool holds (the pipeline reads that block at once: provisional
        alerts), then the blocks that confirm it (confirmed); the time the first block
        existed."""
        self.node.mine(1)
        mined_at = time.monotonic()
        self.pipeline.run_once()
        if CONFIRMATIONS > 1:
            self.node.mine(CONFIRMATIONS - 1)
            self.pipeline.run_once()
        return mined_at

    def withdraw(self, to: str, eth: int = 0, usd: int = 0) -> None:
        """A customer withdrawal from the hot wallet, announced before it is sent."""
        a = self.actors
        if eth:
            self.announcer.expect("eth-hot", to, "native", eth)
        if usd:
            self.announcer.expect("eth-hot", to, a.token, usd)
        self.announcer.send()
        if eth:
            self.node.send(a.hot, to, eth)
        if usd:
            self.token(TRANSFER_SELECTOR, a.hot, to, usd)

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
                eth, usd = rng.randint(1, 50) * ETH // 10, rng.randint(1, 500) * USD
                self.withdraw(customer, eth, usd)
            node.mine()
            self.pipeline.run_once()
        node.send(a.hot, a.cold, 200 * ETH)  # the daily sweep to cold: between own wallets
        self.settle()
        count = len(self.sink.deliveries)
        announced = self.announcer.announced
        self.say(
            f"出金はすべて出金システムが事前登録（{announced} 件）。平常業務の間のアラート: "
            f"{count} 件",
            f"Every withdrawal was announced by the withdrawal system beforehand ({announced}). "
            f"Alerts during normal life: {count}",
        )
        ok = count == 0 and announced > 0
        return Check("no alert during normal life", "平常業務中のアラートなし", ok)

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
        lifecycle = [
            x.state for x in self.sink.of(facts.drain_tx) if x.rule_id == COLD_OUTFLOW
        ] == [AlertState.PROVISIONAL, AlertState.CONFIRMED]
        fall = [x for x in self.sink.of(facts.drain_tx) if x.rule_id == BALANCE_FALL]
        self.say(
            f"アラートはブロックに取り込まれた時点で暫定として通知され、承認数 {CONFIRMATIONS} "
            f"で確定に更新されました。残高急減ルールも発報: {len(fall) > 0}",
            "The alert went out as provisional as soon as the block existed and was updated to "
            f"confirmed at {CONFIRMATIONS} confirmations. Balance-fall rule raised too: "
            f"{len(fall) > 0}",
        )
        ok = (
            all(
                self._alerted(tx, COLD_OUTFLOW, Severity.CRITICAL)
                for tx in (facts.drain_tx, facts.token_drain_tx)
            )
            and lifecycle
            and bool(fall)
        )
        return Check(
            "(a) cold-wallet drain of ETH and DUSD: provisional at once, then confirmed; "
            "the balance fall alerted",
            "(a) コールドウォレットからの ETH・DUSD 流出: 即時に暫定通知、その後確定。"
            "残高急減も通知",
            ok,
        )

    def hot_key_misuse(self) -> Check:
        """The hot wallet's key in the wrong hands: unannounced payments, each under the
        single-outflow limit, that the window limit catches once they add up; beside them an
        announced withdrawal that raises nothing."""
        a = self.actors
        self.say(
            "== 攻撃 (h): ホットウォレットの鍵の悪用 — 上限未満に分割した予定外の送金 ==",
            "== Attack (h): the hot wallet's key misused — unannounced payments split under the "
            "limit ==",
        )
        customer = a.customers[0]
        self.withdraw(customer, 3 * ETH)  # a planned withdrawal in the same blocks
        payments = [self.node.send(a.hot, a.attacker, 20 * ETH) for _ in range(6)]
        self.settle()
        unplanned = [
            tx for tx in payments if any(x.rule_id == UNPLANNED_OUTFLOW for x in self.sink.of(tx))
        ]
        window = [tx for tx in payments if any(x.rule_id == LIMIT_WINDOW for x in self.sink.of(tx))]
        to_customer = [x for x, _ in self.sink.deliveries if x.counterparty == customer.lower()]
        self.say(
            f"20 ETH × 6 件（1 回の上限 60 ETH 未満）: 予定外の送金として {len(unplanned)} 件を"
            f"通知、合計が 1 時間の上限 100 ETH を超えた {len(window)} 件は上限超過としても通知。"
            f"事前登録済みの出金へのアラート: {len(to_customer)} 件",
            f"6 payments of 20 ETH (each under the 60 ETH single limit): {len(unplanned)} "
            f"alerted as unplanned, {len(window)} (the one taking the sum past the 100 ETH hourly "
            "limit) also as over the limit. "
            f"Alerts for the announced withdrawal: {len(to_customer)}",
        )
        ok = len(unplanned) == 6 and window == payments[5:] and not to_customer
        return Check(
            "(h) hot-wallet key misused: unannounced split payments trip the window limit; "
            "the announced withdrawal raises nothing",
            "(h) ホットウォレット鍵の悪用: 分割された予定外の送金が上限超過に。"
            "事前登録済みの出金はアラートなし",
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
            f"コールドからホットへの未登録の補充 {refill}: ブロックに取り込まれた時点で暫定、"
            f"承認数 {CONFIRMATIONS} で確定として通知されます（自社ウォレット宛てのため警告）",
            f"Cold tops up hot without announcing it, tx {refill}: reported as provisional once "
            f"mined and confirmed at {CONFIRMATIONS} confirmations (a warning: the destination "
            "is the exchange's own wallet)",
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
        alerts = [x for x in self.sink.of(tx) if x.rule_id == COLD_OUTFLOW]
        ok = (
            seen_pending
            and len({x.id for x in alerts}) == 1
            and [x.state for x in alerts]
            == [AlertState.PENDING, AlertState.PROVISIONAL, AlertState.CONFIRMED]
        )
        return Check(
            "(e) pending outflow alerted from the mempool, then provisional, then confirmed "
            "(one alert, updated)",
            "(e) 未承認の送金をメモリプールで検知し、暫定、確定へと更新（1 件のアラート）",
            ok,
        )

    def acknowledge(self) -> Check:
        """The duty officer takes the cold drain's alert in hand, as with `drainwatch alerts
        ack`: recorded in the store, and the alert's message is told so."""
        from drainwatch.cli_alerts import ack_alert

        self.say(
            "== (i) 担当者がアラートを確認（drainwatch alerts ack） ==",
            "== (i) The duty officer acknowledges the alert (drainwatch alerts ack) ==",
        )
        drain = next((x for x in self.store.alerts() if x.tx_hash == self.facts.drain_tx), None)
        if drain is None:
            return Check("(i) alert acknowledged", "(i) アラートの確認", False)
        with contextlib.redirect_stdout(io.StringIO()):  # the CLI's own line: said below
            ack_alert(self.config, drain.id, "duty-officer")
        self.say(
            f"`drainwatch alerts ack {self.config.name} {drain.id} --by duty-officer`: "
            "確認を記録し、通知に反映します",
            f"`drainwatch alerts ack {self.config.name} {drain.id} --by duty-officer`: "
            "recorded, and announced on the alert's channel",
        )
        self.pipeline.deliver()  # what the running watcher's notifier does
        stored = self.store.get_alert(drain.id)
        told = [x for x in self.sink.of(self.facts.drain_tx) if x.acked_by == "duty-officer"]
        ok = stored is not None and stored.acked_by == "duty-officer" and len(told) >= 1
        return Check(
            "(i) alert acknowledged: recorded, and its message told so",
            "(i) アラートの確認: 記録し、通知にも反映",
            ok,
        )

    def _alerted(self, tx: str, rule_id: str, severity: Severity) -> bool:
        return any(
            x.rule_id == rule_id and x.severity is severity and x.state is AlertState.CONFIRMED
            for x in self.sink.of(tx)
        )
