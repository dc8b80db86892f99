"""Raw EVM JSON-RPC answers → typed domain objects, once, at the edge. Pure: no I/O.

Every hex field is parsed strictly: a missing field, a quantity that is not ``0x``-hex or a hash
of the wrong length raises ``MalformedRpcResponse`` naming the field, never a silently different
value. Addresses are kept in lower case (the chain's canonical form); display code checksums them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import (
    NATIVE_ASSET_ID,
    BlockRef,
    Transfer,
    TransferKind,
    TransferStatus,
)

_QUANTITY = re.compile(r"^0x[0-9a-fA-F]+$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class EvmTx:
    hash: str
    position: int
    from_address: str
    to_address: str | None  # None for contract creation
    value: int


@dataclass(frozen=True)
class EvmBlock:
    """A block as read: with its full transactions (``full``), or only their hashes (the
    header form, ``eth_getBlockByNumber(N, false)``, enough where the node's traces carry every
    transaction's value)."""

    ref: BlockRef
    parent_hash: str
    time: datetime
    transactions: tuple[EvmTx, ...]
    tx_hashes: tuple[str, ...] = ()
    full: bool = True


class RawReader:
    """Field access on one raw object that names the field and the method in every error."""

    def __init__(self, raw: Any, endpoint: str, method: str, where: str) -> None:
        if not isinstance(raw, Mapping):
            raise MalformedRpcResponse(endpoint, method, f"{where} is not an object")
        self.raw = raw
        self.endpoint, self.method, self.where = endpoint, method, where

    def fail(self, field: str, reason: str) -> MalformedRpcResponse:
        return MalformedRpcResponse(self.endpoint, self.method, f"{self.where}.{field} {reason}")

    def quantity(self, field: str) -> int:
        value = self.raw.get(field)
        if not isinstance(value, str) or not _QUANTITY.match(value):
            raise self.fail(field, f"is not a hex quantity: {value!r}")
        return int(value, 16)

    def hash(self, field: str) -> str:
        value = self.raw.get(field)
        if not isinstance(value, str) or not _HASH.match(value):
            raise self.fail(field, f"is not a 32-byte hex hash: {value!r}")
        return value.lower()

    def address(self, field: str, *, optional: bool = False) -> str | None:
        value = self.raw.get(field)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not _ADDRESS.match(value):
            raise self.fail(field, f"is not a 20-byte hex address: {value!r}")
        return value.lower()


def parse_quantity(value: Any, endpoint: str, method: str) -> int:
    """A bare hex-quantity result (``eth_blockNumber``, ``eth_chainId``), strictly."""
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise MalformedRpcResponse(endpoint, method, f"result is not a hex quantity: {value!r}")
    return int(value, 16)


def parse_block(raw: Any, endpoint: str = "node") -> EvmBlock:
    """An ``eth_getBlockByNumber(..., true)`` result (full transaction objects)."""
    method = "eth_getBlockByNumber"
    r = RawReader(raw, endpoint, method, "block")
    ref = BlockRef(height=r.quantity("number"), hash=r.hash("hash"))
    txs_raw = r.raw.get("transactions")
    if not isinstance(txs_raw, list):
        raise r.fail("transactions", "is not a list")
    txs = tuple(_parse_tx(tx, endpoint, method, i) for i, tx in enumerate(txs_raw))
    return EvmBlock(
        ref=ref,
        parent_hash=r.hash("parentHash"),
        time=datetime.fromtimestamp(r.quantity("timestamp"), UTC),
        transactions=txs,
        tx_hashes=tuple(tx.hash for tx in txs),
    )


def parse_block_header(raw: Any, endpoint: str = "node") -> EvmBlock:
    """An ``eth_getBlockByNumber(..., false)`` result: the header and the transaction hashes."""
    r = RawReader(raw, endpoint, "eth_getBlockByNumber", "block")
    hashes = r.raw.get("transactions")
    if not isinstance(hashes, list):
        raise r.fail("transactions", "is not a list")
    for i, tx_hash in enumerate(hashes):
        if not isinstance(tx_hash, str) or not _HASH.match(tx_hash):
            raise r.fail(f"transactions[{i}]", f"is not a 32-byte hex hash: {tx_hash!r}")
    return EvmBlock(
        ref=BlockRef(height=r.quantity("number"), hash=r.hash("hash")),
        parent_hash=r.hash("parentHash"),
        time=datetime.fromtimestamp(r.quantity("timestamp"), UTC),
        transactions=(),
        tx_hashes=tuple(h.lower() for h in hashes),
        full=False,
    )


def parse_block_ref(raw: Any, endpoint: str = "node") -> tuple[BlockRef, str]:
    """Height, hash and parent hash of any block object (with or without full transactions)."""
    r = RawReader(raw, endpoint, "eth_getBlockByNumber", "block")
    return BlockRef(height=r.quantity("number"), hash=r.hash("hash")), r.hash("parentHash")


def _parse_tx(raw: Any, endpoint: str, method: str, i: int) -> EvmTx:
    r = RawReader(raw, endpoint, method, f"block.transactions[{i}]")
    from_address = r.address("from")
    assert from_address is not None
    return EvmTx(
        hash=r.hash("hash"),
        position=r.quantity("transactionIndex"),
        from_address=from_address,
        to_address=r.address("to", optional=True),
        value=r.quantity("value"),
    )


@dataclass(frozen=True)
class Receipt:
    succeeded: bool
    contract_address: str | None
    block_hash: str
    tx_hash: str | None = None  # read where receipts come by block (eth_getBlockReceipts)


def parse_receipt(raw: Any, endpoint: str = "node") -> Receipt:
    """An ``eth_getTransactionReceipt`` result: success and, for a creation, the new contract.

    Receipts from before Byzantium (2017) carry no status: their transactions are taken as
    succeeded, since the receipt alone cannot tell a failed one apart.
    """
    return _receipt(RawReader(raw, endpoint, "eth_getTransactionReceipt", "receipt"), None)


def parse_block_receipts(raw: Any, endpoint: str = "node") -> list[Receipt]:
    """An ``eth_getBlockReceipts`` result: every receipt of the block, with its transaction."""
    method = "eth_getBlockReceipts"
    if not isinstance(raw, list):
        raise MalformedRpcResponse(endpoint, method, "receipts is not a list")
    receipts = []
    for i, entry in enumerate(raw):
        r = RawReader(entry, endpoint, method, f"receipts[{i}]")
        receipts.append(_receipt(r, r.hash("transactionHash")))
    return receipts


def _receipt(r: RawReader, tx_hash: str | None) -> Receipt:
    contract = r.address("contractAddress", optional=True)
    block_hash = r.hash("blockHash")
    if r.raw.get("status") is None:
        return Receipt(True, contract, block_hash, tx_hash)
    status = r.quantity("status")
    if status not in (0, 1):
        raise r.fail("status", f"is neither 0x0 nor 0x1: {status}")
    return Receipt(status == 1, contract, block_hash, tx_hash)


def touching(block: EvmBlock, watched: frozenset[str]) -> list[EvmTx]:
    """Value-carrying transactions whose sender or receiver is a watched (lower-case) address."""
    return [
        tx
        for tx in block.transactions
        if tx.value > 0 and (tx.from_address in watched or tx.to_address in watched)
    ]


def native_transfers(
    chain: str, block: EvmBlock, outcomes: Iterable[tuple[EvmTx, Receipt]]
) -> list[Transfer]:
    """The native-value transfers of succeeded transactions; a creation pays the new contract."""
    return [
        Transfer(
            chain=chain,
            tx_hash=tx.hash,
            index="tx",
            from_address=tx.from_address,
            to_address=tx.to_address or receipt.contract_address or "",
            asset=NATIVE_ASSET_ID,
            amount=tx.value,
            kind=TransferKind.NATIVE,
            status=TransferStatus.CONFIRMED,
            block=block.ref,
            block_time=block.time,
        )
        for tx, receipt in outcomes
        if receipt.succeeded
    ]
