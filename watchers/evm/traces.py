"""Internal native transfers (value moved by contracts) from a block's call traces. Pure: no I/O.

Two node dialects give the same facts: geth's ``debug_traceBlockByNumber`` with the callTracer
(one nested frame tree per transaction) and the parity family's ``trace_block`` (openethereum,
erigon, reth, anvil: a flat list of traces addressed by ``traceAddress``). Both functions return
the same transfers, in the same order, for the same block.

A transfer is emitted for every value-carrying frame *below* the transaction's top-level frame
(whose value is the transaction's own, reported as its native transfer): CALL, CALLCODE, CREATE,
CREATE2 and SELFDESTRUCT with a value above zero. DELEGATECALL and STATICCALL move nothing, whatever
value a tracer prints for them. A frame that failed (``error`` set) was reverted: it emits nothing,
and neither does anything below it.

``index`` is ``trace:`` followed by the frame's path of child positions from the top-level frame,
joined by dots: the first child of the top-level frame is ``trace:0``, that child's second child
``trace:0.1``. It equals the parity ``traceAddress``, so it is stable and unique per transaction.

A CALLCODE runs another contract's code in the caller's own account, so its value never leaves
the caller: the recipient is the caller itself. (The callTracer's ``to`` is the code's address,
parity's is the caller; both dialects agree once this is applied.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import NATIVE_ASSET_ID, BlockRef, Transfer, TransferKind, TransferStatus
from watchers.evm.mapping import RawReader

_GETH = "debug_traceBlockByNumber"
_PARITY = "trace_block"
_GETH_VALUE_TYPES = frozenset({"CALL", "CALLCODE", "CREATE", "CREATE2", "SELFDESTRUCT"})
_GETH_NO_VALUE_TYPES = frozenset({"DELEGATECALL", "STATICCALL"})
_PARITY_CALL_TYPES = frozenset({"call", "callcode", "delegatecall", "staticcall"})


class TracesMismatch(MalformedRpcResponse):
    """Well-formed traces whose top-level frames are not the block's transactions one for one
    (a chain with system transactions, or a node bug): the caller can read the value another
    way, unlike traces that are garbage."""


@dataclass(frozen=True)
class _Move:
    tx_hash: str
    path: tuple[int, ...]
    from_address: str
    to_address: str
    value: int


def internal_transfers_from_call_tracer(
    chain: str,
    block: BlockRef,
    block_time: datetime,
    tx_hashes: Sequence[str],
    raw: Any,
    endpoint: str = "node",
) -> list[Transfer]:
    """A ``debug_traceBlockByNumber(N, {"tracer": "callTracer"})`` result.

    ``tx_hashes`` are the block's transaction hashes in block order: older geth answers carry no
    ``txHash``, so the i-th trace belongs to the i-th transaction; a ``txHash``, when present, must
    agree.
    """
    if not isinstance(raw, list):
        raise MalformedRpcResponse(endpoint, _GETH, "traces is not a list")
    if len(raw) != len(tx_hashes):
        reason = f"traces has {len(raw)} entries for {len(tx_hashes)} transactions"
        raise MalformedRpcResponse(endpoint, _GETH, reason)
    moves: list[_Move] = []
    for i, (entry, tx_hash) in enumerate(zip(raw, tx_hashes, strict=True)):
        r = RawReader(entry, endpoint, _GETH, f"traces[{i}]")
        if r.raw.get("txHash") is not None and r.hash("txHash") != tx_hash.lower():
            raise r.fail("txHash", f"is not the block's transaction {i}: {tx_hash}")
        top = RawReader(r.raw.get("result"), endpoint, _GETH, f"traces[{i}].result")
        if top.raw.get("error") is None:
            moves.extend(_geth_moves(top, tx_hash.lower()))
    return [t for t in _transfers(chain, block, block_time, moves) if t.amount > 0]


def _geth_moves(top: RawReader, tx_hash: str) -> list[_Move]:
    """Depth-first, in call order, without recursion: call depth reaches 1024 frames."""
    moves: list[_Move] = []
    stack: list[tuple[RawReader, tuple[int, ...]]] = [(top, ())]
    while stack:
        frame, path = stack.pop()
        calls = frame.raw.get("calls", [])
        if not isinstance(calls, list):
            raise frame.fail("calls", "is not a list")
        children = []
        for j, call in enumerate(calls):
            child = RawReader(call, frame.endpoint, _GETH, f"{frame.where}.calls[{j}]")
            if child.raw.get("error") is None:
                children.append((child, (*path, j)))
        stack.extend(reversed(children))
        if path:
            move = _geth_move(frame, tx_hash, path)
            if move is not None:
                moves.append(move)
    return moves


def _geth_move(r: RawReader, tx_hash: str, path: tuple[int, ...]) -> _Move | None:
    kind = r.raw.get("type")
    if kind in _GETH_NO_VALUE_TYPES:
        return None
    if kind not in _GETH_VALUE_TYPES:
        raise r.fail("type", f"is not a known call type: {kind!r}")
    sender, callee = _address(r, "from"), _address(r, "to")
    recipient = sender if kind == "CALLCODE" else callee
    return _Move(tx_hash, path, sender, recipient, r.quantity("value"))


def internal_transfers_from_trace_block(
    chain: str, block: BlockRef, block_time: datetime, raw: Any, endpoint: str = "node"
) -> list[Transfer]:
    """A ``trace_block`` result (parity / openethereum / erigon / reth / anvil)."""
    return value_transfers_from_trace_block(chain, block, block_time, None, raw, endpoint)[1]


def native_transfers_from_trace_block(
    chain: str,
    block: BlockRef,
    block_time: datetime,
    tx_hashes: Sequence[str],
    raw: Any,
    endpoint: str = "node",
) -> list[Transfer]:
    """Every transaction's own value transfer, from its top-level frame in a ``trace_block``
    result (see ``value_transfers_from_trace_block``)."""
    return value_transfers_from_trace_block(chain, block, block_time, tx_hashes, raw, endpoint)[0]


def value_transfers_from_trace_block(
    chain: str,
    block: BlockRef,
    block_time: datetime,
    tx_hashes: Sequence[str] | None,
    raw: Any,
    endpoint: str = "node",
) -> tuple[list[Transfer], list[Transfer]]:
    """A ``trace_block`` result read once: (native, internal) transfers.

    Native: every transaction's own value transfer, from its top-level frame: what
    ``mapping.native_transfers`` gives from the full block and the receipts, in one call. A
    failed transaction (top-level ``error``) moves nothing; a creation pays the new contract.
    Value-0 transactions are included, as in ``native_transfers``; callers select. Given
    ``tx_hashes`` (the block's transactions in order, from its header), the traces must hold
    exactly one top-level frame for each, in that order, or the answer is refused.

    Internal: the value-carrying frames below the top-level ones (module docstring).
    """
    if not isinstance(raw, list):
        raise MalformedRpcResponse(endpoint, _PARITY, "traces is not a list")
    block_hash = block.hash.lower()
    tops: list[_Move] = []
    top_hashes: list[str] = []
    moves: list[_Move] = []
    failed: set[tuple[str, tuple[int, ...]]] = set()
    order: dict[str, int] = {}
    for i, entry in enumerate(raw):
        r = RawReader(entry, endpoint, _PARITY, f"traces[{i}]")
        if r.raw.get("type") == "reward":
            continue
        if r.raw.get("blockHash") is not None and r.hash("blockHash") != block_hash:
            raise r.fail("blockHash", f"is not the hash of block {block.height}: {block.hash}")
        tx_hash, path = r.hash("transactionHash"), _trace_address(r)
        order.setdefault(tx_hash, len(order))
        if not path:
            top_hashes.append(tx_hash)
        if r.raw.get("error") is not None:
            failed.add((tx_hash, path))
        elif path:
            move = _parity_move(r, tx_hash, path)
            if move is not None:
                moves.append(move)
        else:
            tops.append(_parity_top(r, tx_hash))
    if missing := order.keys() - set(top_hashes):
        reason = f"traces lack the top-level trace of {sorted(missing)[0]}"
        raise MalformedRpcResponse(endpoint, _PARITY, reason)
    if tx_hashes is not None:
        expected = [h.lower() for h in tx_hashes]
        if top_hashes != expected:
            reason = (
                f"traces have top-level frames for {len(top_hashes)} transactions, the block "
                f"has {len(expected)}"
                if len(top_hashes) != len(expected)
                else "the traces' transactions are not the block's, in its order"
            )
            raise TracesMismatch(endpoint, _PARITY, reason)
    kept = [m for m in moves if not _below_failure(m, failed)]
    kept.sort(key=lambda m: (order[m.tx_hash], m.path))
    internal = [t for t in _transfers(chain, block, block_time, kept) if t.amount > 0]
    return _transfers(chain, block, block_time, tops), internal


def _parity_top(r: RawReader, tx_hash: str) -> _Move:
    kind = r.raw.get("type")
    action = RawReader(r.raw.get("action"), r.endpoint, _PARITY, f"{r.where}.action")
    sender = _address(action, "from")
    if kind == "call":
        return _Move(tx_hash, (), sender, _address(action, "to"), action.quantity("value"))
    if kind == "create":
        result = RawReader(r.raw.get("result"), r.endpoint, _PARITY, f"{r.where}.result")
        return _Move(tx_hash, (), sender, _address(result, "address"), action.quantity("value"))
    raise r.fail("type", f"is not a transaction's top-level trace type: {kind!r}")


def _below_failure(move: _Move, failed: set[tuple[str, tuple[int, ...]]]) -> bool:
    """Whether an ancestor (the top-level frame included) failed and so reverted this frame."""
    return any((move.tx_hash, move.path[:n]) in failed for n in range(len(move.path)))


def _trace_address(r: RawReader) -> tuple[int, ...]:
    value = r.raw.get("traceAddress")
    if not isinstance(value, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value
    ):
        raise r.fail("traceAddress", f"is not a list of child positions: {value!r}")
    return tuple(value)


def _parity_move(r: RawReader, tx_hash: str, path: tuple[int, ...]) -> _Move | None:
    kind = r.raw.get("type")
    action = RawReader(r.raw.get("action"), r.endpoint, _PARITY, f"{r.where}.action")
    if kind == "call":
        call_type = action.raw.get("callType")
        if call_type not in _PARITY_CALL_TYPES:
            raise action.fail("callType", f"is not a known call type: {call_type!r}")
        if call_type in ("delegatecall", "staticcall"):
            return None
        sender, callee = _address(action, "from"), _address(action, "to")
        recipient = sender if call_type == "callcode" else callee
        return _Move(tx_hash, path, sender, recipient, action.quantity("value"))
    if kind == "create":
        result = RawReader(r.raw.get("result"), r.endpoint, _PARITY, f"{r.where}.result")
        created = _address(result, "address")
        return _Move(tx_hash, path, _address(action, "from"), created, action.quantity("value"))
    if kind in ("suicide", "selfdestruct"):
        contract, heir = _address(action, "address"), _address(action, "refundAddress")
        return _Move(tx_hash, path, contract, heir, action.quantity("balance"))
    raise r.fail("type", f"is not a known trace type: {kind!r}")


def _address(r: RawReader, field: str) -> str:
    address = r.address(field)
    assert address is not None  # not optional: a missing address has raised
    return address


def _transfers(
    chain: str, block: BlockRef, block_time: datetime, moves: Sequence[_Move]
) -> list[Transfer]:
    """A transaction's own value (its top-level frame, path ``()``: index ``tx``) or a frame
    below it (index ``trace:`` and the path); zero values are kept, callers select."""
    return [
        Transfer(
            chain=chain,
            tx_hash=m.tx_hash,
            index="trace:" + ".".join(map(str, m.path)) if m.path else "tx",
            from_address=m.from_address,
            to_address=m.to_address,
            asset=NATIVE_ASSET_ID,
            amount=m.value,
            kind=TransferKind.INTERNAL if m.path else TransferKind.NATIVE,
            status=TransferStatus.CONFIRMED,
            block=block,
            block_time=block_time,
        )
        for m in moves
    ]
