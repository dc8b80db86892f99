"""Everything in one EVM block that moves value out of, or control over, a watched wallet.

Four sources, each read once per block: transactions and their receipts (native value of
succeeded transactions), call traces (value moved by contracts: internal transfers), the
block's logs (ERC-20/721/1155 transfers; approvals, Safe owner / threshold / guard / module /
singleton events, EIP-1967 upgrades) and, for watched contract wallets, their implementation
slots (an upgrade need not announce itself). Which trace dialect the node speaks is probed
once (``trace_block`` first, the cheaper); a node with neither is reported once, loudly, and
followed without internal transfers. The pure mapping lives in ``mapping``, ``traces``,
``logs``, ``control`` and ``slots``; this module only asks the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from drainwatch.errors import RetriableRpcError, RpcError
from drainwatch.model import ControlChange, Transfer
from drainwatch.ports import JsonRpc
from watchers.evm.control import CONTROL_TOPICS, control_changes
from watchers.evm.logs import TRANSFER_TOPICS, parse_logs, token_transfers
from watchers.evm.mapping import EvmBlock, EvmTx, Receipt, native_transfers, parse_receipt, touching
from watchers.evm.slots import ImplementationWatch
from watchers.evm.traces import (
    internal_transfers_from_call_tracer,
    internal_transfers_from_trace_block,
)

log = logging.getLogger(__name__)


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


class BlockExtractor:
    def __init__(
        self,
        chain: str,
        rpc: JsonRpc,
        watched: frozenset[str],
        *,
        safes: Iterable[str] = (),
        notice: Callable[[str], None] = log.warning,
    ) -> None:
        self.chain = chain
        self._rpc = rpc
        self._watched = watched
        self._notice = notice
        self._slots = ImplementationWatch(chain, rpc, watched, safes)
        self.dialect: TraceDialect | None = None  # probed on the first block
        self.nonstandard_logs = 0

    def extract(self, block: EvmBlock) -> BlockFacts | None:
        """What the block does to watched wallets; None while a receipt is missing or belongs to
        another block (the node is behind or has moved on: ask again later)."""
        native = self._native(block)
        if native is None:
            return None
        tokens, changes = self._logs(block)
        changes += self._slots.changes(block)
        return BlockFacts(native + self._internal(block) + tokens, changes)

    def transfers(self, block: EvmBlock) -> list[Transfer] | None:
        facts = self.extract(block)
        return None if facts is None else facts.transfers

    def _native(self, block: EvmBlock) -> list[Transfer] | None:
        outcomes: list[tuple[EvmTx, Receipt]] = []
        for tx in touching(block, self._watched):
            raw = self._rpc.call("eth_getTransactionReceipt", [tx.hash])
            receipt = None if raw is None else parse_receipt(raw, self._rpc.endpoint)
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

    def _internal(self, block: EvmBlock) -> list[Transfer]:
        if not block.transactions or self.dialect is TraceDialect.NONE:
            return []
        try:
            raw = self._traces(block)
        except _StateGone as gap:
            # A node without this block's state (pruned): a coverage gap, said for the block,
            # never taken to mean the node cannot trace at all.
            self._notice(
                f"{self.chain}: internal transfers of block {block.ref.height} could not be "
                f"traced ({gap}): that block's value moved by contracts is NOT covered / "
                f"ブロック {block.ref.height} の内部送金はトレースできませんでした"
            )
            return []
        if self.dialect is TraceDialect.GETH:
            hashes = [tx.hash for tx in block.transactions]
            found = internal_transfers_from_call_tracer(
                self.chain, block.ref, block.time, hashes, raw, self._rpc.endpoint
            )
        elif self.dialect is TraceDialect.PARITY:
            found = internal_transfers_from_trace_block(
                self.chain, block.ref, block.time, raw, self._rpc.endpoint
            )
        else:
            return []
        return [t for t in found if self._touches(t)]

    def _traces(self, block: EvmBlock) -> Any:
        """The block's traces in the known dialect; probed again when the endpoint in use no
        longer offers it (a failover to a node of another kind)."""
        if self.dialect is not None:
            try:
                return self._trace(self.dialect, block)
            except RetriableRpcError:
                raise
            except RpcError as exc:
                if not _method_missing(exc):
                    raise _StateGone(str(exc)) from exc
                self.dialect = None
        self.dialect, raw = self._probe(block)
        return raw

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
        self._notice(
            f"{self.chain}: the node offers neither debug_traceBlockByNumber nor trace_block: "
            "value moved by contracts (internal transfers) is NOT watched on this chain / "
            f"{self.chain}: ノードがトレース API を提供していないため、コントラクト経由の内部送金は"
            "監視されません"
        )
        return TraceDialect.NONE, None

    def _trace(self, dialect: TraceDialect, block: EvmBlock) -> Any:
        number = hex(block.ref.height)
        if dialect is TraceDialect.GETH:
            return self._rpc.call(dialect.value, [number, {"tracer": "callTracer"}])
        return self._rpc.call(dialect.value, [number])

    def _logs(self, block: EvmBlock) -> tuple[list[Transfer], list[ControlChange]]:
        # By block hash: the logs of exactly this block, whatever a reorg does meanwhile.
        topics = [*TRANSFER_TOPICS, *CONTROL_TOPICS]
        query = {"blockHash": block.ref.hash, "topics": [topics]}
        logs = parse_logs(self._rpc.call("eth_getLogs", [query]), self._rpc.endpoint)
        tokens = token_transfers(
            self.chain, block.ref, block.time, logs, self._watched, self._rpc.endpoint
        )
        control = control_changes(self.chain, block.ref, block.time, logs, self._watched)
        self.nonstandard_logs += len(tokens.nonstandard) + len(control.nonstandard)
        return list(tokens.transfers), list(control.changes)

    def _touches(self, t: Transfer) -> bool:
        return t.from_address in self._watched or t.to_address in self._watched
