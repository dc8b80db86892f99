"""Alert rules are pure: the same event, wallets and policy give the same alerts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from alerts.render import render
from alerts.rules import COLD_OUTFLOW, RulePolicy, WalletBook, alert_id, evaluate
from drainwatch.addresses import to_checksum
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


def _pending_change(kind: str, subject: str | None, status: TransferStatus, **kw: object) -> object:
    from drainwatch.events import ControlChangeSeen
    from drainwatch.model import ControlChange, ControlKind

    values: dict[str, object] = dict(
        chain="ethereum",
        index="pending:0",
        wallet_address=COLD.lower(),
        kind=ControlKind(kind),
        status=status,
        tx_hash="0x" + "46" * 32,
        subject=subject,
    )
    values.update(kw)
    return ControlChangeSeen(ControlChange(**values))  # type: ignore[arg-type]


def test_a_pending_delegatecall_is_critical_unless_its_target_is_planned() -> None:
    target = "0x96221423681a6d52e184d440a8efcebb105c7242"
    event = _pending_change("delegate_call", target, TransferStatus.PENDING)
    [alert] = evaluate(event, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.rule_id, alert.severity, alert.state) == (
        "control/delegate_call",
        Severity.CRITICAL,
        AlertState.PENDING,
    )
    assert alert.subject == ("ethereum", "0x" + "46" * 32, "pending:0")
    text = render(alert, CHAIN, {}, BOOK)
    assert "DELEGATECALL" in text.en and "Bybit" in text.en and "not executed yet" in text.en
    assert "DELEGATECALL" in text.ja and "未実行" in text.ja and "重大" in text.ja
    assert to_checksum(target) in text.en
    planned = WalletBook(
        [
            Wallet(
                "eth-cold",
                "ethereum",
                WalletRole.COLD,
                Custody(CustodyKind.MULTISIG, 2, ("a", "b", "c")),
                (COLD,),
                allowlist=(target,),
            )
        ]
    )
    [alert] = evaluate(event, planned, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert alert.severity is Severity.WARNING


def test_pending_approvals_follow_the_control_rules_and_malformed_calls_are_high() -> None:
    token = "0x" + "70" * 20
    approve = _pending_change(
        "approval", ATTACKER, TransferStatus.PENDING, value=2**256 - 1, contract=token
    )
    [alert] = evaluate(approve, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.rule_id, alert.severity) == ("control/approval", Severity.CRITICAL)
    revoke = _pending_change("approval_for_all", ATTACKER, TransferStatus.PENDING, value=0)
    assert evaluate(revoke, BOOK, RulePolicy(), NOW) == []  # type: ignore[arg-type]
    malformed = _pending_change("malformed_call", None, TransferStatus.PENDING, contract=token)
    [alert] = evaluate(malformed, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.rule_id, alert.severity) == ("control/malformed_call", Severity.HIGH)
    text = render(alert, CHAIN, {}, BOOK)
    assert "do not decode" in text.en and "解読できない" in text.ja


def test_pending_readings_end_superseded_when_mined_or_withdrawn_when_dropped() -> None:
    pending = _transfer(
        COLD,
        ATTACKER,
        10**6,
        index="pending:0",
        kind=TransferKind.TOKEN,
        asset="0x" + "70" * 20,
        status=TransferStatus.PENDING,
        block=None,
    )
    [first] = evaluate(TransferSeen(pending), BOOK, RulePolicy(), NOW)
    assert (first.rule_id, first.state) == (COLD_OUTFLOW, AlertState.PENDING)
    mined = BlockRef(101, "0x" + "ef" * 32)
    superseded = replace(pending, status=TransferStatus.SUPERSEDED, block=mined)
    [closed] = evaluate(TransferSeen(superseded), BOOK, RulePolicy(), NOW)
    assert (closed.id, closed.state, closed.block) == (first.id, AlertState.SUPERSEDED, mined)
    text = render(closed, CHAIN, {}, BOOK)
    # The block's alert does not exist yet: it follows once the block has its confirmations.
    assert "mined in block 101; the block's alert follows after 12 confirmation" in text.en
    assert "ブロック 101 に取り込まれました" in text.ja and "12 承認後" in text.ja
    assert "not executed yet" not in text.en and "EXECUTED" not in text.en
    # the block's own event of the same movement is another key, hence another alert id
    [block_alert] = evaluate(
        TransferSeen(replace(superseded, index="log:3", status=TransferStatus.CONFIRMED)),
        BOOK,
        RulePolicy(),
        NOW,
    )
    assert block_alert.id != first.id
    dropped = replace(pending, status=TransferStatus.ORPHANED, block=None)
    [withdrawn] = evaluate(TransferSeen(dropped), BOOK, RulePolicy(), NOW)
    assert (withdrawn.id, withdrawn.state) == (first.id, AlertState.RETRACTED)
    text = render(withdrawn, CHAIN, {}, BOOK)
    assert "WITHDRAWN" in text.en and "破棄" in text.ja and "block orphaned" not in text.en


def test_a_mined_delegatecall_is_executed_news_at_full_severity_never_a_hand_over() -> None:
    """Nothing in a block reports a DELEGATECALL (nor a malformed call): once mined, its
    verdict must read as what it is -- it happened -- not as a reassuring hand-over."""
    target = "0x96221423681a6d52e184d440a8efcebb105c7242"
    mined = BlockRef(21895238, "0x" + "ef" * 32)
    pending = _pending_change("delegate_call", target, TransferStatus.PENDING)
    executed = _pending_change("delegate_call", target, TransferStatus.EXECUTED, block=mined)
    [first] = evaluate(pending, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    [alert] = evaluate(executed, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.id, alert.state, alert.block) == (first.id, AlertState.EXECUTED, mined)
    assert alert.severity is Severity.CRITICAL
    text = render(alert, CHAIN, {}, BOOK)
    assert text.en.startswith("[CRITICAL] EXECUTED: Safe transaction runs another contract")
    assert "EXECUTED in block 21895238" in text.en
    assert "ブロック 21895238 で実行されました" in text.ja and "【重大】実行済み" in text.ja
    for quiet in ("superseded", "take over", "not a second event", "not executed yet"):
        assert quiet not in text.en
    assert "引継" not in text.ja and "未実行" not in text.ja
    malformed = _pending_change(
        "malformed_call", None, TransferStatus.EXECUTED, block=mined, contract=ATTACKER
    )
    [alert] = evaluate(malformed, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.state, alert.severity) == (AlertState.EXECUTED, Severity.HIGH)
    assert "EXECUTED in block 21895238" in render(alert, CHAIN, {}, BOOK).en


def test_a_lax_encoded_delegatecall_says_so() -> None:
    from drainwatch.model import LAX_ENCODING

    target = "0x96221423681a6d52e184d440a8efcebb105c7242"
    event = _pending_change("delegate_call", target, TransferStatus.PENDING, value=LAX_ENCODING)
    [alert] = evaluate(event, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert alert.severity is Severity.CRITICAL
    text = render(alert, CHAIN, {}, BOOK)
    assert "malformed encoding" in text.en and "Safe 1.1.1" in text.en
    assert "不正なエンコード" in text.ja
    strict = _pending_change("delegate_call", target, TransferStatus.PENDING)
    [alert] = evaluate(strict, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert "malformed encoding" not in render(alert, CHAIN, {}, BOOK).en


def test_a_pending_approve_of_0_may_be_erc721_token_id_0_unless_the_token_is_fungible() -> None:
    token = "0x" + "70" * 20
    approve0 = _pending_change(
        "approval", ATTACKER, TransferStatus.PENDING, value=0, contract=token
    )
    [alert] = evaluate(approve0, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.rule_id, alert.severity, alert.amount) == (
        "control/approval",
        Severity.WARNING,
        0,
    )
    text = render(alert, CHAIN, {}, BOOK)
    assert "ERC-721 approval of token id 0" in text.en and "トークン ID 0" in text.ja
    assert "may now move" not in text.en
    # known to be an ERC-20: a revocation
    fungible = RulePolicy(fungible_tokens=frozenset({("ethereum", token)}))
    assert evaluate(approve0, BOOK, fungible, NOW) == []  # type: ignore[arg-type]
    # cleared to the zero address, or the block's ERC-20 Approval of 0: revocations
    cleared = _pending_change("approval", ZERO, TransferStatus.PENDING, value=0, contract=token)
    assert evaluate(cleared, BOOK, RulePolicy(), NOW) == []  # type: ignore[arg-type]
    logged = _pending_change(
        "approval",
        ATTACKER,
        TransferStatus.CONFIRMED,
        value=0,
        contract=token,
        index="log:4",
        block=BlockRef(5, "0x" + "cd" * 32),
    )
    assert evaluate(logged, BOOK, RulePolicy(), NOW) == []  # type: ignore[arg-type]


def test_a_pending_fallback_handler_change_is_critical() -> None:
    handler = "0x" + "f1" * 20
    event = _pending_change("fallback_handler_changed", handler, TransferStatus.PENDING)
    [alert] = evaluate(event, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.rule_id, alert.severity) == (
        "control/fallback_handler_changed",
        Severity.CRITICAL,
    )
    text = render(alert, CHAIN, {}, BOOK)
    assert "Safe fallback handler changed" in text.en and to_checksum(handler) in text.en
    assert "フォールバックハンドラ" in text.ja and "EIP-1271" in text.ja


ZERO = "0x" + "00" * 20


def test_the_configured_tokens_are_known_fungible() -> None:
    """A pending approve(spender, 0) of a configured token (it has decimals: ERC-20) is a
    revocation; of any other token it may be an ERC-721 approval of token id 0."""
    from pathlib import Path

    from drainwatch.config import load_config
    from drainwatch.wiring import rule_policy

    example = Path(__file__).resolve().parents[2] / "examples" / "drainwatch.yaml"
    fungible = rule_policy(load_config(example)).fungible_tokens
    assert ("ethereum", "0xdac17f958d2ee523a2206206994597c13d831ec7") in fungible
    assert ("ethereum", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48") in fungible
