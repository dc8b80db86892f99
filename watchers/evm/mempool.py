"""Outgoing transactions of watched addresses while they wait in the node's mempool.

``MempoolWatch.poll()`` is called once per round of the follower loop and returns
``TransferSeen`` events, keyed like the follower's: ``(chain, tx_hash, "tx")``.

The contract, per transaction whose sender is watched and that carries native value:

- first seen pending → ``Transfer(status=PENDING, block=None, block_time=None, index="tx",
  kind=NATIVE, asset="native")``, once per process (a restart announces it again: harmless,
  the store's natural key makes it idempotent);
- mined (it left the mempool and ``eth_getTransactionReceipt`` answers) → nothing from here:
  the follower publishes the CONFIRMED transfer from its block, under the same key, and the store
  moves pending → confirmed. A transaction mined but reverted yields no confirmed transfer, so it
  is withdrawn here as ORPHANED (block None), like one that vanished;
- vanished (out of the mempool and unmined for ``grace_polls`` consecutive polls: dropped,
  evicted, or replaced by another transaction of the same sender and nonce — RBF) → the same
  transfer again with status ORPHANED (block None). A replacement is a transaction of its own:
  announced PENDING under its own hash.

Contract calls from a watched address with no value (a token ``transfer`` or an ``approve`` by
the cold wallet) are tracked as well and offered by ``pending_calls()``, but emit nothing yet:
their confirmed events are keyed ``log:N``, which is unknown before execution, so a pending
event for them needs its own key and a rule that pairs it with the log; that is left open here.

Sources, probed once in order: ``txpool_content`` (geth, erigon, anvil: a snapshot of pending and
queued transactions, both counted as "in the mempool"), else ``eth_newPendingTransactionFilter``
with ``eth_getFilterChanges`` and ``eth_getTransactionByHash`` (sees only what arrives after the
filter is installed; an expired filter is reinstalled), else a loud notice, once, and nothing
more. Answers are parsed strictly (``MalformedRpcResponse`` naming the path); only the
transactions of watched senders are parsed field by field. Retriable errors propagate.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eth_utils.crypto import keccak

from drainwatch.errors import MalformedRpcResponse, RetriableRpcError, RpcError
from drainwatch.events import Event, TransferSeen
from drainwatch.model import NATIVE_ASSET_ID, Transfer, TransferKind, TransferStatus
from drainwatch.ports import JsonRpc
from watchers.evm.mapping import RawReader, parse_receipt

log = logging.getLogger(__name__)

_TXPOOL, _BY_HASH = "txpool_content", "eth_getTransactionByHash"
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_DATA = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
_NONCE_KEY = re.compile(r"^(?:0|[1-9][0-9]*)$")


class MempoolSource(StrEnum):
    TXPOOL = "txpool_content"
    FILTER = "eth_newPendingTransactionFilter"
    NONE = "none"


@dataclass(frozen=True)
class PendingTx:
    hash: str
    sender: str
    nonce: int
    to: str | None  # None for a contract creation
    value: int
    input: str

    @property
    def is_call(self) -> bool:
        return self.to is None or self.input != "0x"


@dataclass
class _Tracked:
    tx: PendingTx
    announced: bool
    misses: int = 0


def parse_pending_tx(raw: Any, endpoint: str, method: str, where: str) -> PendingTx:
    r = RawReader(raw, endpoint, method, where)
    sender = r.address("from")
    assert sender is not None
    data = r.raw.get("input")
    if not isinstance(data, str) or not _DATA.match(data):
        raise r.fail("input", f"is not hex data: {data!r}")
    to = r.address("to", optional=True)
    return PendingTx(r.hash("hash"), sender, r.quantity("nonce"), to, r.quantity("value"), data)


def parse_txpool(raw: Any, watched: frozenset[str], endpoint: str = "node") -> list[PendingTx]:
    """The watched senders' transactions of a ``txpool_content`` result (pending and queued)."""
    top = RawReader(raw, endpoint, _TXPOOL, "result")
    found: list[PendingTx] = []
    for part in ("pending", "queued"):
        senders = RawReader(top.raw.get(part), endpoint, _TXPOOL, f"result.{part}")
        for sender, by_nonce in senders.raw.items():
            where = f"result.{part}.{sender}"
            if not isinstance(sender, str) or not _ADDRESS.match(sender):
                raise MalformedRpcResponse(endpoint, _TXPOOL, f"{where} is not an address key")
            txs = RawReader(by_nonce, endpoint, _TXPOOL, where)
            if sender.lower() not in watched:
                continue
            for nonce, raw_tx in txs.raw.items():
                if not isinstance(nonce, str) or not _NONCE_KEY.match(nonce):
                    raise txs.fail(str(nonce), "is not a decimal nonce key")
                tx = parse_pending_tx(raw_tx, endpoint, _TXPOOL, f"{where}.{nonce}")
                if tx.sender != sender.lower() or tx.nonce != int(nonce):
                    raise txs.fail(nonce, f"holds a transaction of {tx.sender} nonce {tx.nonce}")
                found.append(tx)
    return found


def created_address(sender: str, nonce: int) -> str:
    """Where a creation by ``sender`` at ``nonce`` deploys: keccak(rlp([sender, nonce]))[12:]."""
    n = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
    n_rlp = n if len(n) == 1 and n[0] < 0x80 else bytes([0x80 + len(n)]) + n
    body = b"\x94" + bytes.fromhex(sender[2:]) + n_rlp
    return "0x" + keccak(bytes([0xC0 + len(body)]) + body)[12:].hex()


class MempoolWatch:
    def __init__(
        self,
        chain: str,
        rpc: JsonRpc,
        watched: Iterable[str],
        *,
        grace_polls: int = 2,
        notice: Callable[[str], None] = log.warning,
    ) -> None:
        self.chain = chain
        self._rpc = rpc
        self._watched = frozenset(a.lower() for a in watched)
        self._grace = max(grace_polls, 1)
        self._notice = notice
        self.source: MempoolSource | None = None  # probed on the first poll
        self._filter: Any = None
        self._tracked: dict[str, _Tracked] = {}
        self._backlog: list[str] = []  # filter hashes taken from the node, not yet looked up

    def poll(self) -> list[Event]:
        """New pending outflows of watched senders, and those that vanished unmined."""
        if self.source is None:
            self.source = self._probe()
        if self.source is MempoolSource.NONE:
            return []
        if self.source is MempoolSource.TXPOOL:
            present = parse_txpool(self._rpc.call(_TXPOOL, []), self._watched, self._rpc.endpoint)
            seen = {tx.hash for tx in present}
        else:
            present = self._arrivals()
            seen = {tx.hash for tx in present} | {h for h in self._tracked if self._lookup(h)}
        # Every question to the node is asked before any state changes: an error mid-way (a
        # retriable one propagates) leaves the watch as it was, and the next poll redoes it all.
        gone = [h for h in self._tracked if h not in seen]
        receipts = {h: self._rpc.call("eth_getTransactionReceipt", [h]) for h in gone}
        mined = {h for h, raw in receipts.items() if raw is not None}
        # Mined but reverted: no confirmed transfer will ever come from the block, so the
        # pending one is withdrawn here, like a transaction that vanished.
        reverted = {
            h for h in mined if not parse_receipt(receipts[h], self._rpc.endpoint).succeeded
        }
        self._backlog = []
        events: list[Event] = []
        for tx in present:
            if tx.hash not in self._tracked and (tx.value > 0 or tx.is_call):
                self._tracked[tx.hash] = _Tracked(tx, announced=tx.value > 0)
                if tx.value > 0:
                    events.append(TransferSeen(self._transfer(tx, TransferStatus.PENDING)))
        for tx_hash in seen & self._tracked.keys():
            self._tracked[tx_hash].misses = 0
        for tx_hash in gone:
            tracked = self._tracked[tx_hash]
            tracked.misses += 1
            if tx_hash in mined or tracked.misses >= self._grace:
                del self._tracked[tx_hash]  # mined: the follower publishes it from its block
                if tracked.announced and (tx_hash not in mined or tx_hash in reverted):
                    orphan = self._transfer(tracked.tx, TransferStatus.ORPHANED)
                    events.append(TransferSeen(orphan))
        return events

    def pending_calls(self) -> list[PendingTx]:
        """Value-less contract calls of watched senders now in the mempool (no events yet)."""
        return [t.tx for t in self._tracked.values() if t.tx.value == 0]

    def _transfer(self, tx: PendingTx, status: TransferStatus) -> Transfer:
        return Transfer(
            chain=self.chain,
            tx_hash=tx.hash,
            index="tx",
            from_address=tx.sender,
            to_address=tx.to or created_address(tx.sender, tx.nonce),
            asset=NATIVE_ASSET_ID,
            amount=tx.value,
            kind=TransferKind.NATIVE,
            status=status,
        )

    def _probe(self) -> MempoolSource:
        for source in (MempoolSource.TXPOOL, MempoolSource.FILTER):
            try:
                if source is MempoolSource.TXPOOL:
                    parse_txpool(self._rpc.call(_TXPOOL, []), self._watched, self._rpc.endpoint)
                else:
                    self._filter = self._rpc.call(source.value, [])
                log.info("%s: watching the mempool with %s", self.chain, source.value)
                return source
            except RetriableRpcError:
                raise  # the node is down or busy: that says nothing about what it offers
            except RpcError as exc:
                log.info("%s: %s not offered: %s", self.chain, source.value, exc)
        self._notice(
            f"{self.chain}: the node shows no mempool (neither txpool_content nor pending-"
            "transaction filters): pending outflows are NOT seen before they are mined / "
            f"{self.chain}: ノードがメンプールを公開していないため、未承認の送金はブロックに"
            "取り込まれるまで検知されません"
        )
        return MempoolSource.NONE

    def _arrivals(self) -> list[PendingTx]:
        """Pending transactions of watched senders announced by the filter since the last poll."""
        method = "eth_getFilterChanges"
        try:
            hashes = self._rpc.call(method, [self._filter])
        except RetriableRpcError:
            raise
        except RpcError as exc:  # nodes forget idle filters (geth: after 5 minutes)
            log.warning("%s: pending filter lost (%s), installing a new one", self.chain, exc)
            self._filter = self._rpc.call(MempoolSource.FILTER.value, [])
            hashes = []
        if not isinstance(hashes, list):
            raise MalformedRpcResponse(self._rpc.endpoint, method, "result is not a list")
        for i, tx_hash in enumerate(hashes):
            if not isinstance(tx_hash, str) or not _HASH.match(tx_hash):
                reason = f"result[{i}] is not a 32-byte hex hash: {tx_hash!r}"
                raise MalformedRpcResponse(self._rpc.endpoint, method, reason)
        self._backlog += [h.lower() for h in hashes]  # the node hands each hash out only once
        txs = [self._lookup(h) for h in self._backlog]
        return [tx for tx in txs if tx is not None and tx.sender in self._watched]

    def _lookup(self, tx_hash: str) -> PendingTx | None:
        """The transaction if the node holds it unmined; None if mined or unknown."""
        raw = self._rpc.call(_BY_HASH, [tx_hash])
        if raw is None or (isinstance(raw, dict) and raw.get("blockNumber") is not None):
            return None
        tx = parse_pending_tx(raw, self._rpc.endpoint, _BY_HASH, "result")
        if tx.hash != tx_hash:
            raise MalformedRpcResponse(self._rpc.endpoint, _BY_HASH, f"result.hash is {tx.hash}")
        return tx
