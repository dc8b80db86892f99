"""EVM block and receipt mapping, on recorded Ethereum mainnet responses."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import BlockRef, TransferKind, TransferStatus
from watchers.evm.mapping import (
    EvmTx,
    Receipt,
    native_transfers,
    parse_block,
    parse_block_header,
    parse_block_receipts,
    parse_block_ref,
    parse_receipt,
    touching,
)

REC = "ethereum/rpc-recordings"


def _load(shared_data: Path, rel: str) -> Any:
    return json.loads((shared_data / REC / rel).read_text())["result"]


@pytest.fixture
def block_47218(shared_data: Path) -> Any:
    return _load(
        shared_data,
        "test_export_blocks_job/blocks_with_transactions/"
        "web3_response.eth_getBlockByNumber_0xb872_true.json",
    )


def test_mainnet_block_47218_parses_exactly(block_47218: Any) -> None:
    block = parse_block(block_47218)
    assert block.ref.height == 47218
    assert block.ref.hash == block_47218["hash"]
    assert block.parent_hash == block_47218["parentHash"]
    assert [tx.value for tx in block.transactions] == [
        int(tx["value"], 16) for tx in block_47218["transactions"]
    ]
    assert block.transactions[0].value == 110 * 10**18  # 110 ETH, to the wei
    assert block.time.tzinfo is not None
    assert int(block.time.timestamp()) == int(block_47218["timestamp"], 16)


def test_only_transactions_touching_watched_addresses(block_47218: Any) -> None:
    block = parse_block(block_47218)
    sender = block_47218["transactions"][0]["from"].upper().replace("0X", "0x")
    picked = touching(block, frozenset({sender.lower()}))
    assert [tx.hash for tx in picked] == [block_47218["transactions"][0]["hash"]]
    assert touching(block, frozenset({"0x" + "00" * 20})) == []


def test_failed_transactions_move_nothing(block_47218: Any) -> None:
    block = parse_block(block_47218)
    ok, failed = block.transactions
    h = block.ref.hash
    transfers = native_transfers(
        "ethereum", block, [(ok, Receipt(True, None, h)), (failed, Receipt(False, None, h))]
    )
    assert len(transfers) == 1
    t = transfers[0]
    assert (t.tx_hash, t.index, t.amount) == (ok.hash, "tx", 110 * 10**18)
    assert t.kind is TransferKind.NATIVE and t.status is TransferStatus.CONFIRMED
    assert t.block == BlockRef(47218, block.ref.hash)
    assert t.from_address == t.from_address.lower()


def test_contract_creation_pays_the_new_contract(block_47218: Any) -> None:
    block = parse_block(block_47218)
    creation = EvmTx("0x" + "aa" * 32, 0, "0x" + "11" * 20, None, 5)
    receipt = Receipt(True, "0x" + "22" * 20, block.ref.hash)
    [t] = native_transfers("ethereum", block, [(creation, receipt)])
    assert t.to_address == "0x" + "22" * 20


def test_pre_byzantium_receipts_have_no_status_and_count_as_succeeded(shared_data: Path) -> None:
    raw = _load(
        shared_data,
        "test_export_receipts_job/receipts_with_logs/web3_response.eth_getTransactionReceipt_"
        "0x04cbcb236043d8fb7839e07bbc7f5eed692fb2ca55d897f1101eac3e3ad4fab8.json",
    )
    assert parse_receipt(raw) == Receipt(True, None, raw["blockHash"])
    failed = dict(raw, status="0x0")
    assert parse_receipt(failed).succeeded is False


def test_genesis_and_light_blocks(shared_data: Path) -> None:
    genesis = parse_block(
        _load(
            shared_data,
            "test_export_blocks_job/block_without_transactions/"
            "web3_response.eth_getBlockByNumber_0x0_true.json",
        )
    )
    assert genesis.ref.height == 0 and genesis.transactions == ()
    light = _load(
        shared_data,
        "test_stream/blocks_2112234_2112234/web3_response.eth_getBlockByNumber_0x203aea_false.json",
    )
    ref, parent = parse_block_ref(light)
    assert ref.height == 2112234 and parent == light["parentHash"]
    with pytest.raises(MalformedRpcResponse):  # hashes only: not a full block
        parse_block(light)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("number"), "block.number"),
        (lambda b: b.update(number="12"), "block.number"),
        (lambda b: b.update(hash="0x1234"), "block.hash"),
        (lambda b: b.update(parentHash=None), "block.parentHash"),
        (lambda b: b.update(transactions="nope"), "block.transactions"),
        (lambda b: b["transactions"][1].update(value="0xZZ"), "block.transactions[1].value"),
        (lambda b: b["transactions"][0].update(to="0x12"), "block.transactions[0].to"),
        (lambda b: b["transactions"][0].update(**{"from": None}), "block.transactions[0].from"),
    ],
)
def test_malformed_blocks_name_the_field(block_47218: Any, mutate: Any, field: str) -> None:
    raw = copy.deepcopy(block_47218)
    mutate(raw)
    with pytest.raises(MalformedRpcResponse) as err:
        parse_block(raw, "https://node.example")
    assert field in str(err.value)
    assert "https://node.example" in str(err.value)


def test_a_block_that_is_not_an_object() -> None:
    with pytest.raises(MalformedRpcResponse):
        parse_block(["not", "a", "block"])
    with pytest.raises(MalformedRpcResponse):
        parse_receipt(None)


def test_the_header_form_keeps_the_transaction_hashes(shared_data: Path) -> None:
    light = _load(
        shared_data,
        "test_stream/blocks_508110_508110/web3_response.eth_getBlockByNumber_0x7c0ce_false.json",
    )
    header = parse_block_header(light)
    assert not header.full and header.transactions == ()
    assert (
        header.ref == BlockRef(508110, light["hash"]) and header.parent_hash == light["parentHash"]
    )
    assert header.tx_hashes == tuple(h.lower() for h in light["transactions"])
    broken = dict(light, transactions=[light["transactions"][0], {"hash": "0x12"}])
    with pytest.raises(MalformedRpcResponse, match=r"block\.transactions\[1\]"):
        parse_block_header(broken)
    with pytest.raises(MalformedRpcResponse, match=r"block\.transactions "):
        parse_block_header(dict(light, transactions=None))


def test_a_full_block_knows_its_hashes_too(block_47218: Any) -> None:
    block = parse_block(block_47218)
    assert block.full and block.tx_hashes == tuple(tx.hash for tx in block.transactions)


def test_block_receipts_carry_their_transactions(shared_data: Path) -> None:
    folder = shared_data / REC / "test_export_receipts_job/receipts_with_logs"
    raws = [json.loads(p.read_text())["result"] for p in sorted(folder.glob("*.json"))]
    receipts = parse_block_receipts(raws)
    assert [r.tx_hash for r in receipts] == [r["transactionHash"] for r in raws]
    assert all(r.succeeded and r.block_hash == raws[0]["blockHash"] for r in receipts)
    nameless = copy.deepcopy(raws)
    del nameless[2]["transactionHash"]
    with pytest.raises(MalformedRpcResponse, match=r"receipts\[2\]\.transactionHash"):
        parse_block_receipts(nameless)
    with pytest.raises(MalformedRpcResponse, match="eth_getBlockReceipts"):
        parse_block_receipts({"receipts": raws})
