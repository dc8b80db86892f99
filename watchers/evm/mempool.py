"""Outgoing transactions of watched addresses while they wait in the node's mempool.

``MempoolWatch.poll()`` is called once per round of the follower loop and returns
``TransferSeen`` and ``ControlChangeSeen`` events. A transaction concerns the watch when its
sender is watched, or -- whoever sent it -- when it is a Safe ``execTransaction`` to a watched
address (the owners who sign and submit are not the wallet) or a pull (``transferFrom``,
``safe(Batch)TransferFrom``) debiting a watched address (an allowance or operator approval in
the wrong hands). What each one announces, once per process (a restart announces it again:
harmless, every consumer is idempotent on the natural key):

- its native value, when its watched sender sends some: ``Transfer(index="tx", kind=NATIVE,
  status=PENDING, block=None)``, keyed like the follower's transfer of the same transaction;
- what its calldata would move out of or grant over a watched wallet (``calldata``: token
  transfers and pulls, approvals, operator approvals, and a Safe transaction's inner value,
  token call, owner / threshold / guard / module / singleton / fallback-handler change or
  DELEGATECALL), the N-th of them as ``Transfer`` / ``ControlChange`` with ``index="pending:N"``
  and status PENDING. The confirmed events of a block are keyed ``log:N``, ``trace:...`` and
  ``slot:...``, unknown before execution, so a reading of calldata never shares a key with
  them: it is an announcement in its own right, and closed when the transaction leaves the
  mempool.

Transactions of unwatched senders cost their sender nothing until mined, so they must not page
anyone for free: only the executable part of the pool (``pending``, not the nonce-gapped
``queued``) is read for them, and before anything is announced the transaction is simulated
with ``eth_call`` (its from, to, data and value) on the ``latest`` state -- not ``pending``,
where a node may already have applied the very transaction (a Safe's nonce moved on, an
allowance spent) and call it a revert. One that reverts (an allowance short, Safe signatures
that do not verify) is tracked silently: logged at INFO, nothing announced, no page; if it is
mined all the same (the state changed under it), the block's own events report it. A node that
cannot simulate (another error) gets the announcement: a page rather than silence. The
transactions of watched senders are announced as they are, queued ones included: our own
wallet sending is always worth a page.

How each announcement is closed, so that none is left pending for ever and none stands beside
the block's own events as a second leak:

- mined (it left the mempool and ``eth_getTransactionReceipt`` answers): the ``tx`` transfer is
  left to the follower, which publishes it CONFIRMED from its block under the same key; every
  ``pending:N`` one is announced again, with the block that carries the transaction (a reorg of
  that block orphans it, like everything the block carried), as SUPERSEDED when the block has
  an event of its own for it (a log, trace or slot read: its alert follows once the block has
  its confirmations), or as EXECUTED for the kinds nothing in a block reports
  (``PENDING_ONLY_KINDS``: DELEGATECALL, malformed call, fallback handler), whose alert is then
  delivered again at full severity: it is the only record that it happened;
- mined but reverted: nothing moved, no confirmed event will come from the block, so every
  announcement is withdrawn: status ORPHANED, block None. So are the ``pending:N`` readings of
  a Safe transaction whose Safe logged ``ExecutionFailure`` (a Safe transaction with a gas
  budget fails inside a transaction that succeeds);
- withdrawn unmined: out of the pool and without a receipt for ``grace_polls`` consecutive
  polls is not enough (a lagging node behind a failover may not list a transaction that is
  still pending, or already mined). Withdrawn, ORPHANED with block None, is only one that was
  replaced -- another transaction of its sender and nonce is in the pool, or the sender's
  confirmed nonce (``eth_getTransactionCount(sender, "latest")``) has passed it while it has
  no receipt -- or one gone for ``drop_polls`` consecutive polls (dropped or evicted). A
  replacement is a transaction of its own, announced under its own hash.

A transaction closed as mined is remembered (the last ``remember`` of them): a lagging backend
that still lists it is not believed while the node has its receipt, so it is neither announced
PENDING again nor paged twice (the store and the processor also refuse to send a mined reading
back to pending). One back in the pool with no receipt (a reorg put it back) is announced anew.

Other contract calls of watched senders (no value, nothing known in their calldata) are
tracked and offered by ``pending_calls()``, and announce nothing.

Sources, probed once in order: ``txpool_content`` (geth, erigon, anvil: a snapshot of pending and
queued transactions, both counted as "in the mempool" for watched senders), else
``eth_newPendingTransactionFilter`` with ``eth_getFilterChanges`` and
``eth_getTransactionByHash`` (sees only what arrives after the filter is installed; an expired
filter is reinstalled), else a loud notice, once, and nothing more. Answers are parsed strictly
(``MalformedRpcResponse`` naming the path); only the transactions that concern the watch are
parsed field by field (the others are only glanced at: their ``to`` and the start of their
input). Retriable errors propagate.

Not done here: pending readings left open by a process that stopped are not closed by the next
one (that needs a store query at start-up), and MultiSend payloads (a DELEGATECALL to a vetted
MultiSend) are reported as the DELEGATECALL, their batched calls not decoded.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from eth_utils.crypto import keccak

from drainwatch.errors import MalformedRpcResponse, RetriableRpcError, RpcError
from drainwatch.events import ControlChangeSeen, Event, TransferSeen
from drainwatch.model import (
    NATIVE_ASSET_ID,
    PENDING_INDEX,
    PENDING_ONLY_KINDS,
    BlockRef,
    ControlChange,
    Transfer,
    TransferKind,
    TransferStatus,
)
from drainwatch.ports import JsonRpc
from watchers.evm.calldata import (
    EXEC_TRANSACTION,
    Effect,
    Move,
    debited_by_pull,
    exec_transaction,
    token_call,
)
from watchers.evm.logs import parse_logs
from watchers.evm.mapping import RawReader, parse_quantity, parse_receipt

log = logging.getLogger(__name__)

_TXPOOL, _BY_HASH, _RECEIPT, _NONCE, _CALL = (
    "txpool_content",
    "eth_getTransactionByHash",
    "eth_getTransactionReceipt",
    "eth_getTransactionCount",
    "eth_call",
)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_DATA = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
_NONCE_KEY = re.compile(r"^(?:0|[1-9][0-9]*)$")
#: Safe ``ExecutionFailure(bytes32,uint256)``: the Safe transaction ran and failed.
EXECUTION_FAILURE_TOPIC = "0x" + keccak(b"ExecutionFailure(bytes32,uint256)").hex()

Announcement = Transfer | ControlChange


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
    announced: tuple[Announcement, ...]
    misses: int = 0


@dataclass(frozen=True)
class _Mined:
    block: BlockRef
    reverted: bool
    safe_failed: bool  # the Safe it called logged ExecutionFailure


def concerns(to: Any, data: Any, watched: frozenset[str]) -> bool:
    """Whether a transaction of an unwatched sender can still move or grant what a watched
    wallet holds: a Safe transaction sent to a watched address, or a pull debiting one. Looks
    only at the raw ``to`` and input (no validation: the caller parses what concerns it)."""
    if not isinstance(data, str):
        return False
    if data[:10].lower() == EXEC_TRANSACTION and isinstance(to, str) and to.lower() in watched:
        return True
    return debited_by_pull(data) in watched


def read_calldata(tx: PendingTx, watched: frozenset[str]) -> tuple[Effect, ...]:
    """What ``tx``'s calldata would move out of, or grant over, a watched wallet."""
    if tx.to is None:
        return ()
    data = bytes.fromhex(tx.input[2:])
    effects = token_call(tx.sender, tx.to, data)
    if tx.to in watched:
        effects += exec_transaction(tx.to, data)
    return tuple(e for e in effects if (e.sender if isinstance(e, Move) else e.wallet) in watched)


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
    """The transactions of a ``txpool_content`` result that concern the watch: all of the
    watched senders' (pending and queued), and the executable (pending) ones of other senders
    that ``concerns`` picks: a nonce-gapped (queued) transaction of a stranger may never run,
    and costs its sender nothing."""
    top = RawReader(raw, endpoint, _TXPOOL, "result")
    found: list[PendingTx] = []
    for part in ("pending", "queued"):
        senders = RawReader(top.raw.get(part), endpoint, _TXPOOL, f"result.{part}")
        for sender, by_nonce in senders.raw.items():
            where = f"result.{part}.{sender}"
            if not isinstance(sender, str) or not _ADDRESS.match(sender):
                raise MalformedRpcResponse(endpoint, _TXPOOL, f"{where} is not an address key")
            ours = sender.lower() in watched
            if part == "queued" and not ours:
                continue
            txs = RawReader(by_nonce, endpoint, _TXPOOL, where)
            for nonce, raw_tx in txs.raw.items():
                if not ours and not (
                    isinstance(raw_tx, Mapping)
                    and concerns(raw_tx.get("to"), raw_tx.get("input"), watched)
                ):
                    continue
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


def as_event(item: Announcement) -> Event:
    return TransferSeen(item) if isinstance(item, Transfer) else ControlChangeSeen(item)


class MempoolWatch:
    def __init__(
        self,
        chain: str,
        rpc: JsonRpc,
        watched: Iterable[str],
        *,
        grace_polls: int = 2,
        drop_polls: int = 30,
        remember: int = 4096,
        notice: Callable[[str], None] = log.warning,
    ) -> None:
        self.chain = chain
        self._rpc = rpc
        self._watched = frozenset(a.lower() for a in watched)
        self._grace = max(grace_polls, 1)
        self._drop = max(drop_polls, self._grace)
        self._remember = max(remember, 1)
        self._notice = notice
        self.source: MempoolSource | None = None  # probed on the first poll
        self._filter: Any = None
        self._tracked: dict[str, _Tracked] = {}
        self._backlog: list[str] = []  # filter hashes taken from the node, not yet looked up
        self._recent: OrderedDict[str, None] = OrderedDict()  # closed as mined, oldest first

    def poll(self) -> list[Event]:
        """New pending outflows and grants, and the verdicts on those that left the mempool."""
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
        # Every question to the node is asked, and every answer read, before any state changes:
        # an error mid-way (a retriable one propagates) leaves the watch as it was, and the next
        # poll redoes it all.
        back = [tx.hash for tx in present if tx.hash in self._recent]
        stale = {h for h in back if self._rpc.call(_RECEIPT, [h]) is not None}
        present = [tx for tx in present if tx.hash not in stale]  # a lagging backend's listing
        seen -= stale
        gone = [h for h in self._tracked if h not in seen]
        receipts = {h: self._rpc.call(_RECEIPT, [h]) for h in gone}
        mined = {
            h: self._mined(self._tracked[h].tx, raw)
            for h, raw in receipts.items()
            if raw is not None
        }
        in_pool = present + [self._tracked[h].tx for h in seen & self._tracked.keys()]
        withdrawn = self._withdrawn([h for h in gone if h not in mined], in_pool)
        fresh = {tx.hash: self._announce(tx) for tx in present if tx.hash not in self._tracked}
        self._backlog = []
        for tx_hash in back:
            self._recent.pop(tx_hash, None)  # stale ones stay out; the others are pending again
        for tx_hash in stale:
            self._recent[tx_hash] = None
        events: list[Event] = []
        for tx in present:
            if tx.hash in fresh:
                announced = fresh.pop(tx.hash)
                self._tracked[tx.hash] = _Tracked(tx, announced)
                events += [as_event(item) for item in announced]
        for tx_hash in seen & self._tracked.keys():
            self._tracked[tx_hash].misses = 0
        for tx_hash in gone:
            tracked = self._tracked[tx_hash]
            tracked.misses += 1
            if tx_hash in mined or tx_hash in withdrawn:
                del self._tracked[tx_hash]
                verdicts = _verdicts(tracked.announced, mined.get(tx_hash))
                events += [as_event(item) for item in verdicts]
            if tx_hash in mined:
                self._recent[tx_hash] = None
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return events

    def _withdrawn(self, unmined: list[str], in_pool: list[PendingTx]) -> set[str]:
        """Which of the tracked transactions out of the pool and without a receipt are withdrawn
        on this poll (their misses counting this one): after ``grace_polls``, one replaced --
        another transaction of its sender and nonce in the pool, or the sender's confirmed
        nonce past its own -- and after ``drop_polls``, any (dropped or evicted). Until then a
        lagging node may just not list it: still pending, or mined and not yet seen mined."""
        taken = {(tx.sender, tx.nonce, tx.hash) for tx in in_pool}
        out: set[str] = set()
        nonces: dict[str, int] = {}
        for tx_hash in unmined:
            tracked = self._tracked[tx_hash]
            tx, misses = tracked.tx, tracked.misses + 1
            if misses < self._grace:
                continue
            if misses >= self._drop:
                log.info(
                    "%s: %s out of the mempool for %d polls: dropped", self.chain, tx_hash, misses
                )
                out.add(tx_hash)
                continue
            if any(s == tx.sender and n == tx.nonce and h != tx_hash for s, n, h in taken):
                log.info("%s: %s replaced in the mempool", self.chain, tx_hash)
                out.add(tx_hash)
                continue
            if tx.sender not in nonces:
                raw = self._rpc.call(_NONCE, [tx.sender, "latest"])
                nonces[tx.sender] = parse_quantity(raw, self._rpc.endpoint, _NONCE)
            if nonces[tx.sender] > tx.nonce:
                log.info("%s: %s replaced: its sender's nonce moved past it", self.chain, tx_hash)
                out.add(tx_hash)
        return out

    def pending_calls(self) -> list[PendingTx]:
        """Value-less contract calls now in the mempool that concern watched wallets."""
        return [t.tx for t in self._tracked.values() if t.tx.value == 0 and t.tx.is_call]

    def _announce(self, tx: PendingTx) -> tuple[Announcement, ...]:
        """What ``tx`` announces while pending: its native value, then its calldata's reading;
        nothing for an unwatched sender's transaction that would revert (see above)."""
        announced = self._readings(tx)
        if announced and tx.sender not in self._watched and not self._executes(tx):
            log.info(
                "%s: %s of unwatched %s would revert (eth_call): not announced",
                self.chain,
                tx.hash,
                tx.sender,
            )
            return ()
        return announced

    def _executes(self, tx: PendingTx) -> bool:
        """Whether ``tx`` runs without reverting on the latest state, by ``eth_call``."""
        call = {"from": tx.sender, "data": tx.input, "value": hex(tx.value)}
        if tx.to is not None:
            call["to"] = tx.to
        try:
            self._rpc.call(_CALL, [call, "latest"])
        except RetriableRpcError:
            raise
        except RpcError as exc:
            if "revert" in str(exc).lower():
                return False
            log.warning("%s: %s not simulated (%s): announced", self.chain, tx.hash, exc)
        return True

    def _readings(self, tx: PendingTx) -> tuple[Announcement, ...]:
        announced: list[Announcement] = []
        if tx.value > 0 and tx.sender in self._watched:
            announced.append(self._transfer(tx, TransferStatus.PENDING))
        for i, effect in enumerate(read_calldata(tx, self._watched)):
            index = f"{PENDING_INDEX}{i}"
            if isinstance(effect, Move):
                announced.append(
                    Transfer(
                        chain=self.chain,
                        tx_hash=tx.hash,
                        index=index,
                        from_address=effect.sender,
                        to_address=effect.receiver,
                        asset=effect.asset,
                        amount=effect.amount,
                        kind=effect.kind,
                        status=TransferStatus.PENDING,
                    )
                )
            else:
                announced.append(
                    ControlChange(
                        chain=self.chain,
                        index=index,
                        wallet_address=effect.wallet,
                        kind=effect.kind,
                        status=TransferStatus.PENDING,
                        tx_hash=tx.hash,
                        subject=effect.subject,
                        value=effect.value,
                        contract=effect.contract,
                    )
                )
        return tuple(announced)

    def _mined(self, tx: PendingTx, raw: Any) -> _Mined:
        endpoint = self._rpc.endpoint
        r = RawReader(raw, endpoint, _RECEIPT, "result")
        block = BlockRef(r.quantity("blockNumber"), r.hash("blockHash"))
        safe_failed = any(
            entry.address == tx.to and entry.topics[:1] == (EXECUTION_FAILURE_TOPIC,)
            for entry in parse_logs(r.raw.get("logs"), endpoint, _RECEIPT)
        )
        return _Mined(block, not parse_receipt(raw, endpoint).succeeded, safe_failed)

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
        """Pending transactions that concern the watch, announced by the filter since the last
        poll."""
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
        return [tx for tx in txs if tx is not None and self._concerns(tx)]

    def _concerns(self, tx: PendingTx) -> bool:
        return tx.sender in self._watched or concerns(tx.to, tx.input, self._watched)

    def _lookup(self, tx_hash: str) -> PendingTx | None:
        """The transaction if the node holds it unmined; None if mined or unknown."""
        raw = self._rpc.call(_BY_HASH, [tx_hash])
        if raw is None or (isinstance(raw, dict) and raw.get("blockNumber") is not None):
            return None
        tx = parse_pending_tx(raw, self._rpc.endpoint, _BY_HASH, "result")
        if tx.hash != tx_hash:
            raise MalformedRpcResponse(self._rpc.endpoint, _BY_HASH, f"result.hash is {tx.hash}")
        return tx


def _verdicts(announced: tuple[Announcement, ...], mined: _Mined | None) -> list[Announcement]:
    """How the announcements of a transaction that left the mempool are closed (see above)."""
    verdicts: list[Announcement] = []
    for item in announced:
        if mined is not None and not mined.reverted and item.index == "tx":
            continue  # the follower publishes it, confirmed, from its block under this key
        if mined is None or mined.reverted or mined.safe_failed:
            verdicts.append(replace(item, status=TransferStatus.ORPHANED, block=None))
        elif isinstance(item, ControlChange) and item.kind in PENDING_ONLY_KINDS:
            # Nothing in the block will report it: this verdict is the news, not a hand-over.
            verdicts.append(replace(item, status=TransferStatus.EXECUTED, block=mined.block))
        else:
            verdicts.append(replace(item, status=TransferStatus.SUPERSEDED, block=mined.block))
    return verdicts
