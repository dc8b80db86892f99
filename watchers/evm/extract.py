"""Everything in one EVM block that moves value out of, or control over, a watched wallet.

Four sources, each read once per block: native value (the transactions' own), internal transfers
(value moved by contracts, from call traces), the block's logs (ERC-20/721/1155 transfers;
approvals, Safe owner / threshold / guard / module / singleton events, EIP-1967 upgrades) and,
for watched contract wallets, their implementation slots (an upgrade need not announce itself).

How much is asked of the node depends on what it offers, probed once (and again after a
failover to a node that no longer offers it):

- ``trace_block`` (erigon, reth, nethermind, anvil): the block's header with transaction hashes
  and its traces are enough: every transaction's top-level frame carries its value and whether
  it failed, the frames below it the internal transfers. No full block, no receipts.
- ``debug_traceBlockByNumber`` with the callTracer (geth): the full block, the receipts of the
  transactions that touch a watched address (``eth_getBlockReceipts`` when offered and several
  are needed, else one JSON-RPC batch), and the call traces for internal transfers.
- neither: as for geth, without internal transfers; said once, loudly.

A block whose state the node has pruned is a coverage gap for its internal transfers, said for
that block; its native value then comes from the full block and receipts. The pure mapping lives
in ``mapping``, ``traces``, ``logs``, ``control`` and ``slots``; this module only asks the node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from drainwatch.errors import RetriableRpcError, RpcError
from drainwatch.model import ControlChange, Transfer
from drainwatch.ports import JsonRpc
from watchers.evm.control import CONTROL_TOPICS, control_changes
from watchers.evm.logs import (
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPICS,
    EvmLog,
    parse_logs,
    token_transfers,
)
from watchers.evm.mapping import (
    EvmBlock,
    EvmTx,
    Receipt,
    native_transfers,
    parse_block,
    parse_block_header,
    parse_block_receipts,
    parse_receipt,
    touching,
)
from watchers.evm.slots import ImplementationWatch
from watchers.evm.traces import (
    TracesMismatch,
    internal_transfers_from_call_tracer,
    value_transfers_from_trace_block,
)
from watchers.follow import NodeInconsistent
from watchers.jsonrpc import Call, call_many

log = logging.getLogger(__name__)


#: "Nothing kept" for the prefetched traces.
_APART = object()


class _Apart(Exception):
    """A batch that is better asked call by call."""


#: Blocks whose prefetched answers are kept at most (a backfill reads a window ahead).
_PREFETCH_LIMIT = 256

#: The log topics read: token transfers and changes of control.
_TOPICS = [*TRANSFER_TOPICS, *CONTROL_TOPICS]


#: ERC-1155's transfer events, whose third indexed argument is the receiver.
_ERC1155_TOPICS = (TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC)

#: How nodes and providers say a log query returns too much (geth, erigon, Alchemy, Infura,
#: QuickNode wordings).
_TOO_LARGE = (
    "query returned more than",
    "too many",
    "limit exceeded",
    "response size",
    "range too large",
    "block range",
    "exceed",
)


#: One ``eth_getLogs`` filter for the logs that can concern the given (watched) addresses.
_LogFilter = Callable[[list[str]], dict[str, Any]]


def _words(addresses: list[str]) -> list[str]:
    """Addresses as the 32-byte topic words of indexed arguments."""
    return ["0x" + "0" * 24 + a.removeprefix("0x") for a in addresses]


#: The logs that can concern a watched address, so a node sends only those, not every token
#: transfer of the block: a watched address as the first or second indexed argument
#: (ERC-20/721 ``Transfer`` from / to, ``Approval`` and ``ApprovalForAll`` owner, ERC-1155
#: ``TransferSingle`` / ``TransferBatch`` from) or the third (ERC-1155 to), or the watched
#: contract as the emitter (a Safe's owner, threshold, guard, module and singleton events, a
#: proxy's ``Upgraded``).
_LOG_FILTERS: tuple[_LogFilter, ...] = (
    lambda addresses: {"topics": [_TOPICS, _words(addresses)]},
    lambda addresses: {"topics": [_TOPICS, None, _words(addresses)]},
    lambda addresses: {"topics": [list(_ERC1155_TOPICS), None, None, _words(addresses)]},
    lambda addresses: {"address": addresses, "topics": [_TOPICS]},
)


def _too_large(exc: RpcError) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _TOO_LARGE)


def _merged(answers: list[list[EvmLog]]) -> list[EvmLog]:
    """The logs of several overlapping filters, each once, in block order."""
    seen: dict[tuple[str, int], EvmLog] = {}
    for logs in answers:
        for entry in logs:
            seen.setdefault((entry.tx_hash, entry.log_index), entry)
    return sorted(seen.values(), key=lambda entry: entry.log_index)


class _StateGone(Exception):
    """The node traces, but not this block (its state is pruned, say)."""


_MISSING = (
    "-32601",
    "method not found",
    "does not exist",
    "not supported",
    "not available",
    "unknown method",
    "unsupported method",
)


def _method_missing(exc: RpcError) -> bool:
    """Whether an error answer says the method is not offered at all (as opposed to: not for
    this block)."""
    text = str(exc).lower()
    return any(marker in text for marker in _MISSING)


class TraceDialect(StrEnum):
    GETH = "debug_traceBlockByNumber"
    PARITY = "trace_block"
    NONE = "none"


@dataclass(frozen=True)
class BlockFacts:
    transfers: list[Transfer]
    changes: list[ControlChange]


#: How often a node's missing capabilities (trace_block, eth_getBlockReceipts) are asked about
#: again: what was learned may come from a backup answering while the primary was down.
REPROBE_SECONDS = 300

#: Receipts needed in one block from which ``eth_getBlockReceipts`` (all of the block's) is
#: asked for instead of the transactions' own receipts.
BLOCK_RECEIPTS_FROM = 2


class BlockExtractor:
    def __init__(
        self,
        chain: str,
        rpc: JsonRpc,
        watched: frozenset[str],
        *,
        safes: Iterable[str] = (),
        notice: Callable[[str], None] = log.warning,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self._rpc = rpc
        self._watched = watched
        self._notice = notice
        self._slots = ImplementationWatch(chain, rpc, watched, safes)
        self.dialect: TraceDialect | None = None  # probed on the first block with transactions
        self.block_receipts: bool | None = None  # eth_getBlockReceipts offered? probed on need
        self.nonstandard_logs = 0
        self._clock = clock
        self._reprobe_at = 0.0  # when a dialect short of trace_block is asked about again
        self._untraced_from: int | None = None  # first block followed without traces
        self._receipts_reprobe_at = 0.0
        # Traces read together with a block's header (``_fetch_together``), by block hash.
        self._prefetched_traces: OrderedDict[str, Any] = OrderedDict()
        self._prefetch_lock = threading.Lock()

    def fetch(self, height: int) -> EvmBlock | None:
        """The block at ``height`` in the form the node's dialect needs (header and transaction
        hashes where ``trace_block`` is offered or not yet probed, else full); None while the
        node has not got it."""
        if self.dialect is TraceDialect.PARITY:
            try:
                return self._fetch_together(height)
            except _Apart:
                pass
        full = self.dialect not in (None, TraceDialect.PARITY)
        raw = self._rpc.call("eth_getBlockByNumber", [hex(height), full])
        return self._block_at(height, raw, full=full)

    def _fetch_together(self, height: int) -> EvmBlock | None:
        """On a node that speaks trace_block: the header and the traces of the block at
        ``height`` in one JSON-RPC batch (the traces are checked against the header's hash and
        transactions when read; the logs are asked for by that hash afterwards). Raises
        ``_Apart`` when the batch failed for a reason the calls one by one sort out better (a
        block whose state is pruned, say)."""
        number = hex(height)
        calls: list[Call] = [
            ("eth_getBlockByNumber", [number, False]),
            (TraceDialect.PARITY.value, [number]),
        ]
        try:
            raw_block, raw_traces = call_many(self._rpc, calls)
        except RetriableRpcError:
            raise
        except RpcError as exc:
            log.info("%s: block %d read call by call: %s", self.chain, height, exc)
            raise _Apart from exc
        block = self._block_at(height, raw_block, full=False)
        if block is not None and raw_traces is not None and block.tx_hashes:
            self._keep(block.ref.hash, raw_traces)
        return block

    def _block_at(self, height: int, raw: Any, *, full: bool) -> EvmBlock | None:
        """An ``eth_getBlockByNumber(height, full)`` answer, parsed in the form asked for; None
        while the node has not got it."""
        if raw is None:
            return None
        block = (parse_block if full else parse_block_header)(raw, self._rpc.endpoint)
        if block.ref.height != height:
            raise NodeInconsistent(
                f"{self._rpc.endpoint}: asked for block {height}, got {block.ref.height}"
            )
        return block

    def _get_logs(self, where: dict[str, Any], kind: _LogFilter, addresses: list[str]) -> list[Any]:
        """One filter's answer(s); a node that refuses it as too large is asked again with the
        addresses split in halves, down to one address."""
        try:
            return [self._rpc.call("eth_getLogs", [{**where, **kind(addresses)}])]
        except RetriableRpcError:
            raise
        except RpcError as exc:
            if not _too_large(exc) or len(addresses) < 2:
                raise
            log.warning("%s: %s; asking in two halves", self.chain, exc)
            half = len(addresses) // 2
            return [
                *self._get_logs(where, kind, addresses[:half]),
                *self._get_logs(where, kind, addresses[half:]),
            ]

    def _keep(self, block_hash: str, traces: Any) -> None:
        with self._prefetch_lock:  # backfill workers share this extractor
            self._prefetched_traces[block_hash] = traces
            while len(self._prefetched_traces) > _PREFETCH_LIMIT:  # fetched, never extracted
                self._prefetched_traces.popitem(last=False)

    def extract(self, block: EvmBlock) -> BlockFacts | None:
        """What the block does to watched wallets; None while a receipt is missing or belongs to
        another block (the node is behind or has moved on: ask again later)."""
        value = self.value_transfers(block)
        if value is None:
            return None
        tokens, changes = self._logs(block)
        changes += self._slots.changes(block)
        return BlockFacts(value + tokens, changes)

    def transfers(self, block: EvmBlock) -> list[Transfer] | None:
        facts = self.extract(block)
        return None if facts is None else facts.transfers

    def value_transfers(self, block: EvmBlock) -> list[Transfer] | None:
        """Native and internal transfers touching a watched address, in block order; None
        while the node cannot give them all yet."""
        if not block.tx_hashes:
            return []
        # The dialect is read once into a local: in a backfill several workers share this
        # extractor, and another may be probing meanwhile.
        dialect, raw = self._traces_of(block)
        endpoint = self._rpc.endpoint
        # No traces yet, or (trace_block) none for a block with transactions: a backend that
        # has the block but not yet its execution. Ask again later.
        not_ready = raw is None or (dialect is TraceDialect.PARITY and raw == [])
        if not_ready and dialect in (TraceDialect.PARITY, TraceDialect.GETH):
            log.warning("%s: traces of block %d not ready", self.chain, block.ref.height)
            return None
        if raw is not None and dialect is TraceDialect.PARITY:
            _same_block(raw, block, endpoint)
            try:
                found, internal = value_transfers_from_trace_block(
                    self.chain, block.ref, block.time, block.tx_hashes, raw, endpoint
                )
            except TracesMismatch as exc:
                # Traces that do not cover the block's transactions one for one (a chain with
                # system transactions, or a node bug): the native value comes from the full
                # block and the receipts instead, and this block's internal transfers are a gap.
                self._gap(block, str(exc))
                raw = None
            else:
                native = [t for t in found if t.amount > 0 and self._touches(t)]
                return native + [t for t in internal if self._touches(t)]
        full = block if block.full else self._full(block)
        if full is None:
            return None
        receipts_based = self._native(full)
        if receipts_based is None:
            return None
        internal = []
        if raw is not None and dialect is TraceDialect.GETH:
            internal = internal_transfers_from_call_tracer(
                self.chain, block.ref, block.time, list(block.tx_hashes), raw, endpoint
            )
        return receipts_based + [t for t in internal if self._touches(t)]

    def _traces_of(self, block: EvmBlock) -> tuple[TraceDialect | None, Any]:
        """The dialect used and the block's traces: ``(NONE, None)`` without tracing, ``(None,
        None)`` for a coverage gap (already reported), ``(dialect, None)`` when not ready."""
        dialect = self.dialect
        if dialect is not TraceDialect.PARITY and self._clock() >= self._reprobe_at:
            # Learned from whichever node answered (a backup without traces while the primary
            # was down, say): asked again now and then, never taken as final for the run.
            dialect = None
        if dialect is TraceDialect.NONE:
            return dialect, None
        try:
            dialect, raw = self._traces(dialect, block)
        except _StateGone as gap:
            # A node without this block's state (pruned): a coverage gap, said for the block,
            # never taken to mean the node cannot trace at all.
            self._gap(block, str(gap))
            return None, None
        if dialect is TraceDialect.NONE:
            self._untraced_from = self._untraced_from or block.ref.height
        elif self._untraced_from is not None:
            first, self._untraced_from = self._untraced_from, None
            self._notice(
                f"{self.chain}: internal transfers are traced again from block "
                f"{block.ref.height}; blocks {first}–{block.ref.height - 1} were not traced: "
                f"run `drainwatch backfill CONFIG --chain {self.chain} --from {first} --to "
                f"{block.ref.height - 1}` to cover them / ブロック {block.ref.height} から"
                f"内部送金のトレースを再開しました。ブロック {first}〜{block.ref.height - 1} は"
                " backfill で補ってください"
            )
        return dialect, raw

    def _gap(self, block: EvmBlock, reason: str) -> None:
        self._notice(
            f"{self.chain}: internal transfers of block {block.ref.height} could not be "
            f"traced ({reason}): that block's value moved by contracts is NOT covered / "
            f"ブロック {block.ref.height} の内部送金はトレースできませんでした"
        )

    def _full(self, block: EvmBlock) -> EvmBlock | None:
        """The same block (by hash: whatever a reorg does meanwhile) with full transactions."""
        raw = self._rpc.call("eth_getBlockByHash", [block.ref.hash, True])
        if raw is None:
            return None  # replaced meanwhile: the follower sees the new branch next time
        full = parse_block(raw, self._rpc.endpoint)
        if full.ref != block.ref or full.tx_hashes != block.tx_hashes:
            raise NodeInconsistent(
                f"{self._rpc.endpoint}: block {block.ref.hash} read twice, differently"
            )
        return full

    def _native(self, block: EvmBlock) -> list[Transfer] | None:
        txs = touching(block, self._watched)
        receipts = self._receipts(block, [tx.hash for tx in txs])
        if receipts is None:
            return None
        outcomes: list[tuple[EvmTx, Receipt]] = []
        for tx, receipt in zip(txs, receipts, strict=True):
            if receipt is None or receipt.block_hash != block.ref.hash:
                log.warning(
                    "%s: receipt of %s not ready for block %d",
                    self.chain,
                    tx.hash,
                    block.ref.height,
                )
                return None
            outcomes.append((tx, receipt))
        return native_transfers(self.chain, block, outcomes)

    def _receipts(self, block: EvmBlock, hashes: list[str]) -> list[Receipt | None] | None:
        """The receipts of ``hashes`` (None for one the node has not got); None when the
        block's receipts as a whole are not available yet."""
        if not hashes:
            return []
        if self.block_receipts is False and self._clock() >= self._receipts_reprobe_at:
            self.block_receipts = None
        if len(hashes) >= BLOCK_RECEIPTS_FROM and self.block_receipts is not False:
            by_block = self._block_receipts(block)
            if self.block_receipts:  # offered (else: one by one below)
                return None if by_block is None else [by_block.get(h) for h in hashes]
        calls = [("eth_getTransactionReceipt", [h]) for h in hashes]
        answers = call_many(self._rpc, calls)
        return [None if raw is None else parse_receipt(raw, self._rpc.endpoint) for raw in answers]

    def _block_receipts(self, block: EvmBlock) -> dict[str, Receipt] | None:
        try:
            raw = self._rpc.call("eth_getBlockReceipts", [block.ref.hash])
        except RetriableRpcError:
            raise
        except RpcError as exc:
            if not _method_missing(exc):
                raise
            log.info("%s: eth_getBlockReceipts not offered: %s", self.chain, exc)
            self.block_receipts = False
            self._receipts_reprobe_at = self._clock() + REPROBE_SECONDS
            return None
        self.block_receipts = True
        if raw is None:
            return None
        receipts = parse_block_receipts(raw, self._rpc.endpoint)
        return {r.tx_hash: r for r in receipts if r.tx_hash is not None}

    def _traces(self, known: TraceDialect | None, block: EvmBlock) -> tuple[TraceDialect, Any]:
        """The block's traces in the known dialect; probed again when the endpoint in use no
        longer offers it (a failover to a node of another kind)."""
        if known is not None:
            try:
                return known, self._trace(known, block)
            except RetriableRpcError:
                raise
            except RpcError as exc:
                if not _method_missing(exc):
                    raise _StateGone(str(exc)) from exc
        dialect, raw = self._probe(block)
        if dialect is not self.dialect and dialect is TraceDialect.NONE:
            self._notice(
                f"{self.chain}: the node offers neither debug_traceBlockByNumber nor "
                "trace_block: value moved by contracts (internal transfers) is NOT watched on "
                f"this chain from block {block.ref.height} (asked again every "
                f"{REPROBE_SECONDS // 60} minutes) / {self.chain}: ノードがトレース API を提供して"
                "いないため、コントラクト経由の内部送金は監視されません（定期的に再確認します）"
            )
        self.dialect = dialect
        self._reprobe_at = self._clock() + REPROBE_SECONDS
        return dialect, raw

    def _probe(self, block: EvmBlock) -> tuple[TraceDialect, Any]:
        # trace_block first: where a node offers both (anvil, erigon, reth), it answers the same
        # facts far cheaper than re-executing the block under the callTracer (measured on
        # anvil: ~2.5 ms against ~965 ms for a 100-transaction block; bench/RESULTS.md).
        for dialect in (TraceDialect.PARITY, TraceDialect.GETH):
            try:
                return dialect, self._trace(dialect, block)
            except RetriableRpcError:
                raise  # the node is down or busy: that says nothing about what it offers
            except RpcError as exc:
                if not _method_missing(exc):
                    # Offered, but not for this block (pruned state): remember the dialect.
                    self.dialect = dialect
                    raise _StateGone(str(exc)) from exc
                log.info("%s: %s not offered: %s", self.chain, dialect, exc)
        return TraceDialect.NONE, None

    def _trace(self, dialect: TraceDialect, block: EvmBlock) -> Any:
        if dialect is TraceDialect.PARITY:
            with self._prefetch_lock:
                raw = self._prefetched_traces.pop(block.ref.hash, _APART)
            if raw is not _APART:
                return raw
        number = hex(block.ref.height)
        if dialect is TraceDialect.GETH:
            return self._rpc.call(dialect.value, [number, {"tracer": "callTracer"}])
        return self._rpc.call(dialect.value, [number])

    def _logs(self, block: EvmBlock) -> tuple[list[Transfer], list[ControlChange]]:
        # By block hash: the logs of exactly this block, whatever a reorg does meanwhile.
        # By block hash, always: a backend that lacks the block answers an error, where a query
        # by height may answer an empty list that nothing could tell from "no logs".
        where = {"blockHash": block.ref.hash}
        addresses = sorted(self._watched)
        kinds = _LOG_FILTERS if addresses else ()
        try:
            calls = [("eth_getLogs", [{**where, **kind(addresses)}]) for kind in kinds]
            answers = call_many(self._rpc, calls)
        except RetriableRpcError:
            raise
        except RpcError:  # one filter refused (too large, say): one by one, split if need be
            answers = [found for kind in kinds for found in self._get_logs(where, kind, addresses)]
        logs = _merged([parse_logs(raw, self._rpc.endpoint) for raw in answers])
        if stray := [entry for entry in logs if entry.block_hash != block.ref.hash]:
            raise NodeInconsistent(
                f"{self._rpc.endpoint}: a log of block {block.ref.height} is of block "
                f"{stray[0].block_hash}, not {block.ref.hash} (a reorg meanwhile?)"
            )
        tokens = token_transfers(
            self.chain, block.ref, block.time, logs, self._watched, self._rpc.endpoint
        )
        control = control_changes(self.chain, block.ref, block.time, logs, self._watched)
        self.nonstandard_logs += len(tokens.nonstandard) + len(control.nonstandard)
        return list(tokens.transfers), list(control.changes)

    def _touches(self, t: Transfer) -> bool:
        return t.from_address in self._watched or t.to_address in self._watched


def _same_block(raw: Any, block: EvmBlock, endpoint: str) -> None:
    """Traces asked for by height that belong to another block at that height: a reorg between
    the header and the traces (or backends that disagree), asked again later, not garbage."""
    if not isinstance(raw, list):
        return  # the mapping names what is wrong
    for entry in raw:
        found = entry.get("blockHash") if isinstance(entry, dict) else None
        if isinstance(found, str) and found.lower() != block.ref.hash:
            raise NodeInconsistent(
                f"{endpoint}: the traces of block {block.ref.height} are of block {found}, not "
                f"{block.ref.hash} (a reorg meanwhile?)"
            )
