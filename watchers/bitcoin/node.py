"""Reading a Bitcoin node over JSON-RPC (Bitcoin Core's methods): heads, raw blocks, the mempool.

Blocks are read raw (``getblock HASH 0``) and parsed here, once, at the edge: the same bytes a
``blk*.dat`` file holds. Every answer is checked for shape (``BITCOIN_ANSWER_CHECKS``, for the
failover's ``AnswerCheck``) so that a node answering garbage is identified and rotated out, and
a raw block must hash to the hash it was asked for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from drainwatch.errors import ConfigError, MalformedRpcResponse, RpcError
from drainwatch.model import BlockRef
from drainwatch.ports import JsonRpc
from watchers.bitcoin.block import Block, BlockFormatError, Tx, parse_block, parse_tx
from watchers.follow import NodeInconsistent
from watchers.jsonrpc import call_many
from watchers.rpc_stack import AnswerChecker

_HASH = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")

#: ``getblockchaininfo``'s ``chain`` for each configured network (Bitcoin Core's names, and
#: bcoin's where they differ).
CHAIN_NAMES: Mapping[str, frozenset[str]] = {
    "mainnet": frozenset({"main"}),
    "testnet": frozenset({"test", "testnet", "testnet4"}),
    "signet": frozenset({"signet"}),
    "regtest": frozenset({"regtest"}),
}

#: Bitcoin Core: "No such mempool or blockchain transaction" (-5), "Block height out of range"
#: (-8 from getblockhash).
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8


def network_check(chain_name: str, network: str) -> Callable[[JsonRpc], None]:
    """A check for ``FailoverRpc(verify=...)``: the endpoint must serve the configured network."""
    wanted = CHAIN_NAMES.get(network, frozenset({network}))

    def verify(rpc: JsonRpc) -> None:
        info = rpc.call("getblockchaininfo", [])
        chain = info.get("chain") if isinstance(info, dict) else None
        if not isinstance(chain, str):
            raise MalformedRpcResponse(rpc.endpoint, "getblockchaininfo", "no chain name")
        if chain not in wanted:
            raise ConfigError(
                f"chains.{chain_name}.network",
                f"endpoint {rpc.endpoint} serves Bitcoin {chain!r}, not {network}: drainwatch "
                "will not watch a different network",
            )

    return verify


# --- answer checks ----------------------------------------------------------------------------


def _height(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if not isinstance(result, int) or isinstance(result, bool) or result < 0:
        raise MalformedRpcResponse(endpoint, "getblockcount", "not a block height")


def _block_hash(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if not isinstance(result, str) or not _HASH.match(result):
        raise MalformedRpcResponse(endpoint, "getblockhash", "not a 64-hex block hash")


def _raw_block(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if len(params) < 2 or params[1] not in (0, False):
        return  # the verbose forms are not read by drainwatch
    if not isinstance(result, str) or len(result) < 160 or not _HEX.match(result):
        raise MalformedRpcResponse(endpoint, "getblock", "not a hex-encoded raw block")
    header = bytes.fromhex(result[:160])
    digest = hashlib.sha256(hashlib.sha256(header).digest()).digest()[::-1].hex()
    if params and digest != params[0]:
        raise MalformedRpcResponse(
            endpoint, "getblock", f"asked for block {params[0]}, the bytes are block {digest}"
        )


def _raw_tx(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if not isinstance(result, str) or not result or not _HEX.match(result):
        raise MalformedRpcResponse(endpoint, "getrawtransaction", "not a hex-encoded transaction")


def _mempool(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if not isinstance(result, list) or not all(
        isinstance(t, str) and _HASH.match(t) for t in result
    ):
        raise MalformedRpcResponse(endpoint, "getrawmempool", "not a list of 64-hex txids")


BITCOIN_ANSWER_CHECKS: Mapping[str, AnswerChecker] = {
    "getblockcount": _height,
    "getblockhash": _block_hash,
    "getblock": _raw_block,
    "getrawtransaction": _raw_tx,
    "getrawmempool": _mempool,
}


# --- reading --------------------------------------------------------------------------------


class FetchedBitcoinBlock:
    """A raw block read from a node or a file, parsed, with its height."""

    __slots__ = ("block", "parent_hash", "ref", "time")

    def __init__(self, block: Block, height: int) -> None:
        self.block = block
        self.ref = BlockRef(height, block.header.hash)
        self.parent_hash = block.header.prev_hash
        self.time = datetime.fromtimestamp(block.header.time, UTC)


class BitcoinNode:
    """The reads a Bitcoin watcher makes, over any ``JsonRpc`` (a failover stack in service)."""

    def __init__(self, rpc: JsonRpc) -> None:
        self.rpc = rpc

    @property
    def endpoint(self) -> str:
        return self.rpc.endpoint

    def head(self) -> int:
        height = self.rpc.call("getblockcount", [])
        _height(height, [], self.rpc.endpoint)
        return int(height)

    def block_hash(self, height: int) -> str | None:
        """The hash of the best chain's block at ``height``; None above the node's head."""
        try:
            result = self.rpc.call("getblockhash", [height])
        except RpcError as exc:
            if f"error {RPC_INVALID_PARAMETER}:" in str(exc) or "out of range" in str(exc):
                return None  # out of range: the node has not got that height (any more)
            raise
        _block_hash(result, [height], self.rpc.endpoint)
        return str(result)

    def block_ref(self, height: int) -> BlockRef:
        block_hash = self.block_hash(height)
        if block_hash is None:
            raise NodeInconsistent(f"{self.rpc.endpoint}: has no block {height} any more")
        return BlockRef(height, block_hash)

    def block(self, height: int) -> FetchedBitcoinBlock | None:
        block_hash = self.block_hash(height)
        if block_hash is None:
            return None
        raw = self.rpc.call("getblock", [block_hash, 0])
        _raw_block(raw, [block_hash, 0], self.rpc.endpoint)
        try:
            parsed = verified_block(bytes.fromhex(raw))
        except BlockFormatError as exc:
            raise MalformedRpcResponse(self.rpc.endpoint, "getblock", str(exc)) from None
        return FetchedBitcoinBlock(parsed, height)

    def mempool(self) -> list[str]:
        result = self.rpc.call("getrawmempool", [])
        _mempool(result, [], self.rpc.endpoint)
        return list(result)

    def transactions(self, txids: Sequence[str]) -> dict[str, Tx]:
        """The mempool transactions of ``txids`` that the node still has (one batch)."""
        out: dict[str, Tx] = {}
        for start in range(0, len(txids), TX_BATCH):
            chunk = txids[start : start + TX_BATCH]
            answers = _each(self.rpc, [("getrawtransaction", [t, False]) for t in chunk])
            for txid, answer in zip(chunk, answers, strict=True):
                if answer is None:
                    continue  # left the mempool between the listing and this read
                _raw_tx(answer, [txid], self.rpc.endpoint)
                try:
                    tx = parse_tx(bytes.fromhex(answer))
                except BlockFormatError as exc:
                    raise MalformedRpcResponse(
                        self.rpc.endpoint, "getrawtransaction", str(exc)
                    ) from None
                if tx.txid != txid:
                    raise MalformedRpcResponse(
                        self.rpc.endpoint, "getrawtransaction", f"asked for {txid}, got {tx.txid}"
                    )
                out[txid] = tx
        return out


def verified_block(raw: bytes) -> Block:
    """A raw block parsed and checked against its own header: the merkle root of its
    transactions, and the witness commitment where it has one. A backend, proxy or damaged file
    that drops or alters a transaction (to hide an outflow) is caught here, whatever hash it
    shows. ``BlockFormatError`` otherwise."""
    block = parse_block(raw)
    if block.computed_merkle_root() != block.header.merkle_root:
        raise BlockFormatError(
            f"block {block.header.hash}: its transactions do not match its header's merkle root"
        )
    if block.witness_commitment_ok() is False:
        raise BlockFormatError(
            f"block {block.header.hash}: its witness data does not match its coinbase's "
            "witness commitment"
        )
    return block


#: Mempool transactions are read this many per JSON-RPC batch: when one has left the mempool
#: in the meantime the batch is asked again call by call, so it stays small.
TX_BATCH = 50


def _gone(exc: RpcError) -> bool:
    """A "no such transaction" answer: Bitcoin Core -5, bcoin -1 "Transaction not found." (not
    -32601 "Method not found": a node without the method is an error, not an empty mempool)."""
    text = str(exc)
    bcoin = "error -1:" in text and "transaction not found" in text.lower()
    return f"error {RPC_INVALID_ADDRESS_OR_KEY}:" in text or bcoin


def _each(rpc: JsonRpc, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """Answers in call order; a transaction the node no longer has answers None."""
    try:
        return call_many(rpc, calls)
    except RpcError as exc:
        if not _gone(exc):
            raise
    answers: list[Any] = []
    for method, params in calls:  # one is gone: ask one by one to tell which
        try:
            answers.append(rpc.call(method, params))
        except RpcError as exc:
            if not _gone(exc):
                raise
            answers.append(None)
    return answers
