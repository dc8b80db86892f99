"""Follows one EVM chain's head at its confirmation depth and publishes what watched wallets do.

For each block, in height order: fetch it, check that its parent is the block processed before
(else rewind: a reorg), fetch receipts of the value-carrying transactions that touch a watched
address, publish the events, flush the bus, and only then record the block and move the
checkpoint. A crash anywhere re-publishes at most the block in hand (consumers are idempotent);
no block is skipped, because the next height is always checkpoint + 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from drainwatch import codec
from drainwatch.errors import DrainwatchError
from drainwatch.events import BlockConnected, BlockDisconnected, Event, TransferSeen
from drainwatch.model import BlockRef, Chain
from drainwatch.ports import EventBus, JsonRpc, Store
from watchers.evm.mapping import (
    EvmBlock,
    native_transfers,
    parse_block,
    parse_block_ref,
    parse_receipt,
    touching,
)

log = logging.getLogger(__name__)


class ReorgTooDeep(DrainwatchError):
    pass


class EvmFollower:
    def __init__(
        self,
        chain: Chain,
        rpc: JsonRpc,
        store: Store,
        bus: EventBus,
        topic: str,
        watched: Iterable[str],
        *,
        start_height: int | None = None,
        max_reorg_depth: int = 128,
    ) -> None:
        self.chain = chain
        self._rpc = rpc
        self._store = store
        self._bus = bus
        self._topic = topic
        self._watched = frozenset(a.lower() for a in watched)
        self._start_height = start_height
        self._max_reorg_depth = max_reorg_depth
        self.reorgs = 0

    def node_head(self) -> int:
        return int(self._rpc.call("eth_blockNumber", []), 16)

    def step(self, until: int | None = None) -> int:
        """Process every block up to the confirmed head (or ``until``); return how many."""
        target = self.node_head() - self.chain.confirmations
        if until is not None:
            target = min(target, until)
        processed = 0
        while True:
            tip = self._store.get_checkpoint(self.chain.name)
            height = self._next_height(tip, target)
            if height > target:
                return processed
            raw = self._rpc.call("eth_getBlockByNumber", [hex(height), True])
            if raw is None:  # the node has not got it yet (a load-balanced endpoint behind)
                return processed
            block = parse_block(raw, self._rpc.endpoint)
            if tip is not None and block.parent_hash != tip.hash:
                self._rewind()
                continue
            self._process(block)
            processed += 1

    def _next_height(self, tip: BlockRef | None, target: int) -> int:
        if tip is not None:
            return tip.height + 1
        if self._start_height is not None:
            return self._start_height
        return max(target, 0)  # a new deployment starts at the confirmed head, not at genesis

    def _process(self, block: EvmBlock) -> None:
        outcomes = []
        for tx in touching(block, self._watched):
            raw = self._rpc.call("eth_getTransactionReceipt", [tx.hash])
            outcomes.append((tx, parse_receipt(raw, self._rpc.endpoint)))
        events: list[Event] = [
            BlockConnected(self.chain.name, block.ref, block.parent_hash, block.time)
        ]
        events += [TransferSeen(t) for t in native_transfers(self.chain.name, block, outcomes)]
        self._publish(events)
        self._store.record_block(self.chain.name, block.ref, block.parent_hash, block.time)
        self._store.set_checkpoint(self.chain.name, block.ref)
        if block.ref.height % 1000 == 0:
            log.info("%s: processed block %d", self.chain.name, block.ref.height)

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._bus.publish(self._topic, self.chain.name, codec.dumps_event(event))
        self._bus.flush()

    def _rewind(self) -> None:
        """Walk back from the checkpoint to the last block the node still has; orphan the rest."""
        self.reorgs += 1
        recent = self._store.recent_blocks(self.chain.name, self._max_reorg_depth)
        for ref, _parent in recent:
            if self._node_block(ref.height) == ref:
                self._store.set_checkpoint(self.chain.name, ref)
                log.warning("%s: reorg, fork point at height %d", self.chain.name, ref.height)
                return
            self._publish([BlockDisconnected(self.chain.name, ref)])
            self._store.orphan_block(self.chain.name, ref)
        if recent and len(recent) < self._max_reorg_depth and recent[-1][0].height > 0:
            # Every block since the watch began was replaced: resume from the node's block just
            # below the first one we processed, which we never published anything about.
            below = self._node_block(recent[-1][0].height - 1)
            if below is not None:
                self._store.set_checkpoint(self.chain.name, below)
                return
        raise ReorgTooDeep(
            f"{self.chain.name}: no common block with the node within the last "
            f"{self._max_reorg_depth} blocks: stop, check the node, then backfill"
        )

    def _node_block(self, height: int) -> BlockRef | None:
        raw = self._rpc.call("eth_getBlockByNumber", [hex(height), False])
        return None if raw is None else parse_block_ref(raw, self._rpc.endpoint)[0]
