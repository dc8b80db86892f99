"""Find private-key material and literal secrets in text, without ever echoing them.

drainwatch is watch-only (DESIGN.md §6): a config file that holds a WIF key, an extended private
key, a 64-hex-digit private key, a BIP39 seed phrase (English or Japanese) or a Slack token is
refused. The scanner runs over the raw text (so comments are covered) and over parsed values (so
a phrase split across a YAML list is covered). A ``Finding`` says what and where, never the
matched text.

False positives matter as much as misses: a 40-hex EVM address, a 66-hex public key, an xpub
and an English sentence must pass. A 64-hex string is a 32-byte value, which is exactly what a
raw private key looks like; it is only ever allowed as an x-only public key in a key position of
a taproot descriptor (BIP386 ``tr(KEY)``, ``tr(KEY,{pk(KEY),…})``), and only when the caller says
the text is a descriptor (``classify(text, descriptor=True)``, ``scan_text(text, allow_hex=…)``).
Non-taproot descriptors never take 32-byte keys: their hex keys are 66-hex compressed ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from drainwatch.addresses import (
    B58_ALPHABET,
    PRIVATE_EXTENDED_PREFIXES,
    InvalidAddress,
    b58check_decode,
    decode_extended_key,
)

WIF = "a WIF private key"
XPRV = "an extended private key (xprv/tprv/…)"
HEX_KEY = "a 64-hex-digit (32-byte) value, which may be a private key"
SEED = "a BIP39 seed phrase"
SLACK_TOKEN = "a Slack token"

_B58_RUN = re.compile(rf"(?<![{B58_ALPHABET}])[{B58_ALPHABET}]{{50,}}(?![{B58_ALPHABET}])")
_HEX64 = re.compile(r"(?<![0-9A-Za-z])(?:0[xX])?[0-9a-fA-F]{64}(?![0-9A-Za-z])")
_SLACK = re.compile(r"xox[abprs]-[0-9A-Za-z-]{8,}|xapp-[0-9]-[0-9A-Za-z-]{8,}")
_WORD = re.compile(r"[A-Za-z]+")
# Hiragana, with the combining (semi-)voiced marks of a decomposed (NFKD) phrase. Words are
# separated by anything else: U+3000 (ideographic space), an ASCII space, a digit, …
_JA_WORD = re.compile(r"[\u3041-\u309f\u30fc]+")
SEED_WINDOW = 12
SEED_MIN_MATCHES = 11  # one typo in a 12-word phrase still leaks the wallet

#: SHA-256 of the official BIP39 Japanese list (NFC, one word a line) as eth-account ships it:
#: a changed list would silently weaken the check.
JAPANESE_WORDLIST_SHA256 = "c58cb719f782910cfcedb6ab64dc506322bd7ce4f7cede5a0563ac06d3d5c884"

# Taproot key positions: BIP386 ``tr(KEY[,TREE])`` and the key-taking tapscript fragments.
_ORIGIN = re.compile(r"\[[0-9a-fA-F]{8}(?:/[0-9]+['hH]?)*\]")
_XONLY = re.compile(r"[0-9a-fA-F]{64}")
_TAP_KEY_FRAGMENT = re.compile(r"(?<![0-9A-Za-z_])(pk|pk_k|pk_h|multi_a|sortedmulti_a)\(")

#: ``allow_hex(line, column, text)``: whether the 64-hex ``text`` at 1-based ``line``/``column``
#: of a raw file is an allowed taproot x-only key.
AllowHex = Callable[[int, int, str], bool]


@dataclass(frozen=True)
class Finding:
    """Key material at ``line`` (1-based) and ``column`` (1-based); ``kind`` names what it is."""

    kind: str
    line: int
    column: int


@cache
def bip39_words() -> frozenset[str]:
    from embit.wordlists.bip39 import WORDLIST

    words = frozenset(WORDLIST)
    if len(words) != 2048:  # a truncated list would silently weaken the check
        raise RuntimeError("the BIP39 English wordlist from embit is incomplete")
    return words


@cache
def bip39_japanese_words() -> frozenset[str]:
    """The BIP39 Japanese wordlist, in NFC (composed) form, from eth-account (a dependency).

    Read from the package's data file without importing the package: importing eth-account
    sets up its elliptic-curve backend, about two seconds of every command's start-up."""
    spec = importlib.util.find_spec("eth_account")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise RuntimeError("eth-account (a dependency) is not installed")
    text = (Path(folders[0]) / "hdaccount" / "wordlist" / "japanese.txt").read_text("utf-8")
    listed = [w.strip() for w in text.splitlines() if w.strip()]
    raw = "".join(unicodedata.normalize("NFC", w) + "\n" for w in listed).encode("utf-8")
    if hashlib.sha256(raw).hexdigest() != JAPANESE_WORDLIST_SHA256:
        raise RuntimeError("eth-account's BIP39 Japanese wordlist is not the official one")
    words = frozenset(raw.decode("utf-8").split())
    if len(words) != 2048:
        raise RuntimeError("the BIP39 Japanese wordlist is incomplete")
    return words


def _base58_kind(token: str) -> str | None:
    if token.startswith(PRIVATE_EXTENDED_PREFIXES) and len(token) == 111:
        return XPRV  # even with a typo in the checksum it is still a private key
    if len(token) > 120:
        return None
    try:
        payload = b58check_decode(token)
    except InvalidAddress:
        return None
    if payload[0] in (0x80, 0xEF) and (
        len(payload) == 33 or (len(payload) == 34 and payload[-1] == 0x01)
    ):
        return WIF
    if len(payload) == 78:
        try:
            if decode_extended_key(token).private:
                return XPRV
        except InvalidAddress:
            return None
    return None


# --- taproot descriptors -------------------------------------------------------------------------


def taproot_key_spans(descriptor: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every 64-hex x-only key in a key position of a ``tr(...)`` descriptor.

    Key positions: the internal key (first argument, after an optional ``[origin]``) and the
    key arguments of ``pk``, ``pk_k``, ``pk_h``, ``multi_a`` and ``sortedmulti_a`` inside the
    script tree. Anything else (another descriptor function, a ``sha256(H)`` hash, text around
    the descriptor) gives no span. An empty list for a text that is not a taproot descriptor.
    """
    body = descriptor.split("#", 1)[0]
    if not (body.startswith("tr(") and body.endswith(")")):
        return []
    args = _top_level_args(body, len("tr("), len(body) - 1)
    if args is None or not 1 <= len(args) <= 2:
        return []
    spans = _key_span(body, *args[0])
    if len(args) == 2:
        tree_start, tree_end = args[1]
        for m in _TAP_KEY_FRAGMENT.finditer(body, tree_start, tree_end):
            close = _closing_paren(body, m.end() - 1, tree_end)
            fragment_args = None if close is None else _top_level_args(body, m.end(), close)
            if fragment_args is None:
                continue
            if m.group(1).endswith("multi_a"):
                fragment_args = fragment_args[1:]  # the threshold
            for start, end in fragment_args:
                spans += _key_span(body, start, end)
    return spans


def _key_span(text: str, start: int, end: int) -> list[tuple[int, int]]:
    origin = _ORIGIN.match(text, start, end)
    if origin:
        start = origin.end()
    return [(start, end)] if _XONLY.fullmatch(text, start, end) else []


def _top_level_args(text: str, start: int, end: int) -> list[tuple[int, int]] | None:
    """Spans of the comma-separated arguments in ``text[start:end]``; None if unbalanced."""
    spans, depth, arg_start = [], 0, start
    for i in range(start, end):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            spans.append((arg_start, i))
            arg_start = i + 1
    return None if depth else [*spans, (arg_start, end)]


def _closing_paren(text: str, open_at: int, limit: int) -> int | None:
    depth = 0
    for i in range(open_at, limit):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


# --- scanning ------------------------------------------------------------------------------------


def _token_findings(text: str, exempt: Callable[[int, int], bool]) -> Iterator[tuple[str, int]]:
    """(kind, offset) of every key-shaped token in ``text``; ``exempt(start, end)`` says which
    64-hex matches are allowed taproot keys."""
    for m in _B58_RUN.finditer(text):
        kind = _base58_kind(m.group())
        if kind:
            yield kind, m.start()
    for m in _HEX64.finditer(text):
        if not exempt(m.start(), m.end()):
            yield HEX_KEY, m.start()
    for m in _SLACK.finditer(text):
        yield SLACK_TOKEN, m.start()


def _never(_start: int, _end: int) -> bool:
    return False


def _seed_offset(text: str) -> int | None:
    """Offset of a run of 12 words of which at least 11 are BIP39 words of one language."""
    offsets = [
        _window_offset(list(_WORD.finditer(text)), bip39_words(), str.lower),
        _window_offset(list(_JA_WORD.finditer(text)), bip39_japanese_words(), _nfc),
    ]
    found = [o for o in offsets if o is not None]
    return min(found) if found else None


def _nfc(word: str) -> str:
    return unicodedata.normalize("NFC", word)


def _window_offset(
    tokens: list[re.Match[str]], words: frozenset[str], normal: Callable[[str], str]
) -> int | None:
    hits = [normal(m.group()) in words for m in tokens]
    for i in range(len(tokens) - SEED_WINDOW + 1):
        if sum(hits[i : i + SEED_WINDOW]) >= SEED_MIN_MATCHES:
            return tokens[i].start()
    return None


def classify(text: str, *, descriptor: bool = False) -> str | None:
    """The kind of the first key material or literal secret in one value, else None.

    ``descriptor=True`` only for a value of ``wallets.*.descriptors``: there, and only there,
    64-hex x-only keys in taproot key positions (``taproot_key_spans``) are allowed.
    """
    spans = set(taproot_key_spans(text)) if descriptor else set()
    for kind, _ in _token_findings(text, lambda start, end: (start, end) in spans):
        return kind
    return SEED if _seed_offset(text) is not None else None


def classify_words(values: Iterable[str]) -> str | None:
    """Seed-phrase check over a list of values read as one phrase (a YAML list of words)."""
    return SEED if _seed_offset(" ".join(values)) is not None else None


def scan_text(text: str, allow_hex: AllowHex | None = None) -> list[Finding]:
    """Every finding in raw text: each line, and each block of consecutive comment lines.

    Every 64-hex string is a finding unless ``allow_hex(line, column, text)`` says it is an
    allowed taproot key (the caller knows which lines hold descriptor values).
    """
    lines = text.splitlines()
    found: list[Finding] = []
    for number, line in enumerate(lines, start=1):
        exempt = _never if allow_hex is None else _line_exempt(allow_hex, number, line)
        for kind, offset in _token_findings(line, exempt):
            found.append(Finding(kind, number, offset + 1))
        seed_at = _seed_offset(line)
        if seed_at is not None:
            found.append(Finding(SEED, number, seed_at + 1))
    found.extend(_comment_block_seeds(lines, {f.line for f in found}))
    return sorted(found, key=lambda f: (f.line, f.column))


def _line_exempt(allow_hex: AllowHex, number: int, line: str) -> Callable[[int, int], bool]:
    return lambda start, end: allow_hex(number, start + 1, line[start:end])


def _comment_block_seeds(lines: list[str], already: set[int]) -> Iterator[Finding]:
    """A phrase written over several comment lines (``# word word word`` × 4)."""
    block: list[tuple[int, str]] = []
    for number, line in enumerate([*lines, ""], start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append((number, stripped.lstrip("#")))
            continue
        joined = " ".join(text for _, text in block)
        fresh = not already.intersection(n for n, _ in block)
        if len(block) > 1 and fresh and _seed_offset(joined) is not None:
            yield Finding(SEED, block[0][0], 1)
        block = []
