"""The Store port's contract, run on every adapter: SQLite (a file) and the real PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect

from drainwatch.errors import ConfigError, StoreError
from drainwatch.model import (
    Alert,
    AlertState,
    BlockRef,
    ControlChange,
    ControlKind,
    Incident,
    IncidentStatus,
    Severity,
    TimelineEntry,
    TimelineKind,
    Transfer,
    TransferKind,
    TransferStatus,
    Utxo,
)
from drainwatch.ports import Store
from drainwatch.store import SqlStore, open_store
from tests.fixtures.postgres import PgServer, throwaway_cluster

MAX = 2**256 - 1
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
JST = timezone(timedelta(hours=9))
TABLES = (
    "blocks, transfers, control_changes, checkpoints, alerts, timeline_entries, incidents, utxos, "
    "outbox, delivery_refs, expectations, balances"
)

StoreFactory = Callable[[], SqlStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes empty stores: a new SQLite file, or the session's PostgreSQL database emptied."""
    opened: list[SqlStore] = []

    def make() -> SqlStore:
        if request.param == "sqlite":
            store = open_store(f"sqlite:///{tmp_path}/store-{len(opened)}.db")
        else:
            url = request.getfixturevalue("postgres_url")
            for earlier in opened:
                earlier.close()  # an idle pooled connection would hold TRUNCATE up
            store = open_store(url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(new_store: StoreFactory) -> SqlStore:
    return new_store()


def transfer(
    tx: str,
    *,
    index: str = "tx",
    block: BlockRef | None = None,
    status: TransferStatus | None = None,
    amount: int = 10,
    frm: str = "0xHot",
    to: str = "0xAway",
    chain: str = "eth",
) -> Transfer:
    return Transfer(
        chain=chain,
        tx_hash=tx,
        index=index,
        from_address=frm,
        to_address=to,
        asset="native",
        amount=amount,
        kind=TransferKind.NATIVE,
        status=status or (TransferStatus.CONFIRMED if block else TransferStatus.PENDING),
        block=block,
        block_time=T0 + timedelta(seconds=block.height) if block else None,
    )


def change(
    tx: str | None,
    *,
    index: str = "log:0",
    block: BlockRef | None = None,
    status: TransferStatus | None = None,
    kind: ControlKind = ControlKind.OWNER_ADDED,
    wallet: str = "0xSafe",
    subject: str | None = "0xNewOwner",
    value: int | None = None,
    contract: str | None = None,
    chain: str = "eth",
) -> ControlChange:
    return ControlChange(
        chain=chain,
        index=index,
        wallet_address=wallet,
        kind=kind,
        status=status or (TransferStatus.CONFIRMED if block else TransferStatus.PENDING),
        tx_hash=tx,
        subject=subject,
        value=value,
        contract=contract,
        block=block,
        block_time=T0 + timedelta(seconds=block.height) if block else None,
    )


def alert(alert_id: str, raised_at: datetime = T0, amount: int | None = MAX) -> Alert:
    return Alert(
        id=alert_id,
        rule_id="unplanned-outflow",
        severity=Severity.CRITICAL,
        state=AlertState.PROVISIONAL,
        chain="eth",
        wallet="hot-1",
        subject=("eth", "0xabc", "tx"),
        raised_at=raised_at,
        tx_hash="0xabc",
        block=BlockRef(7, "0xb7"),
        asset="native",
        amount=amount,
        counterparty="0xAway",
    )


def test_is_a_store_port(store: SqlStore) -> None:
    port: Store = store  # mypy checks SqlStore against the Protocol here
    assert port.alerts() == []


def test_replay_changes_nothing(store: SqlStore) -> None:
    batch = [transfer(f"0x{i}", block=BlockRef(1, "0xb1")) for i in range(3)]
    assert store.upsert_transfers(batch) == 3
    assert store.upsert_transfers(batch) == 0
    assert store.upsert_transfers([]) == 0
    assert store.transfers() == batch


def test_a_large_batch_in_one_call(store: SqlStore) -> None:
    batch = [transfer(f"0x{i:x}", block=BlockRef(i // 100, f"0xb{i // 100}")) for i in range(2500)]
    assert store.upsert_transfers(batch) == 2500
    assert store.upsert_transfers(batch) == 0
    assert store.transfers() == batch


def test_status_moves_pending_confirmed_orphaned(store: SqlStore) -> None:
    pending = transfer("0xa")
    confirmed = transfer("0xa", block=BlockRef(5, "0xb5"))
    orphaned = transfer("0xa", block=BlockRef(5, "0xb5"), status=TransferStatus.ORPHANED)
    assert store.upsert_transfers([pending]) == 1
    assert store.upsert_transfers([confirmed]) == 1
    assert store.upsert_transfers([confirmed]) == 0
    # A late mempool sighting does not demote a mined transfer.
    assert store.upsert_transfers([pending]) == 0
    assert store.transfers() == [confirmed]
    assert store.upsert_transfers([orphaned]) == 1
    assert store.transfers() == [orphaned]


def test_last_sighting_in_one_call_wins(store: SqlStore) -> None:
    confirmed = transfer("0xa", block=BlockRef(5, "0xb5"))
    assert store.upsert_transfers([transfer("0xa"), confirmed]) == 1
    assert store.transfers() == [confirmed]


def test_orphan_block_orphans_block_and_its_transfers(store: SqlStore) -> None:
    blocks = [BlockRef(h, f"0xb{h}") for h in (1, 2, 3)]
    for b in blocks:
        store.record_block("eth", b, f"0xb{b.height - 1}", T0)
    store.record_block("btc", BlockRef(3, "0xb3"), "0xb2", T0)  # same hash, other chain
    in3 = [transfer("0xa", block=blocks[2]), transfer("0xb", block=blocks[2])]
    in2 = transfer("0xc", block=blocks[1])
    other_chain = transfer("0xa", block=blocks[2], chain="btc")
    store.upsert_transfers([*in3, in2, other_chain])

    assert store.orphan_block("eth", blocks[2]) == 2
    assert store.orphan_block("eth", blocks[2]) == 0
    assert store.recent_blocks("eth", 10) == [(blocks[1], "0xb1"), (blocks[0], "0xb0")]
    assert store.recent_blocks("eth", 1) == [(blocks[1], "0xb1")]
    statuses = {(t.chain, t.tx_hash): t.status for t in store.transfers()}
    assert statuses == {
        ("eth", "0xa"): TransferStatus.ORPHANED,
        ("eth", "0xb"): TransferStatus.ORPHANED,
        ("eth", "0xc"): TransferStatus.CONFIRMED,
        ("btc", "0xa"): TransferStatus.CONFIRMED,
    }
    # Recorded again, the block is back on the best chain.
    store.record_block("eth", blocks[2], "0xb2", T0)
    assert store.recent_blocks("eth", 1) == [(blocks[2], "0xb2")]


def test_orphan_transfers_leaves_the_block_rows_alone(store: SqlStore) -> None:
    """The processor's late retraction must not undo a block the watcher recorded again."""
    block = BlockRef(7, "0xb7")
    store.record_block("eth", block, "0xb6", T0)
    store.upsert_transfers([transfer("0xa", block=block), transfer("0xb", block=block)])
    assert store.orphan_transfers("eth", block) == 2
    assert store.orphan_transfers("eth", block) == 0
    assert store.recent_blocks("eth", 5) == [(block, "0xb6")]
    assert {t.status for t in store.transfers()} == {TransferStatus.ORPHANED}


def test_reorg_remines_an_orphaned_transfer_into_another_block(store: SqlStore) -> None:
    old, new = BlockRef(10, "0xold"), BlockRef(10, "0xnew")
    store.upsert_transfers([transfer("0xa", block=old), transfer("0xb", block=old)])
    assert store.orphan_block("eth", old) == 2
    # The new block holds 0xb before 0xa: the order it is upserted in is its order.
    remined = [transfer("0xb", block=new), transfer("0xa", block=new)]
    assert store.upsert_transfers(remined) == 2
    assert store.upsert_transfers(remined) == 0
    assert store.transfers() == remined


# -- control changes -----------------------------------------------------------------------------


def test_control_changes_replay_changes_nothing(store: SqlStore) -> None:
    b1 = BlockRef(1, "0xb1")
    batch = [
        change("0xa", block=b1),
        change("0xa", index="log:1", block=b1, kind=ControlKind.THRESHOLD_CHANGED,
               subject=None, value=1),
        change("0xb", block=b1, kind=ControlKind.APPROVAL, wallet="0xHot", subject="0xSpender",
               value=MAX, contract="0xdac17f958d2ee523a2206206994597c13d831ec7"),
    ]  # fmt: skip
    assert store.control_changes() == []
    assert store.upsert_control_changes(batch) == 3
    assert store.upsert_control_changes(batch) == 0
    assert store.upsert_control_changes([]) == 0
    assert store.upsert_control_changes(iter(batch)) == 0
    assert store.control_changes() == batch
    assert store.transfers() == []  # a table of its own


def test_control_changes_decode_equal_to_what_was_stored(store: SqlStore) -> None:
    """Every field, None included, comes back as the dataclass that went in."""
    b = BlockRef(9, "0xb9")
    every_field = ControlChange(
        chain="eth",
        index="log:4",
        wallet_address="0xAbCdEf",
        kind=ControlKind.APPROVAL_FOR_ALL,
        status=TransferStatus.CONFIRMED,
        tx_hash="0xTx",
        subject="0xOperator",
        value=1,
        contract="0xnft",
        block=b,
        block_time=datetime(2025, 3, 1, 21, 0, 0, 123456, tzinfo=JST),
    )
    bare = ControlChange("eth", "log:0", "0xSafe", ControlKind.GUARD_CHANGED,
                         TransferStatus.PENDING, tx_hash="0xTy")  # fmt: skip
    revoked = replace(every_field, index="log:5", value=0)
    assert store.upsert_control_changes([every_field, bare, revoked]) == 3
    assert store.control_changes() == [every_field, revoked, bare]
    back = store.control_changes()[0]
    assert back.block_time == every_field.block_time
    assert back.block_time is not None and back.block_time.tzinfo is UTC
    assert type(back.kind) is ControlKind and type(back.status) is TransferStatus
    assert type(back.value) is int


@pytest.mark.parametrize("value", [0, 1, 2**53 + 1, 10**40 + 7, MAX])
def test_control_change_values_round_trip_exactly(store: SqlStore, value: int) -> None:
    c = change("0xa", kind=ControlKind.APPROVAL, value=value, block=BlockRef(1, "0xb1"))
    assert store.upsert_control_changes([c]) == 1
    assert store.control_changes()[0].value == value
    assert store.upsert_control_changes([c]) == 0


@pytest.mark.parametrize("value", [-1, MAX + 1])
def test_a_control_change_value_outside_uint256_is_refused(store: SqlStore, value: int) -> None:
    with pytest.raises(StoreError, match="amount"):
        store.upsert_control_changes([change("0xa", kind=ControlKind.APPROVAL, value=value)])
    assert store.control_changes() == []


def test_control_change_status_moves(store: SqlStore) -> None:
    pending = change("0xa")
    confirmed = change("0xa", block=BlockRef(5, "0xb5"))
    orphaned = change("0xa", block=BlockRef(5, "0xb5"), status=TransferStatus.ORPHANED)
    assert store.upsert_control_changes([pending]) == 1
    assert store.control_changes() == [pending]
    assert store.upsert_control_changes([confirmed]) == 1
    assert store.upsert_control_changes([confirmed]) == 0
    # A late mempool sighting does not demote a mined change.
    assert store.upsert_control_changes([pending]) == 0
    assert store.control_changes() == [confirmed]
    assert store.upsert_control_changes([orphaned]) == 1
    assert store.control_changes() == [orphaned]
    # Orphaned, it may go back to the mempool, and be mined into another block.
    assert store.upsert_control_changes([pending]) == 1
    remined = change("0xa", block=BlockRef(5, "0xb5new"))
    assert store.upsert_control_changes([remined]) == 1
    assert store.control_changes() == [remined]


def test_control_changes_last_sighting_in_one_call_wins(store: SqlStore) -> None:
    confirmed = change("0xa", block=BlockRef(5, "0xb5"))
    assert store.upsert_control_changes([change("0xa"), confirmed]) == 1
    assert store.control_changes() == [confirmed]


def test_a_storage_change_is_keyed_by_its_block_hash(store: SqlStore) -> None:
    """No transaction: the block hash anchors the key, so the same slot seen changed in two
    blocks is two changes, and replaying either changes nothing."""
    b7, b8 = BlockRef(7, "0xb7"), BlockRef(8, "0xb8")
    in7 = change(None, index="slot:eip1967", block=b7, kind=ControlKind.IMPLEMENTATION_CHANGED,
                 wallet="0xProxy", subject="0xImplA")  # fmt: skip
    in8 = replace(in7, block=b8, block_time=T0 + timedelta(seconds=8), subject="0xImplB")
    assert in7.key == ("eth", "0xb7", "slot:eip1967")
    assert store.upsert_control_changes([in7, in8]) == 2
    assert store.upsert_control_changes([in8, in7]) == 0
    assert store.control_changes() == [in7, in8]
    assert all(c.tx_hash is None for c in store.control_changes())
    # An event in block 7 is another change: its key has its own transaction and index.
    logged = change("0xtx", index="log:3", block=b7, kind=ControlKind.IMPLEMENTATION_CHANGED,
                    wallet="0xProxy", subject="0xImplA")  # fmt: skip
    assert store.upsert_control_changes([logged, in7]) == 1
    assert store.control_changes(address="0xPROXY") == [in7, logged, in8]

    # A reorg replaces block 8: its storage change is orphaned, and the new block's is new.
    assert store.orphan_transfers("eth", b8) == 1
    b8new = BlockRef(8, "0xb8new")
    in8new = replace(in8, block=b8new)
    assert store.upsert_control_changes([in8new]) == 1
    assert store.control_changes(address="0xproxy") == [
        in7,
        logged,
        replace(in8, status=TransferStatus.ORPHANED),
        in8new,
    ]


def test_orphan_block_orphans_its_control_changes_too(store: SqlStore) -> None:
    blocks = [BlockRef(h, f"0xb{h}") for h in (1, 2, 3)]
    for b in blocks:
        store.record_block("eth", b, f"0xb{b.height - 1}", T0)
    store.upsert_transfers([transfer("0xa", block=blocks[2]), transfer("0xc", block=blocks[1])])
    in3 = [
        change("0xa", index="log:1", block=blocks[2]),
        change(None, index="slot:0", block=blocks[2], kind=ControlKind.MASTER_COPY_CHANGED),
    ]
    in2 = change("0xc", block=blocks[1])
    other_chain = change("0xa", index="log:1", block=blocks[2], chain="btc")
    pending = change("0xd")
    store.upsert_control_changes([*in3, in2, other_chain, pending])

    assert store.orphan_block("eth", blocks[2]) == 3  # one transfer, two control changes
    assert store.orphan_block("eth", blocks[2]) == 0
    assert store.recent_blocks("eth", 1) == [(blocks[1], "0xb1")]
    statuses = {c.key: c.status for c in store.control_changes()}
    assert statuses == {
        ("eth", "0xa", "log:1"): TransferStatus.ORPHANED,
        ("eth", "0xb3", "slot:0"): TransferStatus.ORPHANED,
        ("eth", "0xc", "log:0"): TransferStatus.CONFIRMED,
        ("btc", "0xa", "log:1"): TransferStatus.CONFIRMED,
        ("eth", "0xd", "log:0"): TransferStatus.PENDING,
    }
    # Only control changes in the block: the count is theirs alone.
    assert store.orphan_block("eth", blocks[1]) == 2
    assert store.orphan_block("btc", blocks[2]) == 1


def test_orphan_transfers_orphans_control_changes_and_leaves_the_blocks(store: SqlStore) -> None:
    block = BlockRef(7, "0xb7")
    store.record_block("eth", block, "0xb6", T0)
    store.upsert_control_changes([change("0xa", block=block), change("0xb", block=block)])
    assert store.orphan_transfers("eth", block) == 2
    assert store.orphan_transfers("eth", block) == 0
    assert store.recent_blocks("eth", 5) == [(block, "0xb6")]
    assert {c.status for c in store.control_changes()} == {TransferStatus.ORPHANED}
    # A replay of the confirmed sightings is a real move back (the block was re-recorded).
    assert store.upsert_control_changes([change("0xa", block=block)]) == 1


def test_control_changes_filter_by_chain_and_wallet_ignoring_case(store: SqlStore) -> None:
    safe = change("0x1", wallet="0xAbCd", block=BlockRef(1, "0xb1"))
    # The subject is not the wallet: a filter on 0xabcd does not find a change naming it.
    other = change("0x2", wallet="0x9999", subject="0xABCD", block=BlockRef(2, "0xb2"))
    elsewhere = change("0x3", wallet="0xabcd", chain="polygon")
    store.upsert_control_changes([safe, other, elsewhere])
    assert store.control_changes(chain="eth", address="0xABCD") == [safe]
    assert store.control_changes(address="0XABCD") == [safe, elsewhere]
    assert store.control_changes(address="0x9999") == [other]
    assert store.control_changes(address="0xnone") == []
    assert store.control_changes(chain="polygon") == [elsewhere]
    assert store.control_changes(chain="btc") == []


def test_control_changes_order_is_height_then_arrival_pending_last(store: SqlStore) -> None:
    b2, b1 = BlockRef(2, "0xb2"), BlockRef(1, "0xb1")
    store.upsert_control_changes(
        [
            change("0xz", block=b2),
            change("0xp"),
            change("0xy", block=b1, index="log:10"),
            change("0xy", block=b1, index="log:9"),
            change(None, block=b2, index="slot:eip1967"),
        ]
    )
    assert [c.key[1:] for c in store.control_changes()] == [
        ("0xy", "log:10"),
        ("0xy", "log:9"),
        ("0xz", "log:0"),
        ("0xb2", "slot:eip1967"),
        ("0xp", "log:0"),
    ]
    store.upsert_control_changes([change("0xp", block=b1)])
    assert [c.key[1] for c in store.control_changes()] == ["0xy", "0xy", "0xp", "0xz", "0xb2"]


def test_control_changes_with_long_strings(store: SqlStore) -> None:
    block = BlockRef(1, "0x" + "b" * 300)
    c = replace(
        change("0x" + "a" * 300, index="log:" + "7" * 296, block=block, chain="c" * 100),
        wallet_address="0x" + "F" * 400,
        subject="s" * 400,
        contract="erc1155:" + "0" * 400,
    )
    assert store.upsert_control_changes([c]) == 1
    assert store.upsert_control_changes([c]) == 0
    assert store.control_changes(address="0x" + "f" * 400) == [c]
    assert store.orphan_transfers(c.chain, block) == 1


def test_a_control_change_with_a_naive_time_is_refused(store: SqlStore) -> None:
    naive = replace(change("0xa", block=BlockRef(1, "0xb1")), block_time=datetime(2025, 1, 1))
    with pytest.raises(StoreError, match="naive"):
        store.upsert_control_changes([naive])


def test_checkpoints(store: SqlStore) -> None:
    assert store.get_checkpoint("eth") is None
    store.set_checkpoint("eth", BlockRef(5, "0xb5"))
    store.set_checkpoint("btc", BlockRef(800_000, "00ab"))
    store.set_checkpoint("eth", BlockRef(6, "0xb6"))
    assert store.get_checkpoint("eth") == BlockRef(6, "0xb6")
    assert store.get_checkpoint("btc") == BlockRef(800_000, "00ab")


@pytest.mark.parametrize("amount", [0, 1, 2**53 + 1, 10**40 + 7, MAX])
def test_amounts_round_trip_exactly(store: SqlStore, amount: int) -> None:
    t = transfer("0xa", amount=amount, block=BlockRef(1, "0xb1"))
    store.upsert_transfers([t])
    assert store.transfers()[0].amount == amount
    assert store.save_alert(alert("a1", amount=amount))
    assert store.alerts()[0].amount == amount


@pytest.mark.parametrize("amount", [-1, MAX + 1])
def test_an_amount_outside_uint256_is_refused(store: SqlStore, amount: int) -> None:
    with pytest.raises(StoreError, match="amount"):
        store.upsert_transfers([transfer("0xa", amount=amount)])
    assert store.transfers() == []


def test_address_filter_ignores_case(store: SqlStore) -> None:
    out = transfer("0x1", frm="0xAbCd", to="0xEEEE", block=BlockRef(1, "0xb1"))
    into = transfer("0x2", frm="0xffff", to="0xABCD", block=BlockRef(2, "0xb2"))
    other = transfer("0x3", frm="0x9999", to="0x8888", block=BlockRef(3, "0xb3"))
    elsewhere = transfer("0x4", frm="0xabcd", to="0x7777", chain="polygon")
    store.upsert_transfers([out, into, other, elsewhere])
    assert store.transfers(chain="eth", address="0xabcd") == [out, into]
    assert store.transfers(address="0XABCD") == [out, into, elsewhere]
    assert store.transfers(addresses=["0x8888", "0xEeEe"]) == [out, other]
    assert store.transfers(address="0x9999", addresses=["0xffff"]) == [into, other]
    assert store.transfers(addresses=[]) == []
    assert store.transfers(chain="polygon") == [elsewhere]


def test_order_is_height_then_arrival_pending_last(store: SqlStore) -> None:
    b2, b1 = BlockRef(2, "0xb2"), BlockRef(1, "0xb1")
    late_pending = transfer("0xp")
    batch = [
        transfer("0xz", block=b2),
        late_pending,
        transfer("0xy", block=b1, index="log:10"),
        transfer("0xy", block=b1, index="log:9"),
        transfer("0xa", block=b2),
    ]
    store.upsert_transfers(batch)
    assert [(t.tx_hash, t.index) for t in store.transfers()] == [
        ("0xy", "log:10"),
        ("0xy", "log:9"),
        ("0xz", "tx"),
        ("0xa", "tx"),
        ("0xp", "tx"),
    ]
    # Mined later, the pending one takes its place at the end of its block.
    store.upsert_transfers([transfer("0xp", block=b1)])
    assert [t.tx_hash for t in store.transfers()] == ["0xy", "0xy", "0xp", "0xz", "0xa"]


def test_alerts_are_saved_once_and_change_state(store: SqlStore) -> None:
    later, first = alert("a2", T0 + timedelta(minutes=1)), alert("a1", T0)
    assert store.save_alert(later) is True
    assert store.save_alert(first) is True
    assert store.save_alert(later) is False
    assert store.alerts() == [first, later]
    store.set_alert_state("a1", AlertState.CONFIRMED)
    assert store.alerts()[0].state is AlertState.CONFIRMED
    assert store.get_alert("a1") == replace(first, state=AlertState.CONFIRMED)
    assert store.get_alert("a2") == later
    assert store.get_alert("missing") is None
    with pytest.raises(StoreError, match="no alert"):
        store.set_alert_state("missing", AlertState.RETRACTED)


def test_update_alert_moves_a_remined_alert_to_its_new_block(store: SqlStore) -> None:
    first = alert("a1")
    other = alert("a2", T0 + timedelta(minutes=1))
    assert store.save_alert(first) and store.save_alert(other)
    remined = replace(
        first,
        state=AlertState.CONFIRMED,
        tx_hash="0xdef",
        block=BlockRef(8, "0xb8new"),
        amount=5,
        counterparty=None,
    )
    store.update_alert(remined)
    assert store.get_alert("a1") == remined
    assert store.get_alert("a2") == other
    assert store.alerts_in_block("eth", BlockRef(7, "0xb7")) == [other]
    assert store.alerts_in_block("eth", BlockRef(8, "0xb8new")) == [remined]
    store.update_alert(remined)  # again: no change, no error
    assert store.get_alert("a1") == remined
    # Back to the mempool: the block can be cleared too.
    unmined = replace(remined, state=AlertState.PROVISIONAL, block=None)
    store.update_alert(unmined)
    assert store.get_alert("a1") == unmined
    assert store.alerts_in_block("eth", BlockRef(8, "0xb8new")) == []
    # set_alert_state still changes the state alone.
    store.set_alert_state("a1", AlertState.RETRACTED)
    assert store.get_alert("a1") == replace(unmined, state=AlertState.RETRACTED)


def test_update_alert_keeps_what_names_the_alert(store: SqlStore) -> None:
    first = alert("a1")
    store.save_alert(first)
    store.update_alert(
        replace(first, rule_id="other", wallet="w", raised_at=T0 + timedelta(days=1))
    )
    assert store.get_alert("a1") == first


def test_update_alert_of_an_unknown_id_is_an_error(store: SqlStore) -> None:
    store.save_alert(alert("a1"))
    with pytest.raises(StoreError, match="no alert with id 'missing'"):
        store.update_alert(alert("missing"))
    assert [a.id for a in store.alerts()] == ["a1"]


def test_alerts_in_block(store: SqlStore) -> None:
    b7, b8 = BlockRef(7, "0xb7"), BlockRef(8, "0xb8")
    late = alert("z-late", T0 + timedelta(minutes=2))
    early = alert("z-early", T0)
    tie = alert("a-tie", T0)  # same time as early: the id decides
    in_b8 = replace(alert("b8", T0), block=b8)
    other_chain = replace(alert("btc", T0), chain="btc")  # same block hash, other chain
    unmined = replace(alert("pending", T0), block=None, state=AlertState.PENDING)
    for a in (late, early, in_b8, other_chain, unmined, tie):
        assert store.save_alert(a)
    assert store.alerts_in_block("eth", b7) == [tie, early, late]
    assert store.alerts_in_block("eth", b8) == [in_b8]
    assert store.alerts_in_block("btc", b7) == [other_chain]
    assert store.alerts_in_block("eth", BlockRef(9, "0xb9")) == []
    assert store.alerts_in_block("arb", b7) == []


def test_long_strings_round_trip(store: SqlStore) -> None:
    """No column has a length limit: PostgreSQL would enforce one that SQLite ignores."""
    title = ("Hot wallet drain / ホットウォレット流出 " * 100)[:2000]
    assert len(title) == 2000
    incident = Incident("inc-" + "x" * 500, title, T0, from_alert="a" * 500)
    store.save_incident(incident)
    assert store.incidents() == [incident]
    entry = TimelineEntry(
        incident.id, T0, TimelineKind.NOTE, "t" * 10_000, "actor" * 100, "s" * 500, "r" * 2000
    )
    assert store.add_timeline_entry(entry)
    assert store.timeline(incident.id) == [entry]

    index = "log:" + "7" * 296
    assert len(index) == 300
    block = BlockRef(1, "0x" + "b" * 300)
    t = replace(
        transfer("0x" + "a" * 300, index=index, block=block, chain="c" * 100),
        from_address="0x" + "F" * 400,
        to_address="bc1" + "q" * 400,
        asset="erc1155:" + "0" * 400,
    )
    assert store.upsert_transfers([t]) == 1
    assert store.upsert_transfers([t]) == 0
    assert store.transfers() == [t]
    assert store.transfers(address=t.from_address.lower()) == [t]
    store.record_block(t.chain, block, "0x" + "p" * 300, T0)
    assert store.recent_blocks(t.chain, 1) == [(block, "0x" + "p" * 300)]
    store.set_checkpoint(t.chain, block)
    assert store.get_checkpoint(t.chain) == block

    long_alert = replace(
        alert("alert:" + "i" * 500),
        rule_id="rule-" + "r" * 300,
        wallet="wallet " * 50,
        subject=("s" * 300, "u" * 300, index),
        tx_hash=t.tx_hash,
        block=block,
        chain=t.chain,
        asset=t.asset,
        counterparty=t.to_address,
    )
    assert store.save_alert(long_alert)
    assert store.alerts() == [long_alert]
    assert store.alerts_in_block(t.chain, block) == [long_alert]


def test_alert_without_optional_fields(store: SqlStore) -> None:
    bare = Alert("a", "r", Severity.INFO, AlertState.PENDING, "btc", "cold", ("a", "b", "c"), T0)
    assert store.save_alert(bare)
    assert store.alerts() == [bare]


def test_incidents_and_their_timeline(store: SqlStore) -> None:
    opened = Incident("inc-1", "Hot wallet drain / ホットウォレット流出", T0, from_alert="a1")
    store.save_incident(Incident("inc-0", "drill", T0 - timedelta(days=1), exercise=True))
    store.save_incident(opened)
    closed = Incident("inc-1", opened.title, T0, IncidentStatus.CLOSED, T0 + timedelta(hours=5))
    store.save_incident(closed)
    assert [i.id for i in store.incidents()] == ["inc-0", "inc-1"]
    assert store.incidents()[1] == closed

    note = TimelineEntry("inc-1", T0 + timedelta(minutes=5), TimelineKind.NOTE, "凍結依頼", "ops")
    detection = TimelineEntry("inc-1", T0, TimelineKind.DETECTION, "outflow seen")
    same_time = TimelineEntry("inc-1", T0, TimelineKind.ACTION, "keys rotated", section="damage")
    assert store.add_timeline_entry(note) is True
    assert store.add_timeline_entry(detection) is True
    assert store.add_timeline_entry(note) is False
    assert store.add_timeline_entry(same_time) is True
    by_other = TimelineEntry(note.incident_id, note.at, note.kind, note.text, actor="lead")
    assert store.add_timeline_entry(by_other) is True
    assert store.timeline("inc-1") == [detection, same_time, note, by_other]
    assert store.timeline("inc-0") == []


def test_a_timeline_entry_needs_its_incident(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="add_timeline_entry"):
        store.add_timeline_entry(TimelineEntry("nope", T0, TimelineKind.NOTE, "x"))


def test_times_come_back_aware_utc(store: SqlStore) -> None:
    at = datetime(2025, 3, 1, 21, 0, 0, 123456, tzinfo=JST)
    store.record_block("eth", BlockRef(1, "0xb1"), "0xb0", at)
    t = Transfer("eth", "0xa", "tx", "f", "t", "native", 1, TransferKind.NATIVE,
                 TransferStatus.CONFIRMED, BlockRef(1, "0xb1"), at)  # fmt: skip
    store.upsert_transfers([t])
    store.save_incident(Incident("i", "t", at))
    store.add_timeline_entry(TimelineEntry("i", at, TimelineKind.NOTE, "x"))
    times = [
        store.transfers()[0].block_time,
        store.incidents()[0].opened_at,
        store.timeline("i")[0].at,
    ]
    for value in times:
        assert value == at
        assert value is not None and value.tzinfo is UTC
    # The same instant in another zone is the same entry.
    assert not store.add_timeline_entry(
        TimelineEntry("i", at.astimezone(UTC), TimelineKind.NOTE, "x")
    )
    assert store.upsert_transfers([t]) == 0


def test_a_naive_time_is_refused(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="naive"):
        store.save_incident(Incident("i", "t", datetime(2025, 1, 1)))


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/reopen.db"
    first = open_store(url)
    first.set_checkpoint("eth", BlockRef(1, "0xb1"))
    first.close()
    second = open_store(url)
    assert second.get_checkpoint("eth") == BlockRef(1, "0xb1")
    second.close()


# -- batches -------------------------------------------------------------------------------------


class Crash(Exception):
    """Stands for anything failing in the middle of a batch: a sink, a rule, the process."""


def test_a_batch_that_raises_leaves_nothing_written(store: SqlStore) -> None:
    b1 = BlockRef(1, "0xb1")
    store.upsert_transfers([transfer("0xkept", block=b1)])
    store.save_alert(alert("kept"))
    with pytest.raises(Crash), store.batch():
        assert store.upsert_transfers([transfer("0xa", block=b1), transfer("0xb")]) == 2
        assert store.upsert_control_changes([change("0xc", block=b1)]) == 1
        assert store.orphan_transfers("eth", b1) == 3
        assert store.save_alert(alert("new")) is True
        store.update_alert(replace(alert("kept"), state=AlertState.RETRACTED))
        store.set_checkpoint("eth", b1)
        store.record_block("eth", b1, "0xb0", T0)
        raise Crash("a sink failed")
    assert store.transfers() == [transfer("0xkept", block=b1)]
    assert store.control_changes() == []
    assert store.alerts() == [alert("kept")]
    assert store.get_checkpoint("eth") is None
    assert store.recent_blocks("eth", 5) == []


def test_a_batch_reads_its_own_writes_and_others_see_them_at_the_end(store: SqlStore) -> None:
    b1 = BlockRef(1, "0xb1")
    seen_elsewhere: list[object] = []

    def read_from_another_thread() -> None:
        seen_elsewhere.append((store.get_alert("a1"), store.transfers()))

    with store.batch():
        store.upsert_transfers([transfer("0xa", block=b1)])
        store.save_alert(replace(alert("a1"), block=b1))
        assert store.get_alert("a1") == replace(alert("a1"), block=b1)
        assert store.alerts_in_block("eth", b1) == [replace(alert("a1"), block=b1)]
        assert store.transfers() == [transfer("0xa", block=b1)]
        reader = threading.Thread(target=read_from_another_thread)
        reader.start()
        reader.join(timeout=30)
    assert seen_elsewhere == [(None, [])], "another connection saw an uncommitted write"
    assert store.get_alert("a1") == replace(alert("a1"), block=b1)
    assert store.transfers() == [transfer("0xa", block=b1)]


def test_a_batch_keeps_every_write_guarantee(store: SqlStore) -> None:
    """Inside one transaction as in many: idempotent replays, a confirmed row never sent back
    to pending, orphaning, re-mining into another block, alerts found by their block."""
    old, new = BlockRef(5, "0xold"), BlockRef(5, "0xnew")
    confirmed = transfer("0xa", block=old)
    with store.batch():
        assert store.upsert_transfers([confirmed]) == 1
        assert store.upsert_transfers([confirmed]) == 0
        assert store.upsert_transfers([transfer("0xa")]) == 0  # a late mempool sighting
        assert store.upsert_control_changes([change("0xc", block=old)]) == 1
        assert store.upsert_control_changes([change("0xc")]) == 0
        assert store.save_alert(replace(alert("a1"), block=old)) is True
        assert store.save_alert(replace(alert("a1"), block=old)) is False
        assert store.orphan_transfers("eth", old) == 2
        assert store.orphan_transfers("eth", old) == 0
        assert store.upsert_transfers([transfer("0xb", block=new), transfer("0xa", block=new)])
        store.update_alert(replace(alert("a1"), block=new))
    assert store.transfers() == [transfer("0xb", block=new), transfer("0xa", block=new)]
    assert store.control_changes() == [change("0xc", block=old, status=TransferStatus.ORPHANED)]
    assert store.alerts_in_block("eth", old) == []
    assert store.alerts_in_block("eth", new) == [replace(alert("a1"), block=new)]


def test_a_batch_inside_a_batch_joins_it(store: SqlStore) -> None:
    with pytest.raises(Crash), store.batch():
        with store.batch():
            store.save_alert(alert("inner"))
        assert store.get_alert("inner") == alert("inner")
        raise Crash("after the inner batch ended")
    assert store.alerts() == []
    with store.batch(), store.batch():
        store.save_alert(alert("inner"))
    assert store.alerts() == [alert("inner")]


def test_a_store_error_in_a_batch_rolls_it_back(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="amount"), store.batch():
        store.upsert_transfers([transfer("0xa")])
        store.upsert_transfers([transfer("0xb", amount=MAX + 1)])
    assert store.transfers() == []
    store.upsert_transfers([transfer("0xa")])  # the store is usable afterwards
    assert store.transfers() == [transfer("0xa")]


def test_another_threads_writes_are_not_part_of_a_batch(store: SqlStore) -> None:
    """The batch belongs to the thread that opened it: a follower recording its checkpoint
    while the processor's batch is open commits on its own, whatever the batch does."""
    writer = threading.Thread(target=store.set_checkpoint, args=("eth", BlockRef(9, "0xb9")))
    with pytest.raises(Crash), store.batch():
        store.save_alert(alert("a1"))
        writer.start()  # on SQLite it waits for the batch's write lock; on PostgreSQL it need not
        raise Crash("the batch fails")
    writer.join(timeout=60)
    assert not writer.is_alive()
    assert store.get_checkpoint("eth") == BlockRef(9, "0xb9")
    assert store.alerts() == []


# -- property tests ------------------------------------------------------------------------------

_names = st.text("0123456789abcdefABCDEFxyz", min_size=1, max_size=42)
_times = st.datetimes(
    min_value=datetime(2009, 1, 3), max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, JST, timezone(timedelta(hours=-5, minutes=-30))]),
)  # fmt: skip


@st.composite
def _transfers(draw: st.DrawFn) -> Transfer:
    status = draw(st.sampled_from(TransferStatus))
    mined = status is not TransferStatus.PENDING
    return Transfer(
        chain=draw(st.sampled_from(["eth", "btc", "arb"])),
        tx_hash=draw(_names),
        index=draw(st.sampled_from(["tx", "log:0", "log:17", "trace:0.1", "out:3"])),
        from_address=draw(_names),
        to_address=draw(_names),
        asset=draw(st.sampled_from(["native", "0xdac17f958d2ee523a2206206994597c13d831ec7"])),
        amount=draw(st.integers(0, MAX)),
        kind=draw(st.sampled_from(TransferKind)),
        status=status,
        block=BlockRef(draw(st.integers(0, 2**40)), draw(_names)) if mined else None,
        block_time=draw(_times) if mined else draw(st.none() | _times),
    )


_lists = st.lists(_transfers(), max_size=25, unique_by=lambda t: t.key)
_property = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_property
@given(batch=_lists)
def test_any_transfers_round_trip_and_replay_is_zero(
    new_store: StoreFactory, batch: list[Transfer]
) -> None:
    store = new_store()
    assert store.upsert_transfers(batch) == len(batch)
    assert store.upsert_transfers(batch) == 0
    assert sorted(store.transfers(), key=lambda t: t.key) == sorted(batch, key=lambda t: t.key)
    for t in batch[:3]:
        assert t in store.transfers(chain=t.chain, address=t.to_address.upper())


@_property
@given(batch=_lists, data=st.data())
def test_upsert_counts_exactly_the_rows_it_changes(
    new_store: StoreFactory, batch: list[Transfer], data: st.DataObject
) -> None:
    store = new_store()
    store.upsert_transfers(batch)
    before = {t.key: t for t in store.transfers()}
    # Sightings of known keys in a new status or block, mixed with new keys.
    known = st.sampled_from(batch) if batch else st.nothing()
    moved = st.builds(_moved, known, _transfers())
    moves = data.draw(st.lists(moved | _transfers(), max_size=10))
    changed = store.upsert_transfers(moves)
    after = {t.key: t for t in store.transfers()}
    assert changed == sum(1 for k, t in after.items() if before.get(k) != t)


@_property
@given(batch=_lists, data=st.data())
def test_calls_in_a_batch_end_as_the_same_calls_one_by_one(
    new_store: StoreFactory, batch: list[Transfer], data: st.DataObject
) -> None:
    """One event at a time, as the processor writes them: the same counts and the same rows
    whether each call is its own transaction or all share one."""
    known = st.sampled_from(batch) if batch else st.nothing()
    moves = data.draw(st.lists(st.builds(_moved, known, _transfers()) | _transfers(), max_size=8))
    calls = [*batch, *moves, *batch]
    alone = new_store()
    counts = [alone.upsert_transfers([t]) for t in calls]
    rows = alone.transfers()
    together = new_store()  # on PostgreSQL the same database, emptied
    with together.batch():
        assert [together.upsert_transfers([t]) for t in calls] == counts
    assert together.transfers() == rows


def _moved(known: Transfer, other: Transfer) -> Transfer:
    return replace(known, status=other.status, block=other.block, block_time=other.block_time)


@st.composite
def _control_changes(draw: st.DrawFn) -> ControlChange:
    status = draw(st.sampled_from(TransferStatus))
    mined = status is not TransferStatus.PENDING
    in_storage = mined and draw(st.booleans())
    return ControlChange(
        chain=draw(st.sampled_from(["eth", "arb"])),
        index=draw(
            st.sampled_from(["slot:eip1967", "slot:0"] if in_storage else ["log:0", "log:9"])
        ),
        wallet_address=draw(_names),
        kind=draw(st.sampled_from(ControlKind)),
        status=status,
        tx_hash=None if in_storage else draw(_names),
        subject=draw(st.none() | _names),
        value=draw(st.none() | st.integers(0, MAX)),
        contract=draw(st.none() | _names),
        block=BlockRef(draw(st.integers(0, 2**40)), draw(_names)) if mined else None,
        block_time=draw(_times) if mined else draw(st.none() | _times),
    )


@_property
@given(batch=st.lists(_control_changes(), max_size=25, unique_by=lambda c: c.key), data=st.data())
def test_any_control_changes_round_trip_and_count_exactly(
    new_store: StoreFactory, batch: list[ControlChange], data: st.DataObject
) -> None:
    store = new_store()
    assert store.upsert_control_changes(batch) == len(batch)
    assert store.upsert_control_changes(batch) == 0
    before = {c.key: c for c in store.control_changes()}
    assert before == {c.key: c for c in batch}
    for c in batch[:3]:
        assert c in store.control_changes(chain=c.chain, address=c.wallet_address.upper())
    # Sightings of known transactions in a new status or block, mixed with new keys.
    logged = [c for c in batch if c.tx_hash is not None]
    known = st.sampled_from(logged) if logged else st.nothing()
    moved = st.builds(_moved_change, known, _control_changes())
    moves = data.draw(st.lists(moved | _control_changes(), max_size=10))
    changed = store.upsert_control_changes(moves)
    after = {c.key: c for c in store.control_changes()}
    assert changed == sum(1 for k, c in after.items() if before.get(k) != c)


def _moved_change(known: ControlChange, other: ControlChange) -> ControlChange:
    return replace(known, status=other.status, block=other.block, block_time=other.block_time)


# -- the watched UTXO set ------------------------------------------------------------------------

B1, B2, B3 = BlockRef(1, "00b1"), BlockRef(2, "00b2"), BlockRef(3, "00b3")
B2_OTHER = BlockRef(2, "00c2")  # the same height on another branch
SUPPLY = 21_000_000 * 10**8  # satoshi
#: A block as the watcher applies it: the block, the outputs it creates, the outpoints it spends.
UtxoBlock = tuple[BlockRef, list[Utxo], list[tuple[str, int, str]]]


def utxo(
    txid: str,
    vout: int = 0,
    *,
    block: BlockRef,
    wallet: str = "hot",
    amount: int = 1_000,
    chain: str = "btc",
) -> Utxo:
    return Utxo(
        chain=chain,
        txid=txid,
        vout=vout,
        wallet=wallet,
        address=f"bc1q{wallet}{vout}",
        amount=amount,
        block=block,
    )


def spent(u: Utxo, by: str, block: BlockRef) -> Utxo:
    return replace(u, spent_by=by, spent_block=block)


def _two_blocks(store: SqlStore) -> tuple[Utxo, Utxo, Utxo]:
    """B1 pays hot 1000 and cold 5000; B2 pays hot 300 and spends B1's hot output."""
    a, b = utxo("a1", block=B1), utxo("b1", 1, block=B1, wallet="cold", amount=5_000)
    c = utxo("c2", block=B2, amount=300)
    store.apply_utxo_block("btc", B1, [a, b], [])
    store.apply_utxo_block("btc", B2, [c], [("a1", 0, "c2")])
    return a, b, c


def test_utxo_balances_are_exact_at_every_height(store: SqlStore) -> None:
    a, b, c = _two_blocks(store)
    assert store.utxo_balances("btc", 0) == {}
    assert store.utxo_balances("btc", 1) == {"hot": 1_000, "cold": 5_000}
    assert store.utxo_balances("btc", 2) == {"hot": 300, "cold": 5_000}
    assert store.utxo_balances("btc", 99) == {"hot": 300, "cold": 5_000}
    assert store.utxo_balances("btc") == {"hot": 300, "cold": 5_000}
    assert store.utxo_balances("other") == {}
    assert store.utxos("btc") == [spent(a, "c2", B2), b, c]


def test_utxos_by_wallet_and_unspent_only(store: SqlStore) -> None:
    a, b, c = _two_blocks(store)
    assert store.utxos("btc", wallet="hot") == [spent(a, "c2", B2), c]
    assert store.utxos("btc", unspent_only=True) == [b, c]
    assert store.utxos("btc", wallet="hot", unspent_only=True) == [c]
    assert store.utxos("btc", wallet="warm") == []
    assert store.utxos("other") == []


def test_utxos_are_ordered_by_height_then_outpoint(store: SqlStore) -> None:
    late = [utxo("ff", 2, block=B3), utxo("00", 7, block=B3), utxo("00", 3, block=B3)]
    store.apply_utxo_block("btc", B3, late, [])
    store.apply_utxo_block("btc", B1, [utxo("zz", block=B1)], [])
    assert [(u.block.height, u.outpoint) for u in store.utxos("btc")] == [
        (1, "zz:0"),
        (3, "00:3"),
        (3, "00:7"),
        (3, "ff:2"),
    ]


def test_applying_a_utxo_block_again_changes_nothing(store: SqlStore) -> None:
    a, b, c = _two_blocks(store)
    before = store.utxos("btc")
    # Again, in order and out of it: B1 again must not undo the spend B2 made.
    store.apply_utxo_block("btc", B2, [c], [("a1", 0, "c2")])
    store.apply_utxo_block("btc", B1, [a, b], [])
    store.apply_utxo_block("btc", B2, [c, c], [("a1", 0, "c2"), ("a1", 0, "c2")])
    assert store.utxos("btc") == before
    assert store.utxo_balances("btc", 1) == {"hot": 1_000, "cold": 5_000}


def test_a_block_may_spend_what_it_creates(store: SqlStore) -> None:
    first, second = utxo("t1", block=B1, amount=700), utxo("t2", block=B1, amount=650)
    store.apply_utxo_block("btc", B1, [first, second], [("t1", 0, "t2")])
    assert store.utxos("btc") == [spent(first, "t2", B1), second]
    assert store.utxo_balances("btc", 1) == {"hot": 650}
    assert store.utxo_balances("btc", 0) == {}


def test_a_spend_of_an_unknown_outpoint_is_ignored(store: SqlStore) -> None:
    a = utxo("a1", block=B1)
    store.apply_utxo_block("btc", B1, [a], [])
    unknown = [("nope", 0, "s"), ("a1", 1, "s")]  # another transaction; another output of a1
    store.apply_utxo_block("btc", B2, [], unknown)
    store.apply_utxo_block("btc-test", B2, [], [("a1", 0, "s")])  # the same outpoint elsewhere
    assert store.utxos("btc") == [a]
    assert store.utxo_balances("btc") == {"hot": 1_000}


def test_an_output_of_another_block_or_chain_is_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="a1:0"):
        store.apply_utxo_block("btc", B1, [utxo("a1", block=B2)], [])
    with pytest.raises(ValueError, match="a1:0"):
        store.apply_utxo_block("btc", B1, [utxo("a1", block=B1, chain="btc-test")], [])
    assert store.utxos("btc") == []


def test_rewind_utxos_undoes_every_block_above_the_height(store: SqlStore) -> None:
    a, b, _ = _two_blocks(store)
    d = utxo("d3", block=B3, wallet="warm", amount=40)
    # B3 spends the cold output and the one B2 made (created and spent above 1: counted once).
    store.apply_utxo_block("btc", B3, [d], [("b1", 1, "d3"), ("c2", 0, "d3")])
    store.apply_utxo_block("btc-test", B3, [utxo("x", block=B3, chain="btc-test")], [])
    assert store.rewind_utxos("btc", 3) == 0
    assert store.rewind_utxos("btc", 1) == 4  # c and d removed, a and b unspent
    assert store.rewind_utxos("btc", 1) == 0
    assert store.utxos("btc") == [a, b]
    assert store.utxo_balances("btc") == {"hot": 1_000, "cold": 5_000}
    assert store.utxos("btc-test") == [utxo("x", block=B3, chain="btc-test")]
    assert store.rewind_utxos("btc", -1) == 2
    assert store.utxos("btc") == []


def test_orphan_block_undoes_that_block_in_the_utxo_set_only(store: SqlStore) -> None:
    a, b, c = _two_blocks(store)
    store.record_block("btc", B2, B1.hash, T0)
    store.apply_utxo_block("btc-test", B2, [utxo("c2", block=B2, chain="btc-test")], [])
    # Another block at the same height: nothing of B2's is touched.
    assert store.orphan_block("btc", B2_OTHER) == 0
    assert store.utxos("btc") == [spent(a, "c2", B2), b, c]
    # Its return value still counts transfers and control changes only.
    assert store.orphan_block("btc", B2) == 0
    assert store.utxos("btc") == [a, b]
    assert store.utxo_balances("btc") == {"hot": 1_000, "cold": 5_000}
    assert store.recent_blocks("btc", 5) == []
    assert store.utxos("btc-test") == [utxo("c2", block=B2, chain="btc-test")]
    assert store.orphan_block("btc", B2) == 0
    assert store.utxos("btc") == [a, b]


def test_orphan_block_keeps_counting_transfers(store: SqlStore) -> None:
    a = utxo("a1", block=B1)
    store.apply_utxo_block("btc", B1, [a], [])
    store.upsert_transfers([transfer("a1", index="out:0", block=B1, chain="btc")])
    assert store.orphan_block("btc", B1) == 1
    assert store.utxos("btc") == []


def test_a_remined_output_moves_to_its_new_block(store: SqlStore) -> None:
    a, b, c = _two_blocks(store)
    store.orphan_block("btc", B2)
    moved = replace(c, block=B2_OTHER)
    store.apply_utxo_block("btc", B2_OTHER, [moved], [("a1", 0, "c2")])
    assert store.utxos("btc") == [spent(a, "c2", B2_OTHER), b, moved]
    # Also without the orphaning first: the row follows the block it was applied in last, and
    # a spend made on the replaced branch goes with that branch.
    store.apply_utxo_block("btc", B3, [], [("c2", 0, "s3")])
    again = replace(c, block=BlockRef(3, "00c3"))
    store.apply_utxo_block("btc", again.block, [again], [])
    assert store.utxos("btc", wallet="hot") == [spent(a, "c2", B2_OTHER), again]
    assert store.utxo_balances("btc", 2) == {"cold": 5_000}
    assert store.utxo_balances("btc", 3) == {"hot": 300, "cold": 5_000}


def test_a_respend_in_another_block_moves_the_spend(store: SqlStore) -> None:
    a = utxo("a1", block=B1)
    store.apply_utxo_block("btc", B1, [a], [])
    store.apply_utxo_block("btc", B2, [], [("a1", 0, "s2")])
    store.apply_utxo_block("btc", B2_OTHER, [], [("a1", 0, "t2")])  # a double spend won
    assert store.utxos("btc") == [spent(a, "t2", B2_OTHER)]
    assert store.orphan_block("btc", B2) == 0  # the losing block: nothing of it is left
    assert store.utxos("btc") == [spent(a, "t2", B2_OTHER)]


def test_utxo_amounts_and_balances_are_exact(store: SqlStore) -> None:
    # The whole supply in outputs of odd sizes, and outputs whose sum is far beyond 2**256.
    pieces = [SUPPLY // 7 + 1] * 6
    pieces.append(SUPPLY - sum(pieces))
    supply = [utxo("s", i, block=B1, wallet="cold", amount=p) for i, p in enumerate(pieces)]
    huge = [utxo("h", i, block=B1, wallet="odd", amount=MAX - i) for i in range(3)]
    store.apply_utxo_block("btc", B1, [*supply, *huge], [])
    zero = utxo("z", block=B2, wallet="dust", amount=0)
    store.apply_utxo_block("btc", B2, [zero], [("h", 0, "z")])
    assert {u.amount for u in store.utxos("btc", wallet="odd")} == {MAX, MAX - 1, MAX - 2}
    assert store.utxo_balances("btc", 1) == {"cold": SUPPLY, "odd": 3 * MAX - 3}
    # A wallet holding nothing (here: only a zero output) is absent.
    assert store.utxo_balances("btc") == {"cold": SUPPLY, "odd": 2 * MAX - 3}


def test_a_utxo_amount_outside_uint256_is_refused(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="amount"):
        store.apply_utxo_block("btc", B1, [utxo("a1", block=B1, amount=-1)], [])
    assert store.utxos("btc") == []


def test_a_large_utxo_block_in_one_call(store: SqlStore) -> None:
    outputs = [utxo(f"{i:064x}", i % 3, block=B1, wallet=f"w{i % 4}") for i in range(3000)]
    store.apply_utxo_block("btc", B1, outputs, [])
    spends = [(u.txid, u.vout, "ff" * 32) for u in outputs[::2]]
    store.apply_utxo_block("btc", B2, [], spends)
    store.apply_utxo_block("btc", B2, [], spends)
    assert len(store.utxos("btc")) == 3000
    assert len(store.utxos("btc", unspent_only=True)) == 1500
    assert store.utxo_balances("btc", 1) == {f"w{w}": 750_000 for w in range(4)}
    assert sum(store.utxo_balances("btc").values()) == 1_500_000
    assert store.rewind_utxos("btc", 1) == 1500


def test_a_utxo_block_in_a_batch_that_raises_leaves_nothing(store: SqlStore) -> None:
    a, b, c = _two_blocks(store)
    with pytest.raises(Crash), store.batch():
        store.apply_utxo_block("btc", B3, [utxo("d3", block=B3)], [("b1", 1, "d3")])
        assert store.utxo_balances("btc") == {"hot": 1_300}  # the batch reads its own writes
        assert store.orphan_block("btc", B2) == 0
        assert store.rewind_utxos("btc", 0) == 3
        assert store.utxos("btc") == []
        raise Crash("a sink failed")
    assert store.utxos("btc") == [spent(a, "c2", B2), b, c]
    with store.batch(), store.batch():
        store.apply_utxo_block("btc", B3, [utxo("d3", block=B3)], [("b1", 1, "d3")])
    assert store.utxo_balances("btc") == {"hot": 1_300}


@st.composite
def _utxo_chains(draw: st.DrawFn) -> list[UtxoBlock]:
    """Blocks 1..n, each paying some wallets and spending some outputs still unspent (its own
    included), as a watcher would apply them."""
    blocks: list[UtxoBlock] = []
    unspent: list[tuple[str, int]] = []
    for height in range(1, draw(st.integers(1, 6)) + 1):
        block = BlockRef(height, f"{height:064x}")
        created = [
            utxo(f"t{height}.{i}", draw(st.integers(0, 3)), block=block, wallet=wallet, amount=amt)
            for i, (wallet, amt) in enumerate(
                draw(
                    st.lists(
                        st.tuples(st.sampled_from(["hot", "warm", "cold"]), st.integers(0, MAX)),
                        max_size=5,
                    )
                )
            )
        ]
        unspent += [(u.txid, u.vout) for u in created]
        gone = draw(st.lists(st.sampled_from(unspent), unique=True)) if unspent else []
        unspent = [o for o in unspent if o not in gone]
        blocks.append((block, created, [(t, v, f"s{height}") for t, v in gone]))
    return blocks


def _balances_at(blocks: list[UtxoBlock], height: int) -> dict[str, int]:
    """The pure recomputation: replay the blocks up to ``height``."""
    held: dict[tuple[str, int], Utxo] = {}
    for block, created, spends in blocks:
        if block.height > height:
            break
        held |= {(u.txid, u.vout): u for u in created}
        for txid, vout, _ in spends:
            held.pop((txid, vout))
    totals: dict[str, int] = {}
    for u in held.values():
        totals[u.wallet] = totals.get(u.wallet, 0) + u.amount
    return {w: t for w, t in totals.items() if t}


@_property
@given(blocks=_utxo_chains(), data=st.data())
def test_utxo_balances_equal_a_replay_at_every_height(
    new_store: StoreFactory,
    blocks: list[UtxoBlock],
    data: st.DataObject,
) -> None:
    store = new_store()
    for block, created, spends in blocks:
        store.apply_utxo_block("btc", block, created, spends)
    top = len(blocks)
    for height in range(top + 2):
        assert store.utxo_balances("btc", height) == _balances_at(blocks, height)
    assert store.utxo_balances("btc") == _balances_at(blocks, top)
    # A reorg: back to some height, then the orphaning of the block at it.
    back = data.draw(st.integers(0, top))
    store.rewind_utxos("btc", back)
    assert store.utxo_balances("btc") == _balances_at(blocks, back)
    if back:
        store.orphan_block("btc", blocks[back - 1][0])
        assert store.utxo_balances("btc") == _balances_at(blocks, back - 1)
    # Re-applied, the blocks give the same set as the first time.
    for block, created, spends in blocks:
        store.apply_utxo_block("btc", block, created, spends)
    for height in range(top + 1):
        assert store.utxo_balances("btc", height) == _balances_at(blocks, height)


# -- adapters, URLs and errors -------------------------------------------------------------------


def test_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    store = open_store("sqlite://")
    store.set_checkpoint("eth", BlockRef(1, "0xb1"))
    seen: list[BlockRef | None] = []
    worker = threading.Thread(target=lambda: seen.append(store.get_checkpoint("eth")))
    worker.start()
    worker.join()
    assert seen == [BlockRef(1, "0xb1")]
    store.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://u:hunter2@h/db", "postgresql+psycopg2://u:hunter2@h/db", "no url at all hunter2"],
)
def test_an_unusable_url_is_a_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match=r"store\.url") as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError, match=r"cannot open postgresql at 127\.0\.0\.1:1/db") as caught:
        open_store("postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=2")
    assert "hunter2" not in str(caught.value)


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "postgres"])
def test_postgres_url_spellings(postgres_url: str, scheme: str) -> None:
    store = open_store(postgres_url.replace("postgresql", scheme, 1))
    store.get_checkpoint("eth")
    store.close()


@pytest.mark.parametrize("create", [True, False])
def test_a_sqlite_file_in_a_missing_directory_is_a_config_error(
    tmp_path: Path, create: bool
) -> None:
    missing = tmp_path / "missing-dir"
    with pytest.raises(ConfigError, match=r"store\.url") as caught:
        open_store(f"sqlite:///{missing}/store.db", create=create)
    assert caught.value.reason == f"the directory {missing} does not exist"
    assert not missing.exists()


def test_a_sqlite_file_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match="plain is not a directory"):
        open_store(f"sqlite:///{tmp_path}/plain/store.db")


def test_an_unopenable_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(StoreError, match="sqlite file"):
        open_store(f"sqlite:///{tmp_path}/a-directory")


def test_a_missing_sqlite_file_is_created_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "wrong.db"
    with pytest.raises(ConfigError, match=r"store\.url") as caught:
        open_store(f"sqlite:///{path}", create=False)
    assert caught.value.reason == (
        f"no store at {path}: nothing has been recorded there yet "
        "(run `drainwatch watch` first, or check the path)"
    )
    assert not path.exists()
    # Once a watcher has recorded something, a reader opens it.
    writer = open_store(f"sqlite:///{path}")
    writer.set_checkpoint("eth", BlockRef(1, "0xb1"))
    reader = open_store(f"sqlite:///{path}", create=False)
    assert reader.get_checkpoint("eth") == BlockRef(1, "0xb1")
    reader.close()
    writer.close()


def test_a_reader_never_creates_a_schema(postgres_server: PgServer) -> None:
    """Read-only opening checks the schema without writing: an empty database (in memory, or
    a PostgreSQL database nothing has written to) is refused and left empty."""
    with pytest.raises(ConfigError, match="schema none"):
        open_store("sqlite://", create=False)
    with postgres_server.database() as url:
        with pytest.raises(ConfigError, match="schema none"):
            open_store(url, create=False)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []
        engine.dispose()


def test_a_reader_does_not_wait_for_the_writer_lock(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    writer = open_store(f"sqlite:///{path}")
    writer.set_checkpoint("eth", BlockRef(1, "0xb1"))
    lock = sqlite3.connect(path, timeout=0)
    lock.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
    try:
        reader = open_store(f"sqlite:///{path}", create=False)
        assert reader.get_checkpoint("eth") == BlockRef(1, "0xb1")
        reader.close()
    finally:
        lock.rollback()
        lock.close()
        writer.close()


def test_a_relative_sqlite_path_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no store at here\.db:"):
        open_store("sqlite:///here.db", create=False)
    open_store("sqlite:///here.db").close()
    assert (tmp_path / "here.db").exists()
    open_store("sqlite:///here.db", create=False).close()


@pytest.mark.postgres
def test_postgres_with_create_false_connects_as_usual(postgres_url: str) -> None:
    writer = open_store(postgres_url)
    writer.set_checkpoint("create-false", BlockRef(4, "0xb4"))
    writer.close()
    reader = open_store(postgres_url, create=False)
    assert reader.get_checkpoint("create-false") == BlockRef(4, "0xb4")
    reader.close()


@pytest.mark.postgres
def test_store_on_a_throwaway_cluster() -> None:
    """The postgres fixture's fallback (initdb + pg_ctl, run as 'postgres' when root), forced."""
    with throwaway_cluster() as server:
        assert server.port != 5432
        with server.database() as url:
            store = open_store(url)
            t = transfer("0xa", amount=MAX, block=BlockRef(1, "0xb1"))
            assert store.upsert_transfers([t]) == 1
            assert store.transfers() == [t]
            store.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=server.host, port=server.port, user="postgres", connect_timeout=2)
