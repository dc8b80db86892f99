"""The small interfaces (ports) between drainwatch's pure core and its adapters.

Adapters implement these; ``drainwatch.wiring`` is the one place that picks and builds them from
the settings. Each port has one contract test suite in ``tests/contract`` that runs against every
adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from drainwatch.model import (
    Alert,
    AlertState,
    Balance,
    BlockRef,
    ControlChange,
    Expectation,
    Incident,
    TimelineEntry,
    Transfer,
    Utxo,
)


@dataclass(frozen=True)
class Delivery:
    """One row of the outbox: ``alert`` as it was when the change was written, for ``sink``.
    ``previous_state`` is None for the alert's first delivery; ``news`` says what else happened
    (``"ack"``: someone acknowledged it). ``attempts`` counts the claims so far, this one
    included: above 1, an earlier attempt may have sent it already."""

    id: int
    sink: str
    alert: Alert
    previous_state: AlertState | None
    news: str | None
    created_at: datetime
    attempts: int


@dataclass(frozen=True)
class ExpectationRecord:
    """An expectation as stored: when it arrived, from where (``cli``, ``file:NAME``,
    ``kafka``), and the key of the outflow that used it, if one did."""

    expectation: Expectation
    created_at: datetime
    source: str
    consumed_by: tuple[str, str, str] | None = None


# ---------------------------------------------------------------------------------------------
# Store


class Store(Protocol):
    """Durable state. Every write is idempotent on its natural key: replaying changes nothing."""

    def batch(self) -> AbstractContextManager[None]:
        """One transaction for every call this thread makes to the store inside the block: all
        of its writes take effect when the block ends, none when it raises (the exception goes
        on). Reads inside see the batch's own writes; other threads see none of them until the
        end, and their own calls are never part of it. A batch opened inside a batch joins it.

        A ``StoreError`` inside spoils the whole batch (PostgreSQL refuses every later statement
        of a failed transaction): let it propagate. Every write keeps its guarantees inside:
        idempotent on its key, a confirmed row never sent back to pending.
        """

    def record_block(
        self,
        chain: str,
        block: BlockRef,
        parent_hash: str,
        block_time: datetime,
        *,
        confirmed: bool = False,
    ) -> None:
        """Remember a block of the best chain (chain + height + hash is the key); ``confirmed``
        when it has its confirmations already (no ``BlockConfirmed`` will follow for it)."""

    def recent_blocks(self, chain: str, limit: int) -> list[tuple[BlockRef, str]]:
        """The newest non-orphaned blocks as (block, parent_hash), highest first."""

    def orphan_block(self, chain: str, block: BlockRef) -> int:
        """Mark a block and every transfer and control change in it orphaned; returns how many
        transfers and control changes changed (together). The watcher's call: the block rows
        are its view of the chain. On a Bitcoin chain it also undoes the block's effect on the
        watched UTXO set (as ``rewind_utxos`` does for the blocks above a height)."""

    def orphan_transfers(self, chain: str, block: BlockRef) -> int:
        """Mark every transfer and every control change in a block orphaned, leaving the block
        rows alone; returns how many transfers and control changes changed (together). The
        processor's call, which may run late and must not undo a block the watcher has since
        recorded again. (The name predates control changes: it retracts both.)"""

    def upsert_transfers(self, transfers: Iterable[Transfer]) -> int:
        """Insert new transfers, move known ones to their new status or block.

        Keyed on (chain, tx_hash, index). Returns how many rows were inserted or changed; a
        replay of the same transfers returns 0.
        """

    def transfers(
        self,
        chain: str | None = None,
        address: str | None = None,
        addresses: Sequence[str] | None = None,
    ) -> list[Transfer]:
        """Transfers, oldest first, optionally filtered by chain and by one or more addresses
        appearing as sender or receiver (compared case-insensitively)."""

    def upsert_control_changes(self, changes: Iterable[ControlChange]) -> int:
        """Insert new control changes, move known ones to their new status or block; a
        confirmed change is never sent back to pending.

        Keyed on ``ControlChange.key``: (chain, tx_hash, index), or (chain, block hash, index)
        for a change seen in storage, which has no tx_hash. Returns how many rows were inserted
        or changed; a replay of the same changes returns 0. The last sighting of a key in one
        call wins.
        """

    def control_changes(
        self, chain: str | None = None, address: str | None = None
    ) -> list[ControlChange]:
        """Control changes, oldest first (by block height, then the order they entered their
        block; pending ones last), optionally filtered by chain and by ``wallet_address``
        (compared case-insensitively)."""

    def get_checkpoint(self, chain: str) -> BlockRef | None:
        """The last block whose events were all published, or None before the first."""

    def set_checkpoint(self, chain: str, block: BlockRef) -> None: ...

    def apply_utxo_block(
        self,
        chain: str,
        block: BlockRef,
        created: Iterable[Utxo],
        spent: Iterable[tuple[str, int, str]],
    ) -> None:
        """Apply one block to the watched UTXO set: ``created`` are the outputs it made that pay
        a watched wallet (their ``block`` is ``block``), ``spent`` the watched outputs it spent,
        as (txid, vout, spending txid). Idempotent: applying the same block again changes
        nothing. A spend of an outpoint the store does not hold is ignored."""

    def rewind_utxos(self, chain: str, height: int) -> int:
        """Undo every block above ``height`` in the UTXO set: outputs created above it are
        removed, spends above it undone. Returns how many rows changed. The watcher calls it
        at start so that its UTXO set is exactly the one at its checkpoint."""

    def utxos(
        self, chain: str, *, wallet: str | None = None, unspent_only: bool = False
    ) -> list[Utxo]:
        """Watched outputs of ``chain`` (optionally one wallet's, optionally only the unspent
        ones), by creating block height, then txid and vout."""

    def utxo_balances(self, chain: str, height: int | None = None) -> dict[str, int]:
        """Satoshi per wallet at ``height`` (default: the newest block applied): the outputs
        created at or below it and not spent at or below it. Wallets with nothing are absent."""

    def unconfirmed_blocks(self, chain: str, up_to: int) -> list[BlockRef]:
        """Blocks of the best chain (not orphaned) at or below height ``up_to`` whose
        ``BlockConfirmed`` has not been published yet (``mark_block_confirmed``), lowest first."""

    def mark_block_confirmed(self, chain: str, block: BlockRef) -> None:
        """The block's ``BlockConfirmed`` is on the bus: ``unconfirmed_blocks`` leaves it out."""

    def confirm_block(self, chain: str, block: BlockRef) -> int:
        """Move every provisional transfer and control change of ``block`` to confirmed;
        returns how many changed (0 on a replay). The processor's call."""

    def save_alert(self, alert: Alert) -> bool:
        """Store an alert; True when it is new (its id was unknown), False on a replay."""

    def set_alert_state(self, alert_id: str, state: AlertState) -> None:
        """Move a known alert to ``state``; ``StoreError`` when ``alert_id`` is unknown."""

    def update_alert(self, alert: Alert) -> None:
        """Overwrite a known alert, found by its id, with ``alert``'s state, transaction, block,
        asset, amount and counterparty (``None`` included); ``StoreError`` when the id is unknown.

        What names the alert (rule, severity, chain, wallet, subject, raised_at) stays as first
        saved. For a transaction re-mined in another block after a reorg: the alert keeps its id
        and carries the new block, so that a later disconnect of that block finds it.
        """

    def get_alert(self, alert_id: str) -> Alert | None: ...

    def alerts(self) -> list[Alert]:
        """All alerts, oldest first."""

    def alerts_in_block(self, chain: str, block: BlockRef) -> list[Alert]:
        """The alerts whose block is ``block`` (height and hash) on ``chain``, oldest first."""

    def ack_alert(self, alert_id: str, by: str, at: datetime) -> Alert | None:
        """Record that ``by`` acknowledged the alert at ``at`` and return it so; None when no
        alert has that id. Acknowledging again keeps the first acknowledgement."""

    # -- the outbox: every alert change, per sink, written before anything is sent ----------

    def enqueue_delivery(
        self,
        alert: Alert,
        sinks: Sequence[str],
        previous_state: AlertState | None,
        news: str | None,
        at: datetime,
    ) -> None:
        """One outbox row per sink for ``alert`` as it is now, due at once. Call it in the
        same batch as the alert's own write, so that the change and its announcement are one."""

    def due_deliveries(self, sink: str, now: datetime, limit: int = 100) -> list[Delivery]:
        """The rows of ``sink`` to send now, oldest first: not delivered, not leased to a
        notifier (or its lease ran out), due; of each alert only its oldest undelivered row
        (an alert's changes go out in order). ``attempts`` as last claimed."""

    def claim_delivery(self, delivery_id: int, now: datetime, until: datetime) -> int | None:
        """Lease the row to the caller until ``until`` and count an attempt; returns the
        attempts so far (this one included), or None when it is delivered already or leased to
        another notifier whose lease has not run out."""

    def finish_delivery(self, delivery_id: int, at: datetime) -> None:
        """The row was sent: it leaves the outbox's due rows for good."""

    def retry_delivery(self, delivery_id: int, error: str, at: datetime) -> None:
        """The attempt failed with ``error``: release the lease, due again at ``at``."""

    def next_delivery_at(self, sink: str) -> datetime | None:
        """When the earliest undelivered row of ``sink`` falls due, None when there is none."""

    def outbox_backlog(self) -> dict[str, int]:
        """Undelivered rows per sink (sinks with none are absent)."""

    def outbox(self, alert_id: str) -> list[tuple[Delivery, datetime | None, str | None]]:
        """Every row of one alert, oldest first, with when it was delivered and its last
        error: what ``drainwatch alerts`` shows of an alert's delivery."""

    def delivery_ref(self, sink: str, alert_id: str) -> str | None:
        """Where ``sink`` put the alert's message (e.g. Slack ``CHANNEL:TS``), once recorded."""

    def set_delivery_ref(self, sink: str, alert_id: str, ref: str, at: datetime) -> None:
        """Record where the message is; the first record stays (idempotent)."""

    # -- balances after outflows --------------------------------------------------------------

    def upsert_balances(self, balances: Iterable[Balance]) -> int:
        """Store balances (keyed by chain, wallet, asset, block hash); returns how many were
        new or changed. A replay changes nothing."""

    def balances(self, chain: str, wallet: str, asset: str, since: datetime) -> list[Balance]:
        """The wallet's stored balances of ``asset`` in blocks of the best chain (orphaned
        blocks left out) with a block time at or after ``since``, oldest first."""

    # -- expectations: outflows the exchange announced --------------------------------------

    def add_expectations(self, records: Iterable[ExpectationRecord]) -> int:
        """Store new expectations; returns how many were new. One that is already stored with
        the same values is a replay and changes nothing; one whose reference is stored with
        other values raises ``ExpectationConflict`` and nothing of the call is kept."""

    def expectations(
        self, chain: str | None = None, wallet: str | None = None
    ) -> list[ExpectationRecord]:
        """Stored expectations, optionally of one chain and wallet, by arrival."""

    def expectation_candidates(
        self, chain: str, wallet: str, asset: str, amount: int
    ) -> list[ExpectationRecord]:
        """The expectations one outflow of ``wallet`` could match: the same chain, asset and
        exact amount (destination and validity are the rules' to compare), by arrival. What
        the rules read for every outflow: it stays small however many are stored."""

    def consume_expectation(
        self, reference: str, transfer: tuple[str, str, str], at: datetime
    ) -> bool:
        """Let the outflow keyed ``transfer`` use the expectation; False when another outflow
        (not orphaned) uses it already. Orphaning an outflow frees what it used."""

    def save_incident(self, incident: Incident) -> None: ...

    def incidents(self) -> list[Incident]: ...

    def add_timeline_entry(self, entry: TimelineEntry) -> bool:
        """True when new; an identical entry added twice is kept once."""

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        """The incident's entries in time order."""

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Event bus


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


Handler = Callable[[Message], None]
BatchHandler = Callable[[Sequence[Message]], None]


class Subscription(Protocol):
    """One member of a consumer group on one topic."""

    def poll(self, handler: Handler, *, max_messages: int = 500, timeout: float = 1.0) -> int:
        """Hand waiting messages to ``handler`` in partition order and return how many it took.

        The offset of a message is committed only after ``handler`` returned for it. When the
        handler raises, nothing past the last success is committed, the exception propagates,
        and the failed message is delivered again by the next poll (or to the next member of the
        group after a restart).
        """

    def poll_batch(
        self, handler: BatchHandler, *, max_messages: int = 500, timeout: float = 1.0
    ) -> int:
        """Hand the waiting messages (up to ``max_messages``) to ``handler`` in one call, in
        partition order, and return how many it took; nothing is handed over when none arrive
        within ``timeout``.

        All or nothing: the offsets of the batch are committed only after ``handler`` returned,
        together. When it raises, none is committed, the exception propagates, and the next
        poll delivers the whole batch again (or the group's next member does, after a restart).
        """

    def backlog(self) -> int | None:
        """How many messages of the topic are published but not yet handled by this group on
        the partitions this member holds: what polls still have to deliver before the member
        has caught up. Messages delivered to a handler that raised count as not handled.

        ``None`` when it cannot tell yet — on Kafka while the member holds no partition (its
        group join, about 3 s on tansu, is still in progress, which only ``poll`` advances) or
        has not had a first fetch response from each of them.
        A caller waiting for a consumer to catch up polls until this is ``0``, with a bound.
        Only reads: it neither moves the member's position nor commits anything.
        """

    def close(self) -> None: ...


class EventBus(Protocol):
    def publish(self, topic: str, key: str, value: bytes) -> None:
        """Queue a message; messages with the same key keep their order."""

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is durably accepted; raise ``BusError`` otherwise."""

    def subscribe(self, topic: str, group: str) -> Subscription: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Node RPC


class JsonRpc(Protocol):
    """A JSON-RPC endpoint speaking the chain's standard methods with raw (hex) JSON results."""

    @property
    def endpoint(self) -> str:
        """A name for messages and logs; never contains credentials."""

    def call(self, method: str, params: Sequence[Any]) -> Any: ...


# ---------------------------------------------------------------------------------------------
# Alert delivery


class AlertSink(Protocol):
    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None: ...


@dataclass(frozen=True)
class AlertCard:
    """An alert as people read it, made once per delivery from the configured chains, assets
    and wallets: the rendered texts, and the display values a rich layout (Slack's Block Kit)
    arranges. Every value is display text; what the alert itself says (rule, severity, state,
    acknowledgement) is read from the alert."""

    text_en: str
    text_ja: str
    wallet: str
    role: str
    amount: str
    destination: str | None = None
    destination_label: str | None = None
    tx_url: str | None = None


class DeliverySink(Protocol):
    """Sends outbox rows to one channel. ``name`` is the outbox's sink name (see
    ``drainwatch.wiring.sink_names``); it may hold a URL, so logs show it shortened."""

    name: str

    def send(self, delivery: Delivery, card: AlertCard, previous_ref: str | None) -> str | None:
        """Deliver one row: ``delivery.alert`` in its state at that change, ``card`` its text.
        ``previous_ref`` is where an earlier row of the alert put its message (update it there),
        None before the first. Returns the message's ref to record (None when the channel has
        none) or raises ``DeliveryError``. Sending a row again must not show it twice: when
        ``delivery.attempts`` is above 1 an earlier attempt may have sent it already."""
