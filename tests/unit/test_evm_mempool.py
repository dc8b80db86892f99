"""Pure parts of the mempool watch: the txpool parser's reach, creation addresses, and the
strict reading of pending calldata (token calls, Safe transactions) on real ABI encodings."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import LAX_ENCODING, ControlKind, TransferKind
from watchers.evm.calldata import (
    APPROVE,
    EXEC_TRANSACTION,
    SAFE_BATCH_TRANSFER_FROM,
    SAFE_TRANSFER_FROM_1155,
    SET_APPROVAL_FOR_ALL,
    TRANSFER,
    TRANSFER_FROM,
    Grant,
    Move,
    debited_by_pull,
    exec_transaction,
    selector,
    token_call,
)
from watchers.evm.mempool import (
    PendingTx,
    concerns,
    created_address,
    parse_txpool,
    read_calldata,
)

COLD = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
OTHER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
TX = {
    "hash": "0x" + "ab" * 32,
    "from": COLD,
    "nonce": "0x7",
    "to": None,
    "value": "0x1",
    "input": "0x00",
}


def test_only_watched_senders_are_parsed_field_by_field() -> None:
    pool = {
        "pending": {COLD.upper().replace("0X", "0x"): {"7": TX}},
        "queued": {OTHER: {"1": {"anything": "at all"}}},
    }
    [tx] = parse_txpool(pool, frozenset({COLD}))
    assert (tx.sender, tx.nonce, tx.to, tx.value, tx.is_call) == (COLD, 7, None, 1, True)
    with pytest.raises(MalformedRpcResponse, match=r"result\.queued\.0x90F7.*\.1\.from"):
        parse_txpool(pool, frozenset({COLD, OTHER.lower()}))


@pytest.mark.parametrize(
    ("sender", "nonce", "expected"),
    [  # the well-known vectors of the CREATE address derivation
        (
            "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0",
            0,
            "cd234a471b72ba2f1ccf0a70fcaba648a5eecd8d",
        ),
        (
            "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0",
            1,
            "343c43a37d37dff08ae8c4a11544c718abb4fcf8",
        ),
        (
            "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0",
            2,
            "f778b86fa74e846c4f0a1fbd1335fe81c00a0c91",
        ),
        (
            "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0",
            3,
            "fffd933a0bc612844eaf0c6fe3e5b8e9b6c1d19c",
        ),
    ],
)
def test_created_address(sender: str, nonce: int, expected: str) -> None:
    assert created_address(sender, nonce) == "0x" + expected


# --- calldata of pending transactions: real ABI encodings (eth_abi), read strictly -------------

SAFE = "0x1db92e2eebc8e0c075a02bea49a2935bcd2dfcf4"  # Bybit's cold Safe (mainnet)
TOKEN = "0x" + "70" * 20
ATTACKER = "0x" + "99" * 20
WATCHED = frozenset({COLD, SAFE})


def call(signature: str, *args: Any) -> bytes:
    types = signature[signature.index("(") + 1 : -1].split(",") if "()" not in signature else []
    return bytes.fromhex(selector(signature)[2:]) + encode(types, list(args))


def exec_tx(to: str, value: int, data: bytes, operation: int, gas: int = 0) -> bytes:
    return call(
        "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)",
        to,
        value,
        data,
        operation,
        gas,
        0,
        0,
        ZERO,
        ZERO,
        b"\x01" * 65 * 3,  # three 65-byte owner signatures (r, s, v): their bytes do not matter
    )


ZERO = "0x" + "00" * 20


def test_selectors_are_the_standard_ones() -> None:
    assert (TRANSFER, TRANSFER_FROM, APPROVE) == ("0xa9059cbb", "0x23b872dd", "0x095ea7b3")
    assert (SET_APPROVAL_FOR_ALL, EXEC_TRANSACTION) == ("0xa22cb465", "0x6a761202")
    assert SAFE_TRANSFER_FROM_1155 == "0xf242432a" and SAFE_BATCH_TRANSFER_FROM == "0x2eb2c2d6"


def test_bybit_exec_transaction_is_a_delegatecall_never_a_token_transfer() -> None:
    """The shape of mainnet tx 0x46deef0f52e3a983b67abf4714448a41dd7ffd6d32d32da69d62081c68ad7882
    (21 Feb 2025), rebuilt from its decoded arguments as an illustration (the signatures are
    replaced): Bybit's cold Safe was made to DELEGATECALL 0x9622...7242, whose
    ``transfer(address,uint256)`` wrote its first argument into slot 0, the Safe's singleton."""
    inner = call("transfer(address,uint256)", "0xbdd077f651ebe7f7b3ce16fe5f2b025be2969516", 0)
    assert inner.hex().startswith("a9059cbb000000000000000000000000bdd077f651eb")
    data = exec_tx("0x96221423681a6d52e184d440a8efcebb105c7242", 0, inner, 1, gas=45746)
    assert exec_transaction(SAFE, data) == (
        Grant(
            SAFE,
            ControlKind.DELEGATE_CALL,
            "0x96221423681a6d52e184d440a8efcebb105c7242",
            None,
            None,
        ),
    )
    owner = "0x" + "0e" * 20  # submitted by an owner's key, which is not itself watched
    tx = PendingTx("0x" + "46" * 32, owner, 0, SAFE, 0, "0x" + data.hex())
    assert concerns(tx.to, tx.input, WATCHED) and concerns(tx.to, tx.input, frozenset()) is False
    assert [e.kind for e in read_calldata(tx, WATCHED)] == [ControlKind.DELEGATE_CALL]


def test_safe_call_inner_value_token_call_and_approval() -> None:
    transfer = call("transfer(address,uint256)", ATTACKER, 5 * 10**6)
    approve = call("approve(address,uint256)", ATTACKER, 2**256 - 1)
    assert exec_transaction(SAFE, exec_tx(ATTACKER, 3 * 10**18, b"", 0)) == (
        Move(SAFE, ATTACKER, "native", 3 * 10**18, TransferKind.INTERNAL),
    )
    assert exec_transaction(SAFE, exec_tx(TOKEN, 0, transfer, 0)) == (
        Move(SAFE, ATTACKER, TOKEN, 5 * 10**6, TransferKind.TOKEN),
    )
    assert exec_transaction(SAFE, exec_tx(TOKEN, 0, approve, 0)) == (
        Grant(SAFE, ControlKind.APPROVAL, ATTACKER, 2**256 - 1, TOKEN),
    )
    assert exec_transaction(SAFE, exec_tx(TOKEN, 0, b"\x12\x34\x56\x78", 0)) == ()


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (
            call("addOwnerWithThreshold(address,uint256)", ATTACKER, 1),
            [
                (ControlKind.OWNER_ADDED, ATTACKER, None),
                (ControlKind.THRESHOLD_CHANGED, None, 1),
            ],
        ),
        (
            call("removeOwner(address,address,uint256)", "0x" + "01" * 20, COLD, 1),
            [(ControlKind.OWNER_REMOVED, COLD, None), (ControlKind.THRESHOLD_CHANGED, None, 1)],
        ),
        (
            call("swapOwner(address,address,address)", "0x" + "01" * 20, COLD, ATTACKER),
            [(ControlKind.OWNER_REMOVED, COLD, None), (ControlKind.OWNER_ADDED, ATTACKER, None)],
        ),
        (call("changeThreshold(uint256)", 1), [(ControlKind.THRESHOLD_CHANGED, None, 1)]),
        (call("setGuard(address)", ZERO), [(ControlKind.GUARD_CHANGED, ZERO, None)]),
        (call("enableModule(address)", ATTACKER), [(ControlKind.MODULE_ENABLED, ATTACKER, None)]),
        (
            call("changeMasterCopy(address)", ATTACKER),
            [(ControlKind.MASTER_COPY_CHANGED, ATTACKER, None)],
        ),
        (
            call("setFallbackHandler(address)", ATTACKER),
            [(ControlKind.FALLBACK_HANDLER_CHANGED, ATTACKER, None)],
        ),
        (call("disableModule(address,address)", ZERO, ATTACKER), []),
    ],
)
def test_safe_self_calls_are_pending_control_changes(
    inner: bytes, expected: list[tuple[ControlKind, str | None, int | None]]
) -> None:
    effects = exec_transaction(SAFE, exec_tx(SAFE, 0, inner, 0))
    assert all(isinstance(e, Grant) and e.wallet == SAFE for e in effects)
    assert [(e.kind, e.subject, e.value) for e in effects if isinstance(e, Grant)] == expected


def test_token_calls_by_a_watched_sender() -> None:
    nft = call("safeTransferFrom(address,address,uint256)", COLD, ATTACKER, 1527)
    nft_data = call("safeTransferFrom(address,address,uint256,bytes)", COLD, ATTACKER, 7, b"hi")
    single = call(
        "safeTransferFrom(address,address,uint256,uint256,bytes)", COLD, ATTACKER, 3, 40, b""
    )
    batch = call(
        "safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)",
        COLD,
        ATTACKER,
        [1, 2],
        [10, 20],
        b"",
    )
    token = TokenReading(COLD, TOKEN)
    assert token(call("transfer(address,uint256)", ATTACKER, 10**18)) == [
        Move(COLD, ATTACKER, TOKEN, 10**18, TransferKind.TOKEN)
    ]
    assert token(call("transferFrom(address,address,uint256)", SAFE, ATTACKER, 9)) == [
        Move(SAFE, ATTACKER, TOKEN, 9, TransferKind.TOKEN)
    ]
    assert token(nft) == [Move(COLD, ATTACKER, f"{TOKEN}/1527", 1, TransferKind.TOKEN)]
    assert token(nft_data) == [Move(COLD, ATTACKER, f"{TOKEN}/7", 1, TransferKind.TOKEN)]
    assert token(single) == [Move(COLD, ATTACKER, f"{TOKEN}/3", 40, TransferKind.TOKEN)]
    assert token(batch) == [
        Move(COLD, ATTACKER, f"{TOKEN}/1", 10, TransferKind.TOKEN),
        Move(COLD, ATTACKER, f"{TOKEN}/2", 20, TransferKind.TOKEN),
    ]
    assert token(call("approve(address,uint256)", ATTACKER, 5)) == [
        Grant(COLD, ControlKind.APPROVAL, ATTACKER, 5, TOKEN)
    ]
    assert token(call("increaseAllowance(address,uint256)", ATTACKER, 6)) == [
        Grant(COLD, ControlKind.APPROVAL, ATTACKER, 6, TOKEN)
    ]
    assert token(call("setApprovalForAll(address,bool)", ATTACKER, True)) == [
        Grant(COLD, ControlKind.APPROVAL_FOR_ALL, ATTACKER, 1, TOKEN)
    ]
    assert token(call("setApprovalForAll(address,bool)", ATTACKER, False)) == [
        Grant(COLD, ControlKind.APPROVAL_FOR_ALL, ATTACKER, 0, TOKEN)
    ]
    assert token(call("balanceOf(address)", COLD)) == []
    assert token(b"") == [] and token(b"\xa9\x05") == []


class TokenReading:
    def __init__(self, caller: str, contract: str) -> None:
        self.caller, self.contract = caller, contract

    def __call__(self, data: bytes) -> list[Any]:
        return list(token_call(self.caller, self.contract, data))


def _dirty(data: bytes, word: int) -> bytes:
    """``data`` with a non-zero high byte in argument word ``word`` (an address's padding)."""
    at = 4 + 32 * word
    return data[:at] + b"\x01" + data[at + 1 :]


@pytest.mark.parametrize(
    "data",
    [
        call("transfer(address,uint256)", ATTACKER, 1)[:-1],  # short by one byte
        call("transfer(address,uint256)", ATTACKER, 1)[:36],  # the amount missing
        _dirty(call("transfer(address,uint256)", ATTACKER, 1), 0),  # "short address" padding
        _dirty(call("approve(address,uint256)", ATTACKER, 1), 0),
        call("setApprovalForAll(address,bool)", ATTACKER, True)[:-1] + b"\x02",  # not a bool
        call(
            "safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)",
            COLD,
            ATTACKER,
            [1, 2],
            [10],
            b"",
        ),  # ids and amounts of different lengths
        call("safeTransferFrom(address,address,uint256,bytes)", COLD, ATTACKER, 7, b"x")[:-64],
    ],
)
def test_malformed_token_calls_are_not_guessed(data: bytes) -> None:
    assert token_call(COLD, TOKEN, data) == (
        Grant(COLD, ControlKind.MALFORMED_CALL, None, None, TOKEN),
    )


def test_trailing_bytes_are_ignored_as_every_abi_decoder_does() -> None:
    data = call("transfer(address,uint256)", ATTACKER, 1) + b"\xde\xad"
    assert token_call(COLD, TOKEN, data) == (Move(COLD, ATTACKER, TOKEN, 1, TransferKind.TOKEN),)


def test_malformed_safe_transactions_are_not_guessed() -> None:
    good = exec_tx(ATTACKER, 0, b"", 0)
    bad_operation = good[: 4 + 32 * 3] + (2).to_bytes(32) + good[4 + 32 * 4 :]
    offset_out = good[: 4 + 32 * 9] + (10**6).to_bytes(32) + good[4 + 32 * 10 :]
    malformed_grant = (Grant(SAFE, ControlKind.MALFORMED_CALL, None, None, SAFE),)
    for data in (good[:100], bad_operation, offset_out, _dirty(good, 0)):
        assert exec_transaction(SAFE, data) == malformed_grant
    inner = call("changeThreshold(uint256)", 1)[:-1]
    assert exec_transaction(SAFE, exec_tx(SAFE, 0, inner, 0)) == malformed_grant
    assert exec_transaction(SAFE, call("transfer(address,uint256)", ATTACKER, 1)) == ()


def test_pulls_of_strangers_concern_the_watch_only_when_they_debit_a_watched_wallet() -> None:
    pull = "0x" + call("transferFrom(address,address,uint256)", COLD, ATTACKER, 1).hex()
    other = "0x" + call("transferFrom(address,address,uint256)", ATTACKER, COLD, 1).hex()
    assert debited_by_pull(pull) == COLD and concerns(TOKEN, pull, WATCHED)
    assert debited_by_pull(other) == ATTACKER and not concerns(TOKEN, other, WATCHED)
    assert not concerns(TOKEN, "0x" + call("transfer(address,uint256)", COLD, 1).hex(), WATCHED)
    assert not concerns(TOKEN, None, WATCHED) and debited_by_pull("0x23b872dd") is None
    tx = PendingTx("0x" + "ab" * 32, ATTACKER, 0, TOKEN, 0, pull)
    assert read_calldata(tx, WATCHED) == (Move(COLD, ATTACKER, TOKEN, 1, TransferKind.TOKEN),)
    # A watched sender's pull of someone else's tokens debits no watched wallet: not reported.
    tx = PendingTx("0x" + "ab" * 32, COLD, 0, TOKEN, 0, other)
    assert read_calldata(tx, WATCHED) == ()


def test_the_pool_parser_reads_strangers_transactions_that_concern_the_watch() -> None:
    pull = "0x" + call("transferFrom(address,address,uint256)", COLD, ATTACKER, 1).hex()
    safe_tx = "0x" + exec_tx(ATTACKER, 1, b"", 0).hex()

    def raw(nonce: int, to: str, data: str) -> dict[str, Any]:
        return {**TX, "from": OTHER.lower(), "nonce": hex(nonce), "to": to, "input": data}

    pool = {
        "pending": {
            OTHER: {
                "0": raw(0, TOKEN, pull),
                "1": raw(1, SAFE, safe_tx),
                "2": raw(2, TOKEN, "0x"),
                "3": "not even an object",
            }
        },
        "queued": {},
    }
    found = parse_txpool(pool, WATCHED)
    assert [(tx.nonce, tx.to) for tx in found] == [(0, TOKEN), (1, SAFE)]
    pool["pending"][OTHER]["1"] = {**raw(1, SAFE, safe_tx), "value": "1"}
    with pytest.raises(MalformedRpcResponse, match=r"\.1\.value is not a hex quantity"):
        parse_txpool(pool, WATCHED)


# --- lax (ABI coder v1) encodings: the worst reading wins ----------------------------------


def _word(data: bytes, word: int, value: int) -> bytes:
    """``data`` with argument word ``word`` replaced by ``value``."""
    at = 4 + 32 * word
    return data[:at] + value.to_bytes(32) + data[at + 32 :]


BYBIT_TARGET = "0x96221423681a6d52e184d440a8efcebb105c7242"


@pytest.mark.parametrize(
    "dirt",
    [
        # dirty high bits in `to`: Safe 1.1.1 masks the address word
        lambda d: _word(d, 0, (0xDEAD << 160) | int(BYBIT_TARGET, 16)),
        # `operation` with high bits set: masked to its uint8, it is 1
        lambda d: _word(d, 3, (1 << 8) | 1),
        # a `signatures` offset pointing past the data: a v1 Safe does not check it first
        lambda d: _word(d, 9, 10**6),
    ],
    ids=["dirty-to", "dirty-operation", "lax-signatures-offset"],
)
def test_a_lax_encoded_delegatecall_is_still_a_delegatecall(dirt: Any) -> None:
    """A strict decoder refuses these; Safe 1.1.1 (solc < 0.7, no ABI coder v2) runs them:
    reported as the DELEGATECALL (critical) with the malformed-encoding note, never as a
    mere malformed call (high)."""
    inner = call("transfer(address,uint256)", "0xbdd077f651ebe7f7b3ce16fe5f2b025be2969516", 0)
    data = dirt(exec_tx(BYBIT_TARGET, 0, inner, 1, gas=45746))
    assert exec_transaction(SAFE, data) == (
        Grant(SAFE, ControlKind.DELEGATE_CALL, BYBIT_TARGET, LAX_ENCODING, None),
    )
    # strictly encoded: no note
    clean = exec_transaction(SAFE, exec_tx(BYBIT_TARGET, 0, inner, 1))
    assert clean == (Grant(SAFE, ControlKind.DELEGATE_CALL, BYBIT_TARGET, None, None),)


def test_lax_encoding_of_a_plain_call_stays_a_malformed_call() -> None:
    data = _word(exec_tx(ATTACKER, 0, b"", 0), 0, (1 << 200) | int(ATTACKER, 16))
    assert exec_transaction(SAFE, data) == (
        Grant(SAFE, ControlKind.MALFORMED_CALL, None, None, SAFE),
    )
    assert exec_transaction(SAFE, exec_tx(ATTACKER, 0, b"", 1)[: 4 + 32 * 3]) == (
        Grant(SAFE, ControlKind.MALFORMED_CALL, None, None, SAFE),
    )  # not even the operation word: no Safe runs it


def test_a_dirty_from_pull_against_a_watched_wallet_is_still_seen() -> None:
    """A v1 token (USDT) masks the address word: transferFrom(dirty cold, ...) debits cold."""
    clean = call("transferFrom(address,address,uint256)", COLD, ATTACKER, 1)
    dirty = _word(clean, 0, (0xFF << 248) | int(COLD, 16))
    assert debited_by_pull("0x" + dirty.hex()) == COLD
    assert concerns(TOKEN, "0x" + dirty.hex(), WATCHED)
    assert debited_by_pull("0x23b872dd" + "zz" * 32) is None
    tx = PendingTx("0x" + "ab" * 32, ATTACKER, 0, TOKEN, 0, "0x" + dirty.hex())
    assert read_calldata(tx, WATCHED) == (
        Grant(COLD, ControlKind.MALFORMED_CALL, None, None, TOKEN),
    )


def test_strangers_queued_transactions_are_not_read() -> None:
    """A nonce-gapped transaction may never run and costs its sender nothing: only the
    executable part of the pool is read for unwatched senders; ours are read in both."""
    pull = "0x" + call("transferFrom(address,address,uint256)", COLD, ATTACKER, 1).hex()
    stranger = {**TX, "from": OTHER.lower(), "nonce": "0x9", "to": TOKEN, "input": pull}
    ours = {**TX, "nonce": "0x9"}
    pool = {"pending": {}, "queued": {OTHER: {"9": stranger}, COLD: {"9": ours}}}
    assert [(tx.sender, tx.nonce) for tx in parse_txpool(pool, WATCHED)] == [(COLD, 9)]
    pool = {"pending": {OTHER: {"9": stranger}}, "queued": {}}
    assert [tx.sender for tx in parse_txpool(pool, WATCHED)] == [OTHER.lower()]
