"""Control changes from EVM logs: approvals, Safe owner / threshold / guard / module / singleton
changes in both Safe shapes (≤ 1.3.0 data word, 1.4.x indexed), EIP-1967 upgrades, generated
approvals, and the Approval logs of two mainnet blocks counted by an independent filter."""

from __future__ import annotations

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
from drainwatch.model import BlockRef, ControlChange, ControlKind, TransferStatus
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
from watchers.evm.control import (
    ADDED_OWNER_TOPIC,
    APPROVAL_FOR_ALL_TOPIC,
    APPROVAL_TOPIC,
    CHANGED_GUARD_TOPIC,
    CHANGED_MASTER_COPY_TOPIC,
    CHANGED_THRESHOLD_TOPIC,
    CONTROL_TOPICS,
    ENABLED_MODULE_TOPIC,
    REMOVED_OWNER_TOPIC,
    UPGRADED_TOPIC,
    ControlChanges,
    control_changes,
)
from watchers.evm.logs import TRANSFER_TOPIC, parse_logs

SAFE = "0x" + "5a" * 20
PROXY = "0x" + "9e" * 20
ZERO = "0x" + "00" * 20


def _approval(owner: str, spender: str, amount: int, log_index: int = 0, **fields: Any) -> Any:
    topics = [APPROVAL_TOPIC, _topic(owner), _topic(spender)]
    return _wire(topics, encode(["uint256"], [amount]), log_index, **fields)


def _one_argument(
    topic: str, arg: str | int, indexed: bool, log_index: int = 0, address: str = SAFE
) -> Any:
    """A one-argument Safe / proxy event: Safe 1.4.x indexes it, Safe ≤ 1.3.0 puts it in data."""
    if indexed:
        return _wire([topic, _topic(arg)], b"", log_index, address)
    kind = "address" if isinstance(arg, str) else "uint256"
    return _wire([topic], encode([kind], [arg]), log_index, address)


def _run(raw: list[Any], watched: frozenset[str] = frozenset({ALICE, SAFE})) -> ControlChanges:
    return control_changes("ethereum", BLOCK, TIME, parse_logs(raw), watched)


def _change(log_index: int, wallet: str, kind: ControlKind, **fields: Any) -> ControlChange:
    return ControlChange(
        chain="ethereum",
        index=f"log:{log_index}",
        wallet_address=wallet,
        kind=kind,
        status=TransferStatus.CONFIRMED,
        tx_hash="0x" + f"{log_index:064x}",
        block=BLOCK,
        block_time=TIME,
        **fields,
    )


# --- topics -----------------------------------------------------------------------------------


def test_topic_constants_are_the_keccak_of_the_event_signatures() -> None:
    def sig(text: str) -> str:
        return "0x" + keccak(text=text).hex()

    expected = {
        "Approval(address,address,uint256)": APPROVAL_TOPIC,
        "ApprovalForAll(address,address,bool)": APPROVAL_FOR_ALL_TOPIC,
        "AddedOwner(address)": ADDED_OWNER_TOPIC,
        "RemovedOwner(address)": REMOVED_OWNER_TOPIC,
        "ChangedThreshold(uint256)": CHANGED_THRESHOLD_TOPIC,
        "ChangedGuard(address)": CHANGED_GUARD_TOPIC,
        "EnabledModule(address)": ENABLED_MODULE_TOPIC,
        "ChangedMasterCopy(address)": CHANGED_MASTER_COPY_TOPIC,
        "Upgraded(address)": UPGRADED_TOPIC,
    }
    for signature, topic in expected.items():
        assert sig(signature) == topic, signature
    assert tuple(expected.values()) == CONTROL_TOPICS
    assert all(topic == topic.lower() for topic in CONTROL_TOPICS)


# --- Safe and proxy events --------------------------------------------------------------------

EMITTER_EVENTS = [
    (ADDED_OWNER_TOPIC, ControlKind.OWNER_ADDED, CAROL),
    (REMOVED_OWNER_TOPIC, ControlKind.OWNER_REMOVED, BOB),
    (CHANGED_GUARD_TOPIC, ControlKind.GUARD_CHANGED, CAROL),
    (CHANGED_GUARD_TOPIC, ControlKind.GUARD_CHANGED, ZERO),  # guard removed
    (ENABLED_MODULE_TOPIC, ControlKind.MODULE_ENABLED, CAROL),
    (CHANGED_MASTER_COPY_TOPIC, ControlKind.MASTER_COPY_CHANGED, "0x" + "d9" * 20),
    (UPGRADED_TOPIC, ControlKind.IMPLEMENTATION_CHANGED, "0x" + "1e" * 20),
]


@pytest.mark.parametrize("indexed", [False, True], ids=["safe-1.3-data", "safe-1.4-indexed"])
@pytest.mark.parametrize(("topic", "kind", "subject"), EMITTER_EVENTS)
def test_emitter_events_in_both_shapes(
    topic: str, kind: ControlKind, subject: str, indexed: bool
) -> None:
    raw = _one_argument(topic, subject, indexed, 7)
    assert _run([raw]) == ControlChanges(
        changes=(_change(7, SAFE, kind, subject=subject),), nonstandard=()
    )


@pytest.mark.parametrize("indexed", [False, True], ids=["safe-1.3-data", "safe-1.4-indexed"])
@pytest.mark.parametrize("threshold", [1, 3, 2**256 - 1])
def test_threshold_changed_in_both_shapes(threshold: int, indexed: bool) -> None:
    raw = _one_argument(CHANGED_THRESHOLD_TOPIC, threshold, indexed, 4)
    (change,) = _run([raw]).changes
    assert change == _change(4, SAFE, ControlKind.THRESHOLD_CHANGED, value=threshold)


def test_proxy_upgrade_with_mixed_case_addresses_comes_out_lower_case() -> None:
    implementation = "0x" + "AbCdEf" * 6 + "abcd"
    raw = _one_argument(UPGRADED_TOPIC, implementation.lower(), True, 2, PROXY)
    raw["address"] = "0x" + PROXY[2:].upper()
    raw["topics"][1] = raw["topics"][1].upper().replace("0X", "0x")
    (change,) = _run([raw], frozenset({PROXY})).changes
    assert (change.wallet_address, change.subject) == (PROXY, implementation.lower())
    assert change.contract is None


def test_emitter_must_be_watched_not_the_subject() -> None:
    raw = [
        _one_argument(
            ADDED_OWNER_TOPIC, ALICE, True, 0, address=CAROL
        ),  # watched owner, other Safe
        _one_argument(ADDED_OWNER_TOPIC, CAROL, False, 1, address=SAFE),  # our Safe
        _one_argument(UPGRADED_TOPIC, ALICE, True, 2, address=PROXY),  # a proxy we do not watch
    ]
    assert [(c.index, c.wallet_address) for c in _run(raw).changes] == [("log:1", SAFE)]
    assert [c.index for c in _run(raw, frozenset({PROXY, CAROL})).changes] == ["log:0", "log:2"]
    assert _run(raw, frozenset()).changes == ()


def test_a_safe_takeover_sequence_in_one_block() -> None:
    """Add the attacker, drop two owners, threshold to 1, swap the singleton: five changes."""
    attacker = "0x" + "ee" * 20
    raw = [
        _one_argument(ADDED_OWNER_TOPIC, attacker, False, 10),
        _one_argument(REMOVED_OWNER_TOPIC, ALICE, False, 11),
        _one_argument(REMOVED_OWNER_TOPIC, BOB, True, 12),
        _one_argument(CHANGED_THRESHOLD_TOPIC, 1, False, 13),
        _one_argument(CHANGED_MASTER_COPY_TOPIC, attacker, False, 14),
    ]
    assert [(c.kind, c.subject, c.value) for c in _run(raw).changes] == [
        (ControlKind.OWNER_ADDED, attacker, None),
        (ControlKind.OWNER_REMOVED, ALICE, None),
        (ControlKind.OWNER_REMOVED, BOB, None),
        (ControlKind.THRESHOLD_CHANGED, None, 1),
        (ControlKind.MASTER_COPY_CHANGED, attacker, None),
    ]


# --- approvals --------------------------------------------------------------------------------


def test_erc20_approval_by_a_watched_owner() -> None:
    (change,) = _run([_approval(ALICE, CAROL, 10**24, 3)]).changes
    assert change == _change(
        3, ALICE, ControlKind.APPROVAL, subject=CAROL, value=10**24, contract=TOKEN
    )


def test_approval_to_a_watched_spender_is_not_our_control_change() -> None:
    raw = [_approval(CAROL, ALICE, 5, 0), _approval(BOB, SAFE, 6, 1), _approval(ALICE, ALICE, 7, 2)]
    assert [(c.wallet_address, c.value) for c in _run(raw).changes] == [(ALICE, 7)]


def test_eip2612_permit_shows_as_a_plain_approval() -> None:
    """``permit(owner, spender, value, deadline, v, r, s)`` emits ``Approval(owner, spender,
    value)``, sent by anyone (here a relayer): only the owner in the log matters."""
    unlimited = 2**256 - 1
    raw = _approval(ALICE, CAROL, unlimited, 9, address=TOKEN, transactionHash="0x" + "77" * 32)
    (change,) = _run([raw]).changes
    assert (change.kind, change.wallet_address, change.subject) == (
        ControlKind.APPROVAL,
        ALICE,
        CAROL,
    )
    assert (change.value, change.tx_hash) == (unlimited, "0x" + "77" * 32)


def test_erc721_approval_names_the_token_id() -> None:
    token_id = 2**255 + 7
    raw = _wire([APPROVAL_TOPIC, _topic(ALICE), _topic(CAROL), _topic(token_id)], b"", 5)
    (change,) = _run([raw]).changes
    assert change == _change(
        5, ALICE, ControlKind.APPROVAL, subject=CAROL, value=1, contract=f"{TOKEN}/{token_id}"
    )


@pytest.mark.parametrize("approved", [0, 1])
def test_approval_for_all_granted_and_revoked(approved: int) -> None:
    topics = [APPROVAL_FOR_ALL_TOPIC, _topic(ALICE), _topic(CAROL)]
    raw = [
        _wire(topics, encode(["bool"], [bool(approved)]), 6),
        _wire([APPROVAL_FOR_ALL_TOPIC, _topic(CAROL), _topic(ALICE)], encode(["bool"], [True])),
    ]
    (change,) = _run(raw).changes
    assert change == _change(
        6, ALICE, ControlKind.APPROVAL_FOR_ALL, subject=CAROL, value=approved, contract=TOKEN
    )


# --- other logs, removed logs, logs of other blocks -------------------------------------------


def test_other_events_are_ignored_not_counted() -> None:
    transfer = [TRANSFER_TOPIC, _topic(ALICE), _topic(BOB)]
    disabled_module = "0x" + keccak(text="DisabledModule(address)").hex()
    raw = [
        _wire(transfer, encode(["uint256"], [1])),
        _wire([], b"x", 1),
        _wire([disabled_module, _topic(ALICE)], b"", 2, SAFE),
    ]
    assert _run(raw) == ControlChanges((), ())


def test_removed_logs_are_skipped_even_from_another_block() -> None:
    raw = [
        _approval(ALICE, BOB, 1, 0, removed=True),
        _approval(ALICE, BOB, 2, 1, removed=True, blockHash="0x" + "cd" * 32),
        _approval(ALICE, BOB, 3, 2),
    ]
    assert [c.value for c in _run(raw).changes] == [3]


@pytest.mark.parametrize("field", ["blockHash", "blockNumber"])
def test_a_log_of_another_block_raises(field: str) -> None:
    other = {"blockHash": "0x" + "cd" * 32, "blockNumber": hex(BLOCK.height + 1)}[field]
    raw = [_approval(ALICE, BOB, 1, 0), _approval(CAROL, CAROL, 2, 1, **{field: other})]
    with pytest.raises(MalformedRpcResponse, match=r"logs\[1\] is of block") as caught:
        _run(raw)
    assert caught.value.method == "eth_getLogs"


# --- non-standard shapes ----------------------------------------------------------------------

DIRTY = "0x" + "01" * 12 + ALICE[2:]  # an address word with non-zero high bytes
NONSTANDARD = {
    "approval with 64-byte data": _wire(
        [APPROVAL_TOPIC, _topic(ALICE), _topic(BOB)], encode(["uint256"] * 2, [1, 2])
    ),
    "approval with 3 topics and no data": _wire([APPROVAL_TOPIC, _topic(ALICE), _topic(BOB)]),
    "approval with 2 topics": _wire([APPROVAL_TOPIC, _topic(ALICE)], encode(["uint256"], [1])),
    "approval with only topic 0": _wire([APPROVAL_TOPIC], encode(["address"] * 3, [ALICE] * 3)),
    "erc721 approval with data": _wire(
        [APPROVAL_TOPIC, _topic(ALICE), _topic(BOB), _topic(7)], encode(["uint256"], [1])
    ),
    "approval owner with dirty high bytes": _wire(
        [APPROVAL_TOPIC, DIRTY, _topic(BOB)], encode(["uint256"], [1])
    ),
    "approval for all with bool 2": _wire(
        [APPROVAL_FOR_ALL_TOPIC, _topic(ALICE), _topic(BOB)], encode(["uint256"], [2])
    ),
    "approval for all with 4 topics": _wire(
        [APPROVAL_FOR_ALL_TOPIC, _topic(ALICE), _topic(BOB), _topic(1)]
    ),
    "approval for all with no data": _wire([APPROVAL_FOR_ALL_TOPIC, _topic(ALICE), _topic(BOB)]),
    "owner added in both topic and data": _wire(
        [ADDED_OWNER_TOPIC, _topic(CAROL)], encode(["address"], [CAROL]), address=SAFE
    ),
    "owner added with neither": _wire([ADDED_OWNER_TOPIC], address=SAFE),
    "owner added with a 31-byte word": _wire([ADDED_OWNER_TOPIC], b"\x01" * 31, address=SAFE),
    "owner added with dirty data word": _wire(
        [ADDED_OWNER_TOPIC], bytes.fromhex(DIRTY[2:]), address=SAFE
    ),
    "upgraded with dirty topic": _wire([UPGRADED_TOPIC, DIRTY], address=SAFE),
    "threshold with 3 topics": _wire([CHANGED_THRESHOLD_TOPIC, _topic(1), _topic(2)], address=SAFE),
    "guard from an unwatched emitter, data of 64 bytes": _wire(
        [CHANGED_GUARD_TOPIC], encode(["address"] * 2, [ALICE, BOB]), address=CAROL
    ),
}


@pytest.mark.parametrize("name", NONSTANDARD)
def test_nonstandard_shapes_are_skipped_and_counted(name: str) -> None:
    raw = [_approval(ALICE, BOB, 1, 0), {**NONSTANDARD[name], "logIndex": "0x1"}]
    result = _run(raw)
    assert [c.value for c in result.changes] == [1]
    assert [log.log_index for log in result.nonstandard] == [1]


# --- malformed answers ------------------------------------------------------------------------


MALFORMED = [
    (_set_topic(1, "0x" + "zz" * 32), "logs[3].topics[1]"),
    (_set_topic(2, ALICE), "logs[3].topics[2]"),  # an address where a 32-byte word belongs
    (_set_topic(0, 7), "logs[3].topics[0]"),
    (_set("topics", [APPROVAL_TOPIC] * 5), "logs[3].topics"),
    (_set("blockHash", None), "logs[3].blockHash"),
    (_set("blockNumber", 1234), "logs[3].blockNumber"),
    (_drop("transactionHash"), "logs[3].transactionHash"),
    (_set("logIndex", "0x"), "logs[3].logIndex"),
    (_set("data", "0x" + "0" * 63), "logs[3].data"),
    (_set("address", SAFE + "00"), "logs[3].address"),
    (_set("removed", 0), "logs[3].removed"),
]


@pytest.mark.parametrize(("mutate", "path"), MALFORMED)
def test_malformed_log_raises_naming_the_path(
    mutate: Callable[[dict[str, Any]], None], path: str
) -> None:
    raw = [_approval(ALICE, BOB, i, i) for i in range(4)]
    mutate(raw[3])
    with pytest.raises(MalformedRpcResponse) as caught:
        control_changes(
            "ethereum", BLOCK, TIME, parse_logs(raw, "https://node.example"), frozenset({ALICE})
        )
    assert f"{path} " in str(caught.value)
    assert caught.value.endpoint == "https://node.example"


# --- property ---------------------------------------------------------------------------------

POOL = [ALICE, BOB, CAROL, SAFE, ZERO, "0x" + "ff" * 20]


@given(
    approvals=st.lists(
        st.tuples(st.sampled_from(POOL), st.sampled_from(POOL), st.integers(0, 2**256 - 1)),
        max_size=20,
    ),
    watched=st.frozensets(st.sampled_from(POOL)),
)
def test_approval_amounts_round_trip_and_only_watched_owners_come_out(
    approvals: list[tuple[str, str, int]], watched: frozenset[str]
) -> None:
    raw = [
        _approval(owner, spender, amount, i) for i, (owner, spender, amount) in enumerate(approvals)
    ]
    result = _run(raw, watched)
    expected = [
        (f"log:{i}", owner, spender, amount)
        for i, (owner, spender, amount) in enumerate(approvals)
        if owner in watched
    ]
    assert [(c.index, c.wallet_address, c.subject, c.value) for c in result.changes] == expected
    assert {c.kind for c in result.changes} <= {ControlKind.APPROVAL}
    assert result.nonstandard == ()


# --- mainnet ----------------------------------------------------------------------------------


def test_mainnet_approvals_match_an_independent_count(shared_data: Path) -> None:
    """Blocks 17173049-17173050 hold 86 ``Approval`` logs (84 ERC-20, 2 ERC-721 from Azuki) and
    2 ``ApprovalForAll``, no Safe or proxy event. Watching every owner, each comes out once."""
    rows = _jsonl(shared_data / MAINNET / "logs.jsonl")
    # the independent filter: topic 0 as typed from the ABI spec, no decoding
    approval = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
    for_all = "0x17307eab39ab6107e8899845ad3d59bd9653f200f220920489ca2b5937696c31"
    by_hand = [r for r in rows if r["topics"] and r["topics"][0] in (approval, for_all)]
    owners = frozenset("0x" + r["topics"][1][-40:] for r in by_hand)
    expected = sorted((r["transaction_hash"], f"log:{r['log_index']}") for r in by_hand)

    ours: list[ControlChange] = []
    for block in _jsonl(shared_data / MAINNET / "blocks.jsonl"):
        ref = BlockRef(block["number"], block["hash"])
        time = datetime.fromtimestamp(block["timestamp"], UTC)
        mine = [_etl_log_to_wire(r) for r in rows if r["block_hash"] == block["hash"]]
        result = control_changes("ethereum", ref, time, parse_logs(mine), owners)
        assert result.nonstandard == ()
        ours.extend(result.changes)
        assert control_changes("ethereum", ref, time, parse_logs(mine), frozenset()).changes == ()

    assert len(by_hand) == len(ours) == 88
    assert sorted((c.tx_hash or "", c.index) for c in ours) == expected
    kinds = [c.kind for c in ours]
    assert kinds.count(ControlKind.APPROVAL) == 86
    assert kinds.count(ControlKind.APPROVAL_FOR_ALL) == 2
    assert sum("/" in (c.contract or "") for c in ours) == 2

    by_index = {(c.block.height if c.block else 0, c.index): c for c in ours}
    usdt = by_index[(17173049, "log:207")]
    assert (usdt.contract, usdt.value) == ("0xdac17f958d2ee523a2206206994597c13d831ec7", 25_000_000)
    assert usdt.wallet_address == "0xb09eadee5e0417e5ab217124c03157d908967068"
    azuki = "0xed5af388653567af2f388e6224dc7c4b3241c544/1527"
    assert [(c.index, c.subject, c.value) for c in ours if c.contract == azuki] == [
        ("log:197", "0x00000000000111abe46ff893f3b2fdf1f759a8a8", 1),
        ("log:199", ZERO, 1),  # the transfer that follows clears the approval
    ]
    assert {c.status for c in ours} == {TransferStatus.CONFIRMED}
