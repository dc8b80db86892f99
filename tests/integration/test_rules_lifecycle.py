"""The rules across an outflow's sightings, through the real processor and store: what was
announced stays planned when mined late or announced late, windows do not count a batch's later
transfers before their own verdict, a replay never demotes a confirmed alert, and allowlisted
outflows stay planned after a restart. (Found by review; each failed before its fix.)"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts.rules import RulePolicy, WalletBook
from drainwatch.events import BlockConfirmed, TransferSeen
from drainwatch.model import (
    AlertState,
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
    Wallet,
    WalletRole,
)
from drainwatch.ports import ExpectationRecord
from drainwatch.processor import Processor
from drainwatch.store import open_store
from tests.fixtures.processing import make_processor
from tests.integration.test_pipeline import RecordingSink

ETH = 10**18
HOT = "0x" + "11" * 20
AWAY = "0x" + "99" * 20
CUST = "0x" + "77" * 20
T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
CHAINS = {"eth": Chain("eth", ChainKind.EVM, "devnet", "ETH", 18, confirmations=2)}


def _setup(tmp_path: Path, now: list[datetime], limits=()):
    book = WalletBook(
        [
            Wallet(
                "hot", "eth", WalletRole.HOT, Custody(CustodyKind.SINGLE_KEY), (HOT,), limits=limits
            )
        ]
    )
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    sink = RecordingSink()
    p = make_processor(store, book, CHAINS, {}, RulePolicy(), [sink], lambda: now[0])
    return p, store, sink


def _t(
    tx: int,
    amount: int,
    status: TransferStatus,
    block: BlockRef | None = None,
    when: datetime | None = None,
    index: str = "tx",
    to: str = AWAY,
) -> Transfer:
    return Transfer(
        "eth",
        f"0x{tx:064x}",
        index,
        HOT,
        to,
        "native",
        amount,
        TransferKind.NATIVE,
        status,
        block,
        when,
    )


def test_expectation_expiring_between_broadcast_and_mining(tmp_path: Path) -> None:
    now = [T0]
    p, store, sink = _setup(tmp_path, now)
    e = Expectation("W-1", "eth", "hot", AWAY, "native", 5 * ETH, T0 + timedelta(minutes=10))
    store.add_expectations([ExpectationRecord(e, T0, "cli")])
    now[0] = T0 + timedelta(minutes=1)
    p.handle(TransferSeen(_t(1, 5 * ETH, TransferStatus.PENDING, index="pending:0")))
    assert sink.seen == []  # planned while pending
    b = BlockRef(100, "0x" + "aa" * 32)
    now[0] = T0 + timedelta(minutes=15)
    p.handle(
        TransferSeen(_t(1, 5 * ETH, TransferStatus.PROVISIONAL, b, T0 + timedelta(minutes=14)))
    )
    assert sink.seen == [], "announced withdrawal, broadcast in time, alerts once mined late"


def test_pending_alert_before_expectation_arrives_never_cleared(tmp_path: Path) -> None:
    now = [T0]
    p, store, sink = _setup(tmp_path, now)
    # Bitcoin-like: the same key pending and mined (here EVM 'tx' key for simplicity)
    p.handle(TransferSeen(_t(1, 5 * ETH, TransferStatus.PENDING)))
    e = Expectation("W-1", "eth", "hot", AWAY, "native", 5 * ETH, T0 + timedelta(minutes=10))
    store.add_expectations([ExpectationRecord(e, T0, "inbox")])
    b = BlockRef(100, "0x" + "aa" * 32)
    p.handle(TransferSeen(_t(1, 5 * ETH, TransferStatus.PROVISIONAL, b, T0 + timedelta(minutes=1))))
    p.handle(BlockConfirmed("eth", b))
    [t] = store.transfers()
    assert t.status is TransferStatus.CONFIRMED
    [alert] = store.alerts()
    assert alert.state is AlertState.RETRACTED and ("retracted", "planned") in alert.facts
    assert "planned" in sink.seen[-1][1] and "計画済み" in sink.seen[-1][2]


def test_window_sum_at_cold_load_counts_later_planned_transfers_of_the_block(
    tmp_path: Path,
) -> None:
    now = [T0]
    p, store, sink = _setup(tmp_path, now, limits=(Limit("native", None, 10 * ETH, 3600),))
    e = Expectation("W-2", "eth", "hot", CUST, "native", 20 * ETH, T0 + timedelta(hours=1))
    store.add_expectations([ExpectationRecord(e, T0, "cli")])
    b = BlockRef(100, "0x" + "aa" * 32)
    small = _t(1, 1 * ETH, TransferStatus.PROVISIONAL, b, T0)  # unplanned, 1 ETH
    planned = _t(2, 20 * ETH, TransferStatus.PROVISIONAL, b, T0, to=CUST)  # announced withdrawal
    p.handle_events([TransferSeen(small), TransferSeen(planned)])
    rules = sorted(a.rule_id for a, _, _ in sink.seen)
    assert "limit/window" not in rules, "1 ETH unplanned + a planned 20 ETH trips the 10 ETH window"


def test_replayed_provisional_demotes_confirmed_alert(tmp_path: Path) -> None:
    now = [T0]
    p, store, sink = _setup(tmp_path, now)
    b = BlockRef(100, "0x" + "aa" * 32)
    prov = TransferSeen(_t(1, 5 * ETH, TransferStatus.PROVISIONAL, b, T0))
    p.handle(prov)
    p.handle(BlockConfirmed("eth", b))
    p.handle(prov)  # a re-published / replayed provisional sighting
    [t] = store.transfers()
    assert t.status is TransferStatus.CONFIRMED
    assert [a.state for a in store.alerts()] == [AlertState.CONFIRMED]
    assert [a.state for a, _, _ in sink.seen] == [AlertState.PROVISIONAL, AlertState.CONFIRMED]


def test_allowlisted_outflow_counts_in_window_after_restart(tmp_path: Path) -> None:
    now = [T0]
    book = WalletBook(
        [
            Wallet(
                "hot",
                "eth",
                WalletRole.HOT,
                Custody(CustodyKind.SINGLE_KEY),
                (HOT,),
                limits=(Limit("native", None, 10 * ETH, 3600),),
                allowlist=(CUST,),
            )
        ]
    )
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    sink = RecordingSink()

    def mk() -> Processor:
        return make_processor(store, book, CHAINS, {}, RulePolicy(), [sink], lambda: now[0])

    p = mk()
    b1, b2 = BlockRef(100, "0x" + "aa" * 32), BlockRef(101, "0x" + "bb" * 32)
    p.handle(TransferSeen(_t(1, 20 * ETH, TransferStatus.PROVISIONAL, b1, T0, to=CUST)))
    assert sink.seen == []
    p = mk()  # restart: the state reader loads the window from the store
    p.handle(
        TransferSeen(_t(2, 1 * ETH, TransferStatus.PROVISIONAL, b2, T0 + timedelta(minutes=1)))
    )
    rules = sorted(a.rule_id for a, _, _ in sink.seen)
    assert "limit/window" not in rules


def test_a_token_withdrawal_announced_late_closes_its_mempool_alert(tmp_path: Path) -> None:
    """An EVM token transfer read from the mempool (``pending:N``) and alerted before its
    expectation arrived: the block's transfer (``log:N``) takes the expectation, and the
    reading's verdict once mined retracts its alert as planned, instead of leaving an alert
    that says the block's alert takes over when none comes."""
    now = [T0]
    p, store, _ = _setup(tmp_path, now)
    pending = _t(1, 5 * ETH, TransferStatus.PENDING, index="pending:0")
    p.handle(TransferSeen(pending))
    [alert] = store.alerts()
    assert alert.state is AlertState.PENDING
    e = Expectation("W-1", "eth", "hot", AWAY, "native", 5 * ETH, T0 + timedelta(minutes=10))
    store.add_expectations([ExpectationRecord(e, T0, "inbox")])
    b = BlockRef(100, "0x" + "aa" * 32)
    now[0] = T0 + timedelta(minutes=1)
    mined = _t(1, 5 * ETH, TransferStatus.PROVISIONAL, b, now[0], index="log:3")
    p.handle(TransferSeen(mined))
    p.handle(TransferSeen(replace(pending, status=TransferStatus.SUPERSEDED, block=b)))
    p.handle(BlockConfirmed("eth", b))
    [alert] = store.alerts()
    assert alert.state is AlertState.RETRACTED and ("retracted", "planned") in alert.facts
    [record] = store.expectations("eth", "hot")
    assert record.consumed_by == mined.key


def test_an_expectation_stored_after_the_block_never_silences_its_alert(tmp_path: Path) -> None:
    """A drain alerted from its block, then an expectation that matches it (written late, or
    by whoever controls the withdrawal system), then the block read again (a backfill, a bus
    replay): the alert stands, and the expectation stays open for the outflow it announced."""
    now = [T0]
    p, store, _ = _setup(tmp_path, now)
    b = BlockRef(100, "0x" + "aa" * 32)
    drain = _t(2, 7 * ETH, TransferStatus.PROVISIONAL, b, T0)
    p.handle(TransferSeen(drain))
    p.handle(BlockConfirmed("eth", b))
    now[0] = T0 + timedelta(hours=2)
    e = Expectation("W-2", "eth", "hot", AWAY, "native", 7 * ETH, T0 + timedelta(hours=3))
    store.add_expectations([ExpectationRecord(e, now[0], "inbox")])
    p.handle(TransferSeen(replace(drain, status=TransferStatus.CONFIRMED)))
    [alert] = store.alerts()
    assert alert.state is AlertState.CONFIRMED and dict(alert.facts).get("retracted") is None
    [record] = store.expectations("eth", "hot")
    assert record.consumed_by is None
