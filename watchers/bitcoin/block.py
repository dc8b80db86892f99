"""Bitcoin blocks and transactions parsed from their consensus serialization.

One tight loop over the bytes per transaction: fixed-width fields through ``struct`` unpackers,
compact sizes decoded inline (the rare 3-, 5- and 9-byte forms in a helper that also refuses the
non-canonical encodings Bitcoin Core refuses), one small ``__slots__`` object per input and
output. The loop checks no bounds itself: a truncated buffer shows up as an ``IndexError`` or
``struct.error`` (caught once, around the whole loop) or as an end offset past the data, and
becomes a ``BlockFormatError`` naming the transaction and its offset.

Nothing derived is computed before it is asked for: a watcher needs the txid only of the
transactions that touch a watched script or outpoint, and hashing costs about a fifth of the
parse (OpenSSL's per-call set-up, not the bytes). A transaction keeps a reference to the buffer
it was parsed from and its offsets; the txid (double SHA-256 of the non-witness serialization,
hashed slice by slice without building a stripped copy) is computed on first use and cached.
The same goes for wtxids, display hex strings and prev-txid hex; scripts are classified by
``watchers.bitcoin.script``.

Hashes are kept in internal byte order as ``bytes`` (``*_bytes``) and shown in display order
(reversed, as Bitcoin Core's RPC prints them) as ``str``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

NETWORK_MAGIC: dict[str, bytes] = {
    "mainnet": bytes.fromhex("f9beb4d9"),
    "testnet": bytes.fromhex("0b110907"),  # testnet3
    "testnet4": bytes.fromhex("1c163f28"),
    "signet": bytes.fromhex("0a03cf40"),  # the default signet; custom signets have their own
    "regtest": bytes.fromhex("fabfb5da"),
}

#: Bitcoin Core's MAX_SIZE: no compact size in a consensus message may exceed it.
MAX_COMPACT_SIZE = 0x02000000
WITNESS_COMMITMENT_PREFIX = bytes.fromhex("6a24aa21a9ed")  # OP_RETURN, push 36, BIP141 tag
NULL_OUTPOINT = b"\0" * 32 + b"\xff" * 4
HEADER_SIZE = 80

_sha256 = hashlib.sha256
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_HEADER = struct.Struct("<i32s32sIII")
_NO_WITNESS: tuple[bytes, ...] = ()
_TRUNCATED = (IndexError, struct.error)
_COMPACT_MIN = {2: 0xFD, 4: 0x10000, 8: 0x100000000}  # smaller values have a shorter form


class BlockFormatError(ValueError):
    """The bytes are not a well-formed block or transaction (truncated, trailing, malformed)."""


def sha256d(data: bytes) -> bytes:
    return _sha256(_sha256(data).digest()).digest()


def outpoint_key(txid: str, vout: int) -> bytes:
    """The 36-byte outpoint (``TxIn.outpoint``) of output ``vout`` of display-hex ``txid``."""
    internal = bytes.fromhex(txid)[::-1]
    if len(internal) != 32:
        raise ValueError("a txid is 32 bytes (64 hex digits)")
    if not 0 <= vout <= 0xFFFFFFFF:
        raise ValueError("an output index is a 32-bit unsigned integer")
    return internal + vout.to_bytes(4, "little")


class TxIn:
    """A transaction input. Treat as read-only (a plain slots class: cheap to build)."""

    __slots__ = ("outpoint", "script_sig", "sequence", "witness")

    def __init__(
        self, outpoint: bytes, script_sig: bytes, sequence: int, witness: tuple[bytes, ...] = ()
    ) -> None:
        self.outpoint = outpoint  # prev txid (internal order) + vout uint32 LE: a set key
        self.script_sig = script_sig
        self.sequence = sequence
        self.witness = witness

    @property
    def prev_txid(self) -> str:
        return self.outpoint[31::-1].hex()

    @property
    def prev_vout(self) -> int:
        return int.from_bytes(self.outpoint[32:], "little")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TxIn):
            return NotImplemented
        return (self.outpoint, self.script_sig, self.sequence, self.witness) == (
            other.outpoint,
            other.script_sig,
            other.sequence,
            other.witness,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TxIn({self.prev_txid}:{self.prev_vout}, sequence={self.sequence:#x})"


class TxOut:
    """A transaction output: ``value`` in satoshi and the scriptPubKey. Treat as read-only."""

    __slots__ = ("script", "value")

    def __init__(self, value: int, script: bytes) -> None:
        self.value = value
        self.script = script

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TxOut):
            return NotImplemented
        return self.value == other.value and self.script == other.script

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TxOut({self.value}, {self.script.hex()})"


class Tx:
    """A parsed transaction; its hashes are computed from the source buffer on first use."""

    __slots__ = (
        "_end",
        "_raw",
        "_start",
        "_txid",
        "_witness_at",
        "has_witness",
        "inputs",
        "locktime",
        "outputs",
        "version",
    )

    def __init__(
        self,
        version: int,
        inputs: list[TxIn],
        outputs: list[TxOut],
        locktime: int,
        has_witness: bool,
        raw: bytes,
        start: int,
        end: int,
        witness_at: int,
    ) -> None:
        self.version = version
        self.inputs = inputs
        self.outputs = outputs
        self.locktime = locktime
        self.has_witness = has_witness
        self._raw = raw  # the buffer the tx was parsed from: raw[start:end] is the tx
        self._start = start
        self._end = end
        self._witness_at = witness_at  # where the witnesses start (if has_witness)
        self._txid: bytes | None = None

    @property
    def txid_bytes(self) -> bytes:
        """The txid in internal byte order (as in outpoints and the merkle tree)."""
        txid = self._txid
        if txid is None:
            raw, start, end = self._raw, self._start, self._end
            if self.has_witness:  # version || inputs and outputs || locktime
                h = _sha256(raw[start : start + 4])
                h.update(raw[start + 6 : self._witness_at])
                h.update(raw[end - 4 : end])
            else:
                h = _sha256(raw[start:end])
            txid = self._txid = _sha256(h.digest()).digest()
        return txid

    @property
    def txid(self) -> str:
        return self.txid_bytes[::-1].hex()

    @property
    def wtxid_bytes(self) -> bytes:
        if not self.has_witness:
            return self.txid_bytes
        return sha256d(self._raw[self._start : self._end])

    @property
    def wtxid(self) -> str:
        return self.wtxid_bytes[::-1].hex()

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].outpoint == NULL_OUTPOINT

    @property
    def size(self) -> int:
        """Serialized size in bytes, witness included."""
        return self._end - self._start

    def serialize(self) -> bytes:
        """The consensus serialization, rebuilt from the fields (witness included if any)."""
        parts = [self.version.to_bytes(4, "little")]
        if self.has_witness:
            parts.append(b"\0\1")
        parts.append(compact_size(len(self.inputs)))
        for inp in self.inputs:
            parts += (inp.outpoint, compact_size(len(inp.script_sig)), inp.script_sig)
            parts.append(inp.sequence.to_bytes(4, "little"))
        parts.append(compact_size(len(self.outputs)))
        for out in self.outputs:
            parts += (out.value.to_bytes(8, "little"), compact_size(len(out.script)), out.script)
        if self.has_witness:
            for inp in self.inputs:
                parts.append(compact_size(len(inp.witness)))
                for item in inp.witness:
                    parts += (compact_size(len(item)), item)
        parts.append(self.locktime.to_bytes(4, "little"))
        return b"".join(parts)

    def __repr__(self) -> str:
        return f"Tx({self.txid}, {len(self.inputs)} in, {len(self.outputs)} out)"


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    prev_hash: str  # display hex
    merkle_root: str  # display hex
    time: int
    bits: int
    nonce: int
    hash: str  # display hex of sha256d(the 80 bytes)

    def serialize(self) -> bytes:
        prev = bytes.fromhex(self.prev_hash)[::-1]
        merkle = bytes.fromhex(self.merkle_root)[::-1]
        return _HEADER.pack(self.version, prev, merkle, self.time, self.bits, self.nonce)


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...]

    def computed_merkle_root(self) -> str:
        """The merkle root of the parsed txids, display hex (compare with header.merkle_root)."""
        return merkle_root([tx.txid_bytes for tx in self.txs])[::-1].hex()

    def witness_commitment_ok(self) -> bool | None:
        """BIP141: does the coinbase's witness commitment match the wtxids?

        None when there is neither a commitment nor any witness data (a pre-segwit block).
        False when witness data is present without a commitment, when the coinbase witness is
        not the single 32-byte reserved value, or when the commitment does not match.
        A block with a commitment but no witness data at all (serialized without witnesses, as
        before activation, when miners already committed) is checked with the all-zero reserved
        value that miners use.
        """
        coinbase = self.txs[0]
        commitment = None
        for out in coinbase.outputs:  # the last matching output is the commitment
            script = out.script
            if len(script) >= 38 and script[:6] == WITNESS_COMMITMENT_PREFIX:
                commitment = script[6:38]
        if commitment is None:
            return False if any(tx.has_witness for tx in self.txs) else None
        witness = coinbase.inputs[0].witness if coinbase.inputs else ()
        if not witness:
            if any(tx.has_witness for tx in self.txs):
                return False  # witness data needs the reserved value in the coinbase
            witness = (b"\0" * 32,)
        if len(witness) != 1 or len(witness[0]) != 32:
            return False
        wtxids = [b"\0" * 32] + [tx.wtxid_bytes for tx in self.txs[1:]]
        return sha256d(merkle_root(wtxids) + witness[0]) == commitment

    def serialize(self) -> bytes:
        txs = b"".join(tx.serialize() for tx in self.txs)
        return self.header.serialize() + compact_size(len(self.txs)) + txs


def merkle_root(hashes: list[bytes]) -> bytes:
    """Bitcoin's merkle root (internal byte order) of hashes in internal byte order."""
    if not hashes:
        return b"\0" * 32
    level = hashes
    while len(level) > 1:
        if len(level) & 1:
            level = [*level, level[-1]]
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def parse_header(raw: bytes) -> BlockHeader:
    """The header in the first 80 bytes of ``raw``."""
    if len(raw) < HEADER_SIZE:
        raise BlockFormatError(f"offset 0: a block header is 80 bytes, got {len(raw)}")
    version, prev, merkle, time, bits, nonce = _HEADER.unpack_from(raw)
    block_hash = sha256d(raw[:HEADER_SIZE])[::-1].hex()
    return BlockHeader(version, prev[::-1].hex(), merkle[::-1].hex(), time, bits, nonce, block_hash)


def parse_block(raw: bytes) -> Block:
    """Parse a whole block (``getblock HASH 0``, hex-decoded). Raises BlockFormatError."""
    raw = bytes(raw)  # no copy for bytes; the loop needs bytes (bytearray slices would differ)
    header = parse_header(raw)
    size = len(raw)
    try:
        count, p = _compact_at(raw, HEADER_SIZE)
    except _TRUNCATED:
        raise BlockFormatError("offset 80: block ends before its transaction count") from None
    if count == 0:
        raise BlockFormatError("offset 80: a block has at least one (coinbase) transaction")
    txs: list[Tx] = []
    add = txs.append
    read_tx = _read_tx
    start = p
    try:
        for _ in range(count):
            start = p
            tx, p = read_tx(raw, p)
            if p > size:
                break
            add(tx)
    except _TRUNCATED:
        p = size + 1
    if p > size:
        raise BlockFormatError(
            f"offset {start}: transaction {len(txs)} of {count} runs past the end of the block"
            f" ({size} bytes): truncated"
        )
    if p != size:
        raise BlockFormatError(f"offset {p}: {size - p} trailing bytes after the last transaction")
    return Block(header, tuple(txs))


def parse_tx(raw: bytes) -> Tx:
    """Parse one transaction (``getrawtransaction TXID false``, hex-decoded)."""
    raw = bytes(raw)
    try:
        tx, p = _read_tx(raw, 0)
    except _TRUNCATED:
        p = len(raw) + 1
    if p > len(raw):
        raise BlockFormatError(f"offset 0: transaction runs past the end ({len(raw)} bytes)")
    if p != len(raw):
        raise BlockFormatError(f"offset {p}: {len(raw) - p} trailing bytes after the transaction")
    return tx


def _compact_at(raw: bytes, p: int) -> tuple[int, int]:
    n = raw[p]
    return (n, p + 1) if n < 0xFD else _big_compact(raw, p + 1, n)


def _big_compact(raw: bytes, p: int, first: int) -> tuple[int, int]:
    """The 0xFD/0xFE/0xFF forms of a compact size whose first byte (at p - 1) was ``first``."""
    width = 2 if first == 0xFD else 4 if first == 0xFE else 8
    chunk = raw[p : p + width]
    if len(chunk) != width:
        raise BlockFormatError(f"offset {p - 1}: truncated compact size")
    value = int.from_bytes(chunk, "little")
    if value < _COMPACT_MIN[width]:
        raise BlockFormatError(f"offset {p - 1}: non-canonical compact size {value}")
    if value > MAX_COMPACT_SIZE:
        raise BlockFormatError(f"offset {p - 1}: compact size {value} exceeds {MAX_COMPACT_SIZE}")
    return value, p + width


def _read_tx(raw: bytes, p: int) -> tuple[Tx, int]:
    """The transaction at offset p and the offset after it. Short data raises IndexError or
    struct.error, or returns an end offset past len(raw): the callers turn those into errors."""
    start = p
    (version,) = _U32(raw, p)
    p += 4
    n = raw[p]
    segwit = n == 0
    if segwit:  # BIP144: marker 0x00 (an empty input list otherwise) then flag 0x01
        if raw[p + 1] != 1:
            raise BlockFormatError(
                f"offset {p}: segwit marker followed by flag {raw[p + 1]:#04x}, not 0x01"
            )
        p += 2
        n = raw[p]
    p += 1
    if n >= 0xFD:
        n, p = _big_compact(raw, p, n)
    inputs: list[TxIn] = []
    add_in = inputs.append
    for _ in range(n):
        q = p + 37
        k = raw[q - 1]
        if k >= 0xFD:
            k, q = _big_compact(raw, q, k)
        e = q + k
        add_in(TxIn(raw[p : p + 36], raw[q:e], _U32(raw, e)[0], _NO_WITNESS))
        p = e + 4
    n = raw[p]
    p += 1
    if n >= 0xFD:
        n, p = _big_compact(raw, p, n)
    outputs: list[TxOut] = []
    add_out = outputs.append
    for _ in range(n):
        q = p + 9
        k = raw[q - 1]
        if k >= 0xFD:
            k, q = _big_compact(raw, q, k)
        e = q + k
        add_out(TxOut(_U64(raw, p)[0], raw[q:e]))
        p = e
    if not segwit:
        (locktime,) = _U32(raw, p)
        p += 4
        return Tx(version, inputs, outputs, locktime, False, raw, start, p, p), p
    witness_at = p
    witnessed = False
    for inp in inputs:
        n = raw[p]
        p += 1
        if n >= 0xFD:
            n, p = _big_compact(raw, p, n)
        if n:
            witnessed = True
            items = []
            for _ in range(n):
                k = raw[p]
                p += 1
                if k >= 0xFD:
                    k, p = _big_compact(raw, p, k)
                items.append(raw[p : p + k])
                p += k
            inp.witness = tuple(items)
    if not witnessed:  # Bitcoin Core refuses the flag with only empty witnesses
        raise BlockFormatError(f"offset {start}: segwit flag set but every witness is empty")
    (locktime,) = _U32(raw, p)
    p += 4
    return Tx(version, inputs, outputs, locktime, True, raw, start, p, witness_at), p
