"""scriptPubKey classification and the address of an output script, for explicit parameters.

The templates are Bitcoin Core's ``Solver`` ones (``script/solver.cpp``): a witness program is
an OP_0..OP_16 then one push of 2 to 40 bytes; version 0 must be 20 (p2wpkh) or 32 (p2wsh)
bytes, else the script is nonstandard; version 1 with 32 bytes is p2tr; every other version and
length is ``witness_unknown`` (it still has an address, BIP350). The base58 and bech32 codecs
are ``drainwatch.addresses``'; the network is always passed in as ``BitcoinAddressParams``.
"""

from __future__ import annotations

from typing import Literal

from drainwatch.addresses import (
    BitcoinAddressParams,
    InvalidAddress,
    b58check_encode,
    decode_bitcoin_address,
    encode_segwit_address,
)

ScriptType = Literal[
    "p2pk",
    "p2pkh",
    "p2sh",
    "p2wpkh",
    "p2wsh",
    "p2tr",
    "multisig",  # bare m-of-n CHECKMULTISIG
    "op_return",
    "witness_unknown",
    "nonstandard",
]
SCRIPT_TYPES: tuple[ScriptType, ...] = ScriptType.__args__  # type: ignore[attr-defined]

OP_0, OP_PUSHDATA1, OP_PUSHDATA2, OP_PUSHDATA4 = 0x00, 0x4C, 0x4D, 0x4E
OP_1, OP_16, OP_RETURN = 0x51, 0x60, 0x6A
OP_DUP, OP_EQUAL, OP_EQUALVERIFY, OP_HASH160 = 0x76, 0x87, 0x88, 0xA9
OP_CHECKSIG, OP_CHECKMULTISIG = 0xAC, 0xAE

_PUBKEY_SIZES = {2: 33, 3: 33, 4: 65, 6: 65, 7: 65}  # CPubKey::ValidSize by the first byte


def classify(script: bytes) -> ScriptType:
    """The standard template ``script`` matches, or "nonstandard"."""
    n = len(script)
    if n == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return "p2pkh"
    if n == 23 and script[:2] == b"\xa9\x14" and script[22] == OP_EQUAL:
        return "p2sh"
    version = witness_version(script)
    if version is not None:
        if version == 0:
            return "p2wpkh" if n == 22 else "p2wsh" if n == 34 else "nonstandard"
        return "p2tr" if version == 1 and n == 34 else "witness_unknown"
    if n == 0:
        return "nonstandard"
    if script[0] == OP_RETURN:
        return "op_return" if _push_only(script, 1) else "nonstandard"
    if script[-1] == OP_CHECKSIG and n in (35, 67) and script[0] == n - 2:
        return "p2pk" if _PUBKEY_SIZES.get(script[1]) == n - 2 else "nonstandard"
    if script[-1] == OP_CHECKMULTISIG and _is_multisig(script):
        return "multisig"
    return "nonstandard"


def witness_version(script: bytes) -> int | None:
    """The witness version if ``script`` is a witness program (BIP141), else None."""
    n = len(script)
    if not 4 <= n <= 42 or script[1] != n - 2:
        return None
    op = script[0]
    if op == OP_0:
        return 0
    return op - OP_1 + 1 if OP_1 <= op <= OP_16 else None


def script_address(script: bytes, params: BitcoinAddressParams) -> str | None:
    """The address paying to ``script`` on ``params``' network; None for scripts that have
    none (p2pk, bare multisig, op_return, nonstandard: keep their script hex instead)."""
    n = len(script)
    if n == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return b58check_encode(bytes((params.p2pkh,)) + script[3:23])
    if n == 23 and script[:2] == b"\xa9\x14" and script[22] == OP_EQUAL:
        return b58check_encode(bytes((params.p2sh,)) + script[2:22])
    version = witness_version(script)
    if version is None or (version == 0 and n not in (22, 34)):
        return None
    try:
        return encode_segwit_address(params.bech32_hrp, version, script[2:])
    except InvalidAddress:
        return None  # past bech32's 90 characters (a long custom prefix): keep the script hex


def address_script(address: str, params: BitcoinAddressParams) -> bytes:
    """The scriptPubKey paying to ``address``; raises InvalidAddress if it is not one of
    ``params``' network."""
    decoded = decode_bitcoin_address(address, params)
    program = decoded.program
    if decoded.script_type == "p2pkh":
        return b"\x76\xa9\x14" + program + b"\x88\xac"
    if decoded.script_type == "p2sh":
        return b"\xa9\x14" + program + b"\x87"
    version = decoded.witness_version
    if version is None:  # decode_bitcoin_address gives a version for every segwit type
        raise InvalidAddress("address decoded without a witness version")
    op = OP_0 if version == 0 else OP_1 + version - 1
    return bytes((op, len(program))) + program


def _push_only(script: bytes, p: int) -> bool:
    """Whether script[p:] is only pushes (opcodes up to OP_16), none running past the end."""
    n = len(script)
    while p < n:
        op = script[p]
        p += 1
        if op > OP_16:
            return False
        if op < OP_PUSHDATA1:
            p += op
        elif op <= OP_PUSHDATA4:
            width = 1 << (op - OP_PUSHDATA1)  # 1, 2 or 4 length bytes
            if p + width > n:
                return False
            p += width + int.from_bytes(script[p : p + width], "little")
        if p > n:
            return False
    return True


def _is_multisig(script: bytes) -> bool:
    """OP_m <pubkey>... OP_n OP_CHECKMULTISIG with 1 <= m <= n <= 16 and n keys."""
    n = len(script)
    if n < 3 or not OP_1 <= script[0] <= OP_16 or not OP_1 <= script[-2] <= OP_16:
        return False
    required, total = script[0] - OP_1 + 1, script[-2] - OP_1 + 1
    p, keys = 1, 0
    while p < n - 2:
        size = script[p]
        if size not in (33, 65) or _PUBKEY_SIZES.get(script[p + 1] if p + 1 < n else 0) != size:
            return False
        p += 1 + size
        keys += 1
    return p == n - 2 and keys == total and required <= total
