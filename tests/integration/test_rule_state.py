"""The rules' state reader on a real store (SQLite): what it loads, what it remembers, and
that replays, pending-then-mined transactions and orphaned blocks never change a window's sum.

Each event goes through the processor's call order: store the fact, ``for_event``,
``evaluate``, record the expectation used, ``observe``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.rules import (
    BALANCE_FALL,
    COLD_OUTFLOW,
    LABELLED_DESTINATION,
    LIMIT_WINDOW,
    UNPLANNED_OUTFLOW,
    RulePolicy,
    WalletBook,
    evaluate,
)
from alerts.state import RuleStateReader
from drainwatch.events import BlockDisconnected, Event, TransferSeen
from drainwatch.model import (
    Alert,
    BlockRef,
    Chain,
    ChainKind,
    Custody,
    CustodyKind,
    Expectation,
    Limit,
    Transfer,
    TransferKind,
    TransferStatus,
    Utxo,
    Wallet,
    WalletRole,
)
from drainwatch.ports import ExpectationRecord
from drainwatch.store import SqlStore, open_store
from graph.labels import Label, LabelBook

T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
ETH, BTC = 10**18, 10**8
HOT = "0x" + "11" * 20
AWAY = "0x" + "99" * 20
TOKEN = "0x" + "70" * 20
BTC_COLD = "bcrt1qcold"
BTC_AWAY = "bcrt1qaway"
CHAINS = {
    "eth": Chain("eth", ChainKind.EVM, "devnet", "ETH", 18, chain_id=1),
    "btc": Chain("btc", ChainKind.BITCOIN, "regtest", "BTC", 8),
}
WINDOW = Limit("native", None, 25 * ETH, 3600)
BOOK = WalletBook(
    [
        Wallet(
            "hot",
            "eth",
            WalletRole.HOT,
            Custody(CustodyKind.SINGLE_KEY),
            (HOT,),
            limits=(WINDOW, replace(WINDOW, asset=TOKEN)),
        ),
        Wallet("btc-cold", "btc", WalletRole.COLD, Custody(CustodyKind.MULTISIG, 2), (BTC_COLD,)),
    ]
)


@pytest.fixture
def store() -> Iterator[SqlStore]:
    made = open_store("sqlite://")
    yield made
    made.close()


def _reader(store: SqlStore, labels: LabelBook | None = None) -> RuleStateReader:
    return RuleStateReader(store, BOOK, labels, RulePolicy(), CHAINS)


def _out(tx: int, amount: int, minute: int = 0, **kw: object) -> Transfer:
    at = T0 + timedelta(minutes=minute)
    values: dict[str, object] = dict(
        chain="eth",
        tx_hash=f"0x{tx:064x}",
        index="tx",
        from_address=HOT,
        to_address=AWAY,
        asset="native",
        amount=amount,
        kind=TransferKind.NATIVE,
        status=TransferStatus.PROVISIONAL,
        block=BlockRef(100 + minute, f"0x{minute:064x}"),
        block_time=at,
    )
    values.update(kw)
    return Transfer(**values)  # type: ignore[arg-type]


def _process(reader: RuleStateReader, store: SqlStore, event: Event, now: datetime) -> list[Alert]:
    """The processor's call order."""
    if isinstance(event, TransferSeen):
        store.upsert_transfers([event.transfer])
    verdict = evaluate(event, reader.for_event(event, now), RulePolicy(), now)
    if verdict.consumed is not None and isinstance(event, TransferSeen):
        store.consume_expectation(verdict.consumed, event.transfer.key, now)
    reader.observe(event, verdict, now)
    return verdict.alerts


def _window_sum(reader: RuleStateReader, t: Transfer, now: datetime) -> int:
    state = reader.for_event(TransferSeen(t), now)
    return state.window_sum(t, t.block_time or now, timedelta(hours=1))[0]


def test_replays_and_confirmations_count_once(store: SqlStore) -> None:
    reader = _reader(store)
    now = T0 + timedelta(minutes=30)
    first = _out(1, 9 * ETH, status=TransferStatus.PENDING, block=None, block_time=None)
    for t in (first, first, replace(_out(1, 9 * ETH)), _out(1, 9 * ETH)):  # pending, mined
        _process(reader, store, TransferSeen(t), now)
    confirmed = replace(_out(1, 9 * ETH), status=TransferStatus.CONFIRMED)
    _process(reader, store, TransferSeen(confirmed), now)
    probe = _out(2, ETH, minute=1)
    assert _window_sum(reader, probe, now) == 10 * ETH


def test_a_pending_token_reading_and_the_mined_log_count_once(store: SqlStore) -> None:
    reader = _reader(store)
    now = T0
    token = {"asset": TOKEN, "kind": TransferKind.TOKEN}
    pending = _out(
        7, 20 * ETH, index="pending:0", status=TransferStatus.PENDING, block=None, **token
    )
    mined = _out(7, 20 * ETH, index="log:3", **token)
    probe = _out(8, ETH, minute=1, index="log:0", **token)
    _process(reader, store, TransferSeen(pending), now)
    assert _window_sum(reader, probe, now) == 21 * ETH
    _process(reader, store, TransferSeen(mined), now)
    assert _window_sum(reader, probe, now) == 21 * ETH
    superseded = replace(pending, status=TransferStatus.SUPERSEDED, block=mined.block)
    _process(reader, store, TransferSeen(superseded), now)
    assert _window_sum(reader, probe, now) == 21 * ETH


def test_loaded_from_the_store_at_first_use_with_what_was_planned(store: SqlStore) -> None:
    announced = _out(3, 9 * ETH, minute=1)
    store.upsert_transfers(
        [_out(1, 9 * ETH), _out(2, 9 * ETH, to_address=BOOK.wallets[0].addresses[0]), announced]
    )
    store.add_expectations(
        [
            ExpectationRecord(
                Expectation("W-3", "eth", "hot", AWAY, "native", 9 * ETH, T0 + timedelta(hours=1)),
                T0,
                "cli",
            )
        ]
    )
    assert store.consume_expectation("W-3", announced.key, T0)
    reader = _reader(store)  # a restart: nothing in memory
    now = T0 + timedelta(minutes=5)
    # only transfer 1 was unplanned (2 is to an own wallet, 3 used W-3)
    assert _window_sum(reader, _out(4, ETH, minute=5), now) == 10 * ETH
    # evaluated again, the outflow that used W-3 is still planned (it used it itself)
    assert _process(reader, store, TransferSeen(announced), now) == []


def test_an_orphaned_block_drops_out_of_the_window(store: SqlStore) -> None:
    reader = _reader(store)
    now = T0 + timedelta(minutes=5)
    gone = _out(1, 20 * ETH, minute=1)
    _process(reader, store, TransferSeen(gone), now)
    assert gone.block is not None
    _process(reader, store, BlockDisconnected("eth", gone.block), now)
    assert _window_sum(reader, _out(2, ETH, minute=2), now) == ETH


def test_a_drain_split_in_many_outflows_trips_the_window_once_over(store: SqlStore) -> None:
    reader = _reader(store)
    now = T0 + timedelta(hours=1)
    seen = []
    for i in range(6):
        alerts = _process(reader, store, TransferSeen(_out(i + 1, 5 * ETH, minute=i)), now)
        seen.append(sorted(a.rule_id for a in alerts))
    assert seen[:5] == [[UNPLANNED_OUTFLOW]] * 5  # 25 ETH is the limit, not above it
    assert seen[5] == [LIMIT_WINDOW, UNPLANNED_OUTFLOW]


@pytest.mark.parametrize("restart", [False, True])
def test_windows_run_on_the_chains_time_not_the_wall_clock(store: SqlStore, restart: bool) -> None:
    """Blocks whose time is far from the wall clock (a backfill of last year's blocks, a dev
    chain with a fixed genesis time) are windowed by their own times: a split drain a year
    ago still trips the window, in memory and when loaded from the store after a restart."""
    reader = _reader(store)
    now = T0 + timedelta(days=365)
    seen = []
    for i in range(6):
        if restart:
            reader = _reader(store)  # nothing in memory: loaded from the store each time
        alerts = _process(reader, store, TransferSeen(_out(i + 1, 5 * ETH, minute=i)), now)
        seen.append(sorted(a.rule_id for a in alerts))
    assert seen[5] == [LIMIT_WINDOW, UNPLANNED_OUTFLOW]


def test_the_destination_labels_come_from_the_label_book(store: SqlStore) -> None:
    labels = LabelBook([Label("evm", AWAY.upper().replace("0X", "0x"), "mixer", "Mixer", "csv x")])
    [alert] = [
        a
        for a in _process(_reader(store, labels), store, TransferSeen(_out(1, ETH)), T0)
        if a.rule_id == LABELLED_DESTINATION
    ]
    assert ("category", "mixer") in alert.facts


def test_a_bitcoin_balance_fall_from_the_utxo_set(store: SqlStore) -> None:
    reader = _reader(store)
    funded = BlockRef(200, "aa" * 32)
    spent = BlockRef(201, "bb" * 32)
    coin = Utxo("btc", "11" * 32, 0, "btc-cold", BTC_COLD, 100 * BTC, funded)
    change = Utxo("btc", "22" * 32, 1, "btc-cold", BTC_COLD, 70 * BTC, spent)
    store.apply_utxo_block("btc", funded, [coin], [])
    store.apply_utxo_block("btc", spent, [change], [(coin.txid, coin.vout, change.txid)])
    drain = Transfer(
        "btc",
        change.txid,
        "out:0",
        BTC_COLD,
        BTC_AWAY,
        "native",
        30 * BTC - 1000,
        TransferKind.UTXO,
        TransferStatus.PROVISIONAL,
        spent,
        T0,
    )
    alerts = _process(reader, store, TransferSeen(drain), T0)
    assert sorted(a.rule_id for a in alerts) == [BALANCE_FALL, COLD_OUTFLOW]
    [fall] = [a for a in alerts if a.rule_id == BALANCE_FALL]
    facts = dict(fall.facts)
    assert (facts["balance_before"], facts["balance_after"]) == (str(100 * BTC), str(70 * BTC))
    assert facts["fall_percent"] == "30.00"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(1, 12 * ETH), min_size=1, max_size=8),
    st.lists(st.integers(0, 50), max_size=20),
)
def test_replaying_events_changes_no_alert(amounts: list[int], replays: list[int]) -> None:
    """The same events, some handed over again (the bus's at-least-once delivery), give the
    same alerts as each once."""
    events = [TransferSeen(_out(i + 1, a, minute=i)) for i, a in enumerate(amounts)]
    replayed = list(events)
    for r in replays:
        at = r % (len(replayed) + 1)
        replayed.insert(at, replayed[max(at - 1, 0)])
    now = T0 + timedelta(hours=1)
    results = []
    for sequence in (events, replayed):
        made = open_store("sqlite://")
        reader = _reader(made)
        got = {a.id: a.rule_id for e in sequence for a in _process(reader, made, e, now)}
        results.append(got)
        made.close()
    assert results[0] == results[1]
