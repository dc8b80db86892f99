"""Address and extended-key codecs: EVM (EIP-55), Bitcoin base58check, bech32 / bech32m.

Pure functions, no I/O and no global network state: the Bitcoin network is always passed in as
a ``BitcoinAddressParams`` (python-bitcoinlib's process-wide ``SelectParams`` is what we avoid).
Written here rather than borrowed because python-bitcoinlib has no bech32m (taproot) and because
config validation and the key-material scanner both need the raw decoders.

Every decoder raises ``InvalidAddress`` (a ``ValueError``) with a short reason that never repeats
the input: the input may be a secret someone pasted by mistake.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from eth_utils.address import is_checksum_address, to_checksum_address

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}
BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(BECH32_CHARSET)}
_EVM_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")

ScriptType = Literal["p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr", "witness_unknown"]


class InvalidAddress(ValueError):
    """The string is not a valid address / key for the given parameters."""


# --- EVM ---------------------------------------------------------------------------------------


def is_valid_evm_address(address: str) -> bool:
    """0x + 40 hex; when mixed case, the EIP-55 checksum must hold (all-lower/upper carry none)."""
    if not _EVM_RE.match(address):
        return False
    body = address[2:]
    if body.lower() == body or body.upper() == body:
        return True
    return bool(is_checksum_address(address))


def to_checksum(address: str) -> str:
    """The EIP-55 form of a valid EVM address."""
    if not is_valid_evm_address(address):
        raise InvalidAddress(
            "not an EVM address (0x + 40 hex digits, EIP-55 checksum if mixed case)"
        )
    return str(to_checksum_address(address))


# --- base58check -------------------------------------------------------------------------------


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise InvalidAddress("character outside the base58 alphabet")
        n = n * 58 + _B58_INDEX[c]
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def b58check_encode(payload: bytes) -> str:
    return b58encode(payload + _sha256d(payload)[:4])


def b58check_decode(text: str) -> bytes:
    """The payload (version byte(s) included) of a base58check string."""
    raw = b58decode(text)
    if len(raw) < 5:
        raise InvalidAddress("too short for base58check")
    payload, check = raw[:-4], raw[-4:]
    if _sha256d(payload)[:4] != check:
        raise InvalidAddress("base58check checksum mismatch")
    return payload


# --- bech32 / bech32m (BIP173, BIP350) ---------------------------------------------------------


class Bech32Encoding(Enum):
    BECH32 = 1
    BECH32M = 0x2BC830A3


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: list[int], encoding: Bech32Encoding) -> str:
    values = _hrp_expand(hrp) + data
    poly = _polymod([*values, 0, 0, 0, 0, 0, 0]) ^ encoding.value
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[d] for d in data + checksum)


def bech32_decode(text: str) -> tuple[str, list[int], Bech32Encoding]:
    """(hrp, 5-bit data without checksum, encoding) of a bech32 or bech32m string."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise InvalidAddress("bech32 string has a character outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise InvalidAddress("bech32 string mixes upper and lower case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1 or sep + 7 > len(text) or len(text) > 90:
        raise InvalidAddress("bech32 separator or length is wrong")
    hrp, rest = text[:sep], text[sep + 1 :]
    if any(c not in _BECH32_INDEX for c in rest):
        raise InvalidAddress("character outside the bech32 alphabet")
    data = [_BECH32_INDEX[c] for c in rest]
    const = _polymod(_hrp_expand(hrp) + data)
    for encoding in Bech32Encoding:
        if const == encoding.value:
            return hrp, data[:-6], encoding
    raise InvalidAddress("bech32 checksum mismatch")


def convertbits(data: list[int] | bytes, frombits: int, tobits: int, pad: bool) -> list[int]:
    acc, bits, out = 0, 0, []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise InvalidAddress("bit group out of range")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (tobits - bits)) & maxv)
    elif not pad and (bits >= frombits or (acc << (tobits - bits)) & maxv):
        raise InvalidAddress("invalid padding in bech32 data")
    return out


def encode_segwit_address(hrp: str, witver: int, program: bytes) -> str:
    encoding = Bech32Encoding.BECH32 if witver == 0 else Bech32Encoding.BECH32M
    address = bech32_encode(hrp, [witver, *convertbits(program, 8, 5, True)], encoding)
    decode_segwit_address(hrp, address)  # refuses programs no decoder would accept
    return address


def decode_segwit_address(hrp: str, address: str) -> tuple[int, bytes]:
    """(witness version, program) of a segwit address whose hrp must be ``hrp``."""
    got_hrp, data, encoding = bech32_decode(address)
    if got_hrp != hrp.lower():
        raise InvalidAddress(f"bech32 prefix is not {hrp!r} for this network")
    if not data or data[0] > 16:
        raise InvalidAddress("invalid witness version")
    program = bytes(convertbits(data[1:], 5, 8, False))
    witver = data[0]
    if not 2 <= len(program) <= 40:
        raise InvalidAddress("witness program length out of range")
    if witver == 0 and len(program) not in (20, 32):
        raise InvalidAddress("witness v0 program must be 20 or 32 bytes")
    wanted = Bech32Encoding.BECH32 if witver == 0 else Bech32Encoding.BECH32M
    if encoding is not wanted:
        raise InvalidAddress("witness v0 needs bech32 and v1+ needs bech32m (BIP350)")
    return witver, program


# --- Bitcoin addresses -------------------------------------------------------------------------


@dataclass(frozen=True)
class BitcoinAddressParams:
    """The address prefixes of one Bitcoin network (passed explicitly: no global state)."""

    p2pkh: int
    p2sh: int
    bech32_hrp: str


MAINNET = BitcoinAddressParams(p2pkh=0x00, p2sh=0x05, bech32_hrp="bc")
TESTNET = BitcoinAddressParams(p2pkh=0x6F, p2sh=0xC4, bech32_hrp="tb")
SIGNET = TESTNET
REGTEST = BitcoinAddressParams(p2pkh=0x6F, p2sh=0xC4, bech32_hrp="bcrt")
NETWORK_PARAMS = {"mainnet": MAINNET, "testnet": TESTNET, "signet": SIGNET, "regtest": REGTEST}


@dataclass(frozen=True)
class DecodedAddress:
    script_type: ScriptType
    program: bytes  # the hash160 for p2pkh / p2sh, the witness program for segwit
    witness_version: int | None = None


def decode_bitcoin_address(address: str, params: BitcoinAddressParams) -> DecodedAddress:
    """Decode a legacy (base58check) or segwit (bech32/bech32m) address for ``params``."""
    if address.lower().startswith(params.bech32_hrp.lower() + "1"):
        witver, program = decode_segwit_address(params.bech32_hrp, address)
        kinds: dict[tuple[int, int], ScriptType] = {(0, 20): "p2wpkh", (0, 32): "p2wsh"}
        kinds[(1, 32)] = "p2tr"
        kind = kinds.get((witver, len(program)), "witness_unknown")
        return DecodedAddress(kind, program, witver)
    try:
        payload = b58check_decode(address)
    except InvalidAddress:
        if _is_bech32(address):
            raise InvalidAddress(
                f"bech32 prefix is not {params.bech32_hrp!r} (another network's address)"
            ) from None
        raise
    if len(payload) != 21:
        raise InvalidAddress("legacy address payload must be 21 bytes")
    if payload[0] == params.p2pkh:
        return DecodedAddress("p2pkh", payload[1:])
    if payload[0] == params.p2sh:
        return DecodedAddress("p2sh", payload[1:])
    raise InvalidAddress("address version byte does not belong to this network")


def _is_bech32(text: str) -> bool:
    try:
        bech32_decode(text)
    except InvalidAddress:
        return False
    return True


def normalise_bitcoin_address(address: str, params: BitcoinAddressParams) -> str:
    """The canonical text: bech32 lower-cased, base58 as given (it is case-sensitive)."""
    decoded = decode_bitcoin_address(address, params)
    return address.lower() if decoded.witness_version is not None else address


# --- BIP32 extended keys -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExtendedKeyVersion:
    prefix: str
    private: bool
    mainnet: bool


#: SLIP-132 version bytes: x/y/z (and multisig Y/Z) on mainnet, t/u/v (U/V) on test networks.
EXTENDED_KEY_VERSIONS: dict[int, ExtendedKeyVersion] = {
    0x0488B21E: ExtendedKeyVersion("xpub", False, True),
    0x049D7CB2: ExtendedKeyVersion("ypub", False, True),
    0x04B24746: ExtendedKeyVersion("zpub", False, True),
    0x0295B43F: ExtendedKeyVersion("Ypub", False, True),
    0x02AA7ED3: ExtendedKeyVersion("Zpub", False, True),
    0x043587CF: ExtendedKeyVersion("tpub", False, False),
    0x044A5262: ExtendedKeyVersion("upub", False, False),
    0x045F1CF6: ExtendedKeyVersion("vpub", False, False),
    0x024289EF: ExtendedKeyVersion("Upub", False, False),
    0x02575483: ExtendedKeyVersion("Vpub", False, False),
    0x0488ADE4: ExtendedKeyVersion("xprv", True, True),
    0x049D7878: ExtendedKeyVersion("yprv", True, True),
    0x04B2430C: ExtendedKeyVersion("zprv", True, True),
    0x0295B005: ExtendedKeyVersion("Yprv", True, True),
    0x02AA7A99: ExtendedKeyVersion("Zprv", True, True),
    0x04358394: ExtendedKeyVersion("tprv", True, False),
    0x044A4E28: ExtendedKeyVersion("uprv", True, False),
    0x045F18BC: ExtendedKeyVersion("vprv", True, False),
    0x024285B5: ExtendedKeyVersion("Uprv", True, False),
    0x02575048: ExtendedKeyVersion("Vprv", True, False),
}
PRIVATE_EXTENDED_PREFIXES = tuple(v.prefix for v in EXTENDED_KEY_VERSIONS.values() if v.private)


def decode_extended_key(text: str) -> ExtendedKeyVersion:
    """The version of a BIP32 extended key (public or private); checks length and key data."""
    payload = b58check_decode(text)
    if len(payload) != 78:
        raise InvalidAddress("extended key payload must be 78 bytes")
    version = EXTENDED_KEY_VERSIONS.get(int.from_bytes(payload[:4], "big"))
    if version is None:
        raise InvalidAddress("unknown extended key version bytes")
    key = payload[45:]
    valid_key = key[0] == 0 if version.private else key[0] in (2, 3)
    if not valid_key:
        raise InvalidAddress("extended key data is malformed")
    return version


def check_xpub(text: str, mainnet: bool) -> ExtendedKeyVersion:
    """Accept an extended *public* key for the network class (mainnet vs test networks)."""
    version = decode_extended_key(text)
    if version.private:
        raise InvalidAddress("this is an extended PRIVATE key; give the public key")
    if version.mainnet != mainnet:
        wanted = "xpub/ypub/zpub/Ypub/Zpub" if mainnet else "tpub/upub/vpub/Upub/Vpub"
        raise InvalidAddress(f"extended key is for another network (expected {wanted})")
    return version
