"""The ``JsonRpc`` port for EVM chains: eth-tester in process and anvil over HTTP answer the
standard methods in the same wire form, which the mapping code reads without knowing which."""

from __future__ import annotations

import pytest

from drainwatch.errors import RpcError
from tests.fixtures.evm_nodes import EvmNode
from watchers.evm.mapping import parse_block, parse_block_ref, parse_receipt


def test_blocks_transactions_and_receipts(evm_node: EvmNode) -> None:
    a, b = evm_node.accounts[1], evm_node.accounts[2]
    tx = evm_node.send(a, b, 12345)
    head = evm_node.head()
    raw = evm_node.rpc.call("eth_getBlockByNumber", [hex(head), True])
    block = parse_block(raw, evm_node.rpc.endpoint)
    assert block.ref.height == head
    [sent] = [t for t in block.transactions if t.hash == tx.lower()]
    assert (sent.from_address, sent.to_address, sent.value) == (a.lower(), b.lower(), 12345)
    receipt = parse_receipt(evm_node.rpc.call("eth_getTransactionReceipt", [tx]))
    assert receipt.succeeded
    light = evm_node.rpc.call("eth_getBlockByNumber", [hex(head), False])
    assert parse_block_ref(light) == (block.ref, block.parent_hash)
    by_hash = evm_node.rpc.call("eth_getBlockByHash", [block.ref.hash, True])
    assert parse_block(by_hash) == block


def test_a_reverted_call_reports_failure(evm_node: EvmNode) -> None:
    reverter = evm_node.deploy_reverter()
    tx = evm_node.send(evm_node.accounts[1], reverter, 10**18)
    assert parse_receipt(evm_node.rpc.call("eth_getTransactionReceipt", [tx])).succeeded is False


def test_unknown_things(evm_node: EvmNode) -> None:
    assert evm_node.rpc.call("eth_getBlockByNumber", [hex(evm_node.head() + 50), True]) is None
    assert evm_node.rpc.call("eth_getTransactionReceipt", ["0x" + "ab" * 32]) is None
    with pytest.raises(RpcError):
        evm_node.rpc.call("eth_noSuchMethod", [])


def test_chain_id_is_a_hex_quantity(evm_node: EvmNode) -> None:
    assert int(evm_node.rpc.call("eth_chainId", []), 16) > 0
