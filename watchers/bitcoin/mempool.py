"""Pending Bitcoin outflows: mempool transactions that spend a watched coin, seen at once.

Polls ``getrawmempool`` and reads each transaction not seen before (JSON-RPC batches). A
transaction that spends a watched coin gives its events at status ``pending``. When it leaves the
mempool, the verdict:

- another pending transaction spends one of the same coins: it was replaced (RBF), so its
  events are orphaned (the replacement has its own, pending);
- otherwise (mined, beaten by a conflicting transaction, evicted, expired, its coin gone in a
  reorg) it waits for a block the watcher scans: one that carries it settles it (the block's
  events, the same keys at status ``confirmed``, take over), one that spends its coins with
  another transaction withdraws it (orphaned). If the watcher's checkpoint passes the node's
  head of the moment it left and nothing settled it, no block of the chain carries it:
  orphaned. (Asking the node whether its coins are still unspent would be quicker for an
  eviction, but a lagging backend would answer yes for a mined leak, and retract its alert.)

A transaction read before the coin it spends was known (a coin received in a block not yet at
its confirmation depth) is read again once a block or a reload brings that coin. At start, the
pending transfers the store still holds from before (the process was down when they left the
mempool) wait the same way. Events are handed out until the caller says they were published
(``published``); the verdicts of a block take effect once the block is through (``settled``).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from drainwatch.events import Event, TransferSeen
from drainwatch.model import Transfer, TransferStatus
from watchers.bitcoin.node import BitcoinNode
from watchers.bitcoin.utxos import UtxoScanner


@dataclass(frozen=True)
class _Pending:
    coins: frozenset[bytes]  # the watched outpoints it spends
    events: list[Event]


class BitcoinMempool:
    def __init__(self, node: BitcoinNode, scanner: UtxoScanner) -> None:
        self._node = node
        self._scanner = scanner
        self._seen: set[str] = set()
        #: outpoint → the seen mempool transaction spending it, and each one's outpoints: a
        #: coin that becomes known later sends its spender to be read again.
        self._spender: dict[bytes, str] = {}
        self._inputs: dict[str, tuple[bytes, ...]] = {}
        self._pending: dict[str, _Pending] = {}
        #: Left the mempool, not yet settled: its verdict waits for a block, or for the
        #: checkpoint to pass the height (the node's head when it left).
        self._unresolved: dict[str, tuple[_Pending, int]] = {}
        self._outbox: list[Event] = []

    @property
    def pending_txids(self) -> set[str]:
        return set(self._pending)

    def restore(self, stored: Iterable[Transfer], head: int) -> None:
        """Pending transfers the store holds from an earlier run: those whose transaction is
        not seen in the mempool again are settled as the ones that left it while watched."""
        by_tx: dict[str, list[Event]] = {}
        for t in stored:
            if t.status is TransferStatus.PENDING:
                by_tx.setdefault(t.tx_hash, []).append(TransferSeen(t))
        for txid, events in by_tx.items():
            if txid not in self._pending:
                self._unresolved[txid] = (_Pending(frozenset(), events), head)

    def poll(self, checkpoint: int) -> list[Event]:
        """New pending spends and verdicts, with those handed out before and not yet
        published; ``checkpoint`` is the height the watcher has processed. Everything found
        goes to the outbox at once: a node call failing later in the poll loses nothing."""
        listing = self._node.mempool()
        present = set(listing)
        for txid in [t for t in self._inputs if t not in present]:
            for key in self._inputs.pop(txid):
                if self._spender.get(key) == txid:
                    del self._spender[key]
        fresh = [txid for txid in listing if txid not in self._seen]
        watched = self._scanner.coins
        for txid, tx in self._node.transactions(fresh).items():
            keys = tuple(i.outpoint for i in tx.inputs)
            self._inputs[txid] = keys
            for key in keys:
                self._spender[key] = txid
            self._unresolved.pop(txid, None)  # back in the mempool (a restart, a reorg)
            found = self._scanner.scan_pending(tx)
            if found:
                coins = frozenset(k for k in keys if k in watched)
                self._pending[txid] = _Pending(coins, found)
                self._outbox += found
        for txid in [t for t in self._pending if t not in present]:
            gone = self._pending[txid]
            if self._replaced(txid, gone):
                self._outbox += self._scanner.withdrawn(gone.events)
            else:  # mined, beaten, evicted or expired: a block, or the deadline, will say
                self._unresolved[txid] = (gone, self._node.head())
            del self._pending[txid]
        for txid, (entry, height) in list(self._unresolved.items()):
            if checkpoint >= height and txid not in present:
                del self._unresolved[txid]
                self._outbox += self._scanner.withdrawn(entry.events)
        self._seen = present
        return list(self._outbox)

    def published(self) -> None:
        """What ``poll`` handed out is on the bus."""
        self._outbox = []

    def coins_known(self, keys: Iterable[bytes]) -> None:
        """Coins the scanner now watches: a mempool transaction already read that spends one
        is read again at the next poll."""
        for key in keys:
            txid = self._spender.get(key)
            if txid is not None and txid not in self._pending:
                self._seen.discard(txid)

    def verdicts(
        self, spends: Mapping[bytes, str], mined: Container[str]
    ) -> tuple[list[Event], list[str]]:
        """What a block carrying the transactions ``mined`` and spending ``spends`` (outpoint
        → spending txid) settles, without settling it: the withdrawn events of the
        transactions it beat, and every txid it settles. ``settled`` applies them once the
        block is through."""
        events: list[Event] = []
        done: list[str] = []
        entries = [(t, e) for t, (e, _) in self._unresolved.items()] + list(self._pending.items())
        for txid, entry in entries:
            if txid in mined:  # its own block: the block's events take over
                done.append(txid)
                continue
            spenders = {spends[c] for c in entry.coins if c in spends}
            if not spenders:
                continue
            done.append(txid)
            if txid not in spenders:
                events += self._scanner.withdrawn(entry.events)
        return events, done

    def settled(self, txids: Iterable[str]) -> None:
        for txid in txids:
            self._unresolved.pop(txid, None)
            self._pending.pop(txid, None)

    def _replaced(self, txid: str, gone: _Pending) -> bool:
        """Another transaction in the mempool spends one of the same coins (RBF)."""
        return any(t != txid and e.coins & gone.coins for t, e in self._pending.items())
