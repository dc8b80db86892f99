"""Bitcoin Core's block files (``blocks/blk*.dat``) read directly, without a node.

A file is a run of records: the 4-byte network magic, the block's size (uint32 LE), the block.
Core pre-allocates files in 16 MiB steps, so a file usually ends in zero bytes: a record header
of four zero bytes where the magic should be ends the file. Since Bitcoin Core 28 the files are
obfuscated with the 8-byte key in ``blocks/xor.dat``: every byte is XORed with
``key[file_offset % 8]`` (an all-zero key, or no file, means plain files).

The file is memory-mapped; only one block at a time is copied out.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

from watchers.bitcoin.block import NETWORK_MAGIC

XOR_KEY_FILE = "xor.dat"
XOR_KEY_SIZE = 8
RECORD_HEADER_SIZE = 8


class BlkFileError(ValueError):
    """The file is not a block file of the expected network, or a record is cut short."""


def read_xor_key(blocks_dir: Path) -> bytes | None:
    """The obfuscation key of a Core ``blocks`` directory; None if it has none (before Core 28,
    or ``-blocksxor=0``, which writes an all-zero key)."""
    path = blocks_dir / XOR_KEY_FILE
    if not path.exists():
        return None
    key = path.read_bytes()
    if len(key) != XOR_KEY_SIZE:
        raise BlkFileError(f"{path}: an obfuscation key is {XOR_KEY_SIZE} bytes, got {len(key)}")
    return None if key == bytes(XOR_KEY_SIZE) else key


def iter_blk_file(path: Path, magic: bytes, *, xor_key: bytes | None = None) -> Iterator[bytes]:
    """Yield each raw block of the file, in file order (not chain order: Core writes blocks as
    they arrive). Stops at the zero-filled tail; raises BlkFileError on a record whose magic is
    not ``magic`` or that runs past the end of the file."""
    if len(magic) != 4:
        raise ValueError("a network magic is 4 bytes")
    if xor_key is not None and len(xor_key) != XOR_KEY_SIZE:
        raise ValueError(f"an obfuscation key is {XOR_KEY_SIZE} bytes")
    if xor_key == bytes(XOR_KEY_SIZE):
        xor_key = None
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset = 0
            while offset < size:
                header = data[offset : offset + RECORD_HEADER_SIZE]
                if xor_key is not None:
                    header = _xor(header, xor_key, offset)
                if not header[:4].strip(b"\0"):
                    return  # the pre-allocated tail
                if len(header) < RECORD_HEADER_SIZE:
                    raise BlkFileError(f"{path}: offset {offset}: record header cut short")
                if header[:4] != magic:
                    raise BlkFileError(f"{path}: offset {offset}: {_describe_magic(header[:4])}")
                length = int.from_bytes(header[4:], "little")
                start = offset + RECORD_HEADER_SIZE
                if start + length > size:
                    raise BlkFileError(
                        f"{path}: offset {offset}: record of {length} bytes runs past the end of"
                        f" the file ({size - start} bytes left): truncated"
                    )
                block = data[start : start + length]
                yield block if xor_key is None else _xor(block, xor_key, start)
                offset = start + length


def _xor(data: bytes, key: bytes, offset: int) -> bytes:
    """``data`` (found at ``offset`` in the file) XORed with the key stream of the file."""
    if not data:
        return data
    phase = offset % XOR_KEY_SIZE
    stream = (key[phase:] + key[:phase]) * (len(data) // XOR_KEY_SIZE + 1)
    mixed = int.from_bytes(data, "little") ^ int.from_bytes(stream[: len(data)], "little")
    return mixed.to_bytes(len(data), "little")


def _describe_magic(found: bytes) -> str:
    for network, magic in NETWORK_MAGIC.items():
        if found == magic:
            return f"magic {found.hex()} is {network}'s: a block file of another network"
    return f"magic {found.hex()} is no known network's: not a block file (or wrong xor key?)"
