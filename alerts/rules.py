"""Alert rules: pure functions of an event, the state the rules need, and the policy.

``evaluate(event, state, policy, now) -> Verdict`` does no I/O and keeps no state of its own:
``RuleState`` (built by ``alerts.state.RuleStateReader``) holds the wallet book, the source
wallet's open expectations and which of them other outflows used, its recent outflows, its
balance observations and the destination's labels. The processor stores and delivers the
verdict's alerts and records the expectation it used. An alert's id is derived from its rule
and the event's natural key, so evaluating a replayed event yields the same alert, which the
store then recognises; a transfer is evaluated again as it moves (pending → provisional →
confirmed) and every rule gives it the same verdict each time (the window and balance rules
look only at what happened up to the transfer's own time).

The outflow rules (an outflow: a transfer from a watched wallet):
- a *planned* outflow -- it matches an open expectation, or goes to one of the exchange's own
  wallets -- alerts under no rule but ``labelled-destination`` (a sanctioned destination
  alerts even when announced);
- ``unplanned-outflow``: any other outflow of a hot or warm wallet;
- ``cold-outflow``: any other outflow of a cold wallet (not also ``unplanned-outflow``); a
  refill to another own wallet is planned, unless ``cold_refill_requires_expectation``;
- ``limit/single`` and ``limit/window``: an unplanned outflow above the wallet's
  ``max_single`` for its asset, or bringing the sum of the wallet's unplanned outflows of the
  asset within ``window_seconds`` (by block time; pending ones by when first seen) above
  ``max_window``. A pending token transfer (``pending:N``) and the block's one (``log:N``)
  of the same transaction count once;
- ``balance-fall``: after an unplanned outflow the wallet's balance of the asset is more than
  ``balance_fall_share_percent`` below its highest within ``balance_fall_window_seconds``
  (one alert per transaction and asset);
- ``labelled-destination``: the destination carries a label of a configured category.

Events read from a pending transaction's calldata (index ``pending:N``) go through the same
rules as the block's events: a pending token transfer out of a cold wallet is a cold outflow, a
pending approval a control change. Their alerts are keyed apart from the block's (the keys
differ), start PENDING and end SUPERSEDED when the transaction is mined (the block's own alerts
take over: provisional at once, confirmed at the block's confirmations), EXECUTED when it is
mined and nothing in the block reports its kind (DELEGATECALL, malformed call, fallback
handler: delivered again, at the alert's full severity), or RETRACTED when it is withdrawn. A
pending Safe transaction with operation DELEGATECALL is ``control/delegate_call``: critical,
unless its target is on the Safe's allowlist (a vetted MultiSend, say), when it is only
reported.

An approval of 0 to a non-zero spender is a revocation -- except when read from pending
calldata of a token not known to be fungible (``RulePolicy.fungible_tokens``): ERC-721's
``approve(spender, tokenId)`` has the very same selector, and token id 0 is a token. Such a
reading is reported at ``ambiguous_approval_severity`` (the block's Approval event, whose shape
tells ERC-20 from ERC-721, then says which it was), never dropped as a revocation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.expectations import Plan, Reconciliation, reconcile
from alerts.state import RuleState, Verdict
from drainwatch.events import ControlChangeSeen, Event, TransferSeen
from drainwatch.model import (
    PENDING_INDEX,
    Alert,
    AlertState,
    ControlChange,
    ControlKind,
    CustodyKind,
    Limit,
    Severity,
    Transfer,
    TransferStatus,
    Wallet,
    WalletRole,
)

COLD_OUTFLOW = "cold-outflow"
UNPLANNED_OUTFLOW = "unplanned-outflow"
LIMIT_SINGLE = "limit/single"
LIMIT_WINDOW = "limit/window"
BALANCE_FALL = "balance-fall"
LABELLED_DESTINATION = "labelled-destination"
#: The label categories ``labelled-destination`` knows, most serious first.
LABEL_CATEGORIES = ("sanctioned", "attacker", "mixer")
#: Rule ids of control changes: ``control/<kind>``, e.g. ``control/owner_added``.
CONTROL_PREFIX = "control/"


@dataclass(frozen=True)
class RulePolicy:
    cold_outflow: bool = True
    cold_outflow_severity: Severity = Severity.CRITICAL
    #: A cold wallet's refill of another own wallet is planned without an expectation, unless
    #: this is set: then an unannounced one is reported at ``cold_internal_severity``.
    cold_refill_requires_expectation: bool = False
    cold_internal_severity: Severity = Severity.WARNING
    unplanned_outflow: bool = True
    unplanned_outflow_severity: Severity = Severity.HIGH
    limits: bool = True
    limit_severity: Severity = Severity.HIGH
    balance_fall: bool = True
    balance_fall_severity: Severity = Severity.HIGH
    balance_fall_share_percent: int = 20
    balance_fall_window_seconds: int = 3600
    labelled_destination: bool = True
    labelled_destination_severity: Severity = Severity.CRITICAL
    labelled_categories: frozenset[str] = frozenset(LABEL_CATEGORIES)
    #: Every change of who controls a watched wallet: owners, threshold, guard, modules,
    #: implementation, and approvals to a spender that is not on the wallet's allowlist.
    control_changes: bool = True
    control_severity: Severity = Severity.CRITICAL
    #: A Safe transaction that DELEGATECALLs hands the Safe's storage to the target's code.
    delegate_call_severity: Severity = Severity.CRITICAL
    #: ... to a target on the Safe's allowlist (a vetted MultiSend batching its calls).
    planned_delegate_call_severity: Severity = Severity.WARNING
    #: A pending call with a token or Safe selector whose arguments do not decode strictly.
    malformed_call_severity: Severity = Severity.HIGH
    #: A pending ``approve(spender, 0)`` of a token not known to be fungible: an ERC-20
    #: revocation, or an ERC-721 approval of token id 0 to the spender.
    ambiguous_approval_severity: Severity = Severity.WARNING
    #: (chain, lower-case contract) of the tokens known to be ERC-20 (the configured assets):
    #: their pending ``approve(spender, 0)`` is a revocation.
    fungible_tokens: frozenset[tuple[str, str]] = frozenset()


class WalletBook:
    """The exchange's own wallets, looked up by (chain, address) case-insensitively.

    A Bitcoin chain's wallets also own the addresses derived from their xpubs and descriptors,
    whose number grows as they get used: ``derive`` attaches that chain's lookup (address →
    wallet name), which the book asks for an address not listed in the config."""

    def __init__(self, wallets: Iterable[Wallet]) -> None:
        self.wallets = tuple(wallets)
        self._by_name = {w.name: w for w in self.wallets}
        self._owner: dict[tuple[str, str], Wallet] = {}
        self._derived: dict[str, Callable[[str], str | None]] = {}
        for wallet in self.wallets:
            for address in wallet.addresses:
                self._owner[(wallet.chain, address.lower())] = wallet

    def derive(self, chain: str, lookup: Callable[[str], str | None]) -> None:
        self._derived[chain] = lookup

    def owner(self, chain: str, address: str) -> Wallet | None:
        wallet = self._owner.get((chain, address.lower()))
        if wallet is None and chain in self._derived:
            name = self._derived[chain](address)
            wallet = self._by_name.get(name) if name is not None else None
        return wallet

    def get(self, name: str) -> Wallet | None:
        return self._by_name.get(name)

    def addresses(self, chain: str) -> list[str]:
        return [a for (c, a) in self._owner if c == chain]

    def multisig_addresses(self, chain: str) -> list[str]:
        """Addresses of multisig wallets: on EVM chains, Safe-like contract wallets."""
        return [
            a.lower()
            for w in self.wallets
            if w.chain == chain and w.custody.kind is CustodyKind.MULTISIG
            for a in w.addresses
        ]


def alert_id(rule_id: str, subject: tuple[str, str, str]) -> str:
    digest = hashlib.sha256("|".join((rule_id, *subject)).encode()).hexdigest()
    return f"A-{digest[:16]}"


def alert_state(status: TransferStatus) -> AlertState:
    return {
        TransferStatus.PENDING: AlertState.PENDING,
        TransferStatus.PROVISIONAL: AlertState.PROVISIONAL,
        TransferStatus.CONFIRMED: AlertState.CONFIRMED,
        TransferStatus.ORPHANED: AlertState.RETRACTED,
        TransferStatus.SUPERSEDED: AlertState.SUPERSEDED,
        TransferStatus.EXECUTED: AlertState.EXECUTED,
    }[status]


def evaluate(event: Event, state: RuleState, policy: RulePolicy, now: datetime) -> Verdict:
    if isinstance(event, ControlChangeSeen):
        if not policy.control_changes:
            return Verdict([])
        return Verdict(_control_change(event.change, state.book, policy, now))
    if not isinstance(event, TransferSeen):
        return Verdict([])
    t = event.transfer
    rec = reconcile(t, state.book, state.expectations, state.consumed, now)
    if rec is None:
        return Verdict([])  # not an outflow of a watched wallet
    # An orphaned outflow (withdrawn from the mempool, its block replaced) frees what it used.
    used = rec.reference if t.status is not TransferStatus.ORPHANED else None
    out = _Outflow(t, rec, state, policy, now)
    alerts = out.labelled() if policy.labelled_destination else []
    if rec.plan is Plan.UNPLANNED or out.unannounced_refill():
        alerts += out.unplanned()
    if rec.plan is Plan.UNPLANNED:
        alerts += out.limits() if policy.limits else []
        alerts += out.balance_fall() if policy.balance_fall else []
    return Verdict(alerts, used, rec.plan)


def _control_change(
    change: ControlChange, book: WalletBook, policy: RulePolicy, now: datetime
) -> list[Alert]:
    wallet = book.owner(change.chain, change.wallet_address)
    if wallet is None:
        return []
    allowed = {a.lower() for a in wallet.allowlist}
    severity = policy.control_severity
    if change.kind in (ControlKind.APPROVAL, ControlKind.APPROVAL_FOR_ALL):
        spender = (change.subject or "").lower()
        cleared = int(spender or "0x0", 16) == 0
        if spender in allowed:
            return []  # an approval to a spender the exchange planned
        if _maybe_token_zero(change, cleared, policy):
            severity = policy.ambiguous_approval_severity
        elif not change.value or cleared:
            # A revocation (an amount of 0, or an NFT approval cleared to the zero address, as
            # every ERC-721 transfer does).
            return []
    elif change.kind is ControlKind.DELEGATE_CALL:
        planned = (change.subject or "").lower() in allowed
        severity = (
            policy.planned_delegate_call_severity if planned else policy.delegate_call_severity
        )
    elif change.kind is ControlKind.MALFORMED_CALL:
        severity = policy.malformed_call_severity
    rule_id = CONTROL_PREFIX + change.kind.value
    return [
        Alert(
            id=alert_id(rule_id, change.key),
            rule_id=rule_id,
            severity=severity,
            state=alert_state(change.status),
            chain=change.chain,
            wallet=wallet.name,
            subject=change.key,
            raised_at=now,
            tx_hash=change.tx_hash,
            block=change.block,
            asset=change.contract,
            amount=change.value,
            counterparty=change.subject,
        )
    ]


def _maybe_token_zero(change: ControlChange, cleared: bool, policy: RulePolicy) -> bool:
    """A pending ``approve(spender, 0)`` that may be ERC-721's approval of token id 0 (see
    above): read from calldata, to a non-zero spender, of a token not known to be ERC-20."""
    return (
        change.kind is ControlKind.APPROVAL
        and change.index.startswith(PENDING_INDEX)
        and change.value == 0
        and not cleared
        and (change.chain, (change.contract or "").lower()) not in policy.fungible_tokens
    )


class _Outflow:
    """The rules on one outflow of a watched wallet, given its reconciliation."""

    def __init__(
        self, t: Transfer, rec: Reconciliation, state: RuleState, policy: RulePolicy, now: datetime
    ) -> None:
        self.t, self.rec, self.state, self.policy, self.now = t, rec, state, policy, now
        self.source: Wallet = rec.source
        #: When it happened: its block's time, or when it was first seen while pending.
        self.at = t.block_time or state.seen_at(t) or now

    def alert(
        self,
        rule_id: str,
        severity: Severity,
        facts: Iterable[tuple[str, str]],
        subject: tuple[str, str, str] | None = None,
    ) -> Alert:
        t = self.t
        subject = subject or t.key
        return Alert(
            id=alert_id(rule_id, subject),
            rule_id=rule_id,
            severity=severity,
            state=alert_state(t.status),
            chain=t.chain,
            wallet=self.source.name,
            subject=subject,
            raised_at=self.now,
            tx_hash=t.tx_hash,
            block=t.block,
            asset=t.asset,
            amount=t.amount,
            counterparty=t.to_address,
            facts=tuple(facts),
        )

    def unannounced_refill(self) -> bool:
        """A cold wallet's refill of another own wallet without expectation, when the policy
        wants refills announced (change back to the wallet itself is never one)."""
        own = self.rec.destination
        return (
            self.policy.cold_refill_requires_expectation
            and self.rec.plan is Plan.OWN_WALLET
            and self.source.role is WalletRole.COLD
            and own is not None
            and own.name != self.source.name
        )

    def unplanned(self) -> list[Alert]:
        open_ = sum(1 for e in self.state.expectations if e.reference not in self.state.consumed)
        facts = [("expectation", "none matching"), ("open_expectations", str(open_))]
        if self.source.role is WalletRole.COLD and self.policy.cold_outflow:
            severity = self.policy.cold_outflow_severity
            if self.rec.destination is not None:  # an unannounced refill
                severity = self.policy.cold_internal_severity
                facts.append(("own_wallet", self.rec.destination.name))
            return [self.alert(COLD_OUTFLOW, severity, facts)]
        if not self.policy.unplanned_outflow:
            return []
        return [self.alert(UNPLANNED_OUTFLOW, self.policy.unplanned_outflow_severity, facts)]

    def limits(self) -> list[Alert]:
        alerts: list[Alert] = []
        for limit in self.source.limits:
            if limit.asset == self.t.asset:
                alerts += self._limit(limit)
        return alerts

    def _limit(self, limit: Limit) -> list[Alert]:
        alerts = []
        severity = self.policy.limit_severity
        if limit.max_single is not None and self.t.amount > limit.max_single:
            facts = [("amount", str(self.t.amount)), ("max_single", str(limit.max_single))]
            alerts.append(self.alert(LIMIT_SINGLE, severity, facts))
        if limit.max_window is not None and limit.window_seconds is not None:
            window = timedelta(seconds=limit.window_seconds)
            total, count = self.state.window_sum(self.t, self.at, window)
            if total > limit.max_window:
                facts = [
                    ("window_sum", str(total)),
                    ("max_window", str(limit.max_window)),
                    ("window_seconds", str(limit.window_seconds)),
                    ("outflows", str(count)),
                ]
                alerts.append(self.alert(LIMIT_WINDOW, severity, facts))
        return alerts

    def balance_fall(self) -> list[Alert]:
        """The balance right after this outflow against its highest within the window."""
        window = timedelta(seconds=self.policy.balance_fall_window_seconds)
        seen = self.state.balance_range(self.at, window)
        if seen is None:
            return []
        peak, after = seen
        fall = peak - after
        share = self.policy.balance_fall_share_percent
        if peak <= 0 or fall * 100 <= share * peak:
            return []
        basis_points = fall * 10_000 // peak
        facts = [
            ("balance_before", str(peak)),
            ("balance_after", str(after)),
            ("fall_percent", f"{basis_points // 100}.{basis_points % 100:02d}"),
            ("share_percent", str(share)),
            ("window_seconds", str(self.policy.balance_fall_window_seconds)),
        ]
        # One alert per transaction and asset: a Bitcoin spend is one transfer per output.
        subject = (self.t.chain, self.t.tx_hash, f"balance:{self.t.asset}")
        return [self.alert(BALANCE_FALL, self.policy.balance_fall_severity, facts, subject)]

    def labelled(self) -> list[Alert]:
        if self.rec.destination is not None:
            return []  # one of the exchange's own wallets, whatever a list says of it
        wanted = self.policy.labelled_categories
        labels = [x for x in self.state.destination_labels if x.category in wanted]
        if not labels:
            return []
        rank = {c: i for i, c in enumerate(LABEL_CATEGORIES)}
        label = min(labels, key=lambda x: rank.get(x.category, len(rank)))
        facts = [
            ("label", label.name),
            ("label_source", label.source),
            ("category", label.category),
        ]
        if label.reference:
            facts.append(("label_reference", label.reference))
        if self.rec.reference is not None:
            facts.append(("expectation", self.rec.reference))
        severity = self.policy.labelled_destination_severity
        return [self.alert(LABELLED_DESTINATION, severity, facts)]
