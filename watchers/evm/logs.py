"""Raw ``eth_getLogs`` answers → typed logs → token transfers (ERC-20, ERC-721, ERC-1155). Pure.

Two kinds of bad input, handled differently:

- a node that answers something the JSON-RPC protocol does not allow (a topic that is not a
  32-byte hex word, a missing field, logs of another block) raises ``MalformedRpcResponse`` naming
  the path, e.g. ``logs[3].topics[1]``: such a node is not to be trusted;
- a contract that emits a log with a transfer topic but not the standard's shape (ERC-20 and
  ERC-721 share one topic and differ only in the number of indexed fields; anyone can emit
  anything) is faithfully reported by the node, so it is no error: the log is skipped and
  returned in ``TokenTransfers.nonstandard`` for the caller to count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import BlockRef, Transfer, TransferKind, TransferStatus
from watchers.evm.mapping import RawReader

#: ``Transfer(address,address,uint256)``: ERC-20 (value in data) and ERC-721 (tokenId indexed).
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
#: ERC-1155 ``TransferSingle(address,address,address,uint256,uint256)``.
TRANSFER_SINGLE_TOPIC = "0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62"
#: ERC-1155 ``TransferBatch(address,address,address,uint256[],uint256[])``.
TRANSFER_BATCH_TOPIC = "0x4a39dc06d4c0dbc64b70af90fd698a233a518aa5d07e595d983b8c0526c8f7fb"
#: Topic 0 of every log that moves a token: an OR filter for ``eth_getLogs``.
TRANSFER_TOPICS = (TRANSFER_TOPIC, TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC)

_METHOD = "eth_getLogs"
_WORD = re.compile(r"^0x[0-9a-fA-F]{64}$")
_DATA = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
_MAX_TOPICS = 4  # LOG0 .. LOG4


@dataclass(frozen=True)
class EvmLog:
    """One log entry; ``topics`` are lower-case ``0x`` words, ``data`` the raw bytes."""

    address: str
    topics: tuple[str, ...]
    data: bytes
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    removed: bool = False


@dataclass(frozen=True)
class TokenTransfers:
    """The transfers touching watched addresses, and the transfer-topic logs of no known shape."""

    transfers: tuple[Transfer, ...]
    nonstandard: tuple[EvmLog, ...]


def parse_logs(raw: Any, endpoint: str = "node", method: str = _METHOD) -> list[EvmLog]:
    """An ``eth_getLogs`` / ``eth_getFilterLogs`` result: a list of log objects."""
    if not isinstance(raw, list):
        raise MalformedRpcResponse(endpoint, method, f"logs is not a list: {type(raw).__name__}")
    return [
        _parse_log(RawReader(item, endpoint, method, f"logs[{i}]")) for i, item in enumerate(raw)
    ]


def _parse_log(r: RawReader) -> EvmLog:
    address = r.address("address")
    assert address is not None
    removed = r.raw.get("removed", False)  # absent in pre-EIP-234 (Parity "type": "mined") logs
    if not isinstance(removed, bool):
        raise r.fail("removed", f"is not a boolean: {removed!r}")
    data = r.raw.get("data")
    if not isinstance(data, str) or not _DATA.match(data):
        raise r.fail("data", f"is not 0x-hex bytes: {data!r}")
    return EvmLog(
        address=address,
        topics=_parse_topics(r),
        data=bytes.fromhex(data[2:]),
        block_number=r.quantity("blockNumber"),
        block_hash=r.hash("blockHash"),
        tx_hash=r.hash("transactionHash"),
        log_index=r.quantity("logIndex"),
        removed=removed,
    )


def _parse_topics(r: RawReader) -> tuple[str, ...]:
    topics = r.raw.get("topics")
    if not isinstance(topics, list) or len(topics) > _MAX_TOPICS:
        raise r.fail("topics", f"is not a list of at most {_MAX_TOPICS} topics: {topics!r}")
    for i, topic in enumerate(topics):
        if not isinstance(topic, str) or not _WORD.match(topic):
            raise r.fail(f"topics[{i}]", f"is not a 32-byte hex word: {topic!r}")
    return tuple(topic.lower() for topic in topics)


class _Move(NamedTuple):
    position: str
    sender: str
    receiver: str
    asset: str
    amount: int


def block_logs(
    block: BlockRef, logs: Iterable[EvmLog], topics: Iterable[str], endpoint: str = "node"
) -> Iterator[EvmLog]:
    """The logs of ``block`` whose first topic is one of ``topics``, removed ones (retracted by a
    reorg) skipped; a log of another block means the node mixed blocks up, and raises."""
    wanted = frozenset(topics)
    for i, log in enumerate(logs):
        if log.removed:
            continue
        if (log.block_number, log.block_hash) != (block.height, block.hash):
            raise MalformedRpcResponse(
                endpoint,
                _METHOD,
                f"logs[{i}] is of block {log.block_number} {log.block_hash}, "
                f"not of block {block.height} {block.hash}",
            )
        if log.topics and log.topics[0] in wanted:
            yield log


def token_transfers(
    chain: str,
    block: BlockRef,
    block_time: datetime,
    logs: Iterable[EvmLog],
    watched: frozenset[str],
    endpoint: str = "node",
) -> TokenTransfers:
    """The token transfers of one block's logs whose sender or receiver is watched (lower case).

    Removed logs (retracted by a reorg) are skipped; a log of another block means the node mixed
    blocks up, and raises.
    """
    transfers: list[Transfer] = []
    nonstandard: list[EvmLog] = []
    for log in block_logs(block, logs, TRANSFER_TOPICS, endpoint):
        moves = _decode(log)
        if moves is None:
            nonstandard.append(log)
            continue
        transfers.extend(
            _transfer(chain, block, block_time, log, move)
            for move in moves
            if move.sender in watched or move.receiver in watched
        )
    return TokenTransfers(tuple(transfers), tuple(nonstandard))


def _transfer(
    chain: str, block: BlockRef, block_time: datetime, log: EvmLog, move: _Move
) -> Transfer:
    return Transfer(
        chain=chain,
        tx_hash=log.tx_hash,
        index=move.position,
        from_address=move.sender,
        to_address=move.receiver,
        asset=move.asset,
        amount=move.amount,
        kind=TransferKind.TOKEN,
        status=TransferStatus.CONFIRMED,
        block=block,
        block_time=block_time,
    )


def _decode(log: EvmLog) -> list[_Move] | None:
    """The moves of a transfer-topic log, or None when it has none of the standard shapes."""
    topics, data, index = log.topics, log.data, f"log:{log.log_index}"
    if topics[0] == TRANSFER_TOPIC:
        sender, receiver = _topic_address(topics, 1), _topic_address(topics, 2)
        if sender is None or receiver is None:
            return None
        if len(topics) == 3 and len(data) == 32:  # ERC-20: value in data
            return [_Move(index, sender, receiver, log.address, int.from_bytes(data))]
        if len(topics) == 4 and not data:  # ERC-721: tokenId indexed
            return [_Move(index, sender, receiver, f"{log.address}/{int(topics[3], 16)}", 1)]
        return None
    # ERC-1155: topics are (signature, operator, from, to); ids and values in data
    sender, receiver = _topic_address(topics, 2), _topic_address(topics, 3)
    if len(topics) != 4 or sender is None or receiver is None:
        return None
    if topics[0] == TRANSFER_SINGLE_TOPIC:
        if len(data) != 64:
            return None
        token_id, value = int.from_bytes(data[:32]), int.from_bytes(data[32:])
        return [_Move(index, sender, receiver, f"{log.address}/{token_id}", value)]
    ids, values = _uint_array(data, 0), _uint_array(data, 1)
    if ids is None or values is None or len(ids) != len(values):
        return None
    return [
        _Move(f"{index}.{i}", sender, receiver, f"{log.address}/{token_id}", value)
        for i, (token_id, value) in enumerate(zip(ids, values, strict=True))
    ]


def _topic_address(topics: tuple[str, ...], i: int) -> str | None:
    """The address in an indexed topic: its low 20 bytes, provided the high 12 are zero."""
    if i >= len(topics) or topics[i][2:26] != "0" * 24:
        return None
    return "0x" + topics[i][26:]


def _word(data: bytes, offset: int) -> int | None:
    if offset + 32 > len(data):
        return None
    return int.from_bytes(data[offset : offset + 32])


def _uint_array(data: bytes, slot: int) -> list[int] | None:
    """The ABI-encoded dynamic ``uint256[]`` whose offset is in head slot ``slot``, or None when
    an offset or length points outside the data."""
    offset = _word(data, 32 * slot)
    if offset is None:
        return None
    length = _word(data, offset)
    start = offset + 32
    if length is None or start + 32 * length > len(data):
        return None
    return [int.from_bytes(data[start + 32 * k : start + 32 * (k + 1)]) for k in range(length)]
