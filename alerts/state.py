"""What the rules know besides the event: ``RuleState`` (a frozen value) and its reader.

``RuleState`` is what ``alerts.rules.evaluate`` reads: the wallet book, the source wallet's
open expectations and the ones other outflows used, its recent outflows (for the limit
windows), its balance observations (for a balance fall) and the destination's labels. Its
methods are pure arithmetic over that value.

``RuleStateReader`` is the impure edge that builds it, kept small. For each event the
processor calls ``for_event(event, now)``, then ``evaluate``, then records the expectation the
verdict used (``store.consume_expectation``), then ``observe(event, verdict, now)``. The reader
keeps each wallet's recent outflows in memory: loaded from the store at the wallet's first
outflow, then updated from every event, keyed by transfer (a replay changes nothing); an
orphaned or superseded transfer, or one in a disconnected block, drops out. Expectations are
read from the store at every outflow (another process adds them). A Bitcoin wallet's balances
come from the store's UTXO set at the heights of the wallet's activity within the window;
EVM wallets have no balance source yet (their series is empty: no balance-fall alert).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from alerts.expectations import Plan, same_address
from drainwatch.events import BlockDisconnected, Event, TransferSeen
from drainwatch.model import (
    NATIVE_ASSET_ID,
    PENDING_INDEX,
    Alert,
    Chain,
    ChainKind,
    Expectation,
    Transfer,
    TransferStatus,
    Wallet,
)
from drainwatch.ports import ExpectationRecord, Store

if TYPE_CHECKING:
    from alerts.rules import RulePolicy, WalletBook
    from graph.labels import Label, LabelBook

_GONE = (TransferStatus.ORPHANED, TransferStatus.SUPERSEDED)
#: Kept past the longest window, so that a transfer evaluated again at its confirmation (an
#: hour later on Bitcoin) still sees the outflows before it.
_SLACK = timedelta(days=1)
_BALANCE_CACHE = 512  # heights whose UTXO balances are kept


@dataclass(frozen=True)
class RecentOutflow:
    transfer: Transfer
    planned: bool
    #: Its block's time, or when it was first seen while pending.
    at: datetime


@dataclass(frozen=True)
class BalancePoint:
    """A wallet's balance of one asset, in base units, as it stood at ``at``."""

    at: datetime
    amount: int


@dataclass(frozen=True)
class Verdict:
    """The rules' answer: the alerts, and the expectation the outflow used (the processor
    records it with ``store.consume_expectation``); ``plan`` None when not an outflow."""

    alerts: list[Alert]
    consumed: str | None = None
    plan: Plan | None = None


@dataclass(frozen=True)
class RuleState:
    book: WalletBook
    #: The source wallet's expectations still valid when the outflow happened.
    expectations: tuple[Expectation, ...] = ()
    #: Their references another outflow used already.
    consumed: frozenset[str] = frozenset()
    #: The source wallet's recent outflows (this one included once seen before).
    outflows: tuple[RecentOutflow, ...] = ()
    #: The source wallet's balance of the event's asset, oldest first; the last point is the
    #: balance right after the event. Empty when unknown.
    balances: tuple[BalancePoint, ...] = ()
    destination_labels: tuple[Label, ...] = ()

    def seen_at(self, t: Transfer) -> datetime | None:
        """When a pending transfer was first seen (None when not seen before)."""
        return next((o.at for o in self.outflows if o.transfer.key == t.key), None)

    def window_sum(self, t: Transfer, at: datetime, window: timedelta) -> tuple[int, int]:
        """The sum and count of the unplanned outflows of ``t``'s asset within ``window``
        up to ``at``, ``t`` included. One transaction counts once: its pending readings
        (``pending:N``) give way to the block's transfers, except for a pending ``t`` itself."""
        others = [
            o
            for o in self.outflows
            if o.transfer.key != t.key
            and not o.planned
            and o.transfer.status not in _GONE
            and (o.transfer.chain, o.transfer.asset) == (t.chain, t.asset)
            and at - window < o.at <= at
        ]
        if t.index.startswith(PENDING_INDEX):
            others = [o for o in others if o.transfer.tx_hash != t.tx_hash]
        mined = {o.transfer.tx_hash for o in others if not _pending(o.transfer)} | {t.tx_hash}
        counted = [o for o in others if not (_pending(o.transfer) and o.transfer.tx_hash in mined)]
        return t.amount + sum(o.transfer.amount for o in counted), 1 + len(counted)

    def balance_range(self, at: datetime, window: timedelta) -> tuple[int, int] | None:
        """(the highest balance within ``window`` up to ``at``, the balance after the event),
        None when no balance is known."""
        if not self.balances:
            return None
        after = self.balances[-1].amount
        inside = [p.amount for p in self.balances if at - window < p.at <= at]
        return max([*inside, after]), after


def _pending(t: Transfer) -> bool:
    return t.index.startswith(PENDING_INDEX)


class RuleStateReader:
    def __init__(
        self,
        store: Store,
        book: WalletBook,
        labels: LabelBook | None,
        policy: RulePolicy,
        chains: Mapping[str, Chain],
    ) -> None:
        self._store = store
        self._book = book
        self._labels = labels
        self._chains = chains
        longest = max(
            [policy.balance_fall_window_seconds]
            + [lim.window_seconds or 0 for w in book.wallets for lim in w.limits]
        )
        self._horizon = timedelta(seconds=longest) + _SLACK
        self._balance_window = timedelta(seconds=policy.balance_fall_window_seconds)
        self._outflows: dict[str, dict[tuple[str, str, str], RecentOutflow]] = {}
        #: Bitcoin wallets: block height → block time of the blocks that moved their coins.
        self._activity: dict[str, dict[int, datetime]] = {}
        self._utxo_balances: dict[tuple[str, int], dict[str, int]] = {}

    def for_event(self, event: Event, now: datetime) -> RuleState:
        if not isinstance(event, TransferSeen):
            return RuleState(self._book)
        t = event.transfer
        source = self._book.owner(t.chain, t.from_address)
        if source is None:
            return RuleState(self._book)
        when = t.block_time or now
        if source.name not in self._outflows:
            self._load(source, self._store.expectations(t.chain, source.name), now)
        window = self._outflows[source.name]
        records = self._store.expectation_candidates(t.chain, source.name, t.asset, t.amount)
        outflows = tuple(o for o in window.values() if o.transfer.asset == t.asset)
        at = t.block_time or next((o.at for o in outflows if o.transfer.key == t.key), now)
        labels: tuple[Label, ...] = ()
        if self._labels is not None:
            labels = self._labels.lookup(self._family(t.chain), t.to_address)
        return RuleState(
            book=self._book,
            expectations=tuple(_still_valid(r, t, when) for r in records if _usable(r, t, when)),
            consumed=frozenset(r.expectation.reference for r in records if _used_by_another(r, t)),
            outflows=outflows,
            balances=self._balances(source, t, at),
            destination_labels=labels,
        )

    def preload(self, events: Iterable[Event], now: datetime) -> None:
        """Load the windows of the wallets ``events`` move value out of, before the processor
        stores their facts: loaded after, a window would already hold the later transfers of
        the same batch, marked unplanned before their own expectations were used."""
        for event in events:
            if isinstance(event, TransferSeen):
                t = event.transfer
                source = self._book.owner(t.chain, t.from_address)
                if source is not None and source.name not in self._outflows:
                    self._load(source, self._store.expectations(t.chain, source.name), now)

    def observe(self, event: Event, verdict: Verdict, now: datetime) -> None:
        if isinstance(event, BlockDisconnected):
            self._disconnect(event)
            return
        if not isinstance(event, TransferSeen):
            return
        t = event.transfer
        for address in (t.from_address, t.to_address):
            wallet = self._book.owner(t.chain, address)
            activity = self._activity.get(wallet.name) if wallet is not None else None
            if activity is not None and t.block and t.block_time and t.status not in _GONE:
                activity[t.block.height] = t.block_time
        source = self._book.owner(t.chain, t.from_address)
        window = self._outflows.get(source.name) if source is not None else None
        if window is None:
            return
        if t.status in _GONE:
            window.pop(t.key, None)
        else:
            before = window.get(t.key)
            at = t.block_time or (before.at if before else now)
            planned = verdict.plan is not None and verdict.plan is not Plan.UNPLANNED
            window[t.key] = RecentOutflow(t, planned, at)
        self._prune(window, now)

    # -- loading -----------------------------------------------------------------------------

    def _load(
        self, wallet: Wallet, records: list[ExpectationRecord], now: datetime
    ) -> dict[tuple[str, str, str], RecentOutflow]:
        loaded = self._outflows.get(wallet.name)
        if loaded is not None:
            return loaded
        used = {r.consumed_by for r in records if r.consumed_by is not None}
        pending_used = {(c, tx) for (c, tx, index) in used if index.startswith(PENDING_INDEX)}
        window: dict[tuple[str, str, str], RecentOutflow] = {}
        activity: dict[int, datetime] = {}
        history = self._history(wallet)
        # The horizon runs back from the chain's newest block time, not the wall clock.
        times = [t.block_time for t in history if t.block_time is not None]
        newest = max(times) if times else now
        for t in history:
            if t.status in _GONE or (t.block_time or now) < newest - self._horizon:
                continue
            if t.block is not None and t.block_time is not None:
                activity[t.block.height] = t.block_time
            if self._book.owner(t.chain, t.from_address) is not wallet:
                continue
            planned = (
                self._book.owner(t.chain, t.to_address) is not None
                or t.key in used
                or (t.chain, t.tx_hash) in pending_used
                or any(same_address(a, t.to_address) for a in wallet.allowlist)
            )
            window[t.key] = RecentOutflow(t, planned, t.block_time or now)
        self._outflows[wallet.name] = window
        if self._kind(wallet.chain) is ChainKind.BITCOIN:
            self._activity[wallet.name] = activity
        return window

    def _history(self, wallet: Wallet) -> list[Transfer]:
        if wallet.xpubs or wallet.descriptors:  # derived addresses: the book knows them
            return [
                t
                for t in self._store.transfers(wallet.chain)
                if any(
                    self._book.owner(t.chain, a) is wallet for a in (t.from_address, t.to_address)
                )
            ]
        if not wallet.addresses:
            return []
        return self._store.transfers(wallet.chain, addresses=list(wallet.addresses))

    def _balances(self, wallet: Wallet, t: Transfer, at: datetime) -> tuple[BalancePoint, ...]:
        """Bitcoin: the balance before and after each block that moved the wallet's coins
        within the balance window, up to ``t``'s block, whose balance after comes last. EVM:
        the same from the balances the watcher read after each block with an outflow."""
        if t.block is None:
            return ()
        if self._kind(t.chain) is ChainKind.EVM:
            return self._read_balances(wallet, t, at)
        if t.asset != NATIVE_ASSET_ID or self._kind(t.chain) is not ChainKind.BITCOIN:
            return ()
        height, window = t.block.height, self._balance_window
        seen = self._activity.get(wallet.name, {})
        heights = {h: when for h, when in seen.items() if h < height and at - window < when <= at}
        heights[height] = at
        points = []
        for h in sorted(heights):
            points.append(BalancePoint(heights[h], self._utxo_balance(t.chain, h - 1, wallet)))
            points.append(BalancePoint(heights[h], self._utxo_balance(t.chain, h, wallet)))
        return tuple(points)

    def _read_balances(self, wallet: Wallet, t: Transfer, at: datetime) -> tuple[BalancePoint, ...]:
        assert t.block is not None
        stored = self._store.balances(t.chain, wallet.name, t.asset, at - self._balance_window)
        mine = [b for b in stored if b.block == t.block]
        if not mine:
            return ()  # the node could not say (logged by the watcher): no verdict on balance
        earlier = [b for b in stored if b.block.height < t.block.height]
        points: list[BalancePoint] = []
        for b in [*earlier, *mine]:
            points.append(BalancePoint(b.block_time, b.before))
            points.append(BalancePoint(b.block_time, b.amount))
        return tuple(points)

    def _utxo_balance(self, chain: str, height: int, wallet: Wallet) -> int:
        cached = self._utxo_balances.get((chain, height))
        if cached is None:
            if len(self._utxo_balances) >= _BALANCE_CACHE:
                del self._utxo_balances[min(self._utxo_balances, key=lambda k: k[1])]
            cached = self._store.utxo_balances(chain, height)
            self._utxo_balances[(chain, height)] = cached
        return cached.get(wallet.name, 0)

    # -- upkeep ------------------------------------------------------------------------------

    def _disconnect(self, event: BlockDisconnected) -> None:
        for name, window in self._outflows.items():
            wallet = self._book.get(name)
            if wallet is None or wallet.chain != event.chain:
                continue
            for gone in [k for k, o in window.items() if o.transfer.block == event.block]:
                del window[gone]
            activity = self._activity.get(name, {})
            for h in [h for h in activity if h >= event.block.height]:
                del activity[h]
        for cached in [k for k in self._utxo_balances if k[0] == event.chain]:
            if cached[1] >= event.block.height:
                del self._utxo_balances[cached]

    def _prune(self, window: dict[tuple[str, str, str], RecentOutflow], now: datetime) -> None:
        """Forget what lies beyond the horizon of the chain's own time: the newest block time
        in the window (not the wall clock, which a backfill of old blocks or a node with a
        fixed genesis time is far from), or ``now`` while only pending ones are known."""
        mined = [o.at for o in window.values() if o.transfer.block_time is not None]
        oldest = (max(mined) if mined else now) - self._horizon
        for key in [k for k, o in window.items() if o.at < oldest]:
            del window[key]

    def _kind(self, chain: str) -> ChainKind | None:
        known = self._chains.get(chain)
        return known.kind if known is not None else None

    def _family(self, chain: str) -> str:
        kind = self._kind(chain)
        return kind.value if kind is not None else "evm"


def _used_by_this(record: ExpectationRecord, t: Transfer) -> bool:
    """Used by ``t`` itself, or by a reading of ``t``'s transaction from the mempool."""
    used = record.consumed_by
    if used is None:
        return False
    return used == t.key or (used[:2] == (t.chain, t.tx_hash) and used[2].startswith(PENDING_INDEX))


def _usable(record: ExpectationRecord, t: Transfer, when: datetime) -> bool:
    """Still valid when ``t`` happened, or already matched to ``t``: a withdrawal announced,
    matched while pending and mined after ``valid_until`` stays planned."""
    return record.expectation.valid_until >= when or _used_by_this(record, t)


def _still_valid(record: ExpectationRecord, t: Transfer, when: datetime) -> Expectation:
    e = record.expectation
    return e if e.valid_until >= when else replace(e, valid_until=when)


def _used_by_another(record: ExpectationRecord, t: Transfer) -> bool:
    """Used by an outflow other than ``t``. A pending reading of ``t``'s own transaction
    (``pending:N``) is ``t`` seen earlier; for a pending reading, the mined transfer of its
    transaction is ``t`` seen later (its verdict, superseded, comes after the block's events):
    neither is another outflow."""
    by = record.consumed_by
    if by is None or by == t.key:
        return False
    if by[:2] != t.key[:2]:
        return True
    return not (by[2].startswith(PENDING_INDEX) or t.index.startswith(PENDING_INDEX))
