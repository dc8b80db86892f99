"""Events that flow from the watchers over the bus to the store, the rules and the tracker.

Every event names its chain and block so that a consumer can apply it idempotently and a reorg
can retract it. ``event_key`` is the natural key a consumer deduplicates on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drainwatch.model import Balance, BlockRef, ControlChange, Transfer, UtxoSpend


@dataclass(frozen=True)
class BlockConnected:
    """A block became part of the watcher's view of the chain (at its head: what it carries is
    provisional until ``BlockConfirmed``)."""

    chain: str
    block: BlockRef
    parent_hash: str
    block_time: datetime


@dataclass(frozen=True)
class BlockConfirmed:
    """A block of the best chain reached the chain's confirmations: what it carried moves from
    provisional to confirmed."""

    chain: str
    block: BlockRef


@dataclass(frozen=True)
class BlockDisconnected:
    """A block left the best chain: everything it carried is orphaned."""

    chain: str
    block: BlockRef


@dataclass(frozen=True)
class TransferSeen:
    """A transfer touching a watched address, pending (mempool) or in a block. One read from a
    pending transaction's calldata is keyed ``pending:N`` and ends ``superseded`` (mined: the
    block's own transfers take over) or ``orphaned`` (withdrawn); a control change of a kind no
    block reports (``PENDING_ONLY_KINDS``) ends ``executed`` instead of ``superseded``."""

    transfer: Transfer


@dataclass(frozen=True)
class ControlChangeSeen:
    """A change of control of a watched wallet: owners, threshold, implementation, approvals;
    pending ones (read from calldata, ``pending:N``) end as pending transfers do."""

    change: ControlChange


@dataclass(frozen=True)
class UtxoSpendSeen:
    """A Bitcoin transaction that spends a watched output, with all its inputs and outputs (its
    outputs also travel one by one as ``TransferSeen``, index ``out:N``)."""

    spend: UtxoSpend


@dataclass(frozen=True)
class BalanceSeen:
    """A watched wallet's balance of an asset after a block that moved value out of it."""

    balance: Balance


Event = (
    BlockConnected
    | BlockConfirmed
    | BlockDisconnected
    | TransferSeen
    | ControlChangeSeen
    | UtxoSpendSeen
    | BalanceSeen
)

EVENT_TYPES: dict[
    str,
    type[BlockConnected]
    | type[BlockConfirmed]
    | type[BlockDisconnected]
    | type[TransferSeen]
    | type[ControlChangeSeen]
    | type[UtxoSpendSeen]
    | type[BalanceSeen],
] = {
    "block_connected": BlockConnected,
    "block_confirmed": BlockConfirmed,
    "block_disconnected": BlockDisconnected,
    "transfer": TransferSeen,
    "control_change": ControlChangeSeen,
    "utxo_spend": UtxoSpendSeen,
    "balance": BalanceSeen,
}


def event_key(event: Event) -> str:
    """The natural key of an event: replaying an event with the same key changes nothing."""
    if isinstance(event, TransferSeen):
        t = event.transfer
        height = t.block.height if t.block else "pending"
        return f"transfer:{t.chain}:{t.tx_hash}:{t.index}:{t.status}:{height}"
    if isinstance(event, ControlChangeSeen):
        chain, anchor, index = event.change.key
        return f"control:{chain}:{anchor}:{index}:{event.change.status}"
    if isinstance(event, UtxoSpendSeen):
        s = event.spend
        height = s.block.height if s.block else "pending"
        return f"spend:{s.chain}:{s.txid}:{s.status}:{height}"
    if isinstance(event, BalanceSeen):
        b = event.balance
        return f"balance:{b.chain}:{b.wallet}:{b.asset}:{b.block.hash}"
    kind = {BlockConnected: "connected", BlockConfirmed: "confirmed"}.get(
        type(event), "disconnected"
    )
    return f"block:{event.chain}:{event.block.height}:{event.block.hash}:{kind}"
