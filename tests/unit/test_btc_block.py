"""watchers.bitcoin.block on the nine real mainnet blocks of shared/data, checked against the
headers themselves (hash, merkle root, witness commitment) and against python-bitcoinlib."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from bitcoin.core import CBlock as LibBlock
from bitcoin.core import (
    COutPoint,
    CScript,
    CScriptWitness,
    CTransaction,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
    b2lx,
)
from bitcoin.wallet import CBitcoinAddress, CBitcoinAddressError
from hypothesis import given, settings
from hypothesis import strategies as st

from drainwatch.addresses import MAINNET
from watchers.bitcoin.block import (
    NETWORK_MAGIC,
    Block,
    BlockFormatError,
    Tx,
    compact_size,
    outpoint_key,
    parse_block,
    parse_tx,
)
from watchers.bitcoin.script import script_address

# The table of shared/data/README.md: height -> block hash.
BLOCKS = {
    169482: "0000000000000756935f1ee9d5987857b604046f846d3df56d024cdb5f368665",
    227835: "00000000000001aa077d7aa84c532a4d69bdbff519609d1da0835261b7a74eb6",
    227836: "00000000000000d0dfd4c9d588d325dce4f32c1b31b7c0064cba7025a9b9adcc",
    363703: "0000000000000000011b2a4cb91b63886ffe0d2263fd17ac5a9b902a219e0a14",
    370661: "00000000000000001416a613602d73bbe5c79170fd8f39d509896b829cf9021e",
    383616: "00000000000000000aab6a2b34e979b09ca185584bd1aecf204f24d150ff55e9",
    413567: "0000000000000000025aff8be8a55df8f89c77296db6198f272d6577325d4069",
    481815: "000000000000000000893c019d81f2d48ee33892c12428f3121bbd16ed6db926",
    481829: "000000000000000000917cba69f69b758fe396c8e30ae97bbcf08c4eb975e726",
}
# 481815 commits to witnesses (miners did before activation at 481824) but carries none;
# in 481829 the only witness is the coinbase's reserved value.
COMMITTED = {481815, 481829}
_RAW: dict[int, bytes] = {}


def _raw(shared_data: Path, height: int) -> bytes:
    if height not in _RAW:
        path = shared_data / "bitcoin" / "mainnet-blocks" / f"block{height}.raw"
        _RAW[height] = path.read_bytes()
    return _RAW[height]


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


@pytest.mark.parametrize("height", sorted(BLOCKS))
def test_header_merkle_root_and_commitment(shared_data: Path, height: int) -> None:
    block = parse_block(_raw(shared_data, height))
    assert block.header.hash == BLOCKS[height]
    assert block.computed_merkle_root() == block.header.merkle_root
    assert block.txs[0].is_coinbase and not any(tx.is_coinbase for tx in block.txs[1:])
    assert block.witness_commitment_ok() is (True if height in COMMITTED else None)


@pytest.mark.parametrize("height", sorted(BLOCKS))
def test_reserialization_is_byte_identical(shared_data: Path, height: int) -> None:
    raw = _raw(shared_data, height)
    block = parse_block(raw)
    assert block.serialize() == raw
    assert block.header.serialize() == raw[:80]


def test_corrupted_coinbase_witness_breaks_only_the_commitment(shared_data: Path) -> None:
    raw = _raw(shared_data, 481829)
    block = parse_block(raw)
    coinbase = block.txs[0]
    assert coinbase.has_witness and coinbase.inputs[0].witness == (b"\0" * 32,)
    start = 80 + len(compact_size(len(block.txs)))
    item_at = start + coinbase.size - 4 - 32  # the last witness item sits before the locktime
    corrupt = bytearray(raw)
    corrupt[item_at + 7] ^= 0x01
    broken = parse_block(bytes(corrupt))
    assert broken.txs[0].inputs[0].witness != coinbase.inputs[0].witness
    assert broken.txs[0].txid == coinbase.txid and broken.txs[0].wtxid != coinbase.wtxid
    assert broken.computed_merkle_root() == broken.header.merkle_root
    assert broken.witness_commitment_ok() is False


def test_corrupted_commitment_is_false(shared_data: Path) -> None:
    raw = _raw(shared_data, 481815)
    block = parse_block(raw)
    commitment = next(o.script for o in block.txs[0].outputs if o.script[:2] == b"\x6a\x24")
    at = raw.index(commitment) + 20
    corrupt = raw[:at] + bytes([raw[at] ^ 0x80]) + raw[at + 1 :]
    assert parse_block(corrupt).witness_commitment_ok() is False


@pytest.mark.parametrize("height", sorted(BLOCKS))
def test_every_tx_equals_python_bitcoinlib(shared_data: Path, height: int) -> None:
    raw = _raw(shared_data, height)
    ours = parse_block(raw)
    theirs = LibBlock.deserialize(raw)
    assert len(ours.txs) == len(theirs.vtx)
    for tx, ref in zip(ours.txs, theirs.vtx, strict=True):
        _assert_same_tx(tx, ref)


def _assert_same_tx(tx: Tx, ref: CTransaction) -> None:
    assert tx.txid == b2lx(ref.GetTxid())
    assert tx.wtxid == _sha256d(ref.serialize())[::-1].hex()
    assert tx.version == ref.nVersion % 2**32 and tx.locktime == ref.nLockTime
    assert tx.has_witness == (not ref.wit.is_null())
    assert [(o.value, o.script) for o in tx.outputs] == [
        (o.nValue, bytes(o.scriptPubKey)) for o in ref.vout
    ]
    assert [i.outpoint for i in tx.inputs] == [
        i.prevout.hash + i.prevout.n.to_bytes(4, "little") for i in ref.vin
    ]
    assert [(i.prev_txid, i.prev_vout) for i in tx.inputs] == [
        (b2lx(i.prevout.hash), i.prevout.n) for i in ref.vin
    ]
    assert [(i.script_sig, i.sequence) for i in tx.inputs] == [
        (bytes(i.scriptSig), i.nSequence) for i in ref.vin
    ]
    if tx.has_witness:
        assert [i.witness for i in tx.inputs] == [
            tuple(w.scriptWitness.stack) for w in ref.wit.vtxinwit
        ]


def test_parse_tx_and_outpoint_keys(shared_data: Path) -> None:
    for height in (169482, 481829):
        block = parse_block(_raw(shared_data, height))
        for tx in block.txs:
            raw_tx = tx.serialize()
            again = parse_tx(raw_tx)
            assert (again.txid, again.wtxid, again.serialize()) == (tx.txid, tx.wtxid, raw_tx)
            for inp in tx.inputs:
                assert outpoint_key(inp.prev_txid, inp.prev_vout) == inp.outpoint
    with pytest.raises(BlockFormatError, match="trailing"):
        parse_tx(raw_tx + b"\0")
    with pytest.raises(ValueError):
        outpoint_key("ab" * 31, 0)


def test_network_magics() -> None:
    assert {k: v.hex() for k, v in NETWORK_MAGIC.items()} == {
        "mainnet": "f9beb4d9",
        "testnet": "0b110907",
        "testnet4": "1c163f28",
        "signet": "0a03cf40",
        "regtest": "fabfb5da",
    }


# --- transfers to a handful of addresses, against python-bitcoinlib's own view -----------------

WATCHED = {
    413567: [
        "17AehPoW89jyh7rxpVNymggYHhW2QufZWK",  # p2pkh, 101 outputs
        "135ugrHvVJvAsMW74VZ12oDDhQRotkgG1V",  # p2pkh
        "3Gdk8rHYXuFYV4YsMcg9vmZ9NxdaUtAGem",  # p2sh
        "37fg2WxH8PNun92ZDmrjFX8J8qdZw2bqx3",  # p2sh
        "37phC6hnN2iaWVBrnsQyTj1Ra9UGzTSi7k",  # p2sh, once
    ],
    481829: [
        "1J37CY8hcdUXQ1KfBhMCsUVafa8XjDsdCn",  # p2pkh
        "1N52wHoVR79PMDishab2XmRHsbekCdGquK",  # p2pkh
        "1M43B4BJiy95LFqYQatr35ZzDDNTsQj96e",  # p2pkh
        "3A8F4bHGordR9zwFgZL2gRvrZC3nmTma7Z",  # p2sh
        "333neqA55ymzfeyyKTufGnnEz1F6sbh95Y",  # p2sh
    ],
}
# A few totals written down once (python-bitcoinlib 0.12.2, 2026-11-22), as a second anchor.
KNOWN = {
    "17AehPoW89jyh7rxpVNymggYHhW2QufZWK": (101, 808_000),
    "3Gdk8rHYXuFYV4YsMcg9vmZ9NxdaUtAGem": (29, 1_216_158_961),
    "1J37CY8hcdUXQ1KfBhMCsUVafa8XjDsdCn": (57, 123_372_066_964),
}


def _lib_address(script: CScript) -> str | None:
    """python-bitcoinlib's address of exactly this script (it maps bare p2pk to a p2pkh
    address, whose script differs: the round trip weeds that out)."""
    try:
        address = CBitcoinAddress.from_scriptPubKey(script)
    except CBitcoinAddressError:
        return None
    return str(address) if address.to_scriptPubKey() == script else None


def _received(
    pairs: list[tuple[str | None, int]], watched: list[str]
) -> dict[str, tuple[int, int]]:
    counts, sums = Counter[str](), Counter[str]()
    for address, value in pairs:
        if address in watched:
            counts[address] += 1
            sums[address] += value
    return {a: (counts[a], sums[a]) for a in watched}


@pytest.mark.parametrize("height", sorted(WATCHED))
def test_transfers_to_watched_addresses(shared_data: Path, height: int) -> None:
    raw = _raw(shared_data, height)
    watched = WATCHED[height]
    ours = _received(
        [
            (script_address(o.script, MAINNET), o.value)
            for tx in parse_block(raw).txs
            for o in tx.outputs
        ],
        watched,
    )
    theirs = _received(
        [
            (_lib_address(o.scriptPubKey), o.nValue)
            for tx in LibBlock.deserialize(raw).vtx
            for o in tx.vout
        ],
        watched,
    )
    assert ours == theirs
    assert all(count > 0 for count, _ in ours.values())
    for address, expected in KNOWN.items():
        if address in ours:
            assert ours[address] == expected


def test_segwit_outputs_and_witnesses_against_python_bitcoinlib() -> None:
    """None of the nine blocks pays a native segwit output (the first bech32 payments came
    after 481829), so a segwit transaction is built with python-bitcoinlib."""
    p2wpkh = CScript(bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6"))
    p2wsh = CScript(
        bytes.fromhex("0020" + "1863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262")
    )
    ref = CTransaction(
        [
            CTxIn(COutPoint(bytes(range(32)), 1), CScript(), 0xFFFFFFFD),
            CTxIn(COutPoint(bytes(range(1, 33)), 0), CScript(b"\x16" + p2wpkh), 0xFFFFFFFF),
        ],
        [CTxOut(12_345, p2wpkh), CTxOut(67_890, p2wsh)],
        nLockTime=481_829,
        nVersion=2,
        witness=CTxWitness(
            [
                CTxInWitness(CScriptWitness([b"\x30" * 71, b"\x02" * 33])),
                CTxInWitness(CScriptWitness([b"", b"\x51"])),
            ]
        ),
    )
    tx = parse_tx(ref.serialize())
    _assert_same_tx(tx, ref)
    assert [script_address(o.script, MAINNET) for o in tx.outputs] == [
        str(CBitcoinAddress.from_scriptPubKey(o.scriptPubKey)) for o in ref.vout
    ]


# --- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "spread"), [(169482, 1500), (481829, 150)])
def test_truncation_at_many_points_is_a_block_format_error(
    shared_data: Path, height: int, spread: int
) -> None:
    raw = _raw(shared_data, height)
    cuts = set(range(0, 400)) | set(range(0, len(raw), len(raw) // spread))
    cuts |= {len(raw) - k for k in range(1, spread // 5)}
    for cut in sorted(cuts):
        with pytest.raises(BlockFormatError) as caught:
            parse_block(raw[:cut])
        assert "offset" in str(caught.value)


def test_trailing_bytes_and_garbage(shared_data: Path) -> None:
    raw = _raw(shared_data, 169482)
    with pytest.raises(BlockFormatError, match="trailing"):
        parse_block(raw + b"\0")
    rng = random.Random(4)
    for size in (0, 1, 79, 80, 81, 200, 5000):
        with pytest.raises(BlockFormatError):
            parse_block(bytes(rng.randrange(256) for _ in range(size)))
    with pytest.raises(BlockFormatError, match="non-canonical"):
        parse_block(raw[:80] + b"\xfd\x0e\x00" + raw[81:])  # 14 written in the 3-byte form
    with pytest.raises(BlockFormatError, match="at least one"):
        parse_block(raw[:80] + b"\0")


@settings(max_examples=300, deadline=None)
@given(
    height=st.sampled_from([169482, 227836, 481829]),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=3),
)
def test_damaged_blocks_only_ever_raise_block_format_error(
    shared_data: Path, height: int, cut: float, flips: list[tuple[float, int]]
) -> None:
    raw = bytearray(_raw(shared_data, height))
    for where, mask in flips:
        raw[int(where * (len(raw) - 1))] ^= mask
    data = bytes(raw[: int(cut * len(raw))]) if cut < 1.0 else bytes(raw)
    try:
        block = parse_block(data)
    except BlockFormatError:
        return
    assert isinstance(block, Block)
    assert block.serialize() == data  # whatever parses re-serializes to the same bytes


def test_the_last_commitment_output_is_the_commitment(shared_data: Path) -> None:
    """BIP141: when several coinbase outputs carry the commitment pattern, the last one counts."""
    from watchers.bitcoin.block import TxOut

    block = parse_block(_raw(shared_data, 481829))
    assert block.witness_commitment_ok() is True
    coinbase = block.txs[0]
    bogus = TxOut(0, bytes.fromhex("6a24aa21a9ed") + b"\x11" * 32)
    coinbase.outputs.insert(0, bogus)  # before the real one: the real one is still the last
    assert block.witness_commitment_ok() is True
    coinbase.outputs.append(bogus)  # after it: the bogus one counts, and does not match
    assert block.witness_commitment_ok() is False
