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
        # eth-tester writes a contract creation's missing recipient as "": nodes send null.
        return {_camel(k): None if k == "to" and v == "" else to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return value


def _block_id(param: Any) -> int | str:
    if param in ("latest", "earliest", "pending", "safe", "finalized"):
        return "latest" if param in ("safe", "finalized") else str(param)
    if isinstance(param, str) and param.startswith("0x"):
        return int(param, 16)
    raise RpcError(f"eth-tester: invalid block number {param!r}")


def log_matches(log: dict[str, Any], query: dict[str, Any]) -> bool:
    """The ``eth_getLogs`` filter rules: an address or list of addresses, and per topic
    position ``null`` (anything), one word, or a list of words (any of them)."""
    wanted = query.get("address")
    if wanted is not None:
        allowed = {a.lower() for a in ([wanted] if isinstance(wanted, str) else wanted)}
        if log["address"].lower() not in allowed:
            return False
    topics = [t.lower() for t in log["topics"]]
    for position, rule in enumerate(query.get("topics") or []):
        if rule is None:
            continue
        options = {r.lower() for r in ([rule] if isinstance(rule, str) else rule)}
        if position >= len(topics) or topics[position] not in options:
            return False
    return True


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
            "eth_getLogs": self._logs,
            "eth_getCode": lambda p: self.tester.get_code(p[0], _block_id(p[1])),
            "eth_getStorageAt": self._storage,
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

    def _logs(self, params: Sequence[Any]) -> Any:
        """``eth_getLogs`` by ``blockHash`` or block range, with address and topic filters
        applied here: eth-tester's own topic matching misses hex-string OR-lists."""
        query = params[0]
        if "blockHash" in query:
            try:
                number = self.tester.get_block_by_hash(query["blockHash"])["number"]
            except BlockNotFound:
                raise RpcError(f"{self.endpoint}: unknown block {query['blockHash']}") from None
            low = high = number
        else:
            low = self._height(query.get("fromBlock", "latest"))
            high = self._height(query.get("toBlock", "latest"))
        logs = [to_wire(log) for log in self.tester.get_logs(from_block=low, to_block=high)]
        return [log for log in logs if log_matches(log, query)]

    def _storage(self, params: Sequence[Any]) -> Any:
        value = self.tester.get_storage_at(params[0], params[1], _block_id(params[2]))
        return value if isinstance(value, str) else "0x" + bytes(value).hex()

    def _height(self, param: Any) -> int:
        ident = _block_id(param)
        if isinstance(ident, int):
            return ident
        return int(self.tester.get_block_by_number(ident)["number"])

    def _receipt(self, params: Sequence[Any]) -> Any:
        try:
            receipt = self.tester.get_transaction_receipt(params[0])
        except TransactionNotFound:
            return None
        return to_wire(receipt)
