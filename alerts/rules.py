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

from drainwatch.events import Event, TransferSeen
from drainwatch.model import (
    Alert,
    AlertState,
    Severity,
    Transfer,
    TransferStatus,
    Wallet,
    WalletRole,
)

COLD_OUTFLOW = "cold-outflow"


@dataclass(frozen=True)
class RulePolicy:
    cold_outflow: bool = True
    cold_outflow_severity: Severity = Severity.CRITICAL
    #: A cold wallet moving funds to another of the exchange's own wallets (a refill) is still
    #: reported, at this lower severity, until planned movements are known (expectations).
    cold_internal_severity: Severity = Severity.WARNING


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
    if not isinstance(event, TransferSeen):
        return []
    alerts: list[Alert] = []
    if policy.cold_outflow:
        alerts += _cold_outflow(event.transfer, book, policy, now)
    return alerts


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
