"""Alert rules are pure: the same event, wallets and policy give the same alerts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from alerts.render import render
from alerts.rules import (
    BALANCE_FALL,
    COLD_OUTFLOW,
    LABELLED_DESTINATION,
    LIMIT_SINGLE,
    LIMIT_WINDOW,
    UNPLANNED_OUTFLOW,
    RulePolicy,
    WalletBook,
    alert_id,
    evaluate,
)
from alerts.state import BalancePoint, RecentOutflow, RuleState
from drainwatch.addresses import to_checksum
from drainwatch.events import BlockConnected, Event, TransferSeen
from drainwatch.model import (
    Alert,
    AlertState,
    Asset,
    AssetKind,
    BlockRef,
    Chain,
    ChainKind,
    Custody,
    CustodyKind,
    Expectation,
    Limit,
    Severity,
    Transfer,
    TransferKind,
    TransferStatus,
    Wallet,
    WalletRole,
)
from graph.labels import Label

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


def _alerts(event: Event, book: WalletBook, policy: RulePolicy, now: datetime) -> list[Alert]:
    return evaluate(event, RuleState(book), policy, now).alerts


def test_cold_outflow_to_a_stranger_is_critical() -> None:
    [alert] = _alerts(TransferSeen(_transfer(COLD, ATTACKER)), BOOK, RulePolicy(), NOW)
    assert alert.rule_id == COLD_OUTFLOW
    assert alert.severity is Severity.CRITICAL
    assert alert.state is AlertState.CONFIRMED
    assert alert.wallet == "eth-cold"
    assert alert.amount == 4_800 * 10**18
    assert alert.id == alert_id(COLD_OUTFLOW, ("ethereum", "0x" + "ab" * 32, "tx"))


def test_a_cold_refill_is_planned_unless_refills_must_be_announced() -> None:
    refill = TransferSeen(_transfer(COLD, HOT))
    assert _alerts(refill, BOOK, RulePolicy(), NOW) == []
    strict = RulePolicy(cold_refill_requires_expectation=True)
    [alert] = _alerts(refill, BOOK, strict, NOW)
    assert (alert.rule_id, alert.severity) == (COLD_OUTFLOW, Severity.WARNING)
    assert ("own_wallet", "eth-hot") in alert.facts
    # change back to the cold wallet itself is never a refill
    assert _alerts(TransferSeen(_transfer(COLD, COLD)), BOOK, strict, NOW) == []


def test_a_hot_outflow_is_unplanned_not_cold_and_an_inflow_is_nothing() -> None:
    [alert] = _alerts(TransferSeen(_transfer(HOT, ATTACKER)), BOOK, RulePolicy(), NOW)
    assert (alert.rule_id, alert.severity) == (UNPLANNED_OUTFLOW, Severity.HIGH)
    assert _alerts(TransferSeen(_transfer(ATTACKER, COLD)), BOOK, RulePolicy(), NOW) == []


def test_disabled_rule_and_other_events() -> None:
    event = TransferSeen(_transfer(COLD, ATTACKER))
    # The cold rule off, a cold wallet's unplanned outflow is still an unplanned outflow.
    [alert] = _alerts(event, BOOK, RulePolicy(cold_outflow=False), NOW)
    assert alert.rule_id == UNPLANNED_OUTFLOW
    off = RulePolicy(cold_outflow=False, unplanned_outflow=False)
    assert _alerts(event, BOOK, off, NOW) == []
    block = BlockConnected("ethereum", BlockRef(1, "0x" + "00" * 32), "0x" + "00" * 32, NOW)
    assert _alerts(block, BOOK, RulePolicy(), NOW) == []


def test_pending_transfers_raise_pending_alerts() -> None:
    event = TransferSeen(_transfer(COLD, ATTACKER, status=TransferStatus.PENDING, block=None))
    [alert] = _alerts(event, BOOK, RulePolicy(), NOW)
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
    [a] = _alerts(TransferSeen(first), BOOK, RulePolicy(), NOW)
    [replayed] = _alerts(TransferSeen(first), BOOK, RulePolicy(), later)
    assert replayed.id == a.id  # the store recognises the replay, whenever it happens
    other = _transfer(COLD, ATTACKER, amount, status=status, tx_hash="0x" + tx_b.hex())
    [b] = _alerts(TransferSeen(other), BOOK, RulePolicy(), NOW)
    assert (a.id == b.id) == (tx_a == tx_b)


def test_rendered_text_in_both_languages_names_everything() -> None:
    [alert] = _alerts(TransferSeen(_transfer(COLD, ATTACKER)), BOOK, RulePolicy(), NOW)
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
    [alert] = _alerts(TransferSeen(t), BOOK, RulePolicy(), NOW)
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

    [alert] = _alerts(approval(ATTACKER, 1), BOOK, RulePolicy(), NOW)
    assert alert.rule_id == "control/approval" and alert.severity is Severity.CRITICAL
    assert _alerts(approval(ATTACKER, 0), BOOK, RulePolicy(), NOW) == []  # revoked
    zero = "0x" + "00" * 20
    assert _alerts(approval(zero, 1), BOOK, RulePolicy(), NOW) == []  # NFT approval cleared
    assert _alerts(approval(ATTACKER, 1), BOOK, RulePolicy(control_changes=False), NOW) == []


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
    [alert] = _alerts(event, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
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
    [alert] = _alerts(event, planned, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert alert.severity is Severity.WARNING


def test_pending_approvals_follow_the_control_rules_and_malformed_calls_are_high() -> None:
    token = "0x" + "70" * 20
    approve = _pending_change(
        "approval", ATTACKER, TransferStatus.PENDING, value=2**256 - 1, contract=token
    )
    [alert] = _alerts(approve, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.rule_id, alert.severity) == ("control/approval", Severity.CRITICAL)
    revoke = _pending_change("approval_for_all", ATTACKER, TransferStatus.PENDING, value=0)
    assert _alerts(revoke, BOOK, RulePolicy(), NOW) == []  # type: ignore[arg-type]
    malformed = _pending_change("malformed_call", None, TransferStatus.PENDING, contract=token)
    [alert] = _alerts(malformed, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
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
    [first] = _alerts(TransferSeen(pending), BOOK, RulePolicy(), NOW)
    assert (first.rule_id, first.state) == (COLD_OUTFLOW, AlertState.PENDING)
    mined = BlockRef(101, "0x" + "ef" * 32)
    superseded = replace(pending, status=TransferStatus.SUPERSEDED, block=mined)
    [closed] = _alerts(TransferSeen(superseded), BOOK, RulePolicy(), NOW)
    assert (closed.id, closed.state, closed.block) == (first.id, AlertState.SUPERSEDED, mined)
    text = render(closed, CHAIN, {}, BOOK)
    # The block's own alert takes over: provisional at once, confirmed at the confirmations.
    assert "mined in block 101; the block's own alert takes over" in text.en
    assert "confirmed after 12 confirmation(s)" in text.en
    assert "ブロック 101 に取り込まれました" in text.ja and "12 承認後" in text.ja
    assert "not executed yet" not in text.en and "EXECUTED" not in text.en
    # the block's own event of the same movement is another key, hence another alert id
    [block_alert] = _alerts(
        TransferSeen(replace(superseded, index="log:3", status=TransferStatus.CONFIRMED)),
        BOOK,
        RulePolicy(),
        NOW,
    )
    assert block_alert.id != first.id
    dropped = replace(pending, status=TransferStatus.ORPHANED, block=None)
    [withdrawn] = _alerts(TransferSeen(dropped), BOOK, RulePolicy(), NOW)
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
    [first] = _alerts(pending, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    [alert] = _alerts(executed, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
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
    [alert] = _alerts(malformed, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert (alert.state, alert.severity) == (AlertState.EXECUTED, Severity.HIGH)
    assert "EXECUTED in block 21895238" in render(alert, CHAIN, {}, BOOK).en


def test_a_lax_encoded_delegatecall_says_so() -> None:
    from drainwatch.model import LAX_ENCODING

    target = "0x96221423681a6d52e184d440a8efcebb105c7242"
    event = _pending_change("delegate_call", target, TransferStatus.PENDING, value=LAX_ENCODING)
    [alert] = _alerts(event, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert alert.severity is Severity.CRITICAL
    text = render(alert, CHAIN, {}, BOOK)
    assert "malformed encoding" in text.en and "Safe 1.1.1" in text.en
    assert "不正なエンコード" in text.ja
    strict = _pending_change("delegate_call", target, TransferStatus.PENDING)
    [alert] = _alerts(strict, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
    assert "malformed encoding" not in render(alert, CHAIN, {}, BOOK).en


def test_a_pending_approve_of_0_may_be_erc721_token_id_0_unless_the_token_is_fungible() -> None:
    token = "0x" + "70" * 20
    approve0 = _pending_change(
        "approval", ATTACKER, TransferStatus.PENDING, value=0, contract=token
    )
    [alert] = _alerts(approve0, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
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
    assert _alerts(approve0, BOOK, fungible, NOW) == []  # type: ignore[arg-type]
    # cleared to the zero address, or the block's ERC-20 Approval of 0: revocations
    cleared = _pending_change("approval", ZERO, TransferStatus.PENDING, value=0, contract=token)
    assert _alerts(cleared, BOOK, RulePolicy(), NOW) == []  # type: ignore[arg-type]
    logged = _pending_change(
        "approval",
        ATTACKER,
        TransferStatus.CONFIRMED,
        value=0,
        contract=token,
        index="log:4",
        block=BlockRef(5, "0x" + "cd" * 32),
    )
    assert _alerts(logged, BOOK, RulePolicy(), NOW) == []  # type: ignore[arg-type]


def test_a_pending_fallback_handler_change_is_critical() -> None:
    handler = "0x" + "f1" * 20
    event = _pending_change("fallback_handler_changed", handler, TransferStatus.PENDING)
    [alert] = _alerts(event, BOOK, RulePolicy(), NOW)  # type: ignore[arg-type]
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
    from drainwatch.policy import rule_policy

    example = Path(__file__).resolve().parents[2] / "examples" / "drainwatch.yaml"
    fungible = rule_policy(load_config(example)).fungible_tokens
    assert ("ethereum", "0xdac17f958d2ee523a2206206994597c13d831ec7") in fungible
    assert ("ethereum", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48") in fungible


# --- the outflow rules of issue #5: unplanned, limits, balance fall, labelled destinations -----


ETH = 10**18
CUSTOMER = "0x" + "c0" * 20
LIMITED = WalletBook(
    [
        Wallet(
            "eth-hot",
            "ethereum",
            WalletRole.HOT,
            Custody(CustodyKind.MPC),
            (HOT,),
            limits=(Limit("native", 10 * ETH, 25 * ETH, 3600),),
        ),
        *BOOK.wallets[1:],
    ]
)
SANCTIONED = Label("evm", ATTACKER, "sanctioned", "Lazarus group", "tagpack lazarus.yaml")


def _out(amount: int, at: datetime = NOW, tx: int = 1, **kw: object) -> Transfer:
    values: dict[str, object] = dict(
        tx_hash=f"0x{tx:064x}", block_time=at, block=BlockRef(tx, f"0x{tx:064x}")
    )
    values.update(kw)
    return _transfer(HOT, ATTACKER, amount, **values)


def _verdict(t: Transfer, policy: RulePolicy | None = None, **state: object) -> list[Alert]:
    rule_state = RuleState(LIMITED, **state)  # type: ignore[arg-type]
    return evaluate(TransferSeen(t), rule_state, policy or RulePolicy(), NOW).alerts


def _rules(alerts: list[Alert]) -> list[str]:
    return sorted(a.rule_id for a in alerts)


def _withdrawal(t: Transfer, ref: str = "W-1") -> Expectation:
    return Expectation(
        ref, t.chain, "eth-hot", t.to_address, t.asset, t.amount, NOW + timedelta(hours=1)
    )


def test_an_unplanned_hot_outflow_says_no_expectation_matched() -> None:
    [alert] = _verdict(_out(ETH))
    assert alert.rule_id == UNPLANNED_OUTFLOW and alert.severity is Severity.HIGH
    assert ("expectation", "none matching") in alert.facts
    text = render(alert, CHAIN, {}, LIMITED)
    assert "no matching expectation" in text.en and "一致する予定送金がありません" in text.ja
    assert "Unplanned outflow" in text.en and "計画外の送金" in text.ja


def test_an_announced_withdrawal_alerts_nothing_and_reports_what_it_used() -> None:
    t = _out(11 * ETH)
    state = RuleState(LIMITED, expectations=(_withdrawal(t),))
    verdict = evaluate(TransferSeen(t), state, RulePolicy(), NOW)
    assert verdict.alerts == [] and verdict.consumed == "W-1"
    used = RuleState(LIMITED, expectations=(_withdrawal(t),), consumed=frozenset({"W-1"}))
    again = evaluate(TransferSeen(t), used, RulePolicy(), NOW)
    assert _rules(again.alerts) == [LIMIT_SINGLE, UNPLANNED_OUTFLOW] and again.consumed is None
    withdrawn = replace(t, status=TransferStatus.ORPHANED, block=None)
    assert evaluate(TransferSeen(withdrawn), state, RulePolicy(), NOW).consumed is None


def test_a_single_outflow_above_the_limit() -> None:
    alerts = _verdict(_out(11 * ETH))
    [single] = [a for a in alerts if a.rule_id == LIMIT_SINGLE]
    assert dict(single.facts) == {"amount": str(11 * ETH), "max_single": str(10 * ETH)}
    text = render(single, CHAIN, {}, LIMITED)
    assert "single outflow 11 ETH above the limit 10 ETH" in text.en
    assert "限度額 10 ETH" in text.ja
    assert _rules(_verdict(_out(10 * ETH))) == [UNPLANNED_OUTFLOW]  # at the limit is allowed
    assert _rules(_verdict(_out(11 * ETH), RulePolicy(limits=False))) == [UNPLANNED_OUTFLOW]


def _recent(
    amount: int, at: datetime, tx: int, planned: bool = False, **kw: object
) -> RecentOutflow:
    return RecentOutflow(_out(amount, at, tx, **kw), planned, at)


def test_the_window_counts_unplanned_outflows_up_to_this_one_within_the_window() -> None:
    hour = timedelta(hours=1)
    recent = (
        _recent(9 * ETH, NOW - timedelta(minutes=50), 2),
        _recent(9 * ETH, NOW - timedelta(minutes=10), 3),
        _recent(9 * ETH, NOW - hour, 4),  # just outside the window
        _recent(9 * ETH, NOW - timedelta(minutes=5), 5, planned=True),  # announced
        _recent(9 * ETH, NOW + timedelta(minutes=5), 6),  # after this one
        _recent(9 * ETH, NOW, 7, status=TransferStatus.ORPHANED),  # its block was replaced
    )
    [window] = [a for a in _verdict(_out(8 * ETH), outflows=recent) if a.rule_id == LIMIT_WINDOW]
    facts = dict(window.facts)
    assert (facts["window_sum"], facts["outflows"]) == (str(26 * ETH), "3")
    text = render(window, CHAIN, {}, LIMITED)
    assert "3 unplanned outflow(s) within 1 h total 26 ETH, above the limit 25 ETH" in text.en
    assert "1 時間以内の計画外送金 3 件の合計 26 ETH が限度額 25 ETH を超えています" in text.ja
    assert LIMIT_WINDOW not in _rules(_verdict(_out(7 * ETH), outflows=recent))


def test_a_pending_token_transfer_and_the_blocks_one_count_once() -> None:
    token = "0x" + "70" * 20
    pending = _recent(
        20 * ETH, NOW, 9, index="pending:0", asset=token, status=TransferStatus.PENDING, block=None
    )
    limited = WalletBook(
        [replace(LIMITED.wallets[0], limits=(Limit(token, None, 25 * ETH, 3600),))]
    )
    mined = _out(20 * ETH, tx=9, index="log:3", asset=token)
    state = RuleState(limited, outflows=(pending,))
    assert _rules(evaluate(TransferSeen(mined), state, RulePolicy(), NOW).alerts) == [
        UNPLANNED_OUTFLOW
    ]
    # ... and the pending reading evaluated again does not count the mined one either
    again = RuleState(limited, outflows=(pending, RecentOutflow(mined, False, NOW)))
    verdict = evaluate(TransferSeen(pending.transfer), again, RulePolicy(), NOW)
    assert _rules(verdict.alerts) == [UNPLANNED_OUTFLOW]


def test_a_balance_fall_beyond_the_share_within_the_window() -> None:
    before = BalancePoint(NOW - timedelta(minutes=30), 100 * ETH)
    series = (BalancePoint(NOW - timedelta(hours=2), 500 * ETH), before)
    fell = (*series, BalancePoint(NOW, 79 * ETH))
    [alert] = [a for a in _verdict(_out(ETH), balances=fell) if a.rule_id == BALANCE_FALL]
    assert alert.subject == ("ethereum", f"0x{1:064x}", "balance:native")
    assert dict(alert.facts)["fall_percent"] == "21.00"
    text = render(alert, CHAIN, {}, LIMITED)
    assert "balance fell from 100 ETH to 79 ETH within 1 h: -21.00% (threshold 20%)" in text.en
    assert "残高が1 時間以内に 100 ETH から 79 ETH へ減少しました" in text.ja
    assert BALANCE_FALL not in _rules(
        _verdict(_out(ETH), balances=(*series, BalancePoint(NOW, 80 * ETH)))
    )
    assert BALANCE_FALL not in _rules(_verdict(_out(ETH)))  # no balance known


def test_a_labelled_destination_alerts_even_when_announced() -> None:
    t = _out(ETH)
    [alert] = _verdict(t, expectations=(_withdrawal(t),), destination_labels=(SANCTIONED,))
    assert (alert.rule_id, alert.severity) == (LABELLED_DESTINATION, Severity.CRITICAL)
    assert dict(alert.facts) == {
        "label": "Lazarus group",
        "label_source": "tagpack lazarus.yaml",
        "category": "sanctioned",
        "expectation": "W-1",
    }
    text = render(alert, CHAIN, {}, LIMITED)
    assert "destination labelled sanctioned: Lazarus group (source: tagpack lazarus.yaml)" in (
        text.en
    )
    assert "announced as W-1" in text.en and "制裁対象" in text.ja and "出典" in text.ja
    exchange = replace(SANCTIONED, category="exchange", name="Bybit")
    assert _verdict(t, expectations=(_withdrawal(t),), destination_labels=(exchange,)) == []
    only_mixers = RulePolicy(labelled_categories=frozenset({"mixer"}))
    assert (
        _verdict(t, only_mixers, expectations=(_withdrawal(t),), destination_labels=(SANCTIONED,))
        == []
    )


# --- properties ----------------------------------------------------------------------------

statuses = st.sampled_from(
    [TransferStatus.PENDING, TransferStatus.PROVISIONAL, TransferStatus.CONFIRMED]
)
minutes = st.integers(-180, 0).map(lambda m: NOW + timedelta(minutes=m))
recents = st.lists(
    st.builds(
        lambda amount, at, tx, planned: _recent(amount, at, tx, planned),
        st.integers(1, 100 * ETH),
        minutes,
        st.integers(100, 10_000),
        st.booleans(),
    ),
    max_size=8,
)
series = st.lists(st.builds(BalancePoint, minutes, st.integers(0, 10**6 * ETH)), max_size=6)
labels = st.lists(
    st.builds(
        lambda c: replace(SANCTIONED, category=c), st.sampled_from(["exchange", "dex", "service"])
    ),
    max_size=2,
)


@given(st.integers(1, 10**6 * ETH), statuses, recents, series, labels, st.booleans())
def test_a_planned_outflow_never_alerts(
    amount: int,
    status: TransferStatus,
    outflows: list[RecentOutflow],
    balances: list[BalancePoint],
    not_listed: list[Label],
    announced: bool,
) -> None:
    block = BlockRef(1, "0x" + "cd" * 32) if status is not TransferStatus.PENDING else None
    t = _out(amount, status=status, block=block)
    expectations: tuple[Expectation, ...] = ()
    if announced:
        expectations = (_withdrawal(t),)
    else:
        t = replace(t, to_address=COLD.lower())  # a sweep to cold
    for policy in (RulePolicy(), RulePolicy(cold_refill_requires_expectation=True)):
        verdict = evaluate(
            TransferSeen(t),
            RuleState(
                LIMITED,
                expectations=expectations,
                outflows=tuple(outflows),
                balances=tuple(balances),
                destination_labels=tuple(not_listed),
            ),
            policy,
            NOW,
        )
        assert verdict.alerts == []
        assert verdict.consumed == ("W-1" if announced else None)


@given(st.lists(st.integers(1, 10 * ETH), min_size=1, max_size=40), st.integers(1, 3599))
def test_splitting_an_unplanned_outflow_still_trips_the_window(
    parts: list[int], spread: int
) -> None:
    """Outflows each within max_single, together above max_window within the window: the
    window rule trips (at the latest on the last one), the single rule never does."""
    total = sum(parts)
    recent: list[RecentOutflow] = []
    tripped = False
    start = NOW - timedelta(seconds=spread)
    for i, amount in enumerate(parts):
        at = start + timedelta(seconds=spread * i // len(parts))
        t = _out(amount, at, tx=i + 1)
        alerts = evaluate(
            TransferSeen(t), RuleState(LIMITED, outflows=tuple(recent)), RulePolicy(), NOW
        ).alerts
        assert LIMIT_SINGLE not in _rules(alerts)
        tripped |= LIMIT_WINDOW in _rules(alerts)
        recent.append(RecentOutflow(t, False, at))
    assert tripped == (total > 25 * ETH)
