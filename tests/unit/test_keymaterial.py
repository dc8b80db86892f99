"""drainwatch.keymaterial finds private keys, seeds and tokens; leaves addresses, xpubs alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drainwatch import keymaterial as km
from drainwatch.addresses import b58check_decode, b58check_encode

# Public example keys (Bitcoin wiki WIF page, BIP32 test vector 1, BIP39 test vector 1).
WIF_UNCOMPRESSED = "5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ"
WIF_COMPRESSED = "KwdMAjGmerYanjeui5SHS7JkmpZvVipYvB2LJGU1ZxJwYvP98617"
WIF_TESTNET = b58check_encode(b"\xef" + bytes(range(1, 33)) + b"\x01")
XPRV = (
    "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3"
    "TGtRBeJgk33yuGBxrMPHi"
)
XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265"
    "TMg7usUDFdp6W1EGMcet8"
)
TPRV = b58check_encode(bytes.fromhex("04358394") + b58check_decode(XPRV)[4:])
ZPRV = b58check_encode(bytes.fromhex("04b2430c") + b58check_decode(XPRV)[4:])
XPRV_TYPO = XPRV[:-1] + ("j" if XPRV[-1] != "j" else "k")
HEX_KEY = hashlib.sha256(b"drainwatch test key").hexdigest()
SEED_12 = "abandon " * 11 + "about"
SEED_24 = " ".join(["legal", "winner", "thank", "year", "wave", "sausage"] * 4)
SEED_TYPO = "abandon " * 11 + "abuot"
SLACK = "xoxb-" + "1234567890-0987654321-" + "AbCdEfGhIjKlMnOpQrStUvWx"
COMPRESSED_PUBKEY = "02" + "ab" * 32
X_ONLY = "cd" * 32


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (WIF_UNCOMPRESSED, km.WIF),
        (WIF_COMPRESSED, km.WIF),
        (WIF_TESTNET, km.WIF),
        (XPRV, km.XPRV),
        (TPRV, km.XPRV),
        (ZPRV, km.XPRV),
        (XPRV_TYPO, km.XPRV),
        (f"wpkh([d34db33f/84h/0h/0h]{XPRV}/0/*)", km.XPRV),
        (HEX_KEY, km.HEX_KEY),
        ("0x" + HEX_KEY, km.HEX_KEY),
        (HEX_KEY.upper(), km.HEX_KEY),
        (f"key={HEX_KEY};", km.HEX_KEY),
        (SEED_12, km.SEED),
        (SEED_24, km.SEED),
        (SEED_TYPO, km.SEED),
        (SEED_12.upper(), km.SEED),
        (" ".join(f"{i}. {w}" for i, w in enumerate(SEED_12.split(), 1)), km.SEED),
        (SLACK, km.SLACK_TOKEN),
        (f"token is {SLACK} ok", km.SLACK_TOKEN),
    ],
    ids=[
        "wif-uncompressed",
        "wif-compressed",
        "wif-testnet",
        "xprv",
        "tprv",
        "zprv",
        "xprv-bad-checksum",
        "descriptor-with-xprv",
        "hex64",
        "hex64-0x",
        "hex64-upper",
        "hex64-embedded",
        "seed-12",
        "seed-24",
        "seed-one-typo",
        "seed-upper",
        "seed-numbered",
        "slack-token",
        "slack-token-in-text",
    ],
)
def test_key_material_is_found(text: str, kind: str) -> None:
    assert km.classify(text) == kind


@pytest.mark.parametrize(
    "text",
    [
        "0xdAC17F958D2ee523a2206206994597C13D831ec7",  # EVM address (40 hex)
        COMPRESSED_PUBKEY,  # 66 hex
        "ab" * 64,  # 128 hex: a signature, not a key
        "ab" * 31,  # 62 hex
        XPUB,
        f"wsh(sortedmulti(2,[d34db33f/48h/0h/0h/2h]{XPUB}/0/*,{COMPRESSED_PUBKEY}))",
        f"tr({X_ONLY})",  # BIP386 x-only public key
        f"tr([d34db33f/86h/0h/0h]{X_ONLY})",
        f"tr({X_ONLY},{{pk({X_ONLY}),pk({X_ONLY})}})",
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        "the hot wallet is swept to cold every day at noon",
        "this wallet must never hold more than one day of customer withdrawals",
        "move funds from the warm wallet to the cold wallet only after two people approve it",
        "abandon ability able about above absent",  # six words: too short for a phrase
        "xoxo hugs",
    ],
    ids=[
        "evm-address",
        "compressed-pubkey",
        "hex128",
        "hex62",
        "xpub",
        "descriptor-with-xpub",
        "tr-x-only",
        "tr-x-only-with-origin",
        "tr-tree",
        "taproot-address",
        "p2pkh-address",
        "sentence-1",
        "sentence-2",
        "sentence-3",
        "six-bip39-words",
        "xoxo",
    ],
)
def test_harmless_text_passes(text: str) -> None:
    assert km.classify(text) is None


def test_scan_text_finds_line_and_column_without_the_secret() -> None:
    text = f"a: 1\n# old key: {WIF_COMPRESSED}\nb: 2\nc: '{HEX_KEY}'\n"
    findings = km.scan_text(text)
    assert [(f.kind, f.line) for f in findings] == [(km.WIF, 2), (km.HEX_KEY, 4)]
    assert findings[0].column == text.splitlines()[1].index(WIF_COMPRESSED) + 1
    assert WIF_COMPRESSED not in repr(findings)


def test_seed_phrase_split_over_comment_lines() -> None:
    words = SEED_24.split()
    text = "a: 1\n" + "".join(f"# {' '.join(words[i : i + 4])}\n" for i in range(0, 24, 4))
    assert [(f.kind, f.line) for f in km.scan_text(text)] == [(km.SEED, 2)]


def test_seed_phrase_as_list_of_values() -> None:
    assert km.classify_words(SEED_12.split()) == km.SEED
    assert km.classify_words(["hot", "warm", "cold"]) is None


def test_example_config_and_english_comments_are_clean() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "drainwatch.yaml"
    assert km.scan_text(example.read_text(encoding="utf-8")) == []


def test_wordlist_is_the_full_bip39_list() -> None:
    words = km.bip39_words()
    assert len(words) == 2048
    assert {"abandon", "zoo", "legal", "winner"} <= words


@given(st.binary(min_size=20, max_size=20))
def test_evm_addresses_never_flagged(raw: bytes) -> None:
    assert km.classify("0x" + raw.hex()) is None


@given(st.binary(min_size=32, max_size=32), st.booleans(), st.sampled_from([0x80, 0xEF]))
def test_every_wif_is_flagged(secret: bytes, compressed: bool, version: int) -> None:
    wif = b58check_encode(bytes([version]) + secret + (b"\x01" if compressed else b""))
    assert km.classify(f"note: {wif} end") == km.WIF
