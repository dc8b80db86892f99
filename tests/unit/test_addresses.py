"""drainwatch.addresses against the published BIP173 / BIP350 / BIP32 vectors and real addresses."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drainwatch.addresses import (
    MAINNET,
    REGTEST,
    TESTNET,
    Bech32Encoding,
    BitcoinAddressParams,
    InvalidAddress,
    b58check_decode,
    b58check_encode,
    b58decode,
    b58encode,
    bech32_decode,
    bech32_encode,
    check_xpub,
    decode_bitcoin_address,
    decode_extended_key,
    decode_segwit_address,
    encode_segwit_address,
    is_valid_evm_address,
    normalise_bitcoin_address,
    to_checksum,
)

# --- BIP173 / BIP350 test vectors (public, copied from the BIP texts) --------------------------

BECH32_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
BECH32M_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11" + "l" * 82 + "ludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]
BECH32_INVALID = [
    "\x201nwldj5",
    "\x7f1axkwrx",
    "\x801eym55h",
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
    "pzry9x0s0muk",
    "1pzry9x0s0muk",
    "x1b4n0q5v",
    "li1dgmt3",
    "de1lg7wt\xff",
    "A1G7SGD8",
    "10a06t8",
    "1qzzfhee",
]
BECH32M_INVALID = [
    "\x201xj0phk",
    "\x7f1g6xzxy",
    "\x801vctc34",
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",
    "1qyrz8wqd2c9m",
    "y1b0jsk6g",
    "lt1igcx5c0",
    "in1muywd",
    "mm1crxm3i",
    "au1s5cgom",
    "M1VUXWEZ",
    "16plkw9",
    "1p2gdwpf",
]
SEGWIT_VALID = [  # (address, scriptPubKey hex)
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]
SEGWIT_INVALID = [  # (address, why) — BIP350
    ("tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut", "invalid hrp"),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", "bech32 for v1"),
    ("tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf", "bech32 for v2"),
    ("BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL", "bech32 for v16"),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh", "bech32m for v0"),
    ("tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47", "bech32m for v0"),
    ("bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4", "bad checksum char"),
    ("BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R", "witness version 17"),
    ("bc1pw5dgrnzv", "1-byte program"),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
        "41-byte program",
    ),
    ("BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P", "16-byte v0 program"),
    ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq", "mixed case"),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf", "padding > 4 bits"),
    ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j", "non-zero padding"),
    ("bc1gmk9yu", "empty data"),
]


@pytest.mark.parametrize("text", BECH32_VALID)
def test_bech32_valid(text: str) -> None:
    assert bech32_decode(text)[2] is Bech32Encoding.BECH32


@pytest.mark.parametrize("text", BECH32M_VALID)
def test_bech32m_valid(text: str) -> None:
    assert bech32_decode(text)[2] is Bech32Encoding.BECH32M


@pytest.mark.parametrize("text", BECH32_INVALID + BECH32M_INVALID)
def test_bech32_invalid(text: str) -> None:
    with pytest.raises(InvalidAddress):
        bech32_decode(text)


def _script(witver: int, program: bytes) -> str:
    return (bytes([witver + 0x50 if witver else 0, len(program)]) + program).hex()


@pytest.mark.parametrize(("address", "script"), SEGWIT_VALID)
def test_segwit_valid(address: str, script: str) -> None:
    hrp = "bc" if address.lower().startswith("bc") else "tb"
    witver, program = decode_segwit_address(hrp, address)
    assert _script(witver, program) == script
    assert encode_segwit_address(hrp, witver, program) == address.lower()


@pytest.mark.parametrize(("address", "why"), SEGWIT_INVALID, ids=[w for _, w in SEGWIT_INVALID])
def test_segwit_invalid(address: str, why: str) -> None:
    for hrp in ("bc", "tb"):
        with pytest.raises(InvalidAddress):
            decode_segwit_address(hrp, address)


def test_segwit_script_types() -> None:
    assert decode_bitcoin_address(SEGWIT_VALID[0][0], MAINNET).script_type == "p2wpkh"
    assert decode_bitcoin_address(SEGWIT_VALID[1][0], TESTNET).script_type == "p2wsh"
    assert decode_bitcoin_address(SEGWIT_VALID[7][0], MAINNET).script_type == "p2tr"
    assert decode_bitcoin_address(SEGWIT_VALID[3][0], MAINNET).script_type == "witness_unknown"


def test_segwit_wrong_network() -> None:
    with pytest.raises(InvalidAddress, match="prefix"):
        decode_bitcoin_address(SEGWIT_VALID[1][0], MAINNET)
    regtest = encode_segwit_address("bcrt", 0, bytes(20))
    assert decode_bitcoin_address(regtest, REGTEST).script_type == "p2wpkh"
    with pytest.raises(InvalidAddress):
        decode_bitcoin_address(regtest, TESTNET)


# --- base58check -------------------------------------------------------------------------------


def test_base58_legacy_addresses() -> None:
    assert (
        decode_bitcoin_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", MAINNET).script_type == "p2pkh"
    )
    assert (
        decode_bitcoin_address("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", MAINNET).script_type == "p2sh"
    )
    assert (
        decode_bitcoin_address("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", TESTNET).script_type == "p2pkh"
    )
    assert (
        decode_bitcoin_address("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", TESTNET).script_type == "p2sh"
    )


@pytest.mark.parametrize(
    ("address", "params"),
    [
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", MAINNET),  # last character changed
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", TESTNET),  # mainnet address on testnet
        ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", MAINNET),
        ("0BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", MAINNET),  # 0 is not base58
        ("1111", MAINNET),
    ],
)
def test_base58_invalid(address: str, params: BitcoinAddressParams) -> None:
    with pytest.raises(InvalidAddress):
        decode_bitcoin_address(address, params)


def test_custom_prefixes_bcoin_regtest() -> None:
    params = BitcoinAddressParams(p2pkh=0x3C, p2sh=0x26, bech32_hrp="rb")
    address = b58check_encode(bytes([0x3C]) + bytes(range(20)))
    assert address.startswith("R")
    assert decode_bitcoin_address(address, params).program == bytes(range(20))
    segwit = encode_segwit_address("rb", 0, bytes(32))
    assert decode_bitcoin_address(segwit, params).script_type == "p2wsh"


def test_normalise_lowercases_bech32_only() -> None:
    assert normalise_bitcoin_address(SEGWIT_VALID[0][0], MAINNET) == SEGWIT_VALID[0][0].lower()
    legacy = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
    assert normalise_bitcoin_address(legacy, MAINNET) == legacy


def test_ofac_bitcoin_addresses_all_validate(shared_data: Path) -> None:
    lines = (shared_data / "labels/ofac/sanctioned_addresses_XBT.txt").read_text().split()
    assert len(lines) > 400
    for address in lines:
        try:
            decode_bitcoin_address(address, MAINNET)
        except InvalidAddress:
            # The published XBT list carries one TRON address (base58check version 0x41): it
            # must be a valid TRON address, i.e. a data error upstream, not a decoder bug.
            assert b58check_decode(address)[0] == 0x41, address


def test_ofac_ethereum_addresses_all_validate(shared_data: Path) -> None:
    lines = (shared_data / "labels/ofac/sanctioned_addresses_ETH.txt").read_text().split()
    assert len(lines) > 100
    assert any(a != a.lower() for a in lines)  # so the EIP-55 path is exercised
    for address in lines:
        assert is_valid_evm_address(address), address
        assert to_checksum(address.lower()).lower() == address.lower()


# --- EVM ---------------------------------------------------------------------------------------


def test_evm_checksum() -> None:
    usdt = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
    assert is_valid_evm_address(usdt)
    assert is_valid_evm_address(usdt.lower())
    assert is_valid_evm_address("0x" + usdt[2:].upper())
    assert not is_valid_evm_address(usdt[:-1] + "C7")  # one letter's case flipped
    assert not is_valid_evm_address(usdt[2:])
    assert not is_valid_evm_address(usdt + "00")
    assert not is_valid_evm_address("0x" + "g" * 40)
    assert to_checksum(usdt.lower()) == usdt
    with pytest.raises(InvalidAddress):
        to_checksum("0x1234")


# --- BIP32 extended keys (test vectors 1–3 of BIP32) -------------------------------------------

TV1_XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265"
    "TMg7usUDFdp6W1EGMcet8"
)
TV1_XPRV = (
    "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3"
    "TGtRBeJgk33yuGBxrMPHi"
)


def test_extended_keys() -> None:
    assert decode_extended_key(TV1_XPUB).prefix == "xpub"
    assert decode_extended_key(TV1_XPRV).private
    assert check_xpub(TV1_XPUB, mainnet=True).prefix == "xpub"
    with pytest.raises(InvalidAddress, match="another network"):
        check_xpub(TV1_XPUB, mainnet=False)
    with pytest.raises(InvalidAddress, match="PRIVATE"):
        check_xpub(TV1_XPRV, mainnet=True)
    with pytest.raises(InvalidAddress):
        check_xpub(TV1_XPUB[:-1] + "9", mainnet=True)
    tpub = b58check_encode(bytes.fromhex("043587cf") + b58check_decode(TV1_XPUB)[4:])
    assert tpub.startswith("tpub")
    assert check_xpub(tpub, mainnet=False).prefix == "tpub"
    zpub = b58check_encode(bytes.fromhex("04b24746") + b58check_decode(TV1_XPUB)[4:])
    assert check_xpub(zpub, mainnet=True).prefix == "zpub"


# --- properties --------------------------------------------------------------------------------


@given(st.binary(min_size=1, max_size=64))
def test_base58check_round_trip(payload: bytes) -> None:
    assert b58decode(b58encode(payload)) == payload
    assert b58check_decode(b58check_encode(payload)) == payload


@given(
    hrp=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10),
    witver=st.integers(min_value=0, max_value=16),
    program=st.binary(min_size=2, max_size=40),
)
def test_segwit_round_trip(hrp: str, witver: int, program: bytes) -> None:
    if witver == 0 and len(program) not in (20, 32):
        with pytest.raises(InvalidAddress):
            encode_segwit_address(hrp, witver, program)
        return
    address = encode_segwit_address(hrp, witver, program)
    assert decode_segwit_address(hrp, address) == (witver, program)
    assert decode_segwit_address(hrp, address.upper()) == (witver, program)


@given(st.lists(st.integers(min_value=0, max_value=31), max_size=40))
def test_bech32_round_trip(data: list[int]) -> None:
    for encoding in Bech32Encoding:
        assert bech32_decode(bech32_encode("hrp", data, encoding)) == ("hrp", data, encoding)
