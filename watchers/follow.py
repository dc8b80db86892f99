"""Follows one chain's head and publishes what watched wallets do, as soon as a block has it.

The part every chain shares. For each block up to the node's head, in height order: fetch it,
check that its parent is the block processed before (else rewind: a reorg), extract what touches
a watched wallet, record the block (and what the chain keeps with it: a Bitcoin watcher's UTXO
set), publish the events, flush the bus (and, on a bus that keeps nothing, let the processor
handle them), and only then move the checkpoint. A crash anywhere re-publishes at most the block
in hand (consumers are idempotent); no block is skipped, because the next height is always
checkpoint + 1. A node that contradicts itself (backends behind a load balancer that disagree)
is a ``NodeInconsistent`` error, retried later: never a reason to retract.

What a block below the chain's confirmation depth carries is published ``provisional``: an alert
must not wait for confirmations. Once the block has them, a ``BlockConfirmed`` moves it all to
confirmed (published before the store notes it, so a crash between re-publishes it, which
changes nothing). A block processed when it is already deep (catching up) is published confirmed
at once. A reorg retracts provisional and confirmed blocks alike.

A chain's follower subclasses ``Follower`` with how to read its node (``node_head``,
``node_block``, ``fetch``), what a block means (``extract``) and its mempool (``pending``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from drainwatch import codec
from drainwatch.errors import DrainwatchError, RetriableRpcError
from drainwatch.events import (
    BlockConfirmed,
    BlockConnected,
    BlockDisconnected,
    ControlChangeSeen,
    Event,
    TransferSeen,
    UtxoSpendSeen,
)
from drainwatch.model import BlockRef, Chain, TransferStatus
from drainwatch.ports import EventBus, Store

log = logging.getLogger(__name__)

#: How many times in a row one block may be held back (its node cannot give all of it yet)
#: before it is an error that the operator is told about.
STALL_LIMIT = 5


class NodeInconsistent(RetriableRpcError):
    """The node's answers contradict each other or what it said before: ask again later."""


class ReorgTooDeep(DrainwatchError):
    pass


class FetchedBlock(Protocol):
    @property
    def ref(self) -> BlockRef: ...

    @property
    def parent_hash(self) -> str: ...

    @property
    def time(self) -> datetime: ...


B = TypeVar("B", bound=FetchedBlock)


class Follower(ABC, Generic[B]):
    """The follow loop of one chain; subclasses say how to read the chain's node."""

    #: Why a block is held back, for the error after ``STALL_LIMIT`` attempts.
    stall_reason = "the node cannot give all of it yet"

    def __init__(
        self,
        chain: Chain,
        store: Store,
        bus: EventBus,
        topic: str,
        *,
        start_height: int | None = None,
        max_reorg_depth: int = 64,
        after_publish: Callable[[], object] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.chain = chain
        self._store = store
        self._bus = bus
        self._topic = topic
        self._start_height = start_height
        self._max_reorg_depth = max_reorg_depth
        self._after_publish = after_publish
        self._prepare = prepare  # start-up checks (endpoints' networks), run by the first step
        self._stalled: tuple[int, int] = (-1, 0)  # (height, consecutive not-ready attempts)
        self._unpublished_steps = 0
        self._synced: BlockRef | bool | None = False  # the checkpoint the chain state matches
        #: The highest block with its confirmations, as of the last look at the node's head.
        self._confirmed = -1
        self.reorgs = 0

    # --- what a chain's follower provides -------------------------------------------------

    @abstractmethod
    def node_head(self) -> int: ...

    @abstractmethod
    def node_block(self, height: int) -> BlockRef:
        """The node's block at ``height``; ``NodeInconsistent`` when it has none."""

    @abstractmethod
    def fetch(self, height: int) -> B | None:
        """The block at ``height``, or None when the node (or its backend) has not got it."""

    @abstractmethod
    def extract(self, block: B) -> list[Event] | None:
        """The block's events (its ``BlockConnected`` is added after them), or None when the
        node cannot give all of them yet: the block is asked for again later."""

    def pending(self) -> list[Event]:
        """Events from the mempool; the default watches none."""
        return []

    def record(self, block: B) -> None:
        """Store what the chain keeps with a block, before its events are published."""

    def resync(self, checkpoint: BlockRef | None) -> None:
        """Make the chain's own state (e.g. a UTXO set) that of ``checkpoint`` again: called
        before the first block and whenever a block was left half done or a reorg rewound."""

    def committed(self, block: B) -> None:
        """The block is through (published, checkpoint moved): what waited for it may go."""

    # --- the loop ---------------------------------------------------------------------------

    def confirmed_height(self, head: int) -> int:
        """The highest block with ``confirmations`` blocks counting itself (bitcoind's count;
        0 and 1 both mean the head)."""
        return head - max(self.chain.confirmations - 1, 0)

    def step(self, until: int | None = None) -> int:
        """Process every block up to the node's head (or ``until``), confirm those that have
        their confirmations now, then read the mempool; return how many blocks."""
        if self._prepare is not None:
            self._prepare()
            self._prepare = None
        target = self.node_head()
        self._confirmed = self.confirmed_height(target)
        if until is not None:
            target = min(target, until)
        self._reconcile(self._store.get_checkpoint(self.chain.name))
        self._unpublished_steps = 0
        processed = 0
        while True:
            tip = self._store.get_checkpoint(self.chain.name)
            height = self._next_height(tip, target)
            if self._synced != tip:
                self.resync(tip)
                self._synced = tip
            if height > target:
                self._confirm()
                self._poll_mempool()
                return processed
            block = self.fetch(height)
            if block is None:  # the node (or the backend that answered) has not got it yet
                self._confirm()
                return processed
            if tip is None and height > 0:
                # A new deployment: the block below its first becomes its checkpoint before
                # anything is processed, so that a crash in the first block resumes at that
                # block, not at a later head (skipping the ones between).
                tip = BlockRef(height - 1, block.parent_hash)
                self._store.set_checkpoint(self.chain.name, tip)
            if tip is not None and block.parent_hash != tip.hash:
                self._rewind(tip)
                continue
            self._synced = False  # until the block is through: a failure leaves it half done
            if not self._process(block):
                self._synced = tip
                self._confirm()
                return processed
            self._synced = block.ref
            processed += 1

    def _poll_mempool(self) -> None:
        """Pending outflows, after the blocks: the mempool is an early warning, so a node that
        cannot answer about it (or a backup without it) never holds the blocks back."""
        try:
            events = self.pending()
        except DrainwatchError as exc:
            log.warning("%s: mempool not read this round: %s", self.chain.name, exc)
            self.mempool_failed(exc)
            return
        if events:
            self._publish(events)
            self.pending_published()

    def pending_published(self) -> None:
        """What ``pending`` returned is on the bus; until then it may hand it out again."""

    def mempool_failed(self, exc: DrainwatchError) -> None:
        """A mempool read failed (reported already); a subclass may reset its probe."""

    def _next_height(self, tip: BlockRef | None, target: int) -> int:
        if tip is not None:
            return tip.height + 1
        if self._start_height is not None:
            return self._start_height
        return max(target, 0)  # a new deployment starts at the head, not at genesis

    def _confirm(self) -> None:
        """Announce the processed blocks that have reached their confirmations, and that the
        node still has: a block replaced by a reorg this step has not come to yet (the loop
        stopped before the next block, whose parent would have shown it) is left for the
        rewind, never confirmed."""
        blocks = self._store.unconfirmed_blocks(self.chain.name, self._confirmed)
        if not blocks:
            return
        try:
            # The recorded blocks form one chain: if the node has the highest, it has them all.
            if self.node_block(blocks[-1].height) != blocks[-1]:
                return  # replaced: the next step rewinds first
        except NodeInconsistent:
            return  # the node has no block there now (its head went back): ask again later
        self._publish([BlockConfirmed(self.chain.name, ref) for ref in blocks])
        for ref in blocks:
            self._store.mark_block_confirmed(self.chain.name, ref)

    def _process(self, block: B) -> bool:
        """Publish one block's events; False when the node cannot give all of them yet."""
        events = self.extract(block)
        if events is None:
            self._stall(block.ref.height)
            return False
        self._stalled = (-1, 0)
        deep = block.ref.height <= self._confirmed
        if not deep:
            events = [_provisional(e) for e in events]
        # The block's own event comes last: a consumer that has handled it has the whole block.
        events.append(BlockConnected(self.chain.name, block.ref, block.parent_hash, block.time))
        # Recorded before publishing: if the process dies after publishing and the block is
        # then replaced, the next start still knows to retract it (see _reconcile).
        with self._store.batch():
            self._store.record_block(
                self.chain.name, block.ref, block.parent_hash, block.time, confirmed=deep
            )
            self.record(block)
        self._publish(events)
        self._store.set_checkpoint(self.chain.name, block.ref)
        self.committed(block)
        if block.ref.height % 1000 == 0:
            log.info("%s: processed block %d", self.chain.name, block.ref.height)
        return True

    def _stall(self, height: int) -> None:
        """A block held back again and again is an error someone must see, not a silent halt
        (a node pruning its transaction index, or still building it, answers null for ever)."""
        last, count = self._stalled
        count = count + 1 if last == height else 1
        self._stalled = (height, count)
        if count >= STALL_LIMIT:
            raise NodeInconsistent(
                f"{self.chain.name}: block {height} held back {count} times: {self.stall_reason}"
            )

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._bus.publish(self._topic, self.chain.name, codec.dumps_event(event))
        self._bus.flush()
        if self._after_publish is not None:
            self._after_publish()

    def _reconcile(self, tip: BlockRef | None) -> None:
        """Blocks recorded above the checkpoint were published by a run that died before moving
        the checkpoint, or are the stale side of a reorg whose retraction a crash cut short:
        retract those the node no longer has."""
        floor = tip.height if tip is not None else -1
        recent = self._store.recent_blocks(self.chain.name, self._max_reorg_depth)
        above = [r for r, _ in recent if r.height > floor]
        stale = [ref for ref in above if self.node_block(ref.height) != ref]
        self._disconnect(stale)

    def _rewind(self, tip: BlockRef) -> None:
        """Find the last block we processed that the node still has; retract those after it.

        Nothing is published until the fork point is found, so a reorg too deep to locate
        leaves the store and the bus as they were.
        """
        recent = self._store.recent_blocks(self.chain.name, self._max_reorg_depth)
        if not any(ref == tip for ref, _ in recent):
            self._step_below_unpublished(tip)
            return
        stale: list[BlockRef] = []
        fork: BlockRef | None = None
        for ref, _parent in recent:
            if self.node_block(ref.height) == ref:
                fork = ref
                break
            stale.append(ref)
        if fork is None and recent and len(recent) < self._max_reorg_depth:
            # Every block since the watch began was replaced: resume from the node's block
            # just below the first one we processed, which we never published anything about.
            lowest = recent[-1][0].height
            if lowest > 0:
                fork = self.node_block(lowest - 1)
        if fork is None:
            raise ReorgTooDeep(
                f"{self.chain.name}: the node shares none of the last {len(recent)} blocks "
                "drainwatch processed. Nothing was retracted. Check that every endpoint is on "
                "the right network and synced; drainwatch will not continue past a fork it "
                "cannot locate."
            )
        if not stale:
            raise NodeInconsistent(
                f"{self.chain.name}: block {tip.height + 1} does not build on block "
                f"{tip.height}, which the node still reports (backends that disagree?)"
            )
        self.reorgs += 1
        log.warning(
            "%s: reorg of %d block(s), fork at %d", self.chain.name, len(stale), fork.height
        )
        # The checkpoint first: a crash while the stale blocks are retracted leaves them
        # recorded above it, where the next start finds and retracts them (_reconcile).
        self._store.set_checkpoint(self.chain.name, fork)
        self._disconnect(stale)

    def _step_below_unpublished(self, tip: BlockRef) -> None:
        """The checkpoint is a block this watcher never published anything about (the block
        just below where it began, set after a reorg of its first blocks): nothing to retract,
        so step below it, a bounded number of times."""
        self._unpublished_steps += 1
        if tip.height == 0 or self._unpublished_steps > self._max_reorg_depth:
            raise ReorgTooDeep(
                f"{self.chain.name}: the node shares no block with where drainwatch started "
                f"watching (stepped back {self._unpublished_steps - 1} blocks). Nothing was "
                "retracted. Check that every endpoint is on the right network and synced."
            )
        self._store.set_checkpoint(self.chain.name, self.node_block(tip.height - 1))

    def _disconnect(self, stale: list[BlockRef]) -> None:
        if not stale:
            return
        # Published before the store forgets the blocks: a crash in between re-detects them.
        self._publish([BlockDisconnected(self.chain.name, ref) for ref in stale])
        for ref in stale:
            self._store.orphan_block(self.chain.name, ref)
        self._synced = False  # the chain state must be read again from the store


def _provisional(event: Event) -> Event:
    """A block event as published below the confirmation depth: what the extractors mark
    confirmed (the block's own facts) is provisional until ``BlockConfirmed``; verdicts on
    pending readings (superseded, executed, orphaned) stay as they are."""
    if isinstance(event, TransferSeen) and event.transfer.status is TransferStatus.CONFIRMED:
        return TransferSeen(replace(event.transfer, status=TransferStatus.PROVISIONAL))
    if isinstance(event, ControlChangeSeen) and event.change.status is TransferStatus.CONFIRMED:
        return ControlChangeSeen(replace(event.change, status=TransferStatus.PROVISIONAL))
    if isinstance(event, UtxoSpendSeen) and event.spend.status is TransferStatus.CONFIRMED:
        return UtxoSpendSeen(replace(event.spend, status=TransferStatus.PROVISIONAL))
    return event
