"""Follows one EVM chain's head: the chain-specific half of ``watchers.follow.Follower``.

A block is read by ``BlockExtractor`` (header, transactions, receipts or traces, logs by block
hash); what it means for the watched wallets are native, internal and token transfers and
control changes. Pending transactions come from ``MempoolWatch``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from drainwatch.errors import ConfigError, DrainwatchError, RetriableRpcError
from drainwatch.events import ControlChangeSeen, Event, TransferSeen
from drainwatch.model import BlockRef, Chain
from drainwatch.ports import EventBus, JsonRpc, Store
from watchers.evm.balances import BalanceReader
from watchers.evm.extract import BlockExtractor
from watchers.evm.mapping import EvmBlock, parse_block_ref, parse_quantity
from watchers.evm.mempool import MempoolWatch
from watchers.follow import Follower, NodeInconsistent, ReorgTooDeep

__all__ = ["EvmFollower", "NodeInconsistent", "ReorgTooDeep", "chain_id_check"]

log = logging.getLogger(__name__)


def chain_id_check(chain_name: str, expected: int) -> Callable[[JsonRpc], None]:
    """A check for ``FailoverRpc(verify=...)``: the endpoint must serve the configured chain."""

    def verify(rpc: JsonRpc) -> None:
        actual = parse_quantity(rpc.call("eth_chainId", []), rpc.endpoint, "eth_chainId")
        if actual != expected:
            raise ConfigError(
                f"chains.{chain_name}.chain_id",
                f"endpoint {rpc.endpoint} serves chain id {actual}, not {expected}: "
                "drainwatch will not watch a different network",
            )

    return verify


class EvmFollower(Follower[EvmBlock]):
    stall_reason = (
        "a receipt is still unavailable (is the node pruning or still building its "
        "transaction index?)"
    )

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
        max_reorg_depth: int = 64,
        after_publish: Callable[[], object] | None = None,
        notice: Callable[[str], None] = log.warning,
        prepare: Callable[[], None] | None = None,
        safes: Iterable[str] = (),
        wallets: Mapping[str, str] | None = None,
    ) -> None:
        """``wallets`` maps watched addresses to wallet names: the wallets whose balance is read
        after a block with an outflow (none when not given)."""
        super().__init__(
            chain,
            store,
            bus,
            topic,
            start_height=start_height,
            max_reorg_depth=max_reorg_depth,
            after_publish=after_publish,
            prepare=prepare,
        )
        self._rpc = rpc
        watched_set = frozenset(a.lower() for a in watched)
        self._extractor = BlockExtractor(chain.name, rpc, watched_set, safes=safes, notice=notice)
        self._mempool = MempoolWatch(chain.name, rpc, watched_set, notice=notice)
        self._balances = BalanceReader(chain.name, rpc, wallets or {}, notice=notice)

    def node_head(self) -> int:
        head = self._rpc.call("eth_blockNumber", [])
        return parse_quantity(head, self._rpc.endpoint, "eth_blockNumber")

    def node_block(self, height: int) -> BlockRef:
        raw = self._rpc.call("eth_getBlockByNumber", [hex(height), False])
        if raw is None:
            raise NodeInconsistent(f"{self._rpc.endpoint}: has no block {height} any more")
        ref = parse_block_ref(raw, self._rpc.endpoint)[0]
        if ref.height != height:
            raise NodeInconsistent(f"{self._rpc.endpoint}: asked for block {height}, got {ref}")
        return ref

    def fetch(self, height: int) -> EvmBlock | None:
        return self._extractor.fetch(height)

    def extract(self, block: EvmBlock) -> list[Event] | None:
        facts = self._extractor.extract(block)
        if facts is None:  # a receipt is missing or from another block: the block later
            return None
        # The balances first: a consumer that handles the transfers (in this batch or a later
        # one) has the balance after the block already, for the balance-fall rule.
        events: list[Event] = list(self._balances.after(block.ref, block.time, facts.transfers))
        events += [TransferSeen(t) for t in facts.transfers]
        events += [ControlChangeSeen(c) for c in facts.changes]
        return events

    def pending(self) -> list[Event]:
        return self._mempool.poll()

    def mempool_failed(self, exc: DrainwatchError) -> None:
        if not isinstance(exc, RetriableRpcError):
            self._mempool.source = None  # another endpoint may answer otherwise: probe again
