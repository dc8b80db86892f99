"""Canonical JSON of the domain model and events: round trips (property tests) and strictness."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drainwatch import codec
from drainwatch.errors import CodecError
from drainwatch.events import (
    BalanceSeen,
    BlockConfirmed,
    BlockConnected,
    BlockDisconnected,
    ControlChangeSeen,
    TransferSeen,
    UtxoSpendSeen,
)
from drainwatch.model import (
    Alert,
    Asset,
    Balance,
    BlockRef,
    Chain,
    ControlChange,
    Custody,
    Expectation,
    Incident,
    Limit,
    SpendOutput,
    SpentInput,
    TimelineEntry,
    Transfer,
    Utxo,
    UtxoSpend,
    Wallet,
)

UINT256 = st.integers(min_value=0, max_value=2**256 - 1)
times = st.datetimes(
    min_value=datetime(2009, 1, 3), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
hex32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
text = st.text(max_size=30)  # includes Japanese and other non-ASCII text
blocks = st.builds(BlockRef, height=st.integers(0, 2**63 - 1), hash=hex32)

STRATEGIES = {
    Chain: st.builds(Chain, chain_id=st.none() | st.integers(1, 2**63)),
    Asset: st.builds(Asset),
    Custody: st.builds(Custody),
    Limit: st.builds(Limit, max_single=st.none() | UINT256, max_window=st.none() | UINT256),
    Wallet: st.builds(
        Wallet,
        custody=st.builds(Custody),
        limits=st.lists(st.builds(Limit, max_single=st.none() | UINT256), max_size=3).map(tuple),
    ),
    BlockRef: blocks,
    Transfer: st.builds(
        Transfer, amount=UINT256, block=st.none() | blocks, block_time=st.none() | times
    ),
    ControlChange: st.builds(
        ControlChange,
        value=st.none() | UINT256,
        block=st.none() | blocks,
        block_time=st.none() | times,
    ),
    Alert: st.builds(
        Alert,
        raised_at=times,
        amount=st.none() | UINT256,
        block=st.none() | blocks,
        subject=st.tuples(text, hex32, text),
        facts=st.lists(st.tuples(text, text), max_size=3).map(tuple),
        acked_at=st.none() | times,
    ),
    Utxo: st.builds(
        Utxo, amount=UINT256, block=blocks, spent_block=st.none() | blocks, vout=st.integers(0)
    ),
    SpentInput: st.builds(SpentInput, amount=st.none() | UINT256),
    SpendOutput: st.builds(SpendOutput, amount=UINT256),
    UtxoSpend: st.builds(
        UtxoSpend,
        inputs=st.lists(st.builds(SpentInput, amount=st.none() | UINT256), max_size=3).map(tuple),
        outputs=st.lists(st.builds(SpendOutput, amount=UINT256), max_size=3).map(tuple),
        block=st.none() | blocks,
        block_time=st.none() | times,
    ),
    Expectation: st.builds(Expectation, amount=UINT256, valid_until=times),
    Balance: st.builds(Balance, amount=UINT256, before=UINT256, block=blocks, block_time=times),
    Incident: st.builds(Incident, opened_at=times, closed_at=st.none() | times),
    TimelineEntry: st.builds(TimelineEntry, at=times),
}


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_every_model_type_round_trips(cls: type) -> None:
    @given(STRATEGIES[cls])
    def check(obj: object) -> None:
        text_form = codec.dumps(obj)
        assert codec.loads(cls, text_form) == obj
        # canonical: encoding the decoded object gives the same bytes
        assert codec.dumps(codec.loads(cls, text_form)) == text_form

    check()


def test_strategies_cover_every_model_dataclass() -> None:
    import drainwatch.model as model

    declared = {obj for obj in vars(model).values() if isinstance(obj, type) and is_dataclass(obj)}
    assert declared == set(STRATEGIES)


@given(
    st.one_of(
        st.builds(BlockConnected, block=blocks, block_time=times, parent_hash=hex32),
        st.builds(BlockDisconnected, block=blocks),
        st.builds(BlockConfirmed, block=blocks),
        st.builds(BalanceSeen, balance=STRATEGIES[Balance]),
        st.builds(TransferSeen, transfer=STRATEGIES[Transfer]),
        st.builds(ControlChangeSeen, change=STRATEGIES[ControlChange]),
        st.builds(UtxoSpendSeen, spend=STRATEGIES[UtxoSpend]),
    )
)
def test_events_round_trip(
    event: BlockConnected | BlockDisconnected | TransferSeen | ControlChangeSeen,
) -> None:
    assert codec.loads_event(codec.dumps_event(event)) == event


def _transfer(amount: int = 10**30) -> Transfer:
    return Transfer(
        chain="ethereum",
        tx_hash="0x" + "ab" * 32,
        index="tx",
        from_address="0x" + "11" * 20,
        to_address="0x" + "22" * 20,
        asset="native",
        amount=amount,
        kind="native",  # type: ignore[arg-type]
        status="confirmed",  # type: ignore[arg-type]
        block=BlockRef(5, "0x" + "cd" * 32),
        block_time=datetime(2026, 11, 22, 9, 0, tzinfo=timezone(timedelta(hours=9))),
    )


def test_amounts_are_decimal_strings_and_times_utc_z() -> None:
    data = json.loads(codec.dumps(_transfer(2**256 - 1)))
    assert data["amount"] == str(2**256 - 1)
    assert data["block_time"] == "2026-11-22T00:00:00Z"
    assert data["block"] == {"hash": "0x" + "cd" * 32, "height": 5}


def test_encoding_is_canonical_sorted_and_compact() -> None:
    out = codec.dumps(_transfer())
    assert out == json.dumps(json.loads(out), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.update(amount=1.5), "$.amount"),
        (lambda d: d.update(amount="1e18"), "$.amount"),
        (lambda d: d.update(amount="-5"), "$.amount"),
        (lambda d: d.update(amount="007"), "$.amount"),
        (lambda d: d.update(amount=100), "$.amount"),
        (lambda d: d.update(kind="teleport"), "$.kind"),
        (lambda d: d.update(status=None), "$.status"),
        (lambda d: d.pop("tx_hash"), "$.tx_hash"),
        (lambda d: d.update(extra=1), "$.extra"),
        (lambda d: d.update(block_time="2026-11-22T00:00:00"), "$.block_time"),
        (lambda d: d.update(block_time="yesterday"), "$.block_time"),
        (lambda d: d["block"].update(height="5"), "$.block.height"),
        (lambda d: d["block"].update(height=True), "$.block.height"),
    ],
)
def test_decoding_is_strict_and_names_the_path(mutate, path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(codec.dumps(_transfer()))
    mutate(data)
    with pytest.raises(CodecError) as err:
        codec.decode(Transfer, data)
    assert err.value.path == path


def test_bad_events_are_refused() -> None:
    with pytest.raises(CodecError):
        codec.loads_event(b"not json")
    with pytest.raises(CodecError):
        codec.loads_event(b'{"type": "nonsense"}')
    with pytest.raises(CodecError):
        codec.loads_event(b"[1, 2]")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(CodecError):
        codec.dumps(datetime(2026, 1, 1))


def test_model_amount_fields_are_marked() -> None:
    marked = {
        (cls.__name__, f.name)
        for cls in STRATEGIES
        for f in fields(cls)
        if f.metadata.get("json") == "decimal-string"
    }
    assert marked == {
        ("Limit", "max_single"),
        ("Limit", "max_window"),
        ("Transfer", "amount"),
        ("Alert", "amount"),
        ("ControlChange", "value"),
        ("Utxo", "amount"),
        ("SpentInput", "amount"),
        ("SpendOutput", "amount"),
        ("Expectation", "amount"),
        ("Balance", "amount"),
        ("Balance", "before"),
    }


def test_a_superseded_pending_reading_round_trips_under_its_own_keys() -> None:
    from dataclasses import replace

    from drainwatch.events import event_key
    from drainwatch.model import ControlKind, TransferStatus

    change = ControlChange(
        chain="ethereum",
        index="pending:0",
        wallet_address="0x" + "1d" * 20,
        kind=ControlKind.DELEGATE_CALL,
        status=TransferStatus.PENDING,
        tx_hash="0x" + "46" * 32,
        subject="0x96221423681a6d52e184d440a8efcebb105c7242",
    )
    mined = replace(change, status=TransferStatus.SUPERSEDED, block=BlockRef(7, "0x" + "cd" * 32))
    for c in (change, mined):
        assert codec.loads_event(codec.dumps_event(ControlChangeSeen(c))) == ControlChangeSeen(c)
    assert json.loads(codec.dumps(mined))["status"] == "superseded"
    assert event_key(ControlChangeSeen(change)) != event_key(ControlChangeSeen(mined))
    assert change.key == mined.key == ("ethereum", "0x" + "46" * 32, "pending:0")


def test_an_executed_fallback_handler_change_round_trips() -> None:
    """The kinds and statuses added for pending readings (EXECUTED, fallback handler) are plain
    enum values on the wire, refused by name when unknown."""
    from drainwatch.model import AlertState, ControlKind, TransferStatus

    change = ControlChange(
        chain="ethereum",
        index="pending:0",
        wallet_address="0x" + "1d" * 20,
        kind=ControlKind.FALLBACK_HANDLER_CHANGED,
        status=TransferStatus.EXECUTED,
        tx_hash="0x" + "46" * 32,
        subject="0x" + "f1" * 20,
        block=BlockRef(7, "0x" + "cd" * 32),
    )
    data = json.loads(codec.dumps(change))
    assert (data["kind"], data["status"]) == ("fallback_handler_changed", "executed")
    assert codec.loads_event(codec.dumps_event(ControlChangeSeen(change))) == ControlChangeSeen(
        change
    )
    assert AlertState("executed") is AlertState.EXECUTED
    with pytest.raises(CodecError):
        codec.decode(ControlChange, {**data, "status": "executed-ish"})
