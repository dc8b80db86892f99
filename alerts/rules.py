"""Alert rules: pure functions of an event, the exchange's wallet book and the policy.

``evaluate(event, book, policy, now) -> list[Alert]`` does no I/O and keeps no state of its own;
the processor stores and delivers what it returns. An alert's id is derived from its rule and
the event's natural key, so evaluating a replayed event yields the same alert, which the store
then recognises.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from drainwatch.events import ControlChangeSeen, Event, TransferSeen
from drainwatch.model import (
    Alert,
    AlertState,
    ControlChange,
    ControlKind,
    CustodyKind,
    Severity,
    Transfer,
    TransferStatus,
    Wallet,
    WalletRole,
)

COLD_OUTFLOW = "cold-outflow"
#: Rule ids of control changes: ``control/<kind>``, e.g. ``control/owner_added``.
CONTROL_PREFIX = "control/"


@dataclass(frozen=True)
class RulePolicy:
    cold_outflow: bool = True
    cold_outflow_severity: Severity = Severity.CRITICAL
    #: A cold wallet moving funds to another of the exchange's own wallets (a refill) is still
    #: reported, at this lower severity, until planned movements are known (expectations).
    cold_internal_severity: Severity = Severity.WARNING
    #: Every change of who controls a watched wallet: owners, threshold, guard, modules,
    #: implementation, and approvals to a spender that is not on the wallet's allowlist.
    control_changes: bool = True
    control_severity: Severity = Severity.CRITICAL


class WalletBook:
    """The exchange's own wallets, looked up by (chain, address) case-insensitively."""

    def __init__(self, wallets: Iterable[Wallet]) -> None:
        self.wallets = tuple(wallets)
        self._by_name = {w.name: w for w in self.wallets}
        self._owner: dict[tuple[str, str], Wallet] = {}
        for wallet in self.wallets:
            for address in wallet.addresses:
                self._owner[(wallet.chain, address.lower())] = wallet

    def owner(self, chain: str, address: str) -> Wallet | None:
        return self._owner.get((chain, address.lower()))

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
        TransferStatus.CONFIRMED: AlertState.CONFIRMED,
        TransferStatus.ORPHANED: AlertState.RETRACTED,
    }[status]


def evaluate(event: Event, book: WalletBook, policy: RulePolicy, now: datetime) -> list[Alert]:
    if isinstance(event, ControlChangeSeen):
        return _control_change(event.change, book, policy, now) if policy.control_changes else []
    if not isinstance(event, TransferSeen):
        return []
    alerts: list[Alert] = []
    if policy.cold_outflow:
        alerts += _cold_outflow(event.transfer, book, policy, now)
    return alerts


def _control_change(
    change: ControlChange, book: WalletBook, policy: RulePolicy, now: datetime
) -> list[Alert]:
    wallet = book.owner(change.chain, change.wallet_address)
    if wallet is None:
        return []
    if change.kind in (ControlKind.APPROVAL, ControlKind.APPROVAL_FOR_ALL):
        allowed = {a.lower() for a in wallet.allowlist}
        spender = (change.subject or "").lower()
        revoked = not change.value or int(spender or "0x0", 16) == 0
        if revoked or spender in allowed:
            # A revocation (an amount of 0, or an NFT approval cleared to the zero address, as
            # every ERC-721 transfer does), or an approval to a spender the exchange planned.
            return []
    rule_id = CONTROL_PREFIX + change.kind.value
    return [
        Alert(
            id=alert_id(rule_id, change.key),
            rule_id=rule_id,
            severity=policy.control_severity,
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


def _cold_outflow(t: Transfer, book: WalletBook, policy: RulePolicy, now: datetime) -> list[Alert]:
    source = book.owner(t.chain, t.from_address)
    if source is None or source.role is not WalletRole.COLD:
        return []
    internal = book.owner(t.chain, t.to_address) is not None
    severity = policy.cold_internal_severity if internal else policy.cold_outflow_severity
    return [
        Alert(
            id=alert_id(COLD_OUTFLOW, t.key),
            rule_id=COLD_OUTFLOW,
            severity=severity,
            state=alert_state(t.status),
            chain=t.chain,
            wallet=source.name,
            subject=t.key,
            raised_at=now,
            tx_hash=t.tx_hash,
            block=t.block,
            asset=t.asset,
            amount=t.amount,
            counterparty=t.to_address,
        )
    ]
