"""Find private-key material and literal secrets in text, without ever echoing them.

drainwatch is watch-only (DESIGN.md §6): a config file that holds a WIF key, an extended private
key, a 64-hex-digit private key, a BIP39 seed phrase or a Slack token is refused. The scanner runs
over the raw text (so comments are covered) and over parsed values (so a phrase split across a
YAML list is covered). A ``Finding`` says what and where, never the matched text.

False positives matter as much as misses: a 40-hex EVM address, a 66-hex public key, an xpub
and an English sentence must pass. Inside a descriptor argument list a 64-hex string is an
x-only public key (BIP386 ``tr(KEY)``), so it is not reported there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

from drainwatch.addresses import (
    B58_ALPHABET,
    PRIVATE_EXTENDED_PREFIXES,
    InvalidAddress,
    b58check_decode,
    decode_extended_key,
)

WIF = "a WIF private key"
XPRV = "an extended private key (xprv/tprv/…)"
HEX_KEY = "a 64-hex-digit private key"
SEED = "a BIP39 seed phrase"
SLACK_TOKEN = "a Slack token"

_B58_RUN = re.compile(rf"(?<![{B58_ALPHABET}])[{B58_ALPHABET}]{{50,}}(?![{B58_ALPHABET}])")
_HEX64 = re.compile(r"(?<![0-9A-Za-z])(?:0[xX])?[0-9a-fA-F]{64}(?![0-9A-Za-z])")
_SLACK = re.compile(r"xox[abprs]-[0-9A-Za-z-]{8,}|xapp-[0-9]-[0-9A-Za-z-]{8,}")
_WORD = re.compile(r"[A-Za-z]+")
SEED_WINDOW = 12
SEED_MIN_MATCHES = 11  # one typo in a 12-word phrase still leaks the wallet


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


def _in_descriptor_args(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    # "]" ends a key origin: tr([d34db33f/86h/0h/0h]<x-only key>)
    return before in "(,{]" and before != "" and after in "),}" and after != ""


def _token_findings(text: str) -> Iterator[tuple[str, int]]:
    """(kind, offset) of every key-shaped token in ``text``."""
    for m in _B58_RUN.finditer(text):
        kind = _base58_kind(m.group())
        if kind:
            yield kind, m.start()
    for m in _HEX64.finditer(text):
        if not _in_descriptor_args(text, m.start(), m.end()):
            yield HEX_KEY, m.start()
    for m in _SLACK.finditer(text):
        yield SLACK_TOKEN, m.start()


def _seed_offset(text: str) -> int | None:
    """Offset of a run of 12 words of which at least 11 are BIP39 words, if any."""
    words = bip39_words()
    tokens = list(_WORD.finditer(text))
    hits = [m.group().lower() in words for m in tokens]
    for i in range(len(tokens) - SEED_WINDOW + 1):
        if sum(hits[i : i + SEED_WINDOW]) >= SEED_MIN_MATCHES:
            return tokens[i].start()
    return None


def classify(text: str) -> str | None:
    """The kind of the first key material or literal secret in one value, else None."""
    for kind, _ in _token_findings(text):
        return kind
    return SEED if _seed_offset(text) is not None else None


def classify_words(values: Iterable[str]) -> str | None:
    """Seed-phrase check over a list of values read as one phrase (a YAML list of words)."""
    return SEED if _seed_offset(" ".join(values)) is not None else None


def scan_text(text: str) -> list[Finding]:
    """Every finding in raw text: each line, and each block of consecutive comment lines."""
    lines = text.splitlines()
    found: list[Finding] = []
    for number, line in enumerate(lines, start=1):
        for kind, offset in _token_findings(line):
            found.append(Finding(kind, number, offset + 1))
        seed_at = _seed_offset(line)
        if seed_at is not None:
            found.append(Finding(SEED, number, seed_at + 1))
    found.extend(_comment_block_seeds(lines, {f.line for f in found}))
    return sorted(found, key=lambda f: (f.line, f.column))


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
