"""drainwatch.keymaterial finds private keys, seeds and tokens; leaves addresses, xpubs alone."""

from __future__ import annotations

import hashlib
import unicodedata
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
# BIP39 Japanese test vector (entropy 0x00…00): あいこくしん ×11 + あおぞら.
SEED_JA = "\u3000".join(["あいこくしん"] * 11 + ["あおぞら"])
SEED_JA_24 = " ".join(["そうご", "ねんぴ", "われる", "はろうぃん", "がいき", "ぱそこん"] * 4)
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
        (SEED_JA, km.SEED),
        (SEED_JA.replace("\u3000", " "), km.SEED),
        (unicodedata.normalize("NFKD", SEED_JA_24), km.SEED),
        (SEED_JA_24, km.SEED),
        (SEED_JA.replace("あおぞら", "あおぞる"), km.SEED),
        ("　".join(f"{i}.{w}" for i, w in enumerate(SEED_JA.split("　"), 1)), km.SEED),
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
        "seed-ja-ideographic-space",
        "seed-ja-ascii-space",
        "seed-ja-nfkd",
        "seed-ja-24",
        "seed-ja-one-typo",
        "seed-ja-numbered",
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
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        "the hot wallet is swept to cold every day at noon",
        "this wallet must never hold more than one day of customer withdrawals",
        "move funds from the warm wallet to the cold wallet only after two people approve it",
        "abandon ability able about above absent",  # six words: too short for a phrase
        "xoxo hugs",
        "ホットウォレットは毎日正午にコールドウォレットへ移します。鍵は書かないでください。",
        "あいこくしん　あいさつ　あいだ　あおぞら　あかちゃん　あきる",  # six words
        "きれい　な　そら　と　うみ　が　みえる　ところ　に　すんで　います　よ",
        " ".join(["あいこくしん"] * 6 + ["abandon"] * 6),  # two half phrases
        "関東財務局長 第00000号 / 株式会社エグザンプル取引所 / 東京データセンター",
    ],
    ids=[
        "evm-address",
        "compressed-pubkey",
        "hex128",
        "hex62",
        "xpub",
        "descriptor-with-xpub",
        "taproot-address",
        "p2pkh-address",
        "sentence-1",
        "sentence-2",
        "sentence-3",
        "six-bip39-words",
        "xoxo",
        "japanese-sentence",
        "six-japanese-words",
        "japanese-hiragana-words",
        "mixed-languages",
        "japanese-names",
    ],
)
def test_harmless_text_passes(text: str) -> None:
    assert km.classify(text) is None


TAPROOT_OK = [
    f"tr({X_ONLY})",  # BIP386 x-only public key
    f"tr([d34db33f/86h/0h/0h]{X_ONLY})",
    f"tr({X_ONLY},{{pk({X_ONLY}),pk({X_ONLY})}})",
    f"tr({X_ONLY},{{pk_k({X_ONLY}),multi_a(1,{X_ONLY},[d34db33f/1h]{X_ONLY})}})",
    f"tr({X_ONLY},and_v(v:pk({X_ONLY}),pk_h({X_ONLY})))",
    f"tr({X_ONLY})#abcdefgh",
]


@pytest.mark.parametrize("text", TAPROOT_OK)
def test_taproot_x_only_keys_pass_only_in_descriptors(text: str) -> None:
    assert km.classify(text, descriptor=True) is None
    # The same text anywhere else (a location, a comment) may hold a private key.
    assert km.classify(text) == km.HEX_KEY


@pytest.mark.parametrize(
    "text",
    [
        f"wpkh({HEX_KEY})",
        f"pkh({HEX_KEY})",
        f"wsh(multi(1,{HEX_KEY}))",
        f"sh(wsh(sortedmulti(1,[d34db33f/48h]{HEX_KEY})))",
        f"tr({COMPRESSED_PUBKEY},{{sha256({HEX_KEY}),pk({X_ONLY})}})",  # a hash, not a key
        f"tr({HEX_KEY}/0/*)",  # hex keys have no derivation path
        f"tr(0x{HEX_KEY})",
        f"tr({X_ONLY}) {HEX_KEY}",
        f"note ({HEX_KEY})",
        f"vault B ({HEX_KEY})",
        f"{{{HEX_KEY}}}",
        f"[d34db33f]{HEX_KEY}",
    ],
    ids=[
        "wpkh",
        "pkh",
        "multi",
        "sortedmulti-with-origin",
        "tr-tree-hash",
        "tr-derivation",
        "tr-0x",
        "after-tr",
        "parenthesised",
        "location",
        "braces",
        "after-origin",
    ],
)
def test_hex64_outside_taproot_key_positions_is_found(text: str) -> None:
    assert km.classify(text, descriptor=True) == km.HEX_KEY
    assert km.classify(text) == km.HEX_KEY


def test_taproot_key_spans() -> None:
    text = f"tr([d34db33f/86h]{X_ONLY},{{pk({X_ONLY}),sha256({HEX_KEY})}})"
    spans = km.taproot_key_spans(text)
    assert [text[a:b] for a, b in spans] == [X_ONLY, X_ONLY]
    assert km.taproot_key_spans(f"wpkh({HEX_KEY})") == []
    assert km.taproot_key_spans(f"tr({X_ONLY}") == []  # unbalanced
    assert km.taproot_key_spans(f"tr({X_ONLY},{{pk({X_ONLY})}}") == []


def test_scan_text_refuses_hex64_in_brackets_and_comments() -> None:
    text = f"a: ({HEX_KEY})\n# backup key: ({HEX_KEY})\nd: [tr({X_ONLY})]\n"
    assert [(f.kind, f.line) for f in km.scan_text(text)] == [
        (km.HEX_KEY, 1),
        (km.HEX_KEY, 2),
        (km.HEX_KEY, 3),
    ]
    seen: list[tuple[int, int, str]] = []

    def allow(line: int, column: int, hex_text: str) -> bool:
        seen.append((line, column, hex_text))
        return line == 3

    assert [f.line for f in km.scan_text(text, allow)] == [1, 2]
    assert (3, text.splitlines()[2].index(X_ONLY) + 1, X_ONLY) in seen


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


def test_japanese_seed_over_comment_lines_and_as_list() -> None:
    words = SEED_JA.split("\u3000")
    text = "a: 1\n" + "".join(f"# {'　'.join(words[i : i + 3])}\n" for i in range(0, 12, 3))
    assert [(f.kind, f.line) for f in km.scan_text(text)] == [(km.SEED, 2)]
    assert km.classify_words(words) == km.SEED


def test_japanese_wordlist_is_the_bip39_list() -> None:
    words = km.bip39_japanese_words()
    assert len(words) == 2048
    assert {"あいこくしん", "あおぞら", "そうご", "われる", "はろうぃん"} <= words
    assert all(unicodedata.is_normalized("NFC", w) for w in words)
    # The same list as the one eth-account ships (installed with web3).
    from eth_account.hdaccount.mnemonic import Mnemonic
    from eth_account.types import Language

    theirs = Mnemonic(Language.JAPANESE).wordlist
    assert words == frozenset(unicodedata.normalize("NFC", w) for w in theirs)
    assert len(words) == 2048 and {"あいこくしん", "われる"} <= words


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
