"""Reconciliation of outflows with what the exchange planned: the heart of leak detection.

Pure: ``reconcile(transfer, book, expectations, consumed, now)`` says whether an outflow of a
watched wallet was planned — it matches an announced ``Expectation`` not yet used by another
outflow, it goes to one of the exchange's own wallets (a sweep, a refill, change), or to a
destination on the source wallet's ``allowlist`` (a custodian, a settlement counterparty) — or
not.
An announced movement between own wallets uses its expectation (so that a cold wallet's refill
can be required to be announced, and one announcement covers one refill). It reads no store
and keeps no state; the caller keeps which expectations were used
(``consumed``: one expectation covers one outflow, so two identical withdrawals need two).

An outflow matches an expectation when all of these hold: same chain, the outflow's source
wallet is the expectation's wallet, same destination (EVM addresses and bech32 compared without
case; base58 exactly), same asset, the exact amount, and the outflow happened (its block's time,
or ``now`` while pending) no later than ``valid_until``. Among several, the one expiring first
is used, so that a later one stays for a later withdrawal.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from drainwatch.model import Expectation, Transfer, Wallet

if TYPE_CHECKING:  # the rules import this module: only the type is needed here
    from alerts.rules import WalletBook


class Plan(StrEnum):
    EXPECTED = "expected"  # matches an announced expectation
    OWN_WALLET = "own_wallet"  # to another of the exchange's wallets (or back to its own)
    ALLOWLISTED = "allowlisted"  # to a destination on the source wallet's allowlist
    UNPLANNED = "unplanned"


@dataclass(frozen=True)
class Reconciliation:
    source: Wallet
    plan: Plan
    #: The expectation it used (``Plan.EXPECTED``), else None.
    reference: str | None = None
    #: The exchange's own wallet it goes to (a sweep, a refill, change), else None.
    destination: Wallet | None = None

    @property
    def planned(self) -> bool:
        return self.plan is not Plan.UNPLANNED


def same_address(a: str, b: str) -> bool:
    """Equal addresses: EVM ones (``0x``, EIP-55 or not) and bech32 ones (one case throughout)
    compare without case; base58 is case-sensitive (a case change is another address)."""
    if a == b:
        return True
    if a.lower() != b.lower():
        return False
    return a[:2].lower() == "0x" or (_one_case(a) and _one_case(b))


def _one_case(text: str) -> bool:
    return text in (text.lower(), text.upper())


def reconcile(
    transfer: Transfer,
    book: WalletBook,
    expectations: Iterable[Expectation],
    consumed: Container[str],
    now: datetime,
) -> Reconciliation | None:
    """The verdict on ``transfer``; None when it is not an outflow of a watched wallet."""
    source = book.owner(transfer.chain, transfer.from_address)
    if source is None:
        return None
    own = book.owner(transfer.chain, transfer.to_address)
    when = transfer.block_time or now
    matching = [
        e
        for e in expectations
        if e.reference not in consumed
        and e.chain == transfer.chain
        and e.wallet == source.name
        and e.asset == transfer.asset
        and e.amount == transfer.amount
        and when <= e.valid_until
        and same_address(e.destination, transfer.to_address)
    ]
    if matching:
        first = min(matching, key=lambda e: (e.valid_until, e.reference))
        return Reconciliation(source, Plan.EXPECTED, first.reference, own)
    if own is not None:
        return Reconciliation(source, Plan.OWN_WALLET, None, own)
    if any(same_address(a, transfer.to_address) for a in source.allowlist):
        return Reconciliation(source, Plan.ALLOWLISTED)
    return Reconciliation(source, Plan.UNPLANNED)
