"""Pure parts of the mempool watch: the txpool parser's reach and creation addresses."""

from __future__ import annotations

import pytest

from drainwatch.errors import MalformedRpcResponse
from watchers.evm.mempool import created_address, parse_txpool

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
