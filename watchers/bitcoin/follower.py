"""Follows one Bitcoin chain's head: the chain-specific half of ``watchers.follow.Follower``.

Blocks are read raw (``getblockhash``, ``getblock HASH 0``) and scanned against the watched
coins and scripts (``UtxoScanner``). With each block the store gets the watched coins it created
and spent (``apply_utxo_block``) before its events are published; at start, and after a block
left half done or a reorg, the store's UTXO set is rewound to the checkpoint and read back, so
the scanner always starts a block from the set as it was after the block before. The set is
also read again before the next block when a backfill or import has stored coins meanwhile
(they move a marker checkpoint, ``coins_marker``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from drainwatch.addresses import BitcoinAddressParams
from drainwatch.events import BalanceSeen, Event, UtxoSpendSeen
from drainwatch.model import NATIVE_ASSET_ID, Balance, BlockRef, Chain
from drainwatch.ports import EventBus, JsonRpc, Store
from watchers.bitcoin.block import outpoint_key
from watchers.bitcoin.derive import ScriptBook
from watchers.bitcoin.mempool import BitcoinMempool
from watchers.bitcoin.node import BitcoinNode, FetchedBitcoinBlock
from watchers.bitcoin.utxos import BlockScan, UtxoScanner
from watchers.follow import Follower

log = logging.getLogger(__name__)


def coins_marker(chain: str) -> str:
    """The checkpoint key (never a chain name: those have no ``#``) that a backfill or an
    import moves to its last block once it has stored coins: a running watcher then goes back
    there and reads on with them."""
    return f"{chain}#coins"


class BitcoinFollower(Follower[FetchedBitcoinBlock]):
    stall_reason = "the node cannot give it yet"

    def __init__(
        self,
        chain: Chain,
        rpc: JsonRpc,
        store: Store,
        bus: EventBus,
        topic: str,
        book: ScriptBook,
        params: BitcoinAddressParams,
        *,
        start_height: int | None = None,
        max_reorg_depth: int = 64,
        after_publish: Callable[[], object] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
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
        self.node = BitcoinNode(rpc)
        self.scanner = UtxoScanner(chain.name, book, params)
        self.mempool = BitcoinMempool(self.node, self.scanner)
        self._scan: BlockScan | None = None
        self._settling: list[str] = []
        self._restored = False
        #: Moved by a backfill or import that stored coins (``coins_marker``).
        self._marker = coins_marker(chain.name)
        self._marker_seen = store.get_checkpoint(self._marker)

    def node_head(self) -> int:
        return self.node.head()

    def node_block(self, height: int) -> BlockRef:
        return self.node.block_ref(height)

    def step(self, until: int | None = None) -> int:
        self._take_history()
        return super().step(until)

    def _take_history(self) -> None:
        """A backfill or import stored coins up to the marker's height while this watcher
        went on without them: go back to that height and read the blocks after it again, with
        the coins (consumers are idempotent: nothing is stored or alerted twice)."""
        marker = self._store.get_checkpoint(self._marker)
        if marker == self._marker_seen:
            return
        checkpoint = self._store.get_checkpoint(self.chain.name)
        if marker is not None and checkpoint is not None and marker.height < checkpoint.height:
            log.warning(
                "%s: coins stored by a backfill or import up to block %d: reading blocks "
                "%d..%d again with them",
                self.chain.name,
                marker.height,
                marker.height + 1,
                checkpoint.height,
            )
            self._store.set_checkpoint(self.chain.name, self.node_block(marker.height))
        self._synced = False  # read the coins again before the next block
        self._marker_seen = marker

    def fetch(self, height: int) -> FetchedBitcoinBlock | None:
        return self.node.block(height)

    def extract(self, block: FetchedBitcoinBlock) -> list[Event]:
        scan = self.scanner.scan_block(block.block, block.ref, block.time)
        mined = {tx.txid for tx in block.block.txs}  # hashed already, for the merkle root
        verdicts, self._settling = self.mempool.verdicts(scan.spends, mined)
        self._scan = scan
        return self._balances(scan, block) + verdicts + scan.events  # balances first, as EVM

    def _balances(self, scan: BlockScan, block: FetchedBitcoinBlock) -> list[Event]:
        """Each wallet that spent a coin in the block, with what it holds after it (the
        scanner's coins are the set after the block): what the balance-fall rule compares."""
        spent: dict[str, int] = {}
        for e in scan.events:
            if isinstance(e, UtxoSpendSeen):
                for i in e.spend.inputs:
                    if i.wallet is not None:
                        spent[i.wallet] = spent.get(i.wallet, 0) + (i.amount or 0)
        if not spent:
            return []
        held = dict.fromkeys(spent, 0)
        for coin in self.scanner.coins.values():
            if coin.wallet in held:
                held[coin.wallet] += coin.amount
        received = dict.fromkeys(spent, 0)
        for utxo in scan.created:
            if utxo.wallet in received:
                received[utxo.wallet] += utxo.amount
        return [
            BalanceSeen(
                Balance(
                    self.chain.name,
                    w,
                    NATIVE_ASSET_ID,
                    held[w],
                    held[w] - received[w] + spent[w],
                    block.ref,
                    block.time,
                )
            )
            for w in sorted(held)
        ]

    def record(self, block: FetchedBitcoinBlock) -> None:
        scan = self._scan
        assert scan is not None, "record() follows extract() of the same block"
        self._store.apply_utxo_block(self.chain.name, block.ref, scan.created, scan.spent)

    def committed(self, block: FetchedBitcoinBlock) -> None:
        scan, self._scan = self._scan, None
        self.mempool.settled(self._settling)
        if scan is not None:
            self.mempool.coins_known(outpoint_key(c.txid, c.vout) for c in scan.created)

    def resync(self, checkpoint: BlockRef | None) -> None:
        if checkpoint is not None:
            self._store.rewind_utxos(self.chain.name, checkpoint.height)
        self.scanner.load(self._store.utxos(self.chain.name))
        self.mempool.coins_known(self.scanner.coins)

    def pending(self) -> list[Event]:
        if not self._restored:
            # Pending spends of an earlier run that left the mempool while it was down.
            stored = self._store.transfers(chain=self.chain.name)
            self.mempool.restore(stored, self.node.head())
            self._restored = True
        checkpoint = self._store.get_checkpoint(self.chain.name)
        return self.mempool.poll(checkpoint.height if checkpoint is not None else -1)

    def pending_published(self) -> None:
        self.mempool.published()
