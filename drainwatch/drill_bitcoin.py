"""The Bitcoin half of ``drainwatch drill``: scenes played on a local bcoin regtest node.

Before the watch begins, segwit is activated and the drill's customers get mature coinbases
(``prepare_chain``): the watcher starts at the next block, so it scans only the blocks where
something happens. Then, scene by scene: the dead endpoint fails over to bcoin; normal life
(deposits to hot-wallet addresses far enough apart that only the moving gap window finds them,
withdrawals with change to the hot wallet's change branch, a sweep to cold); the cold wallet
drained, seen in the mempool before any block holds it, then confirmed, its change recognised
as its own; a reorg that un-mines a confirmed hot-wallet payment. After every block the balance
of each wallet in the store is compared with the drill wallets' own books (``RegtestWallet``).

The drill signs with ``drainwatch.regtest_wallet`` (throw-away regtest keys): the watcher, the
rules and the store never see a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from alerts.rules import COLD_OUTFLOW
from drainwatch.devnode_bitcoin import SINK_ADDRESS, BcoinNode
from drainwatch.drill_expect import Announcer
from drainwatch.drill_scenarios import CONFIRMATIONS, Check, RecordingSink
from drainwatch.model import Alert, AlertState, Severity, TransferStatus
from drainwatch.pipeline import Pipeline
from drainwatch.ports import Store
from drainwatch.regtest_wallet import CHANGE, RECEIVE, RegtestWallet, SignedTx
from watchers.rpc_stack import FailoverRpc

BTC_CHAIN = "bitcoin-drill"
#: The variable the drill sets (in its own process) to bcoin's ``user:password``; the config
#: names it, so that the API key is never written in the file.
AUTH_ENV = "DRAINWATCH_DRILL_BCOIN_AUTH"
GAP_LIMIT = 10
SAT = 10**8
#: Receive indexes of the hot wallet's deposit addresses: each lies past the gap window
#: (``GAP_LIMIT`` unused addresses) that the watcher had before the one before it was used.
DEPOSIT_INDEXES = (4, 11, 19, 27)
CUSTOMER_COINBASES = 4  # 12.5 BTC each at bcoin regtest's heights past segwit
WALLETS = ("btc-hot", "btc-cold")


def format_btc(sat: int) -> str:
    return f"{sat // SAT}.{sat % SAT:08d}"


@dataclass(frozen=True)
class BitcoinActors:
    """The drill's signing wallets: the exchange's two, and two outsiders."""

    hot: RegtestWallet
    cold: RegtestWallet
    customers: RegtestWallet  # deposits come from them, withdrawals go to them
    attacker: RegtestWallet

    @classmethod
    def create(cls) -> BitcoinActors:
        return cls(
            RegtestWallet.single("drill-btc-hot"),
            RegtestWallet.multisig("drill-btc-cold"),
            RegtestWallet.single("drill-btc-customers"),
            RegtestWallet.single("drill-btc-attacker"),
        )

    def books(self) -> dict[str, int]:
        """Satoshi per exchange wallet by the wallets' own books (empty wallets absent, as in
        ``Store.utxo_balances``)."""
        held = {"btc-hot": self.hot.balance(), "btc-cold": self.cold.balance()}
        return {name: sat for name, sat in held.items() if sat}


def prepare_chain(node: BcoinNode, actors: BitcoinActors) -> int:
    """Activate segwit and give the customers mature coinbases; the height the watch starts at
    (the next block: nothing before it concerns the exchange's wallets)."""
    node.activate_segwit()
    actors.customers.fund(node, blocks=CUSTOMER_COINBASES)
    return node.height() + 1


@dataclass
class BitcoinFacts:
    drain_txid: str = ""
    drain_amount: int = 0
    #: wallet → (the store's balance, the wallet's own books), at the end
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)
    blocks_compared: int = 0


@dataclass
class BitcoinScenes:
    node: BcoinNode
    rpc: FailoverRpc
    dead_url: str  # the config's first endpoint, where nothing listens
    pipeline: Pipeline
    store: Store
    actors: BitcoinActors
    sink: RecordingSink
    say: Callable[[str, str], None]
    start_height: int
    announcer: Announcer
    facts: BitcoinFacts = field(default_factory=BitcoinFacts)
    #: height → the balances the wallets' books say the block leaves
    books: dict[int, dict[str, int]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    checked: int = -1  # the highest height compared (reset to the fork by a reorg)

    def __post_init__(self) -> None:
        self.checked = self.start_height - 1

    def play(self) -> list[Check]:
        return [
            self.failover(),
            self.normal_life(),
            *self.drain(),
            self.reorg(),
            self.balances(),
        ]

    # --- stepping ------------------------------------------------------------------------------

    def mine(self, blocks: int = 1) -> list[str]:
        """Mine blocks one at a time (each takes the mempool), noting what each leaves."""
        hashes: list[str] = []
        for _ in range(blocks):
            hashes += self.node.mine(1, SINK_ADDRESS)
            self.books[self.node.height()] = self.actors.books()
        return hashes

    def step(self) -> None:
        """One pipeline round, then the store's balances at every block it newly processed
        compared with the books."""
        self.pipeline.run_once()
        tip = self.store.get_checkpoint(BTC_CHAIN)
        top = tip.height if tip is not None else self.checked
        for height in range(self.checked + 1, top + 1):
            stored = self.store.utxo_balances(BTC_CHAIN, height)
            expected = self.books.get(height, {})
            self.facts.blocks_compared += 1
            if stored != expected:
                self.mismatches.append(f"{height}: store {stored} / books {expected}")
        self.checked = max(self.checked, top)

    def settle(self) -> None:
        """Mine the mempool and the blocks that confirm it, one at a time, stepping after each."""
        for _ in range(CONFIRMATIONS):
            self.mine()
            self.step()

    def _deliveries(self) -> list[Alert]:
        return [a for a, _ in self.sink.deliveries if a.chain == BTC_CHAIN]

    # --- scenes --------------------------------------------------------------------------------

    def failover(self) -> Check:
        dead = self.dead_url
        self.say("== Bitcoin ノードへの接続 ==", "== Connecting to the Bitcoin node ==")
        self.rpc.verify_all()  # every endpoint's network (regtest), as `watch` does first
        self.step()
        count, used = self.rpc.failovers, self.rpc.endpoint
        ok = count >= 1 and used.rstrip("/") == self.node.url.rstrip("/")
        self.say(
            f"設定の 1 番目のエンドポイント {dead} は停止中。監視は 2 番目の {used}"
            f"（bcoin regtest）に切り替わりました（切替 {count} 回）",
            f"The config's first endpoint {dead} is down: the watcher failed over to the "
            f"second, {used} (bcoin regtest); failovers: {count}",
        )
        return Check(
            "Bitcoin: failover from the dead endpoint to bcoin",
            "Bitcoin: 停止中のエンドポイントから bcoin への切替",
            ok,
        )

    def normal_life(self) -> Check:
        a, node = self.actors, self.node
        self.say(
            "== Bitcoin 平常業務: 入金・出金（おつり付き）・コールドへの移管 ==",
            "== Bitcoin normal life: deposits, withdrawals with change, a sweep to cold ==",
        )
        for n, index in enumerate(DEPOSIT_INDEXES):
            deposit = a.customers.send(node, [(a.hot.address(RECEIVE, index), (2 * n + 4) * SAT)])
            a.hot.next_index[RECEIVE] = max(a.hot.next_index[RECEIVE], index + 1)
            a.hot.receive(deposit.raw)
            self.mine()
            self.step()
        indexes = ", ".join(str(i) for i in DEPOSIT_INDEXES)
        self.say(
            f"btc-hot の入金アドレスは受取側の {indexes} 番目。ギャップ上限 {GAP_LIMIT} のため、"
            "各アドレスは前のアドレスが使われて初めて監視範囲に入ります",
            f"btc-hot's deposit addresses are receive indexes {indexes}: with a gap limit of "
            f"{GAP_LIMIT}, each comes into the watched window only once the one before is used",
        )
        for n in range(3):
            payee = a.customers.address(RECEIVE, 100 + n)
            self.announcer.expect("btc-hot", payee, "native", (n + 1) * SAT // 2)
            self.announcer.send()  # the withdrawal system announces it before it is sent
            a.hot.send(node, [(payee, (n + 1) * SAT // 2)])  # change to the change branch
            self.mine()
            self.step()
        sweep = a.hot.send(node, [(a.cold.address(RECEIVE, 0), 20 * SAT)])
        a.cold.receive(sweep.raw)
        self.settle()
        count = len(self._deliveries())
        stored = self.store.utxo_balances(BTC_CHAIN)
        hot, cold = (format_btc(stored.get(w, 0)) for w in WALLETS)
        self.say(
            "事前登録済みの出金 3 件（おつりは btc-hot のおつり用（change）アドレスへ）と 20 BTC の"
            f"コールドへの移管。残高: btc-hot {hot} BTC、btc-cold {cold} BTC。アラート: {count} 件",
            "3 announced withdrawals (change to btc-hot's change branch) and a 20 BTC sweep to "
            f"cold. Balances: btc-hot {hot} BTC, btc-cold {cold} BTC. Alerts: {count}",
        )
        ok = count == 0 and stored == a.books() and stored.get("btc-cold") == 20 * SAT
        return Check(
            "Bitcoin normal life (deposits past the gap limit, change, sweep): no alert",
            "Bitcoin 平常業務（ギャップ上限を越える入金、おつり、移管）: アラートなし",
            ok,
        )

    def drain(self) -> list[Check]:
        a, facts = self.actors, self.facts
        self.say(
            "== 攻撃 (f): Bitcoin コールドウォレット btc-cold（2-of-3 マルチシグ）からの流出 ==",
            "== Attack (f): the Bitcoin cold wallet btc-cold (2-of-3 multisig) drained ==",
        )
        attacker = a.attacker.address()
        facts.drain_amount = 19 * SAT
        drain = a.cold.send(self.node, [(attacker, facts.drain_amount)])
        facts.drain_txid = drain.txid
        head = self.node.height()
        self.step()  # the blocks are caught up: the mempool is read
        in_mempool = drain.txid in self.node.mempool() and self.node.height() == head
        pending = [x for x in self._deliveries() if x.tx_hash == drain.txid]
        self.say(
            f"取引 {drain.txid} はまだどのブロックにも入っていません（先頭ブロック {head}）",
            f"Transaction {drain.txid} is in no block yet (head {head})",
        )
        seen = in_mempool and any(
            x.state is AlertState.PENDING
            and x.rule_id == COLD_OUTFLOW
            and x.severity is Severity.CRITICAL
            and x.counterparty == attacker
            for x in pending
        )
        self.settle()
        return [
            Check(
                "(f) Bitcoin cold drain alerted from the mempool before its block",
                "(f) Bitcoin コールドからの流出をブロック前にメモリプールで検知",
                seen,
            ),
            self._drain_confirmed(drain, attacker),
        ]

    def _drain_confirmed(self, drain: SignedTx, attacker: str) -> Check:
        change = self.actors.cold.address(CHANGE, drain.change.index) if drain.change else ""
        alerts = [x for x in self._deliveries() if x.tx_hash == drain.txid]
        to_attacker = [x for x in alerts if x.counterparty == attacker]
        to_change = [x for x in alerts if x.counterparty == change]
        own_coins = {
            (u.txid, u.vout)
            for u in self.store.utxos(BTC_CHAIN, wallet="btc-cold", unspent_only=True)
        }
        drained = [x.state for x in to_attacker if x.rule_id == COLD_OUTFLOW]
        ok = (
            drain.change is not None
            and drained == [AlertState.PENDING, AlertState.PROVISIONAL, AlertState.CONFIRMED]
            and len({x.id for x in to_attacker if x.rule_id == COLD_OUTFLOW}) == 1
            and to_change == []
            and (drain.txid, drain.change.vout) in own_coins
        )
        self.say(
            "メモリプールで未承認、ブロック取り込みで暫定、承認数 "
            f"{CONFIRMATIONS} で確定（1 件のアラートを更新）。おつり {change} は btc-cold 自身の"
            "アドレス（アラートなし、残高に計上）",
            f"Pending in the mempool, provisional once mined, confirmed at {CONFIRMATIONS} "
            f"confirmations (one alert, updated). The change {change} is btc-cold's own address "
            "(no alert, counted in its balance)",
        )
        return Check(
            "(f) Bitcoin drain confirmed; the change back to btc-cold recognised as its own",
            "(f) Bitcoin の流出を確定、btc-cold へのおつりは自社分として認識",
            ok,
        )

    def reorg(self) -> Check:
        a, node = self.actors, self.node
        self.say(
            "== (g) Bitcoin の再編成: 未登録の確定済み出金を含むブロックが置き換えられる ==",
            "== (g) A Bitcoin reorg: the block holding a confirmed unannounced payment is "
            "replaced ==",
        )
        before = self.store.utxo_balances(BTC_CHAIN)
        payment = a.hot.send(node, [(a.customers.address(RECEIVE, 200), 2 * SAT)])
        replaced = self.mine()[0]
        height = node.height()
        self.mine()
        self.step()
        confirmed = self._statuses(payment.txid) == {TransferStatus.CONFIRMED}
        node.invalidate(replaced)  # bcoin also empties its mempool: the payment is gone
        a.hot.utxos = [u for u in a.hot.utxos if u != payment.change] + list(payment.spent)
        for _ in range(3):  # a longer branch without the payment
            node.mine_block([], SINK_ADDRESS)
            self.books[node.height()] = a.books()
        self.checked = min(self.checked, height - 1)
        self.step()
        self.say(
            f"ブロック {height} を無効化し（invalidateblock）、空のブロック 3 個で置き換えました。"
            f"出金 {payment.txid} は新しい分岐にありません",
            f"Block {height} was invalidated (invalidateblock) and replaced by 3 empty blocks; "
            f"the withdrawal {payment.txid} is on no branch now",
        )
        follower = next(f for f in self.pipeline.followers if f.chain.name == BTC_CHAIN)
        alerts = [x for x in self.store.alerts() if x.tx_hash == payment.txid]
        after = self.store.utxo_balances(BTC_CHAIN)
        ok = (
            confirmed
            and follower.reorgs >= 1
            and self._statuses(payment.txid) == {TransferStatus.ORPHANED}
            and alerts != []
            and all(x.state is AlertState.RETRACTED for x in alerts)
            and after == before == a.books()
        )
        self.say(
            f"出金の送金記録はすべて孤立扱い、アラートは取消。btc-hot の残高は出金前の "
            f"{format_btc(after.get('btc-hot', 0))} BTC に戻りました（コインは未使用に戻る）",
            "The withdrawal's transfers are all orphaned, its alert retracted; btc-hot's balance "
            "is back to "
            f"{format_btc(after.get('btc-hot', 0))} BTC (its coins are unspent again)",
        )
        return Check(
            "(g) Bitcoin reorg: the payment orphaned, its alert retracted, its coins unspent again",
            "(g) Bitcoin の再編成: 出金を孤立扱いにしてアラートを取消、コインを未使用に戻す",
            ok,
        )

    def balances(self) -> Check:
        stored, books = self.store.utxo_balances(BTC_CHAIN), self.actors.books()
        self.facts.balances = {w: (stored.get(w, 0), books.get(w, 0)) for w in WALLETS}
        for mismatch in self.mismatches:
            self.say(f"残高の不一致: {mismatch}", f"Balance mismatch: {mismatch}")
        ok = not self.mismatches and self.facts.blocks_compared > 0 and stored == books
        return Check(
            "Bitcoin balances per wallet exact after every block",
            "Bitcoin の各ウォレット残高がすべてのブロックで一致",
            ok,
        )

    def _statuses(self, txid: str) -> set[TransferStatus]:
        return {t.status for t in self.store.transfers(chain=BTC_CHAIN) if t.tx_hash == txid}


def summary_lines(facts: BitcoinFacts) -> list[tuple[str, str]]:
    """The summary's Bitcoin lines, (ja, en) each: the drain and the balances table."""
    amount = format_btc(facts.drain_amount)
    lines = [
        (
            f"Bitcoin の流出額 (f): {amount} BTC（取引 {facts.drain_txid}）",
            f"Bitcoin drained (f): {amount} BTC (tx {facts.drain_txid})",
        ),
        (
            f"Bitcoin 残高（{facts.blocks_compared} ブロックで照合）: ウォレット / ストア / 帳簿",
            f"Bitcoin balances (compared at {facts.blocks_compared} blocks): "
            "wallet / store / books",
        ),
    ]
    for wallet, (stored, books) in facts.balances.items():
        row = f"  {wallet:<9} {format_btc(stored):>14} BTC  {format_btc(books):>14} BTC"
        lines.append((row, row))
    return lines
