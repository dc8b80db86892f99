"""Alert rules: pure functions of an event, the exchange's wallet book and the policy.

``evaluate(event, book, policy, now) -> list[Alert]`` does no I/O and keeps no state of its own;
the processor stores and delivers what it returns. An alert's id is derived from its rule and
the event's natural key, so evaluating a replayed event yields the same alert, which the store
then recognises.

Events read from a pending transaction's calldata (index ``pending:N``) go through the same
rules as the block's events: a pending token transfer out of a cold wallet is a cold outflow, a
pending approval a control change. Their alerts are keyed apart from the block's (the keys
differ), start PENDING and end SUPERSEDED when the transaction is mined (the block's own alerts
take over once the block has its confirmations), EXECUTED when it is mined and nothing in the
block reports its kind (DELEGATECALL, malformed call, fallback handler: delivered again, at the
alert's full severity), or RETRACTED when it is withdrawn. A pending Safe transaction with
operation DELEGATECALL is ``control/delegate_call``: critical, unless its target is on the
Safe's allowlist (a vetted MultiSend, say), when it is only reported.

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
from datetime import datetime

from drainwatch.events import ControlChangeSeen, Event, TransferSeen
from drainwatch.model import (
    PENDING_INDEX,
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
