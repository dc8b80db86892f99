"""watchers.bitcoin.derive against published BIP44/49/84/86/341 vectors and against scripts built
by hand from embit's BIP32 child keys and encoded with python-bitcoinlib (never our own output
compared with itself)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from bitcoin.base58 import CBase58Data
from bitcoin.core import Hash160
from bitcoin.segwit_addr import encode as bech32_address
from embit import bip32, bip39
from embit.descriptor.checksum import add_checksum
from embit.networks import NETWORKS

from drainwatch.addresses import (
    MAINNET,
    TESTNET,
    BitcoinAddressParams,
    b58check_decode,
    b58check_encode,
)
from drainwatch.model import Custody, CustodyKind, Wallet, WalletRole
from watchers.bitcoin.derive import ScriptBook, WatchedScript

VECTORS = Path("/work/shared/data/bitcoin/vectors/bip341-wallet-test-vectors.json")
MNEMONIC = "abandon " * 11 + "about"
ROOT = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC))
BIP84_ZPUB = (
    "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31m"
    "GDtKsAYz2oz2AGutZYs"
)
BIP49_UPUB = (
    "upub5EFU65HtV5TeiSHmZZm7FUffBGy8UKeqp7vw43jYbvZPpoVsgU93oac7Wk3u6moKegAEWtGNF8DehrnHtv21XXEM"
    "YRUocHqguyjknFHYfgY"
)
BIP86_XPUB = (
    "xpub6BgBgsespWvERF3LHQu6CnqdvfEvtMcQjYrcRzx53QJjSxarj2afYWcLteoGVky7D3UKDP9QyrLprQ3VCECoY49y"
    "fdDEHGCtMMj92pReUsQ"
)
BCOIN_REGTEST = BitcoinAddressParams(p2pkh=0x3C, p2sh=0x26, bech32_hrp="rb")


def wallet(
    name: str = "hot",
    *,
    addresses: tuple[str, ...] = (),
    xpubs: tuple[str, ...] = (),
    descriptors: tuple[str, ...] = (),
) -> Wallet:
    custody = Custody(CustodyKind.SINGLE_KEY)
    return Wallet(name, "btc", WalletRole.HOT, custody, addresses, xpubs, descriptors)


def account(path: str, seed_byte: int | None = None) -> bip32.HDKey:
    root = ROOT if seed_byte is None else bip32.HDKey.from_seed(bytes([seed_byte]) * 32)
    return root.derive(path).to_public()


def first(book: ScriptBook, source: str, branch: int, index: int) -> WatchedScript:
    return next(
        w for w in book.scripts.values() if (w.source, w.branch, w.index) == (source, branch, index)
    )


def script_of(book: ScriptBook, entry: WatchedScript) -> bytes:
    return next(s for s, w in book.scripts.items() if w == entry)


def hand_multisig(k: int, pubkeys: list[bytes]) -> bytes:
    return (
        bytes([0x50 + k])
        + b"".join(b"\x21" + p for p in pubkeys)
        + bytes([0x50 + len(pubkeys), 0xAE])
    )


# --- single-key wallets: published vectors ----------------------------------------------------


def test_bip84_zpub_receive_and_change() -> None:
    book = ScriptBook([wallet(xpubs=(BIP84_ZPUB,))], MAINNET)
    assert first(book, "xpubs[0]", 0, 0).address == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    assert first(book, "xpubs[0]", 0, 1).address == "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
    assert first(book, "xpubs[0]", 1, 0).address == "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
    entry = first(book, "xpubs[0]", 0, 0)
    assert book.get(script_of(book, entry)) == entry
    assert entry.wallet == "hot"


def test_bip84_as_descriptor_with_origin_and_checksum() -> None:
    xpub = account("m/84h/0h/0h").to_base58()
    body = f"wpkh([73c5da0a/84h/0h/0h]{xpub}/<0;1>/*)"
    text = add_checksum(body)  # embit's own checksum code, not ours
    book = ScriptBook([wallet(descriptors=(text,))], MAINNET)
    assert len(book) == 40
    addr = first(book, "descriptors[0]", 1, 0).address
    assert addr == "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"


def test_bip49_upub_is_sh_wpkh_on_testnet() -> None:
    book = ScriptBook([wallet(xpubs=(BIP49_UPUB,))], TESTNET)
    assert first(book, "xpubs[0]", 0, 0).address == "2Mww8dCYPUpKHofjgcXcBCEGmniw9CoaiD2"
    # independently: m/49'/1'/0'/1/3 from the seed, P2SH-P2WPKH by hand, python-bitcoinlib base58
    pub = ROOT.derive("m/49h/1h/0h/1/3").to_public().sec()
    redeem = b"\x00\x14" + Hash160(pub)
    expected = str(CBase58Data.from_bytes(Hash160(redeem), 0xC4))
    assert first(book, "xpubs[0]", 1, 3).address == expected


def test_sh_wpkh_descriptor_matches_the_upub_wallet() -> None:
    tpub = account("m/49h/1h/0h").to_base58(NETWORKS["test"]["xpub"])
    by_descriptor = ScriptBook([wallet(descriptors=(f"sh(wpkh({tpub}/<0;1>/*))",))], TESTNET)
    by_upub = ScriptBook([wallet(xpubs=(BIP49_UPUB,))], TESTNET)
    assert set(by_descriptor.scripts) == set(by_upub.scripts)


def test_bare_xpub_is_bip44_pkh() -> None:
    xpub = account("m/44h/0h/0h").to_base58()
    book = ScriptBook([wallet(xpubs=(xpub,))], MAINNET)
    assert first(book, "xpubs[0]", 0, 0).address == "1LqBGSKuX5yYUonjxT5qGfpUsXKYYWeabA"
    pub = ROOT.derive("m/44h/0h/0h/1/7").to_public().sec()
    expected = str(CBase58Data.from_bytes(Hash160(pub), 0x00))
    assert first(book, "xpubs[0]", 1, 7).address == expected


def test_pkh_descriptor() -> None:
    xpub = account("m/44h/0h/0h").to_base58()
    book = ScriptBook([wallet(descriptors=(f"pkh({xpub}/0/*)",))], MAINNET)
    assert len(book) == 20
    assert first(book, "descriptors[0]", 0, 0).address == "1LqBGSKuX5yYUonjxT5qGfpUsXKYYWeabA"


def test_bip86_taproot_descriptor() -> None:
    book = ScriptBook([wallet(descriptors=(f"tr({BIP86_XPUB}/<0;1>/*)",))], MAINNET)
    receive = first(book, "descriptors[0]", 0, 0).address
    change = first(book, "descriptors[0]", 1, 0).address
    assert receive == "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
    assert change == "bc1p3qkhfews2uk44qtvauqyr2ttdsw7svhkl9nkm9s9c3x4ax5h60wqwruhk7"


def bip341_key_path_vectors() -> list[dict[str, dict[str, str]]]:
    data = json.loads(VECTORS.read_text())
    return [v for v in data["scriptPubKey"] if v["given"]["scriptTree"] is None]


@pytest.mark.parametrize("vector", bip341_key_path_vectors())
def test_bip341_key_path_only_outputs(vector: dict[str, dict[str, str]]) -> None:
    internal = vector["given"]["internalPubkey"]
    book = ScriptBook([wallet(descriptors=(f"tr({internal})",))], MAINNET)
    [(script, entry)] = book.scripts.items()
    assert script.hex() == vector["expected"]["scriptPubKey"]
    assert entry.address == vector["expected"]["bip350Address"]
    assert (entry.source, entry.branch, entry.index) == ("descriptors[0]", None, None)


def test_non_ranged_hex_key_descriptor() -> None:
    pub = ROOT.derive("m/84h/0h/0h/0/0").to_public().sec()
    book = ScriptBook([wallet(descriptors=(f"wpkh({pub.hex()})",))], MAINNET)
    [entry] = book.scripts.values()
    assert entry.address == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    assert entry.index is None
    assert book.mark_used(script_of(book, entry)) == 0


# --- multisig (cold wallets) ------------------------------------------------------------------

COSIGNERS = [account("m/48h/0h/0h/2h", seed) for seed in (None, 7, 9)]
XPUBS = [k.to_base58() for k in COSIGNERS]


def multisig_descriptor(kind: str, order: list[int], wrap: str = "wsh") -> str:
    keys = ",".join(f"{XPUBS[i]}/<0;1>/*" for i in order)
    inner = f"wsh({kind}(2,{keys}))"
    return inner if wrap == "wsh" else f"sh({inner})"


def hand_witness_script(order: list[int], branch: int, index: int, *, sort: bool) -> bytes:
    pubs = [COSIGNERS[i].child(branch).child(index).sec() for i in order]
    return hand_multisig(2, sorted(pubs) if sort else pubs)


@pytest.mark.parametrize(("branch", "index"), [(0, 0), (0, 1), (1, 0), (1, 19)])
def test_wsh_sortedmulti_2_of_3(branch: int, index: int) -> None:
    book = ScriptBook(
        [wallet("cold", descriptors=(multisig_descriptor("sortedmulti", [0, 1, 2]),))], MAINNET
    )
    program = hashlib.sha256(hand_witness_script([0, 1, 2], branch, index, sort=True)).digest()
    expected = bech32_address("bc", 0, program)
    assert first(book, "descriptors[0]", branch, index).address == expected
    assert book.get(b"\x00\x20" + program) == first(book, "descriptors[0]", branch, index)


def test_sortedmulti_ignores_key_order_multi_does_not() -> None:
    def book(kind: str, order: list[int]) -> ScriptBook:
        return ScriptBook([wallet(descriptors=(multisig_descriptor(kind, order),))], MAINNET)

    assert set(book("sortedmulti", [0, 1, 2]).scripts) == set(
        book("sortedmulti", [2, 0, 1]).scripts
    )
    forward, backward = book("multi", [0, 1, 2]), book("multi", [2, 1, 0])
    assert not set(forward.scripts) & set(backward.scripts)
    program = hashlib.sha256(hand_witness_script([2, 1, 0], 0, 4, sort=False)).digest()
    assert first(backward, "descriptors[0]", 0, 4).address == bech32_address("bc", 0, program)


def test_sh_wsh_sortedmulti() -> None:
    text = multisig_descriptor("sortedmulti", [1, 2, 0], wrap="sh")
    book = ScriptBook([wallet(descriptors=(text,))], MAINNET)
    witness_script = hand_witness_script([0, 1, 2], 1, 2, sort=True)
    redeem = b"\x00\x20" + hashlib.sha256(witness_script).digest()
    expected = str(CBase58Data.from_bytes(Hash160(redeem), 0x05))
    assert first(book, "descriptors[0]", 1, 2).address == expected


# --- gap limit --------------------------------------------------------------------------------


def indices(book: ScriptBook, branch: int) -> set[int | None]:
    return {w.index for w in book.scripts.values() if w.branch == branch}


def test_gap_limit_window_moves_on_use() -> None:
    book = ScriptBook([wallet(xpubs=(BIP84_ZPUB,))], MAINNET)
    assert len(book) == 40
    assert indices(book, 0) == set(range(20))
    assert book.mark_used(script_of(book, first(book, "xpubs[0]", 0, 19))) == 20
    assert book.mark_used(script_of(book, first(book, "xpubs[0]", 0, 25))) == 6
    assert indices(book, 0) == set(range(46))
    assert indices(book, 1) == set(range(20))
    assert book.mark_used(script_of(book, first(book, "xpubs[0]", 0, 25))) == 0
    assert book.mark_used(script_of(book, first(book, "xpubs[0]", 0, 3))) == 0
    assert book.mark_used(b"\x00\x14" + bytes(20)) == 0
    assert len(book) == 66


def test_single_path_descriptor_branch_label() -> None:
    xpub = account("m/84h/0h/0h").to_base58()
    book = ScriptBook(
        [wallet(descriptors=(f"wpkh({xpub}/1/*)", f"wpkh({xpub}/7/*)"))], MAINNET, gap_limit=3
    )
    assert (
        first(book, "descriptors[0]", 1, 0).address == "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
    )
    assert {w.branch for w in book.scripts.values() if w.source == "descriptors[1]"} == {0}
    used = script_of(book, first(book, "descriptors[1]", 0, 2))
    assert book.mark_used(used) == 3
    assert len(book) == 9


def test_configured_address_is_watched_and_not_derived_twice() -> None:
    legacy = "1LqBGSKuX5yYUonjxT5qGfpUsXKYYWeabA"
    derived = "BC1QCR8TE4KR609GCAWUTMRZA0J4XV80JY8Z306FYU"
    book = ScriptBook([wallet(xpubs=(BIP84_ZPUB,), addresses=(legacy, derived))], MAINNET)
    assert len(book) == 41
    script = b"\x76\xa9\x14" + b58check_decode(legacy)[1:] + b"\x88\xac"
    assert book.get(script) == WatchedScript("hot", legacy, None, None, None)
    assert book.mark_used(script) == 0
    assert book.owner_of_address(legacy) == "hot"
    assert book.owner_of_address(legacy.lower()) is None  # base58 is case-sensitive
    assert book.owner_of_address(derived) == "hot"
    assert first(book, "xpubs[0]", 0, 0).address == derived.lower()


def test_two_wallets_claiming_one_script_are_refused() -> None:
    with pytest.raises(ValueError, match="both wallet 'a' and wallet 'b'"):
        ScriptBook([wallet("a", xpubs=(BIP84_ZPUB,)), wallet("b", xpubs=(BIP84_ZPUB,))], MAINNET)


def test_custom_params_hrp_and_case_insensitive_owner() -> None:
    book = ScriptBook(
        [
            wallet("hot", xpubs=(BIP84_ZPUB,)),
            wallet("legacy", xpubs=(account("m/44h/0h/0h").to_base58(),)),
        ],
        BCOIN_REGTEST,
    )
    entry = first(book, "xpubs[0]", 0, 0)
    # same witness program as the BIP84 mainnet vector, under bcoin regtest's "rb" prefix
    program = ROOT.derive("m/84h/0h/0h/0/0").to_public().sec()
    assert entry.address == bech32_address("rb", 0, Hash160(program))
    assert entry.address.startswith("rb1q")
    assert book.owner_of_address(entry.address.upper()) == "hot"
    legacy = next(w.address for w in book.scripts.values() if w.wallet == "legacy")
    assert legacy.startswith("R")
    assert book.owner_of_address(legacy) == "legacy"
    assert book.owner_of_address("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu") is None


# --- errors -----------------------------------------------------------------------------------


def reversion(xpub: str, version: int) -> str:
    return b58check_encode(version.to_bytes(4, "big") + b58check_decode(xpub)[4:])


def refused(entries: dict[str, tuple[str, ...]], match: str) -> str:
    with pytest.raises(ValueError, match=match) as info:
        ScriptBook([wallet(**entries)], MAINNET)  # type: ignore[arg-type]
    message = str(info.value)
    for key in (*XPUBS, BIP84_ZPUB, BIP86_XPUB):
        assert key[4:30] not in message
    return message


def test_multisig_slip132_prefix_is_refused() -> None:
    zpub_ms = reversion(BIP84_ZPUB, 0x02AA7ED3)
    message = refused({"xpubs": (zpub_ms,)}, "sortedmulti")
    assert "Zpub" in message and "xpubs[0]" in message and "'hot'" in message
    assert zpub_ms[4:30] not in message


def test_extended_private_key_is_refused() -> None:
    xprv = ROOT.derive("m/84h/0h/0h").to_base58()
    message = refused({"xpubs": (xprv,)}, "PRIVATE")
    assert xprv[4:30] not in message


def test_hardened_step_after_xpub_is_refused() -> None:
    message = refused({"descriptors": (f"wpkh({BIP86_XPUB}/0h/*)",)}, "hardened")
    assert "wpkh(KEY/0h/*)" in message


def test_hardened_wildcard_is_refused() -> None:
    refused({"descriptors": (f"tr({BIP86_XPUB}/0/*')",)}, "hardened")


def test_unparseable_descriptor_is_refused_by_shape() -> None:
    message = refused({"descriptors": (f"wpkh({BIP86_XPUB}/0/*",)}, "descriptor")
    assert "wpkh(KEY/0/*" in message
    refused({"descriptors": (f"combo({BIP86_XPUB}/0/*)",)}, "descriptor")


def test_wrong_checksum_is_refused() -> None:
    body = f"tr({BIP86_XPUB}/<0;1>/*)"
    good = add_checksum(body)
    assert len(ScriptBook([wallet(descriptors=(good,))], MAINNET)) == 40
    bad = good[:-1] + ("q" if good[-1] != "q" else "p")
    refused({"descriptors": (bad,)}, "checksum")


# --- concurrency ------------------------------------------------------------------------------


def test_readers_never_fail_while_the_book_grows() -> None:
    book = ScriptBook([wallet(xpubs=(BIP84_ZPUB,))], MAINNET, gap_limit=5)
    probe = script_of(book, first(book, "xpubs[0]", 1, 0))
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                assert book.get(probe) is not None
                book.get(b"\x00")
                book.owner_of_address("bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el")
                len(book)
                len(book.scripts)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    highest = 4
    try:
        for _ in range(50):
            highest_script = script_of(book, first(book, "xpubs[0]", 0, highest))
            assert book.mark_used(highest_script) == 5
            highest += 5
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert not errors
    assert indices(book, 0) == set(range(highest + 1))
