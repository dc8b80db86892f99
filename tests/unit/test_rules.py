"""Alert rules are pure: the same event, wallets and policy give the same alerts."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from alerts.render import render
from alerts.rules import COLD_OUTFLOW, RulePolicy, WalletBook, alert_id, evaluate
from drainwatch.events import BlockConnected, TransferSeen
from drainwatch.model import (
    AlertState,
    Asset,
    AssetKind,
    BlockRef,
    Chain,
    ChainKind,
    Custody,
    CustodyKind,
    Severity,
    Transfer,
    TransferKind,
    TransferStatus,
    Wallet,
    WalletRole,
)

NOW = datetime(2026, 11, 22, tzinfo=UTC)
HOT = "0x" + "11" * 20
COLD = "0xAbCdEf" + "22" * 17
ATTACKER = "0x" + "99" * 20
CHAIN = Chain(
    "ethereum",
    ChainKind.EVM,
    "mainnet",
    "ETH",
    18,
    chain_id=1,
    explorer_tx_url="https://explorer.example/tx/{tx}",
)
BOOK = WalletBook(
    [
        Wallet("eth-hot", "ethereum", WalletRole.HOT, Custody(CustodyKind.MPC), (HOT,)),
        Wallet(
            "eth-cold",
            "ethereum",
            WalletRole.COLD,
            Custody(CustodyKind.MULTISIG, 2, ("a", "b", "c")),
            (COLD,),
        ),
    ]
)


def _transfer(src: str, dst: str, amount: int = 4_800 * 10**18, **kw: object) -> Transfer:
    values: dict[str, object] = dict(
        chain="ethereum",
        tx_hash="0x" + "ab" * 32,
        index="tx",
        from_address=src.lower(),
        to_address=dst.lower(),
        asset="native",
        amount=amount,
        kind=TransferKind.NATIVE,
        status=TransferStatus.CONFIRMED,
        block=BlockRef(100, "0x" + "cd" * 32),
        block_time=NOW,
    )
    values.update(kw)
    return Transfer(**values)  # type: ignore[arg-type]


def test_cold_outflow_to_a_stranger_is_critical() -> None:
    [alert] = evaluate(TransferSeen(_transfer(COLD, ATTACKER)), BOOK, RulePolicy(), NOW)
    assert alert.rule_id == COLD_OUTFLOW
    assert alert.severity is Severity.CRITICAL
    assert alert.state is AlertState.CONFIRMED
    assert alert.wallet == "eth-cold"
    assert alert.amount == 4_800 * 10**18
    assert alert.id == alert_id(COLD_OUTFLOW, ("ethereum", "0x" + "ab" * 32, "tx"))


def test_cold_to_own_wallet_is_a_warning_and_hot_outflow_is_not_this_rule() -> None:
    [alert] = evaluate(TransferSeen(_transfer(COLD, HOT)), BOOK, RulePolicy(), NOW)
    assert alert.severity is Severity.WARNING
    assert evaluate(TransferSeen(_transfer(HOT, ATTACKER)), BOOK, RulePolicy(), NOW) == []
    assert evaluate(TransferSeen(_transfer(ATTACKER, COLD)), BOOK, RulePolicy(), NOW) == []


def test_disabled_rule_and_other_events() -> None:
    event = TransferSeen(_transfer(COLD, ATTACKER))
    assert evaluate(event, BOOK, RulePolicy(cold_outflow=False), NOW) == []
    block = BlockConnected("ethereum", BlockRef(1, "0x" + "00" * 32), "0x" + "00" * 32, NOW)
    assert evaluate(block, BOOK, RulePolicy(), NOW) == []


def test_pending_transfers_raise_pending_alerts() -> None:
    event = TransferSeen(_transfer(COLD, ATTACKER, status=TransferStatus.PENDING, block=None))
    [alert] = evaluate(event, BOOK, RulePolicy(), NOW)
    assert alert.state is AlertState.PENDING and alert.block is None


@given(
    st.integers(1, 2**256 - 1),
    st.sampled_from(list(TransferStatus)),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.datetimes(timezones=st.just(UTC)),
)
def test_a_replayed_event_gives_the_same_alert_id_and_another_tx_another(
    amount: int, status: TransferStatus, tx_a: bytes, tx_b: bytes, later: datetime
) -> None:
    first = _transfer(COLD, ATTACKER, amount, status=status, tx_hash="0x" + tx_a.hex())
    [a] = evaluate(TransferSeen(first), BOOK, RulePolicy(), NOW)
    [replayed] = evaluate(TransferSeen(first), BOOK, RulePolicy(), later)
    assert replayed.id == a.id  # the store recognises the replay, whenever it happens
    other = _transfer(COLD, ATTACKER, amount, status=status, tx_hash="0x" + tx_b.hex())
    [b] = evaluate(TransferSeen(other), BOOK, RulePolicy(), NOW)
    assert (a.id == b.id) == (tx_a == tx_b)


def test_rendered_text_in_both_languages_names_everything() -> None:
    [alert] = evaluate(TransferSeen(_transfer(COLD, ATTACKER)), BOOK, RulePolicy(), NOW)
    text = render(alert, CHAIN, {}, BOOK)
    for body in (text.en, text.ja):
        assert "eth-cold" in body
        assert "4,800 ETH" in body
        assert "0x" + "ab" * 32 in body
        assert "100" in body and "0x" + "cd" * 32 in body
        assert "https://explorer.example/tx/0x" + "ab" * 32 in body
        assert "2-of-3" in body
    assert "CRITICAL" in text.en and "Outflow from cold wallet" in text.en
    assert "重大" in text.ja and "コールドウォレットからの送金" in text.ja


def test_token_amounts_use_the_token_decimals_and_unknown_tokens_are_not_guessed() -> None:
    usdt = Asset(
        "ethereum", "USDT", 6, AssetKind.TOKEN, "0xdac17f958d2ee523a2206206994597c13d831ec7"
    )
    t = _transfer(COLD, ATTACKER, 1_234_500_000, asset=usdt.asset_id, kind=TransferKind.TOKEN)
    [alert] = evaluate(TransferSeen(t), BOOK, RulePolicy(), NOW)
    assert "1,234.5 USDT" in render(alert, CHAIN, {usdt.asset_id: usdt}, BOOK).en
    assert "1234500000 base units" in render(alert, CHAIN, {}, BOOK).en


def test_approvals_alert_only_when_they_grant_something_unplanned() -> None:
    from drainwatch.events import ControlChangeSeen
    from drainwatch.model import ControlChange, ControlKind

    def approval(spender: str, value: int) -> ControlChangeSeen:
        return ControlChangeSeen(
            ControlChange(
                chain="ethereum",
                index="log:3",
                wallet_address=COLD.lower(),
                kind=ControlKind.APPROVAL,
                status=TransferStatus.CONFIRMED,
                tx_hash="0x" + "ab" * 32,
                subject=spender,
                value=value,
                contract="0x" + "77" * 20 + "/1527",
                block=BlockRef(100, "0x" + "cd" * 32),
            )
        )

    [alert] = evaluate(approval(ATTACKER, 1), BOOK, RulePolicy(), NOW)
    assert alert.rule_id == "control/approval" and alert.severity is Severity.CRITICAL
    assert evaluate(approval(ATTACKER, 0), BOOK, RulePolicy(), NOW) == []  # revoked
    zero = "0x" + "00" * 20
    assert evaluate(approval(zero, 1), BOOK, RulePolicy(), NOW) == []  # NFT approval cleared
    assert evaluate(approval(ATTACKER, 1), BOOK, RulePolicy(control_changes=False), NOW) == []
