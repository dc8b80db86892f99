"""A shape check of output descriptors (BIP380–386) for watch-only wallets in the config.

Only the forms an exchange's Bitcoin wallets use are accepted: ``pkh(KEY)``, ``wpkh(KEY)``,
``sh(wpkh(KEY))``, ``sh(wsh(MULTI))``, ``sh(MULTI)``, ``wsh(MULTI)`` and ``tr(KEY[,TREE])``,
where MULTI is ``multi``/``sortedmulti(k,KEY,...)``. Keys must be public (hex or xpub/tpub with
a derivation path); the optional ``#checksum`` is verified. A 64-hex (32-byte) key is an x-only
key and only taproot takes one (BIP386): elsewhere hex keys are 66-hex compressed keys (02/03),
and a 64-hex string there may be a private key, so it is refused. Deriving addresses comes
later (embit).
Error reasons never quote the descriptor: it may carry a private key pasted by mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drainwatch.addresses import InvalidAddress, check_xpub

_INPUT_CHARSET = (
    "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
    'ijklmnopqrstuvwxyzABCDEFGH`#"\\ '
)
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)
_ORIGIN = re.compile(r"^\[[0-9a-fA-F]{8}(/[0-9]+['hH]?)*\]")
_PATH_STEP = re.compile(r"^([0-9]+['hH]?|\*['hH]?|<[0-9]+['hH]?(;[0-9]+['hH]?)+>)$")
_COMPRESSED_KEY = re.compile(r"^0[23][0-9a-fA-F]{64}$")
_XONLY_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_INNER = {
    "sh": {"wpkh", "wsh", "multi", "sortedmulti"},
    "wsh": {"multi", "sortedmulti"},
}
TOP_LEVEL = ("pkh", "wpkh", "sh", "wsh", "tr")


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Call | str, ...]


def descriptor_checksum(body: str) -> str:
    """The 8-character BIP380 checksum of a descriptor without its ``#…`` suffix."""
    c = 1
    cls, count = 0, 0
    for ch in body:
        pos = _INPUT_CHARSET.find(ch)
        if pos < 0:
            raise InvalidAddress("descriptor has a character outside the descriptor alphabet")
        c = _polymod(c, pos & 31)
        cls, count = cls * 3 + (pos >> 5), count + 1
        if count == 3:
            c, cls, count = _polymod(c, cls), 0, 0
    if count:
        c = _polymod(c, cls)
    for _ in range(8):
        c = _polymod(c, 0)
    c ^= 1
    return "".join(_CHECKSUM_CHARSET[(c >> (5 * (7 - j))) & 31] for j in range(8))


def _polymod(c: int, value: int) -> int:
    top = c >> 35
    c = ((c & 0x7FFFFFFFF) << 5) ^ value
    for i, gen in enumerate(_GENERATOR):
        if (top >> i) & 1:
            c ^= gen
    return c


def check_descriptor(text: str, mainnet: bool) -> None:
    """Raise ``InvalidAddress`` unless ``text`` is an accepted watch-only descriptor."""
    body, sep, checksum = text.partition("#")
    if sep and checksum != descriptor_checksum(body):
        raise InvalidAddress("descriptor checksum (after #) does not match")
    call = _parse(body)
    if call.name not in TOP_LEVEL:
        raise InvalidAddress(f"a descriptor must start with one of {', '.join(TOP_LEVEL)}")
    _check_call(call, mainnet)


def _parse(text: str) -> _Call:
    name, sep, rest = text.partition("(")
    if not sep or not rest.endswith(")") or not re.fullmatch(r"[a-z_]+", name):
        raise InvalidAddress("not a descriptor: expected name(...) with balanced parentheses")
    args = [a if "(" not in a or a.startswith("{") else _parse(a) for a in _split(rest[:-1])]
    return _Call(name, tuple(args))


def _split(inner: str) -> list[str]:
    """Split on the commas that are not inside (), [] or {}; refuse unbalanced brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise InvalidAddress("descriptor parentheses are not balanced")
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    if depth:
        raise InvalidAddress("descriptor parentheses are not balanced")
    return [*parts, inner[start:]]


def _check_call(call: _Call, mainnet: bool) -> None:
    if call.name in _INNER:
        inner = call.args[0] if len(call.args) == 1 else None
        if not isinstance(inner, _Call) or inner.name not in _INNER[call.name]:
            allowed = "/".join(sorted(_INNER[call.name]))
            raise InvalidAddress(f"{call.name}(...) must wrap exactly one of {allowed}(...)")
        _check_call(inner, mainnet)
    elif call.name in ("multi", "sortedmulti"):
        _check_multi(call, mainnet)
    elif call.name in ("pkh", "wpkh"):
        if len(call.args) != 1:
            raise InvalidAddress(f"{call.name}(...) takes exactly one key")
        _check_key(call.args[0], mainnet)
    elif call.name == "tr":
        if not 1 <= len(call.args) <= 2:
            raise InvalidAddress("tr(...) takes an internal key and an optional script tree")
        _check_key(call.args[0], mainnet, taproot=True)
    else:
        raise InvalidAddress(f"{call.name}(...) is not accepted here")


def _check_multi(call: _Call, mainnet: bool) -> None:
    threshold, *keys = call.args
    if not isinstance(threshold, str) or not threshold.isdigit():
        raise InvalidAddress(f"{call.name}(k, ...) needs a number k first")
    if not 1 <= int(threshold) <= len(keys) or len(keys) > 20:
        raise InvalidAddress(f"{call.name}(k, keys...) needs 1 <= k <= number of keys <= 20")
    for key in keys:
        _check_key(key, mainnet)


def _check_key(key: _Call | str, mainnet: bool, *, taproot: bool = False) -> None:
    if not isinstance(key, str):
        raise InvalidAddress("expected a key, found a nested expression")
    key = _ORIGIN.sub("", key)
    if _COMPRESSED_KEY.match(key) or (taproot and _XONLY_KEY.match(key)):
        return
    if _XONLY_KEY.match(key):
        raise InvalidAddress(
            "a 64-hex-digit key is only an x-only public key inside tr(...); elsewhere it may be "
            "a private key (public hex keys are 66 digits starting with 02 or 03)"
        )
    base, *steps = key.split("/")
    if not base.startswith(("xpub", "tpub")):
        raise InvalidAddress("descriptor keys must be hex public keys or xpub/tpub keys")
    check_xpub(base, mainnet)
    if not all(_PATH_STEP.match(step) for step in steps):
        raise InvalidAddress("descriptor key has a malformed derivation path")
