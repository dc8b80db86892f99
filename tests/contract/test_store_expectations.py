"""The Store port's expectation methods, on SQLite and on the real PostgreSQL: adding (replay,
conflict, all or nothing), listing, and consuming (one outflow per expectation, freed by an
orphaned outflow, taken over by the mined event of a pending calldata reading)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from drainwatch.errors import ExpectationConflict
from drainwatch.model import BlockRef, Expectation, TransferStatus
from drainwatch.ports import ExpectationRecord
from drainwatch.store import SqlStore
from tests.contract.test_store import StoreFactory, new_store, transfer

__all__ = ["new_store"]  # the fixture, imported: every backend of the store contract

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAX = 2**256 - 1


@pytest.fixture
def store(new_store: StoreFactory, request: pytest.FixtureRequest) -> SqlStore:
    made = new_store()
    if request.node.callspec.params.get("new_store") == "postgres":
        # The shared fixture empties the tables it knows of; this one is newer.
        with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
            conn.execute("TRUNCATE expectations")
    return made


def expectation(
    ref: str, *, amount: int = 10**18, wallet: str = "hot", **kw: object
) -> Expectation:
    values: dict[str, object] = {
        "reference": ref,
        "chain": "eth",
        "wallet": wallet,
        "destination": "0xAway",
        "asset": "native",
        "amount": amount,
        "valid_until": T0 + timedelta(days=1),
    }
    values.update(kw)
    return Expectation(**values)  # type: ignore[arg-type]


def record(e: Expectation, at: datetime = T0, source: str = "cli") -> ExpectationRecord:
    return ExpectationRecord(e, at, source)


def test_added_once_and_listed_by_arrival(store: SqlStore) -> None:
    first = [record(expectation("w-2")), record(expectation("w-1", amount=MAX))]
    later = record(expectation("w-0", wallet="cold"), T0 + timedelta(seconds=1), "file:a.jsonl")
    assert store.add_expectations(first) == 2
    assert store.add_expectations([later]) == 1
    # By arrival; one call's expectations arrive together, then by reference.
    assert store.expectations() == [first[1], first[0], later]
    assert [r.expectation.reference for r in store.expectations(wallet="cold")] == ["w-0"]
    assert store.expectations(chain="btc") == []
    assert store.expectations()[-1] == later  # amounts, times and source come back exact


def test_a_replay_changes_nothing(store: SqlStore) -> None:
    batch = [record(expectation(f"w-{i}")) for i in range(3)]
    assert store.add_expectations(batch) == 3
    # The same values arriving again later (a re-read file) keep the first arrival.
    again = [record(r.expectation, T0 + timedelta(hours=1), "kafka") for r in batch]
    assert store.add_expectations(again) == 0
    assert store.add_expectations([]) == 0
    assert store.expectations() == batch


def test_a_valid_until_in_another_zone_is_the_same_value(store: SqlStore) -> None:
    e = expectation("w-1")
    jst = e.valid_until.astimezone(timezone(timedelta(hours=9)))
    assert store.add_expectations([record(e)]) == 1
    assert store.add_expectations([record(replace(e, valid_until=jst))]) == 0


def test_a_conflict_keeps_nothing_of_the_call(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    call = [record(expectation("w-2")), record(expectation("w-1", amount=5))]
    with pytest.raises(ExpectationConflict, match=r"w-1.*amount"):
        store.add_expectations(call)
    assert [r.expectation.reference for r in store.expectations()] == ["w-1"]


def test_a_conflict_inside_one_call_keeps_nothing(store: SqlStore) -> None:
    call = [record(expectation("w-1")), record(expectation("w-1", destination="0xElse"))]
    with pytest.raises(ExpectationConflict, match="destination"):
        store.add_expectations(call)
    assert store.expectations() == []
    # The same reference twice with the same values is one expectation.
    assert store.add_expectations([record(expectation("w-1"))] * 2) == 1


def test_a_conflict_in_a_batch_keeps_nothing_of_that_call(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    with store.batch():
        with pytest.raises(ExpectationConflict):
            store.add_expectations(
                [record(expectation("w-2")), record(expectation("w-1", amount=1))]
            )
        assert store.add_expectations([record(expectation("w-3"))]) == 1
    assert [r.expectation.reference for r in store.expectations()] == ["w-1", "w-3"]


def test_many_in_one_call(store: SqlStore) -> None:
    batch = [record(expectation(f"w-{i:05}")) for i in range(1200)]
    assert store.add_expectations(batch) == 1200
    assert store.add_expectations(batch) == 0
    assert len(store.expectations()) == 1200


def test_one_expectation_covers_one_outflow(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    first, second = ("eth", "0xa", "tx"), ("eth", "0xb", "tx")
    store.upsert_transfers([transfer("0xa", block=BlockRef(5, "0xb5"))])
    assert store.consume_expectation("w-1", first, T0)
    assert store.consume_expectation("w-1", first, T0)  # the same outflow again: a replay
    assert not store.consume_expectation("w-1", second, T0)
    assert store.expectations()[0].consumed_by == first
    assert not store.consume_expectation("unknown", first, T0)


def test_an_orphaned_outflow_frees_what_it_used(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    block = BlockRef(5, "0xb5")
    store.record_block("eth", block, "0xb4", T0)
    store.upsert_transfers([transfer("0xa", block=block)])
    assert store.consume_expectation("w-1", ("eth", "0xa", "tx"), T0)
    store.orphan_block("eth", block)
    assert store.expectations()[0].consumed_by is None
    assert store.consume_expectation("w-1", ("eth", "0xb", "tx"), T0)
    assert store.expectations()[0].consumed_by == ("eth", "0xb", "tx")


def test_a_consumer_never_stored_lets_go(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    assert store.consume_expectation("w-1", ("eth", "0xghost", "tx"), T0)
    assert store.consume_expectation("w-1", ("eth", "0xb", "tx"), T0)


def test_a_pending_outflow_holds_it_until_withdrawn(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    store.upsert_transfers([transfer("0xa")])  # pending, in the mempool
    assert store.consume_expectation("w-1", ("eth", "0xa", "tx"), T0)
    assert not store.consume_expectation("w-1", ("eth", "0xb", "tx"), T0)
    # Dropped or replaced: the mempool watcher withdraws it as ORPHANED.
    store.upsert_transfers([transfer("0xa", status=TransferStatus.ORPHANED)])
    assert store.consume_expectation("w-1", ("eth", "0xb", "tx"), T0)


def test_the_mined_event_takes_over_from_a_pending_calldata_reading(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    store.upsert_transfers([transfer("0xa", index="pending:0")])
    assert store.consume_expectation("w-1", ("eth", "0xa", "pending:0"), T0)
    mined = [transfer(tx, index="log:3", block=BlockRef(5, "0xb5")) for tx in ("0xa", "0xo")]
    store.upsert_transfers(mined)
    assert not store.consume_expectation("w-1", ("eth", "0xo", "log:3"), T0)
    assert store.consume_expectation("w-1", ("eth", "0xa", "log:3"), T0)
    assert store.expectations()[0].consumed_by == ("eth", "0xa", "log:3")
    # ... and the reading does not take it back.
    assert not store.consume_expectation("w-1", ("eth", "0xa", "pending:0"), T0)


def test_consume_inside_a_batch_is_rolled_back_with_it(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    with pytest.raises(RuntimeError), store.batch():
        assert store.consume_expectation("w-1", ("eth", "0xa", "tx"), T0)
        raise RuntimeError("the processor died")
    assert store.expectations()[0].consumed_by is None


def test_racing_outflows_get_it_once(store: SqlStore) -> None:
    store.add_expectations([record(expectation("w-1"))])
    store.upsert_transfers([transfer(f"0x{i}", block=BlockRef(5, "0xb5")) for i in range(8)])
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        results.append(store.consume_expectation("w-1", ("eth", f"0x{i}", "tx"), T0))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_racing_writers_of_one_reference_agree(store: SqlStore) -> None:
    errors: list[Exception] = []
    counts: list[int] = []
    barrier = threading.Barrier(6)

    def add(amount: int) -> None:
        barrier.wait()
        try:
            counts.append(store.add_expectations([record(expectation("w-1", amount=amount))]))
        except ExpectationConflict as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(1 + i % 2,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [stored] = store.expectations()
    assert sum(counts) == 1 and len(errors) == 3
    assert counts.count(0) == 2 and len(counts) == 3
    assert stored.expectation.amount in (1, 2)


def test_candidates_are_what_one_outflow_could_match(store: SqlStore) -> None:
    """The same chain, wallet, asset and exact amount (2**200 included), whatever else is
    stored; a consumer shown, an orphaned consumer shown as none."""
    big = 2**200 + 1
    store.add_expectations(
        [
            record(expectation("W-1", amount=big)),
            record(expectation("W-2", amount=big, destination="0xElsewhere")),
            record(expectation("W-3", amount=big + 1)),
            record(expectation("W-4", amount=big, wallet="cold")),
            record(expectation("W-5", amount=big, asset="0xtoken")),
            record(expectation("W-6", amount=big, chain="polygon")),
            *(record(expectation(f"N-{i}", amount=i + 1)) for i in range(300)),
        ]
    )
    used = transfer("0xaa", block=BlockRef(5, "0xb5"), amount=big)
    store.upsert_transfers([used])
    assert store.consume_expectation("W-2", used.key, T0)
    found = store.expectation_candidates("eth", "hot", "native", big)
    assert [r.expectation.reference for r in found] == ["W-1", "W-2"]
    assert [r.consumed_by for r in found] == [None, used.key]
    store.orphan_transfers("eth", BlockRef(5, "0xb5"))
    found = store.expectation_candidates("eth", "hot", "native", big)
    assert [r.consumed_by for r in found] == [None, None]
    assert store.expectation_candidates("eth", "hot", "native", 7) == [
        r for r in store.expectations("eth", "hot") if r.expectation.reference == "N-6"
    ]
