"""Token transfers from EVM logs: checked against blockchain-etl's export of two mainnet blocks,
recorded RPC answers, synthetic ERC-721 / ERC-1155 logs and generated ERC-20 logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import BlockRef, Transfer, TransferKind, TransferStatus
from tests.fixtures.evm_logs import (
    ALICE,
    BLOCK,
    BOB,
    CAROL,
    MAINNET,
    TIME,
    TOKEN,
)
from tests.fixtures.evm_logs import drop as _drop
from tests.fixtures.evm_logs import etl_log_to_wire as _etl_log_to_wire
from tests.fixtures.evm_logs import jsonl as _jsonl
from tests.fixtures.evm_logs import set_field as _set
from tests.fixtures.evm_logs import set_topic as _set_topic
from tests.fixtures.evm_logs import topic as _topic
from tests.fixtures.evm_logs import wire_log as _wire
from watchers.evm.control import APPROVAL_TOPIC
from watchers.evm.logs import (
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
    TRANSFER_TOPICS,
    EvmLog,
    TokenTransfers,
    parse_logs,
    token_transfers,
)

OPERATOR = "0x" + "0e" * 20
RECORDED = (
    "ethereum/rpc-recordings/test_export_token_transfers_job/block_with_transfers/"
    "web3_response.eth_getFilterLogs_0x0.json"
)


def _erc20(sender: str, receiver: str, amount: int, log_index: int = 0, **fields: Any) -> Any:
    topics = [TRANSFER_TOPIC, _topic(sender), _topic(receiver)]
    return _wire(topics, amount.to_bytes(32), log_index, **fields)


def _run(raw: list[Any], watched: frozenset[str] = frozenset({ALICE, BOB})) -> TokenTransfers:
    return token_transfers("ethereum", BLOCK, TIME, parse_logs(raw), watched)


# --- topics -----------------------------------------------------------------------------------


def test_topic_constants_are_the_keccak_of_the_event_signatures() -> None:
    def sig(text: str) -> str:
        return "0x" + keccak(text=text).hex()

    assert sig("Transfer(address,address,uint256)") == TRANSFER_TOPIC
    assert sig("TransferSingle(address,address,address,uint256,uint256)") == TRANSFER_SINGLE_TOPIC
    assert sig("TransferBatch(address,address,address,uint256[],uint256[])") == (
        TRANSFER_BATCH_TOPIC
    )
    assert TRANSFER_TOPICS == (TRANSFER_TOPIC, TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC)


# --- cross-check against blockchain-etl -------------------------------------------------------


def _mainnet_transfers(shared_data: Path) -> list[Transfer]:
    logs = [_etl_log_to_wire(row) for row in _jsonl(shared_data / MAINNET / "logs.jsonl")]
    watched = frozenset(
        "0x" + topic[26:] for raw in logs for topic in raw["topics"][1:] if topic[2:26] == "0" * 24
    )
    out: list[Transfer] = []
    for block in _jsonl(shared_data / MAINNET / "blocks.jsonl"):
        ref = BlockRef(block["number"], block["hash"])
        time = datetime.fromtimestamp(block["timestamp"], UTC)
        mine = [raw for raw in logs if raw["blockHash"] == block["hash"]]
        result = token_transfers("ethereum", ref, time, parse_logs(mine), watched)
        assert result.nonstandard == ()
        out.extend(result.transfers)
    return out


def test_mainnet_transfers_match_blockchain_etl_exactly(shared_data: Path) -> None:
    """Blocks 17173049-17173050: blockchain-etl exports 291 token transfers (282 ERC-20, 9
    ERC-721); we find the same 291 and one more, an ERC-1155 TransferSingle (a mint), which
    blockchain-etl's extractor does not look for: it only decodes the ``Transfer`` topic."""
    ours = _mainnet_transfers(shared_data)
    theirs = _jsonl(shared_data / MAINNET / "token_transfers.jsonl")
    assert len(theirs) == 291

    erc1155 = [t for t in ours if t.index == "log:336"]
    assert [(t.tx_hash, t.from_address, t.to_address, t.asset, t.amount) for t in erc1155] == [
        (
            "0x038d6b45ca812f889227b950d34704aeb14564cc5a88a22c26ce7e7c6f2828ab",
            "0x" + "00" * 20,
            "0x17c72771bb6b283bade0c07e0901744c37ff8c41",
            "0x977e43ab3eb8c0aece1230ba187740342865ee78/0",
            1,
        )
    ]

    def comparable(t: Transfer) -> tuple[str, int, str, str, str, int]:
        # blockchain-etl puts an ERC-721 token id where an ERC-20 value goes
        token, _, token_id = t.asset.partition("/")
        value = int(token_id) if token_id else t.amount
        assert not token_id or t.amount == 1
        return (t.tx_hash, int(t.index[4:]), token, t.from_address, t.to_address, value)

    rest = sorted(comparable(t) for t in ours if t not in erc1155)
    expected = sorted(
        (
            row["transaction_hash"],
            row["log_index"],
            row["token_address"],
            row["from_address"],
            row["to_address"],
            row["value"],
        )
        for row in theirs
    )
    assert rest == expected
    assert sum("/" in t.asset for t in ours if t not in erc1155) == 9
    assert {t.kind for t in ours} == {TransferKind.TOKEN}
    assert {t.status for t in ours} == {TransferStatus.CONFIRMED}


# --- recorded RPC answer ----------------------------------------------------------------------


def test_recorded_block_483920_by_hand(shared_data: Path) -> None:
    """A Parity-era eth_getFilterLogs answer: no ``removed`` field, ``type: mined`` instead."""
    raw = json.loads((shared_data / RECORDED).read_text())["result"]
    block = BlockRef(483920, "0x246edb4b351d93c27926f4649bcf6c24366e2a7c7c718dc9158eea20c03bc6ae")
    logs = parse_logs(raw, method="eth_getFilterLogs")
    assert [(log.block_number, log.log_index, log.removed) for log in logs] == [
        (483920, 0, False),
        (483920, 1, False),
    ]
    watched = frozenset({"0xac4df82fe37ea2187bc8c011a23d743b4f39019a"})  # receiver of log 0 only
    result = token_transfers("ethereum", block, TIME, logs, watched)
    assert result == TokenTransfers(
        transfers=(
            Transfer(
                chain="ethereum",
                tx_hash="0x04cbcb236043d8fb7839e07bbc7f5eed692fb2ca55d897f1101eac3e3ad4fab8",
                index="log:0",
                from_address="0x1b63142628311395ceafeea5667e7c9026c862ca",
                to_address="0xac4df82fe37ea2187bc8c011a23d743b4f39019a",
                asset="0xf4eced2f682ce333f96f2d8966c613ded8fc95dd",
                amount=100_000,  # 0x186a0
                kind=TransferKind.TOKEN,
                status=TransferStatus.CONFIRMED,
                block=block,
                block_time=TIME,
            ),
        ),
        nonstandard=(),
    )
    sender_of_log_1 = frozenset({"0x9b22a80d5c7b3374a05b446081f97d0a34079e7f"})
    (second,) = token_transfers("ethereum", block, TIME, logs, sender_of_log_1).transfers
    assert (second.index, second.to_address, second.amount) == (
        "log:1",
        "0x66f183060253cfbe45beff1e6e7ebbe318c81e56",
        200_000,  # 0x30d40
    )
    assert second.tx_hash == "0xcea6f89720cc1d2f46cc7a935463ae0b99dd5fad9c91bb7357de5421511cee49"


# --- synthetic logs ---------------------------------------------------------------------------


def test_erc721_transfer_names_the_token_id() -> None:
    token_id = 2**255 + 7
    raw = _wire([TRANSFER_TOPIC, _topic(ALICE), _topic(CAROL), _topic(token_id)], b"", 5)
    (t,) = _run([raw]).transfers
    assert (t.index, t.from_address, t.to_address) == ("log:5", ALICE, CAROL)
    assert (t.asset, t.amount) == (f"{TOKEN}/{token_id}", 1)


def test_erc1155_transfer_single() -> None:
    topics = [TRANSFER_SINGLE_TOPIC, _topic(OPERATOR), _topic(CAROL), _topic(BOB)]
    raw = _wire(topics, encode(["uint256", "uint256"], [42, 10**30]), 9)
    (t,) = _run([raw]).transfers
    assert (t.index, t.from_address, t.to_address) == ("log:9", CAROL, BOB)
    assert (t.asset, t.amount) == (f"{TOKEN}/42", 10**30)


def test_erc1155_transfer_batch_one_transfer_per_id() -> None:
    topics = [TRANSFER_BATCH_TOPIC, _topic(OPERATOR), _topic(ALICE), _topic(CAROL)]
    ids, values = [1, 2**256 - 1, 3], [100, 1, 2**256 - 1]
    raw = _wire(topics, encode(["uint256[]", "uint256[]"], [ids, values]), 12)
    result = _run([raw])
    assert [(t.index, t.asset, t.amount) for t in result.transfers] == [
        ("log:12.0", f"{TOKEN}/1", 100),
        ("log:12.1", f"{TOKEN}/{2**256 - 1}", 1),
        ("log:12.2", f"{TOKEN}/3", 2**256 - 1),
    ]
    assert {(t.from_address, t.to_address) for t in result.transfers} == {(ALICE, CAROL)}
    empty = _wire(topics, encode(["uint256[]", "uint256[]"], [[], []]), 13)
    assert _run([empty]) == TokenTransfers((), ())


def test_watched_filter_on_sender_and_receiver() -> None:
    raw = [
        _erc20(ALICE, CAROL, 1, 0),  # watched sender
        _erc20(CAROL, BOB, 2, 1),  # watched receiver
        _erc20(CAROL, CAROL, 3, 2),  # neither
        _erc20(ALICE, BOB, 4, 3),  # both: one transfer, not two
    ]
    result = _run(raw)
    assert [t.amount for t in result.transfers] == [1, 2, 4]
    assert _run(raw, frozenset()).transfers == ()
    assert [t.amount for t in _run(raw, frozenset({CAROL})).transfers] == [1, 2, 3]


def test_removed_logs_are_skipped_even_from_another_block() -> None:
    raw = [
        _erc20(ALICE, BOB, 1, 0, removed=True),
        _erc20(ALICE, BOB, 2, 1, removed=True, blockHash="0x" + "cd" * 32),
        _erc20(ALICE, BOB, 3, 2),
    ]
    assert [t.amount for t in _run(raw).transfers] == [3]


@pytest.mark.parametrize("field", ["blockHash", "blockNumber"])
def test_a_log_of_another_block_raises(field: str) -> None:
    other = {"blockHash": "0x" + "cd" * 32, "blockNumber": hex(BLOCK.height + 1)}[field]
    raw = [_erc20(ALICE, BOB, 1, 0), _erc20(CAROL, CAROL, 2, 1, **{field: other})]
    with pytest.raises(MalformedRpcResponse, match=r"logs\[1\] is of block"):
        _run(raw)


def test_other_events_are_ignored_not_counted() -> None:
    approval = APPROVAL_TOPIC  # a real event of another kind: ignored, not counted
    raw = [_wire([approval, _topic(ALICE), _topic(BOB)], (5).to_bytes(32)), _wire([], b"x")]
    assert _run(raw) == TokenTransfers((), ())


def _batch_data(head: list[int], *words: int) -> bytes:
    return b"".join(w.to_bytes(32) for w in [*head, *words])


NONSTANDARD = {
    "erc20 with 64-byte data": _wire(
        [TRANSFER_TOPIC, _topic(ALICE), _topic(BOB)], (1).to_bytes(32) * 2
    ),
    "transfer with 2 topics": _wire([TRANSFER_TOPIC, _topic(ALICE)], (1).to_bytes(32)),
    "transfer with only topic 0": _wire([TRANSFER_TOPIC], (1).to_bytes(32) * 3),
    "erc721 with data": _wire(
        [TRANSFER_TOPIC, _topic(ALICE), _topic(BOB), _topic(7)], (1).to_bytes(32)
    ),
    "address with dirty high bytes": _wire(
        [TRANSFER_TOPIC, "0x" + "01" * 12 + ALICE[2:], _topic(BOB)], (1).to_bytes(32)
    ),
    "single with 3 topics": _wire(
        [TRANSFER_SINGLE_TOPIC, _topic(ALICE), _topic(BOB)], (1).to_bytes(32) * 2
    ),
    "single with 96-byte data": _wire(
        [TRANSFER_SINGLE_TOPIC, _topic(OPERATOR), _topic(ALICE), _topic(BOB)],
        (1).to_bytes(32) * 3,
    ),
    "batch with unequal lengths": _wire(
        [TRANSFER_BATCH_TOPIC, _topic(OPERATOR), _topic(ALICE), _topic(BOB)],
        encode(["uint256[]", "uint256[]"], [[1, 2], [3]]),
    ),
    "batch offset out of bounds": _wire(
        [TRANSFER_BATCH_TOPIC, _topic(OPERATOR), _topic(ALICE), _topic(BOB)],
        _batch_data([0x40, 0x1000], 0, 0),
    ),
    "batch length beyond the data": _wire(
        [TRANSFER_BATCH_TOPIC, _topic(OPERATOR), _topic(ALICE), _topic(BOB)],
        _batch_data([0x40, 0x80], 2**255, 0, 0),
    ),
    "batch with a truncated head": _wire(
        [TRANSFER_BATCH_TOPIC, _topic(OPERATOR), _topic(ALICE), _topic(BOB)], b"\x00" * 33
    ),
}


@pytest.mark.parametrize("name", NONSTANDARD)
def test_nonstandard_shapes_are_skipped_and_counted(name: str) -> None:
    raw = [_erc20(ALICE, BOB, 1, 0), {**NONSTANDARD[name], "logIndex": "0x1"}]
    result = _run(raw)
    assert [t.amount for t in result.transfers] == [1]
    assert [log.log_index for log in result.nonstandard] == [1]


# --- malformed answers ------------------------------------------------------------------------


MALFORMED = [
    (_set_topic(1, "0x" + "zz" * 32), "logs[3].topics[1]"),
    (_set_topic(2, "0x" + "00" * 31), "logs[3].topics[2]"),
    (_set_topic(0, None), "logs[3].topics[0]"),
    (_set("topics", [TRANSFER_TOPIC] * 5), "logs[3].topics"),
    (_set("topics", TRANSFER_TOPIC), "logs[3].topics"),
    (_set("blockHash", "0x" + "ab" * 31), "logs[3].blockHash"),
    (_set("transactionHash", "0x" + "ab" * 33), "logs[3].transactionHash"),
    (_drop("transactionHash"), "logs[3].transactionHash"),
    (_drop("blockNumber"), "logs[3].blockNumber"),
    (_set("logIndex", "7"), "logs[3].logIndex"),
    (_set("data", "0x123"), "logs[3].data"),
    (_set("data", None), "logs[3].data"),
    (_set("address", "0x1234"), "logs[3].address"),
    (_set("removed", "false"), "logs[3].removed"),
]


@pytest.mark.parametrize(("mutate", "path"), MALFORMED)
def test_malformed_log_raises_naming_the_path(
    mutate: Callable[[dict[str, Any]], None], path: str
) -> None:
    raw = [_erc20(ALICE, BOB, i, i) for i in range(4)]
    mutate(raw[3])
    with pytest.raises(MalformedRpcResponse) as caught:
        parse_logs(raw, endpoint="https://node.example")
    assert f"{path} " in str(caught.value)
    assert caught.value.endpoint == "https://node.example"
    assert caught.value.method == "eth_getLogs"


@pytest.mark.parametrize(
    ("raw", "message"),
    [({"result": []}, "logs is not a list"), ([_erc20(ALICE, BOB, 1), 7], "logs[1] is not")],
)
def test_malformed_container_raises(raw: Any, message: str) -> None:
    with pytest.raises(MalformedRpcResponse, match=message.replace("[", r"\[")):
        parse_logs(raw)


def test_parse_keeps_addresses_and_topics_lower_case() -> None:
    raw = _erc20(ALICE, BOB, 1, 0, address=TOKEN.upper().replace("0X", "0x"))
    raw["topics"] = [topic.upper().replace("0X", "0x") for topic in raw["topics"]]
    (log,) = parse_logs([raw])
    assert log == EvmLog(
        address=TOKEN,
        topics=(TRANSFER_TOPIC, _topic(ALICE), _topic(BOB)),
        data=(1).to_bytes(32),
        block_number=BLOCK.height,
        block_hash=BLOCK.hash,
        tx_hash="0x" + "00" * 32,
        log_index=0,
        removed=False,
    )


# --- property ---------------------------------------------------------------------------------

POOL = [ALICE, BOB, CAROL, OPERATOR, "0x" + "00" * 20, "0x" + "ff" * 20]


@given(
    moves=st.lists(
        st.tuples(st.sampled_from(POOL), st.sampled_from(POOL), st.integers(0, 2**256 - 1)),
        max_size=20,
    ),
    watched=st.frozensets(st.sampled_from(POOL)),
)
def test_erc20_amounts_round_trip_and_only_watched_come_out(
    moves: list[tuple[str, str, int]], watched: frozenset[str]
) -> None:
    raw = [
        _erc20(sender, receiver, amount, i) for i, (sender, receiver, amount) in enumerate(moves)
    ]
    result = _run(raw, watched)
    expected = [
        (f"log:{i}", sender, receiver, amount)
        for i, (sender, receiver, amount) in enumerate(moves)
        if sender in watched or receiver in watched
    ]
    assert [(t.index, t.from_address, t.to_address, t.amount) for t in result.transfers] == expected
    assert result.nonstandard == ()
