"""watchers.bitcoin.script: BIP 350 and BIP 341 vectors, real scripts from the mainnet blocks,
and a network with prefixes of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bitcoin.core import CBlock as LibBlock
from bitcoin.core import CScript
from bitcoin.wallet import CBitcoinAddress, CBitcoinAddressError

from drainwatch.addresses import (
    MAINNET,
    REGTEST,
    TESTNET,
    BitcoinAddressParams,
    InvalidAddress,
)
from tests.unit.test_addresses import SEGWIT_VALID
from watchers.bitcoin.block import Block, parse_block
from watchers.bitcoin.script import SCRIPT_TYPES, address_script, classify, script_address

# BIP 350 (bitcoin/bips bip-0350.mediawiki), "Test vectors for v0-v16 native segregated witness
# addresses": valid addresses and their scriptPubKeys (typed in once, in test_addresses).
BIP350_VALID = SEGWIT_VALID
# BIP 350, invalid addresses (the reason as the BIP gives it).
BIP350_INVALID = [
    "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",  # invalid human-readable part
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # bech32 instead of bech32m
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",  # bech32 instead of bech32m
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",  # bech32 instead of bech32m
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # bech32m instead of bech32
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",  # bech32m instead of bech32
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",  # invalid character
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",  # invalid witness version
    "bc1pw5dgrnzv",  # invalid program length (1 byte)
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",  # 41 bytes
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # invalid program length for witness version 0
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",  # mixed case
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",  # zero padding > 4 bits
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",  # non-zero padding
    "bc1gmk9yu",  # empty data section
]
# bcoin's regtest has prefixes of its own (R... and rb1...); no preset exists for it.
BCOIN_REGTEST = BitcoinAddressParams(p2pkh=0x3C, p2sh=0x26, bech32_hrp="rb")


def _params(address: str) -> BitcoinAddressParams:
    return MAINNET if address.lower().startswith("bc1") else TESTNET


@pytest.mark.parametrize(("address", "script_hex"), BIP350_VALID)
def test_bip350_valid(address: str, script_hex: str) -> None:
    params, script = _params(address), bytes.fromhex(script_hex)
    assert address_script(address, params) == script
    assert script_address(script, params) == address.lower()
    assert classify(script) in ("p2wpkh", "p2wsh", "p2tr", "witness_unknown")


@pytest.mark.parametrize("address", BIP350_INVALID)
def test_bip350_invalid(address: str) -> None:
    for params in (MAINNET, TESTNET):
        with pytest.raises(InvalidAddress):
            address_script(address, params)


def test_bip341_wallet_vectors_script_pubkeys(shared_data: Path) -> None:
    path = shared_data / "bitcoin" / "vectors" / "bip341-wallet-test-vectors.json"
    vectors = json.loads(path.read_text())["scriptPubKey"]
    assert len(vectors) == 7
    for vector in vectors:
        script = bytes.fromhex(vector["expected"]["scriptPubKey"])
        address = vector["expected"]["bip350Address"]
        assert classify(script) == "p2tr"
        assert script_address(script, MAINNET) == address
        assert address_script(address, MAINNET) == script


# (height, tx index, output index, type): real outputs of the nine mainnet blocks.
REAL_OUTPUTS = [
    (169482, 0, 120, "p2pk"),  # uncompressed key, in the coinbase
    (227835, 0, 0, "p2pk"),  # compressed key, in the coinbase
    (169482, 0, 0, "nonstandard"),  # a lone 32-byte push
    (169482, 1, 0, "p2pkh"),
    (363703, 240, 0, "op_return"),
    (363703, 384, 1, "multisig"),
    (370661, 491, 0, "multisig"),
    (481815, 0, 1, "op_return"),  # the BIP141 witness commitment
]


def test_real_outputs_are_classified(shared_data: Path) -> None:
    blocks = {h: _block(shared_data, h) for h in {h for h, *_ in REAL_OUTPUTS}}
    for height, tx_index, vout, expected in REAL_OUTPUTS:
        script = blocks[height].txs[tx_index].outputs[vout].script
        assert classify(script) == expected, (height, tx_index, vout, script.hex())
        if expected in ("p2pk", "multisig", "op_return", "nonstandard"):
            assert script_address(script, MAINNET) is None


def _block(shared_data: Path, height: int) -> Block:
    return parse_block((shared_data / f"bitcoin/mainnet-blocks/block{height}.raw").read_bytes())


@pytest.mark.parametrize("height", [169482, 363703, 383616, 481829])
def test_every_output_address_equals_python_bitcoinlib(shared_data: Path, height: int) -> None:
    raw = (shared_data / f"bitcoin/mainnet-blocks/block{height}.raw").read_bytes()
    seen = set()
    for tx in LibBlock.deserialize(raw).vtx:
        for out in tx.vout:
            script = bytes(out.scriptPubKey)
            kind = classify(script)
            seen.add(kind)
            try:
                theirs = CBitcoinAddress.from_scriptPubKey(CScript(script))
            except CBitcoinAddressError:
                theirs = None
            if theirs is not None and theirs.to_scriptPubKey() != script:
                theirs = None  # python-bitcoinlib maps bare p2pk to a p2pkh address
            assert script_address(script, MAINNET) == (None if theirs is None else str(theirs))
            assert (kind in ("p2pkh", "p2sh")) == (theirs is not None)
    assert "p2pkh" in seen and seen <= set(SCRIPT_TYPES)


KEY33 = bytes.fromhex("02" + "11" * 32)
KEY65 = bytes.fromhex("04" + "22" * 64)


@pytest.mark.parametrize(
    ("script_hex", "expected"),
    [
        ("", "nonstandard"),
        ("6a", "op_return"),
        ("6a4c0401020304", "op_return"),
        ("6a4c05", "nonstandard"),  # a push running past the end
        ("6aac", "nonstandard"),  # OP_RETURN then a non-push
        ("0018" + "00" * 24, "nonstandard"),  # witness v0 of a length BIP141 forbids
        ("5114" + "00" * 20, "witness_unknown"),  # v1, not 32 bytes
        ("51024e73", "witness_unknown"),  # pay-to-anchor
        ("2105" + "11" * 32 + "ac", "nonstandard"),  # not a public key's first byte
        ("21" + KEY33.hex() + "ac", "p2pk"),
        ("41" + KEY65.hex() + "ac", "p2pk"),
        ("5121" + KEY33.hex() + "41" + KEY65.hex() + "52ae", "multisig"),
        ("5321" + KEY33.hex() + "41" + KEY65.hex() + "52ae", "nonstandard"),  # 3-of-2
        ("5121" + KEY33.hex() + "53ae", "nonstandard"),  # says 3 keys, has 1
        ("76a914" + "00" * 20 + "88ad", "nonstandard"),
    ],
)
def test_edge_scripts(script_hex: str, expected: str) -> None:
    assert classify(bytes.fromhex(script_hex)) == expected


def test_custom_params_round_trip() -> None:
    scripts = [
        bytes.fromhex("76a914" + "ab" * 20 + "88ac"),
        bytes.fromhex("a914" + "cd" * 20 + "87"),
        bytes.fromhex("0014" + "ef" * 20),
        bytes.fromhex("0020" + "12" * 32),
        bytes.fromhex("5120" + "34" * 32),
        bytes.fromhex("5a10" + "56" * 16),  # witness v9
    ]
    addresses = []
    for script in scripts:
        address = script_address(script, BCOIN_REGTEST)
        assert address is not None
        assert address_script(address, BCOIN_REGTEST) == script
        addresses.append(address)
    assert addresses[0].startswith("R")
    assert all(a.startswith("rb1") for a in addresses[2:])
    with pytest.raises(InvalidAddress):
        address_script(addresses[0], MAINNET)
    with pytest.raises(InvalidAddress):
        address_script(addresses[2], REGTEST)
    with pytest.raises(InvalidAddress):
        address_script(script_address(scripts[0], MAINNET) or "", BCOIN_REGTEST)
    with pytest.raises(InvalidAddress):
        address_script("not an address", MAINNET)


def test_an_address_too_long_for_bech32_is_kept_as_script() -> None:
    """A witness v1 program of 40 bytes under a 20-character custom prefix passes bech32's 90
    characters: it has no address, and the scanner must not stop on it."""
    from drainwatch.addresses import BitcoinAddressParams

    long_prefix = BitcoinAddressParams(p2pkh=0, p2sh=5, bech32_hrp="a" * 20)
    script = bytes([0x51, 40]) + bytes(range(40))
    assert classify(script) == "witness_unknown"
    assert script_address(script, long_prefix) is None
    assert script_address(script, MAINNET) is not None


@pytest.mark.parametrize("prefix", [0x04, 0x06, 0x07])
def test_uncompressed_and_hybrid_keys_are_p2pk_and_multisig(prefix: int) -> None:
    """Bitcoin Core's templates take 65-byte keys with prefix 04 and the hybrid 06/07."""
    key = bytes([prefix]) + bytes(range(64))
    assert classify(bytes([65]) + key + b"\xac") == "p2pk"
    compressed = b"\x02" + bytes(32)
    multisig = b"\x51" + bytes([65]) + key + bytes([33]) + compressed + b"\x52\xae"
    assert classify(multisig) == "multisig"
    assert classify(bytes([65]) + b"\x05" + bytes(range(64)) + b"\xac") == "nonstandard"
