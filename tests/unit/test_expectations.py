"""Reconciling outflows with announced expectations (issue #5's core): pure, with properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from alerts.expectations import Plan, reconcile, same_address
from alerts.rules import WalletBook
from drainwatch.model import (
    BlockRef,
    Custody,
    CustodyKind,
    Expectation,
    Transfer,
    TransferKind,
    TransferStatus,
    Wallet,
    WalletRole,
)

HOT = "0x1111111111111111111111111111111111111111"
COLD = "0x2222222222222222222222222222222222222222"
CUSTOMER = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"
T0 = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
BOOK = WalletBook(
    [
        Wallet("hot", "eth", WalletRole.HOT, Custody(CustodyKind.SINGLE_KEY), (HOT,)),
        Wallet("cold", "eth", WalletRole.COLD, Custody(CustodyKind.MULTISIG, 2), (COLD,)),
    ]
)


def _out(to: str = CUSTOMER, amount: int = 10**18, asset: str = "native", **kw: object) -> Transfer:
    fields: dict[str, object] = {
        "chain": "eth",
        "tx_hash": "0xaa",
        "index": "tx",
        "from_address": HOT,
        "to_address": to,
        "asset": asset,
        "amount": amount,
        "kind": TransferKind.NATIVE,
        "status": TransferStatus.CONFIRMED,
        "block": BlockRef(1, "0x01"),
        "block_time": T0,
    }
    fields.update(kw)
    return Transfer(**fields)  # type: ignore[arg-type]


def _expect(ref: str = "W-1", **kw: object) -> Expectation:
    fields: dict[str, object] = {
        "reference": ref,
        "chain": "eth",
        "wallet": "hot",
        "destination": CUSTOMER.lower(),
        "asset": "native",
        "amount": 10**18,
        "valid_until": T0 + timedelta(minutes=10),
    }
    fields.update(kw)
    return Expectation(**fields)  # type: ignore[arg-type]


def test_an_announced_withdrawal_is_planned_and_covers_one_outflow() -> None:
    verdict = reconcile(_out(), BOOK, [_expect()], set(), T0)
    assert verdict is not None and verdict.plan is Plan.EXPECTED and verdict.reference == "W-1"
    assert verdict.source.name == "hot" and verdict.planned
    again = reconcile(_out(), BOOK, [_expect()], {"W-1"}, T0)  # the same, a second time
    assert again is not None and again.plan is Plan.UNPLANNED


def test_to_an_own_wallet_is_planned_without_expectation() -> None:
    verdict = reconcile(_out(to=COLD), BOOK, [], set(), T0)
    assert verdict is not None and verdict.plan is Plan.OWN_WALLET and verdict.planned


def test_to_an_allowlisted_destination_is_planned_for_that_wallet_only() -> None:
    settlement = "0x4444444444444444444444444444444444444444"
    hot = replace(BOOK.wallets[0], allowlist=(settlement.upper().replace("0X", "0x"),))
    book = WalletBook([hot, BOOK.wallets[1]])
    verdict = reconcile(_out(to=settlement), book, [], set(), T0)
    assert verdict is not None and verdict.plan is Plan.ALLOWLISTED and verdict.planned
    from_cold = reconcile(_out(to=settlement, from_address=COLD), book, [], set(), T0)
    assert from_cold is not None and from_cold.plan is Plan.UNPLANNED


def test_not_an_outflow_has_no_verdict() -> None:
    assert reconcile(_out(from_address=CUSTOMER, to=HOT), BOOK, [], set(), T0) is None


def test_every_field_must_match() -> None:
    e = _expect()
    for wrong in (
        replace(e, amount=e.amount - 1),
        replace(e, amount=e.amount + 1),
        replace(e, asset="0xdac17f958d2ee523a2206206994597c13d831ec7"),
        replace(e, destination="0x3333333333333333333333333333333333333333"),
        replace(e, wallet="cold"),
        replace(e, chain="polygon"),
        replace(e, valid_until=T0 - timedelta(seconds=1)),
    ):
        verdict = reconcile(_out(), BOOK, [wrong], set(), T0)
        assert verdict is not None and verdict.plan is Plan.UNPLANNED, wrong


def test_a_pending_outflow_is_held_against_now() -> None:
    pending = _out(status=TransferStatus.PENDING, block=None, block_time=None)
    late = T0 + timedelta(minutes=11)
    assert reconcile(pending, BOOK, [_expect()], set(), T0).plan is Plan.EXPECTED  # type: ignore[union-attr]
    assert reconcile(pending, BOOK, [_expect()], set(), late).plan is Plan.UNPLANNED  # type: ignore[union-attr]


def test_the_expectation_expiring_first_is_used() -> None:
    soon, later = _expect("W-soon"), _expect("W-later", valid_until=T0 + timedelta(hours=1))
    verdict = reconcile(_out(), BOOK, [later, soon], set(), T0)
    assert verdict is not None and verdict.reference == "W-soon"


def test_address_case() -> None:
    assert same_address(CUSTOMER, CUSTOMER.lower())
    bech = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    assert same_address(bech, bech.upper())
    base58 = "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"
    assert same_address(base58, base58) and not same_address(base58, base58.lower())


amounts = st.integers(1, 2**96)


@given(amounts, st.lists(amounts, max_size=5))
def test_a_planned_outflow_stays_planned_whatever_else_was_announced(
    amount: int, others: list[int]
) -> None:
    expectations = [_expect(f"O-{i}", amount=a) for i, a in enumerate(others)]
    expectations.append(_expect("mine", amount=amount))
    verdict = reconcile(_out(amount=amount), BOOK, expectations, set(), T0)
    assert verdict is not None and verdict.planned


@given(st.lists(amounts, min_size=2, max_size=8))
def test_splitting_into_more_outflows_than_announced_leaves_the_rest_unplanned(
    parts: list[int],
) -> None:
    """n outflows against one expectation each of n-1: exactly one stays unplanned."""
    expectations = [_expect(f"W-{i}", amount=a) for i, a in enumerate(parts[:-1])]
    consumed: set[str] = set()
    unplanned = 0
    for amount in parts:
        verdict = reconcile(_out(amount=amount), BOOK, expectations, consumed, T0)
        assert verdict is not None
        if verdict.reference is not None:
            consumed.add(verdict.reference)
        unplanned += verdict.plan is Plan.UNPLANNED
    assert unplanned == 1 and len(consumed) == len(parts) - 1


def test_an_announced_movement_to_an_own_wallet_uses_its_expectation() -> None:
    sweep = _expect("S-1", destination=COLD.lower())
    verdict = reconcile(_out(to=COLD), BOOK, [sweep], set(), T0)
    assert verdict is not None and verdict.plan is Plan.EXPECTED and verdict.reference == "S-1"
    assert verdict.destination is not None and verdict.destination.name == "cold"
    unannounced = reconcile(_out(to=COLD), BOOK, [sweep], {"S-1"}, T0)
    assert unannounced is not None and unannounced.plan is Plan.OWN_WALLET
