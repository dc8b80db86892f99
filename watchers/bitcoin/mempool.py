"""Pending Bitcoin outflows: mempool transactions that spend a watched coin, seen at once.

Polls ``getrawmempool`` and reads each transaction not seen before (one JSON-RPC batch). A
transaction that spends a watched coin gives its events at status ``pending``. When it leaves the
mempool, the verdict:

- another pending transaction spends one of the same coins: it was replaced (RBF), so its
  events are orphaned (the replacement has its own, pending);
- one of its watched coins is still unspent in the node's best chain (``gettxout``): evicted or
  expired, never mined, so orphaned;
- otherwise its coins were spent in a block: by itself (mined: the block's events, the same
  keys at status ``confirmed``, take over once the block has its confirmations) or by a
  conflicting transaction (orphaned when that block is scanned: ``settle``).

A restart reads the whole mempool again: the pending events it re-publishes change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from drainwatch.events import Event
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
        self._pending: dict[str, _Pending] = {}
        #: Left the mempool with its coins spent in a block not yet scanned: mined, or beaten
        #: by a conflicting transaction.
        self._unresolved: dict[str, _Pending] = {}

    @property
    def pending_txids(self) -> set[str]:
        return set(self._pending)

    def poll(self) -> list[Event]:
        listing = self._node.mempool()
        present = set(listing)
        fresh = [txid for txid in listing if txid not in self._seen]
        events: list[Event] = []
        for txid, tx in self._node.transactions(fresh).items():
            found = self._scanner.scan_pending(tx)
            if found:
                coins = frozenset(
                    i.outpoint for i in tx.inputs if i.outpoint in self._scanner.coins
                )
                self._pending[txid] = _Pending(coins, found)
                events += found
        self._seen = present
        for txid in [t for t in self._pending if t not in present]:
            gone = self._pending.pop(txid)
            if self._replaced(gone) or self._unmined(gone):
                events += self._scanner.withdrawn(gone.events)
            else:
                self._unresolved[txid] = gone
        return events

    def settle(self, spends: dict[bytes, str]) -> list[Event]:
        """A scanned block spent ``spends`` (outpoint → spending txid): the withdrawn events of
        the transactions it beat; those it carries are settled by its own events."""
        events: list[Event] = []
        for txid, entry in list(self._unresolved.items()) + list(self._pending.items()):
            spenders = {spends[c] for c in entry.coins if c in spends}
            if not spenders:
                continue
            self._unresolved.pop(txid, None)
            if txid not in spenders:
                self._pending.pop(txid, None)
                events += self._scanner.withdrawn(entry.events)
        return events

    def _replaced(self, gone: _Pending) -> bool:
        return any(other.coins & gone.coins for other in self._pending.values())

    def _unmined(self, gone: _Pending) -> bool:
        for key in gone.coins:
            txid = key[:32][::-1].hex()
            if self._node.unspent_at_tip(txid, int.from_bytes(key[32:], "little")):
                return True
        return False
