"""Shape checks of EVM nodes' answers, for the ``AnswerCheck`` middleware (``rpc_stack``).

Each check parses the answer as the mapping will and raises ``MalformedRpcResponse`` naming the
field, so a node answering garbage is caught while the failover still knows which node it was:
the endpoint is reported and taken out of the rotation instead of stalling the chain. The
mapping parses again later; that costs microseconds (bench/RESULTS.md: ~70,000 blocks/s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drainwatch.errors import MalformedRpcResponse
from watchers.evm.logs import parse_logs
from watchers.evm.mapping import (
    RawReader,
    parse_block,
    parse_block_header,
    parse_block_receipts,
    parse_quantity,
    parse_receipt,
)
from watchers.rpc_stack import AnswerChecker


def _quantity(method: str) -> AnswerChecker:
    def check(result: Any, params: Sequence[Any], endpoint: str) -> None:
        parse_quantity(result, endpoint, method)

    return check


def _block(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if result is None:
        return  # not (yet) known to the node: the follower asks again
    full = len(params) > 1 and params[1] is True
    (parse_block if full else parse_block_header)(result, endpoint)


def _receipt(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if result is not None:
        parse_receipt(result, endpoint)


def _block_receipts(result: Any, params: Sequence[Any], endpoint: str) -> None:
    if result is not None:
        parse_block_receipts(result, endpoint)


def _logs(result: Any, params: Sequence[Any], endpoint: str) -> None:
    parse_logs(result, endpoint)


def _traces(method: str) -> AnswerChecker:
    def check(result: Any, params: Sequence[Any], endpoint: str) -> None:
        if result is None:
            return
        if not isinstance(result, list):
            raise MalformedRpcResponse(endpoint, method, "traces is not a list")
        for i, entry in enumerate(result):
            RawReader(entry, endpoint, method, f"traces[{i}]")

    return check


EVM_ANSWER_CHECKS: Mapping[str, AnswerChecker] = {
    "eth_chainId": _quantity("eth_chainId"),
    "eth_blockNumber": _quantity("eth_blockNumber"),
    "eth_getBlockByNumber": _block,
    "eth_getBlockByHash": _block,
    "eth_getTransactionReceipt": _receipt,
    "eth_getBlockReceipts": _block_receipts,
    "eth_getLogs": _logs,
    "trace_block": _traces("trace_block"),
    "debug_traceBlockByNumber": _traces("debug_traceBlockByNumber"),
}
