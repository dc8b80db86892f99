"""An in-process EVM chain (eth-tester on py-evm) behind the same ``JsonRpc`` port as a real node.

The drill and the tests use it where no node runs. eth-tester answers in Python form (snake_case
keys, ints, bytes); this adapter turns that into the wire form of the standard JSON-RPC methods
(camelCase keys, hex quantities), so the watcher's mapping code sees exactly what a node sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eth_tester import EthereumTester
from eth_tester.exceptions import BlockNotFound, TransactionNotFound

from drainwatch.errors import RpcError


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_wire(value: Any) -> Any:
    """Python form → JSON-RPC wire form: ints as hex quantities, bytes as hex data."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {_camel(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return value


def _block_id(param: Any) -> int | str:
    if param in ("latest", "earliest", "pending", "safe", "finalized"):
        return "latest" if param in ("safe", "finalized") else str(param)
    if isinstance(param, str) and param.startswith("0x"):
        return int(param, 16)
    raise RpcError(f"eth-tester: invalid block number {param!r}")


class EthTesterRpc:
    """``JsonRpc`` over an in-process ``EthereumTester``."""

    endpoint = "eth-tester (in process)"

    def __init__(self, tester: EthereumTester) -> None:
        self.tester = tester
        self._methods: dict[str, Callable[[Sequence[Any]], Any]] = {
            "eth_chainId": lambda p: hex(self._chain_id()),
            "eth_blockNumber": lambda p: hex(self.tester.get_block_by_number("latest")["number"]),
            "eth_getBlockByNumber": self._block_by_number,
            "eth_getBlockByHash": self._block_by_hash,
            "eth_getTransactionReceipt": self._receipt,
            "eth_getBalance": lambda p: hex(self.tester.get_balance(p[0], _block_id(p[1]))),
        }

    def _chain_id(self) -> int:
        return int(self.tester.backend.chain.chain_id)

    def call(self, method: str, params: Sequence[Any]) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(f"{self.endpoint}: method {method} is not supported (-32601)")
        return handler(params)

    def _block_by_number(self, params: Sequence[Any]) -> Any:
        try:
            block = self.tester.get_block_by_number(_block_id(params[0]), bool(params[1]))
        except BlockNotFound:
            return None
        return to_wire(block)

    def _block_by_hash(self, params: Sequence[Any]) -> Any:
        try:
            block = self.tester.get_block_by_hash(params[0], bool(params[1]))
        except BlockNotFound:
            return None
        return to_wire(block)

    def _receipt(self, params: Sequence[Any]) -> Any:
        try:
            receipt = self.tester.get_transaction_receipt(params[0])
        except TransactionNotFound:
            return None
        return to_wire(receipt)
