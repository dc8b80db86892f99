"""Internal transfers from call traces, on recorded Ethereum mainnet responses.

Each recorded block exists in both dialects: ``debug_traceBlockByNumber`` with the callTracer
(``test_extract_geth_traces_job``) and ``trace_block`` (``test_export_traces_job``). The callTracer
answers carry no ``txHash``, so the block's transaction hashes, in block order, are taken from the
``transactionHash`` fields of the ``trace_block`` recording of the same block (no block recording
exists for these heights); the block hash comes from its ``blockHash`` fields. These blocks have no
recorded timestamp either, so a fixed ``WHEN`` stands in for the block time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import BlockRef, Transfer, TransferKind, TransferStatus
from watchers.evm.traces import (
    internal_transfers_from_call_tracer,
    internal_transfers_from_trace_block,
    native_transfers_from_trace_block,
)

REC = "ethereum/rpc-recordings"
WHEN = datetime(2016, 2, 13, tzinfo=UTC)
ETHER = 10**18


def _load(shared_data: Path, rel: str) -> Any:
    return json.loads((shared_data / REC / rel).read_text())["result"]


def _geth(shared_data: Path, folder: str, number: str) -> Any:
    return _load(
        shared_data,
        f"test_extract_geth_traces_job/{folder}/"
        f"web3_response.debug_traceBlockByNumber_{number}_tracer_calltracer.json",
    )


def _parity(shared_data: Path, folder: str, number: str) -> Any:
    return _load(
        shared_data, f"test_export_traces_job/{folder}/web3_response.trace_block_{number}.json"
    )


def _tx_hashes(parity: Any) -> list[str]:
    """The block's transactions in order: the ``transactionHash`` of each top-level trace."""
    return [t["transactionHash"] for t in parity if t["type"] != "reward" and not t["traceAddress"]]


def _internal(
    tx_hash: str, index: str, sender: str, to: str, amount: int, block: BlockRef
) -> Transfer:
    return Transfer(
        chain="ethereum",
        tx_hash=tx_hash,
        index=index,
        from_address=sender,
        to_address=to,
        asset="native",
        amount=amount,
        kind=TransferKind.INTERNAL,
        status=TransferStatus.CONFIRMED,
        block=block,
        block_time=WHEN,
    )


def _both(block: BlockRef, geth: Any, parity: Any) -> list[Transfer]:
    """Both dialects' transfers, after checking they are identical."""
    from_parity = internal_transfers_from_trace_block("ethereum", block, WHEN, parity)
    from_geth = internal_transfers_from_call_tracer(
        "ethereum", block, WHEN, _tx_hashes(parity), geth
    )
    assert from_geth == from_parity
    return from_parity


# Block 1000000 (0xf4240): from trace_block_0xf4240.json, blockHash and the first transaction's
# hash; its frame at traceAddress [0] is a CALLCODE of 0x56bc75e2d63100000 wei = 100 ETH.
B1000000 = BlockRef(1000000, "0x8e38b4dbf6b11fcc3b9dee84fb7986e29ca0a02cecd8977c161ff7333329681e")
TX_CALLCODE = "0xea1093d492a1dcb1bef708f771a99a96ff05dcab81ca76c31940300177fcf49f"
WALLET = "0xc083e9947cf02b8ffc7d3090ae9aea72df98fd47"
LIBRARY = "0x273930d21e01ee25e4c219b63259d214872220a2"


def test_block_1000000_the_100_ether_callcode_comes_out(shared_data: Path) -> None:
    geth = _geth(shared_data, "block_with_subtraces", "0xf4240")
    parity = _parity(shared_data, "block_with_subtraces", "0xf4240")
    # CALLCODE runs LIBRARY's code (the callTracer's "to") inside WALLET's own account, so the
    # value stays with WALLET: parity's action.to says so, and both dialects must agree.
    assert geth[0]["result"]["calls"][0]["to"] == LIBRARY
    assert parity[1]["action"]["to"] == WALLET
    assert _both(B1000000, geth, parity) == [
        _internal(TX_CALLCODE, "trace:0", WALLET, WALLET, 100 * ETHER, B1000000)
    ]


def test_a_matching_tx_hash_is_accepted(shared_data: Path) -> None:
    geth = _geth(shared_data, "block_with_subtraces", "0xf4240")
    hashes = _tx_hashes(_parity(shared_data, "block_with_subtraces", "0xf4240"))
    with_hashes = [
        dict(entry, txHash=h.upper().replace("0X", "0x"))
        for entry, h in zip(geth, hashes, strict=True)
    ]
    assert internal_transfers_from_call_tracer(
        "ethereum", B1000000, WHEN, hashes, with_hashes
    ) == internal_transfers_from_call_tracer("ethereum", B1000000, WHEN, hashes, geth)


# Block 1000690 (0xf44f2): transaction 1 (0xe4de…) is a top-level CREATE of value 0x0 that made
# 0xa7e3cf952ea8d9438a26ee346c295f1ada328ae1 (trace_block result.address, callTracer "to").
B1000690 = BlockRef(1000690, "0x140d89c4fcaa42e691e68d1003c2d3adb294335e93c6c1aa734170ab028016b3")
TX_PLAIN_1000690 = "0x2c3cfb8d7f3039fcad64bd231beb0229af55f9114d74aef12a6f228ad1dac100"
CREATOR = "0xacdee28d8ca76187883831a37f551a5904cdf191"
CREATED = "0xa7e3cf952ea8d9438a26ee346c295f1ada328ae1"


def test_block_1000690_a_top_level_create_is_the_transaction_s_own(shared_data: Path) -> None:
    geth = _geth(shared_data, "block_with_create", "0xf44f2")
    parity = _parity(shared_data, "block_with_create", "0xf44f2")
    assert _both(B1000690, geth, parity) == []


def test_block_1000690_the_create_nested_with_value_pays_the_created_address(
    shared_data: Path,
) -> None:
    geth = _geth(shared_data, "block_with_create", "0xf44f2")
    parity = _parity(shared_data, "block_with_create", "0xf44f2")
    # The recorded CREATE frame, moved below transaction 0's top-level frame with 7 wei.
    geth[0]["result"]["calls"] = [dict(geth[1]["result"], value="0x7")]
    nested = copy.deepcopy(parity[1])
    nested.update(transactionHash=TX_PLAIN_1000690, traceAddress=[0])
    nested["action"]["value"] = "0x7"
    parity.insert(1, nested)
    assert _both(B1000690, geth, parity) == [
        _internal(TX_PLAIN_1000690, "trace:0", CREATOR, CREATED, 7, B1000690)
    ]


# Block 1000895 (0xf45bf): transaction 0 (0xa2f0…) failed out of gas sending 0xde0b6b3a7640000
# = 1 ETH; transaction 1 (0xc7fe…) is a plain call without subtraces.
B1000895 = BlockRef(1000895, "0x775cd2dd582a6def1e649862592d5c0449e6eb7384c7d6677768b0b3087dbccc")


def test_block_1000895_nothing_from_the_failed_frame(shared_data: Path) -> None:
    geth = _geth(shared_data, "block_with_error", "0xf45bf")
    parity = _parity(shared_data, "block_with_error", "0xf45bf")
    assert _both(B1000895, geth, parity) == []


def test_block_1000895_the_failed_frame_nested_still_moves_nothing(shared_data: Path) -> None:
    geth = _geth(shared_data, "block_with_error", "0xf45bf")
    parity = _parity(shared_data, "block_with_error", "0xf45bf")
    failed_frame = geth[0]["result"]
    # below it, a value-carrying call that succeeded but was reverted with its parent
    failed_frame["calls"] = [dict(geth[1]["result"])]
    geth[1]["result"]["calls"] = [failed_frame]
    tx1 = parity[1]["transactionHash"]
    failed_trace = dict(parity[0], transactionHash=tx1, traceAddress=[0])
    reverted_child = dict(parity[1], traceAddress=[0, 0])
    parity[2:2] = [failed_trace, reverted_child]
    assert _both(B1000895, geth, parity) == []


# Block 1011973 (0xf7105): transaction 0x91ac… calls kill() (0x41c0e1b5) on 0x474f…, which
# self-destructs (traceAddress [0]) and leaves its balance, 0xb1a2bc2ec50000 wei = 0.05 ETH, to
# 0x8397….
B1011973 = BlockRef(1011973, "0x3bedf784f81ff55e3a8c04f8b3b3a5e7421b2f5ba139d8e5696e4622bb37467b")
TX_KILL = "0x91acb43c5f141c393a189e091c190c9ffb20e4e8a502e4cc3087be9587bdbc89"
DESTRUCTED = "0x474faa5018639791952fae334e2911700ac7fe9b"
HEIR = "0x83973747eec131bf9a08ac64fb1a518e891bdf4b"


def test_block_1011973_the_selfdestruct_pays_its_balance(shared_data: Path) -> None:
    parity = _parity(shared_data, "block_with_suicide", "0xf7105")
    assert internal_transfers_from_trace_block("ethereum", B1011973, WHEN, parity) == [
        _internal(TX_KILL, "trace:0", DESTRUCTED, HEIR, 5 * ETHER // 100, B1011973)
    ]


def test_block_1011973_the_recorded_selfdestruct_frame_is_truncated(shared_data: Path) -> None:
    """The recorded callTracer frame is only ``{"type": "SELFDESTRUCT"}``: no sender, heir or
    amount. That is refused, not read as zero; completed with what geth reports (contract,
    beneficiary, balance), it gives what trace_block gives."""
    geth = _geth(shared_data, "block_with_suicide", "0xf7105")
    parity = _parity(shared_data, "block_with_suicide", "0xf7105")
    assert geth[0]["result"]["calls"] == [{"type": "SELFDESTRUCT"}]
    with pytest.raises(MalformedRpcResponse, match=r"traces\[0\]\.result\.calls\[0\]\.from"):
        internal_transfers_from_call_tracer("ethereum", B1011973, WHEN, [TX_KILL], geth)
    geth[0]["result"]["calls"][0].update(
        {"from": DESTRUCTED, "to": HEIR, "value": parity[1]["action"]["balance"]}
    )
    assert len(_both(B1011973, geth, parity)) == 1


def test_blocks_without_transactions(shared_data: Path) -> None:
    # The callTracer recording is of block 1, the trace_block one of block 0 (genesis).
    geth = _geth(shared_data, "block_without_transactions", "0x1")
    parity = _parity(shared_data, "block_without_transactions", "0x0")
    assert geth == [] and parity == []
    one, genesis = BlockRef(1, "0x" + "11" * 32), BlockRef(0, "0x" + "00" * 32)
    assert internal_transfers_from_call_tracer("ethereum", one, WHEN, [], geth) == []
    assert internal_transfers_from_trace_block("ethereum", genesis, WHEN, parity) == []


@pytest.mark.parametrize(
    ("folder", "number"),
    [("blocks_2112234_2112234", "0x203aea"), ("blocks_508110_508110", "0x7c0ce")],
)
def test_stream_blocks_have_top_level_traces_only(
    shared_data: Path, folder: str, number: str
) -> None:
    block = _load(
        shared_data, f"test_stream/{folder}/web3_response.eth_getBlockByNumber_{number}_false.json"
    )
    ref = BlockRef(int(block["number"], 16), block["hash"])
    time = datetime.fromtimestamp(int(block["timestamp"], 16), UTC)
    parity = _load(shared_data, f"test_stream/{folder}/web3_response.trace_block_{number}.json")
    # 2112234: a top-level create and the block reward; 508110: a top-level create, a top-level
    # call of 0x44b1e5395d69d800 wei, a block and an uncle reward. Nothing below a top level.
    assert _tx_hashes(parity) == block["transactions"]
    assert internal_transfers_from_trace_block("ethereum", ref, time, parity) == []
    with pytest.raises(MalformedRpcResponse, match="blockHash"):  # traces of another block
        internal_transfers_from_trace_block(
            "ethereum", BlockRef(ref.height, "0x" + "ab" * 32), time, parity
        )


Mutation = Callable[[Any], object]


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (
            lambda t: t[0]["result"]["calls"][0].update(value="100"),
            "traces[0].result.calls[0].value",
        ),
        (
            lambda t: t[0]["result"]["calls"][0].update(value="0x"),
            "traces[0].result.calls[0].value",
        ),
        (lambda t: t[0]["result"]["calls"][0].update(to="0x1234"), "traces[0].result.calls[0].to"),
        (lambda t: t[0]["result"]["calls"][0].pop("from"), "traces[0].result.calls[0].from"),
        (
            lambda t: t[0]["result"]["calls"][0].update(type="JUMP"),
            "traces[0].result.calls[0].type",
        ),
        (lambda t: t[0]["result"].update(calls={"0": {}}), "traces[0].result.calls"),
        (lambda t: t[0]["result"]["calls"].append("frame"), "traces[0].result.calls[1]"),
        (lambda t: t.__setitem__(1, {"error": "tracer timeout"}), "traces[1].result"),
        (lambda t: t[1].update(txHash="0x" + "ab" * 32), "traces[1].txHash"),
        (lambda t: t[1].update(txHash="0xab"), "traces[1].txHash"),
        (lambda t: t.pop(), "traces has 1 entries for 2 transactions"),
    ],
)
def test_malformed_call_tracer_answers_name_the_path(
    shared_data: Path, mutate: Mutation, named: str
) -> None:
    geth = _geth(shared_data, "block_with_subtraces", "0xf4240")
    hashes = _tx_hashes(_parity(shared_data, "block_with_subtraces", "0xf4240"))
    mutate(geth)
    with pytest.raises(MalformedRpcResponse) as err:
        internal_transfers_from_call_tracer(
            "ethereum", B1000000, WHEN, hashes, geth, "https://n.example"
        )
    assert named in str(err.value) and "https://n.example" in str(err.value)
    assert "debug_traceBlockByNumber" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda t: t[1]["action"].update(value="0xZZ"), "traces[1].action.value"),
        (lambda t: t[1]["action"].update(value=100), "traces[1].action.value"),
        (lambda t: t[1]["action"].update({"from": "0x" + "11" * 21}), "traces[1].action.from"),
        (lambda t: t[1]["action"].pop("to"), "traces[1].action.to"),
        (lambda t: t[1]["action"].update(callType="jump"), "traces[1].action.callType"),
        (lambda t: t[1].update(action=None), "traces[1].action"),
        (lambda t: t[1].update(type="teleport"), "traces[1].type"),
        (lambda t: t[1].update(traceAddress=["0"]), "traces[1].traceAddress"),
        (lambda t: t[1].pop("traceAddress"), "traces[1].traceAddress"),
        (lambda t: t[1].pop("transactionHash"), "traces[1].transactionHash"),
        (lambda t: t[2].update(blockHash="0x" + "00" * 32), "traces[2].blockHash"),
        (lambda t: t.pop(0), "lack the top-level trace of 0xea1093d4"),
        (lambda t: t.__setitem__(1, "trace"), "traces[1] is not an object"),
    ],
)
def test_malformed_trace_block_answers_name_the_path(
    shared_data: Path, mutate: Mutation, named: str
) -> None:
    parity = _parity(shared_data, "block_with_subtraces", "0xf4240")
    mutate(parity)
    with pytest.raises(MalformedRpcResponse) as err:
        internal_transfers_from_trace_block("ethereum", B1000000, WHEN, parity, "https://n.example")
    assert named in str(err.value) and "https://n.example" in str(err.value)
    assert "trace_block" in str(err.value)


def test_malformed_selfdestruct_and_create_traces(shared_data: Path) -> None:
    parity = _parity(shared_data, "block_with_suicide", "0xf7105")
    del parity[1]["action"]["balance"]
    with pytest.raises(MalformedRpcResponse, match=r"traces\[1\]\.action\.balance"):
        internal_transfers_from_trace_block("ethereum", B1011973, WHEN, parity)
    parity = _parity(shared_data, "block_with_create", "0xf44f2")
    nested = dict(parity[1], transactionHash=TX_PLAIN_1000690, traceAddress=[0], result=None)
    with pytest.raises(MalformedRpcResponse, match=r"traces\[1\]\.result is not an object"):
        internal_transfers_from_trace_block("ethereum", B1000690, WHEN, [parity[0], nested])


def test_answers_that_are_not_lists() -> None:
    with pytest.raises(MalformedRpcResponse, match="traces is not a list"):
        internal_transfers_from_call_tracer("ethereum", B1000000, WHEN, [], {"result": []})
    with pytest.raises(MalformedRpcResponse, match="traces is not a list"):
        internal_transfers_from_trace_block("ethereum", B1000000, WHEN, None)


# --- generated frame trees ---------------------------------------------------------------------

VALUE_TYPES = {"CALL", "CALLCODE", "CREATE", "CREATE2", "SELFDESTRUCT"}
GEN_BLOCK = BlockRef(7, "0x" + "77" * 32)


@dataclass(frozen=True)
class Frame:
    type: str
    sender: str
    to: str
    value: int
    failed: bool
    calls: tuple[Frame, ...] = ()


_addresses = st.sampled_from([f"0x{n:040x}" for n in range(1, 5)])
_values = st.one_of(st.just(0), st.integers(1, 2**256 - 1))


def _frames(
    types: list[str], calls: st.SearchStrategy[tuple[Frame, ...]]
) -> st.SearchStrategy[Frame]:
    return st.builds(
        Frame, st.sampled_from(types), _addresses, _addresses, _values, st.booleans(), calls
    )


_CALLERS = ["CALL", "CALLCODE", "DELEGATECALL", "STATICCALL", "CREATE", "CREATE2"]
_subtree = st.recursive(
    _frames([*_CALLERS, "SELFDESTRUCT"], st.just(())),
    lambda kids: _frames(_CALLERS, st.lists(kids, max_size=3).map(tuple)),
    max_leaves=10,
)
_transactions = st.lists(
    _frames(["CALL", "CREATE"], st.lists(_subtree, max_size=3).map(tuple)), max_size=3
)


def _as_call_tracer(f: Frame) -> dict[str, Any]:
    """geth's form: DELEGATECALL shows its parent's value (here any value), STATICCALL none."""
    frame: dict[str, Any] = {
        "type": f.type,
        "from": f.sender,
        "to": f.to,
        "gas": "0x0",
        "input": "0x",
    }
    if f.type != "STATICCALL":
        frame["value"] = hex(f.value)
    if f.failed:
        frame["error"] = "execution reverted"
    if f.calls:
        frame["calls"] = [_as_call_tracer(c) for c in f.calls]
    return frame


def _as_trace_block(f: Frame, tx_hash: str, path: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """parity's form: flat, depth first; a callcode's ``to`` is the caller's own account."""
    trace: dict[str, Any] = {
        "blockHash": GEN_BLOCK.hash,
        "blockNumber": GEN_BLOCK.height,
        "transactionHash": tx_hash,
        "traceAddress": list(path),
        "subtraces": len(f.calls),
    }
    if f.type == "SELFDESTRUCT":
        trace.update(type="suicide", result=None)
        trace["action"] = {"address": f.sender, "refundAddress": f.to, "balance": hex(f.value)}
    elif f.type.startswith("CREATE"):
        trace.update(type="create", result={"address": f.to, "gasUsed": "0x0", "code": "0x"})
        trace["action"] = {"from": f.sender, "value": hex(f.value), "gas": "0x0", "init": "0x"}
    else:
        to = f.sender if f.type == "CALLCODE" else f.to
        value = 0 if f.type == "STATICCALL" else f.value
        trace.update(type="call", result={"gasUsed": "0x0", "output": "0x"})
        trace["action"] = {
            "callType": f.type.lower(),
            "from": f.sender,
            "to": to,
            "value": hex(value),
        }
    if f.failed:
        del trace["result"]
        trace["error"] = "Reverted"
    children = [_as_trace_block(c, tx_hash, (*path, j)) for j, c in enumerate(f.calls)]
    return [trace, *(t for child in children for t in child)]


def _paths(f: Frame, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], Frame]]:
    return [(path, f), *(p for j, c in enumerate(f.calls) for p in _paths(c, (*path, j)))]


def _both_generated(txs: list[Frame]) -> tuple[list[Transfer], list[str]]:
    hashes = [f"0x{i + 1:064x}" for i in range(len(txs))]
    geth = [{"result": _as_call_tracer(tx)} for tx in txs]
    parity = [t for tx, h in zip(txs, hashes, strict=True) for t in _as_trace_block(tx, h)]
    from_geth = internal_transfers_from_call_tracer("ethereum", GEN_BLOCK, WHEN, hashes, geth)
    assert from_geth == internal_transfers_from_trace_block("ethereum", GEN_BLOCK, WHEN, parity)
    return from_geth, hashes


@settings(deadline=None)
@given(_transactions)
def test_both_dialects_agree_on_generated_trees(txs: list[Frame]) -> None:
    transfers, _ = _both_generated(txs)
    assert len({t.key for t in transfers}) == len(transfers)
    assert all(t.amount > 0 and t.index.startswith("trace:") for t in transfers)


@settings(deadline=None)
@given(_transactions)
def test_nothing_comes_from_below_a_failed_frame(txs: list[Frame]) -> None:
    transfers, hashes = _both_generated(txs)
    failed = {(h, p) for tx, h in zip(txs, hashes, strict=True) for p, f in _paths(tx) if f.failed}
    for t in transfers:
        path = tuple(int(n) for n in t.index.removeprefix("trace:").split("."))
        assert not any((t.tx_hash, path[:n]) in failed for n in range(len(path) + 1))


@settings(deadline=None)
@given(_transactions)
def test_no_more_moves_than_the_value_carrying_frames_carry(txs: list[Frame]) -> None:
    transfers, _ = _both_generated(txs)
    carried = sum(f.value for tx in txs for p, f in _paths(tx) if p and f.type in VALUE_TYPES)
    assert sum(t.amount for t in transfers) <= carried


def test_top_level_frames_are_the_transactions_own_value(shared_data: Path) -> None:
    """Block 1000895: of two payments, the one that ran out of gas moved nothing."""
    raw = _parity(shared_data, "block_with_error", "0xf45bf")
    block = BlockRef(1000895, raw[0]["blockHash"])
    hashes = _tx_hashes(raw)
    found = native_transfers_from_trace_block("ethereum", block, WHEN, hashes, raw)
    assert [(t.tx_hash, t.index, t.amount, t.kind) for t in found] == [
        (hashes[1], "tx", 1_100_000_000_000_000_000, TransferKind.NATIVE)
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda hashes: hashes[:1], "for 2 transactions, the block has 1"),
        (lambda hashes: [*hashes, "0x" + "ab" * 32], "for 2 transactions, the block has 3"),
        (lambda hashes: list(reversed(hashes)), "not the block's"),
    ],
)
def test_traces_that_do_not_match_the_header_are_refused(
    shared_data: Path, change: Any, reason: str
) -> None:
    raw = _parity(shared_data, "block_with_error", "0xf45bf")
    block = BlockRef(1000895, raw[0]["blockHash"])
    with pytest.raises(MalformedRpcResponse, match=reason):
        native_transfers_from_trace_block("ethereum", block, WHEN, change(_tx_hashes(raw)), raw)
