"""watchers.bitcoin.blkfile on block files written here from the nine real mainnet blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchers.bitcoin.blkfile import BlkFileError, iter_blk_file, read_xor_key
from watchers.bitcoin.block import NETWORK_MAGIC, parse_block

MAINNET = NETWORK_MAGIC["mainnet"]
KEY = bytes.fromhex("a1b2c3d4e5f60718")


@pytest.fixture(scope="module")
def blocks(shared_data: Path) -> list[bytes]:
    paths = sorted((shared_data / "bitcoin" / "mainnet-blocks").glob("block*.raw"))
    assert len(paths) == 9
    return [p.read_bytes() for p in paths]


def _records(blocks: list[bytes], magic: bytes = MAINNET) -> bytes:
    return b"".join(magic + len(b).to_bytes(4, "little") + b for b in blocks)


def _obfuscate(data: bytes, key: bytes) -> bytes:
    return bytes(byte ^ key[i % 8] for i, byte in enumerate(data))


def test_plain_file_with_zero_tail(tmp_path: Path, blocks: list[bytes]) -> None:
    path = tmp_path / "blk00000.dat"
    path.write_bytes(_records(blocks) + bytes(1 << 20))
    read = list(iter_blk_file(path, MAINNET))
    assert read == blocks
    assert [parse_block(b).header.hash for b in read] == [
        parse_block(b).header.hash for b in blocks
    ]


def test_without_tail_and_empty(tmp_path: Path, blocks: list[bytes]) -> None:
    path = tmp_path / "blk00001.dat"
    path.write_bytes(_records(blocks[:2]))
    assert list(iter_blk_file(path, MAINNET)) == blocks[:2]
    path.write_bytes(b"")
    assert list(iter_blk_file(path, MAINNET)) == []
    path.write_bytes(bytes(3))  # a tail shorter than a record header
    assert list(iter_blk_file(path, MAINNET)) == []


def test_obfuscated_file(tmp_path: Path, blocks: list[bytes]) -> None:
    blocks_dir = tmp_path / "blocks"
    blocks_dir.mkdir()
    (blocks_dir / "xor.dat").write_bytes(KEY)
    path = blocks_dir / "blk00000.dat"
    path.write_bytes(_obfuscate(_records(blocks) + bytes(4096), KEY))
    key = read_xor_key(blocks_dir)
    assert key == KEY
    assert list(iter_blk_file(path, MAINNET, xor_key=key)) == blocks
    with pytest.raises(BlkFileError, match="offset 0"):
        list(iter_blk_file(path, MAINNET))  # without the key it is noise


def test_xor_key_file(tmp_path: Path) -> None:
    assert read_xor_key(tmp_path) is None
    (tmp_path / "xor.dat").write_bytes(bytes(8))
    assert read_xor_key(tmp_path) is None  # -blocksxor=0 writes an all-zero key
    (tmp_path / "xor.dat").write_bytes(b"\1" * 7)
    with pytest.raises(BlkFileError, match="8 bytes"):
        read_xor_key(tmp_path)


@pytest.mark.parametrize("key", [None, KEY])
def test_truncated_last_record(tmp_path: Path, blocks: list[bytes], key: bytes | None) -> None:
    path = tmp_path / "blk00002.dat"
    data = _records(blocks[:3])
    cut = data[:-1000]
    path.write_bytes(cut if key is None else _obfuscate(cut, key))
    reader = iter_blk_file(path, MAINNET, xor_key=key)
    assert [next(reader), next(reader)] == blocks[:2]
    offset = 16 + len(blocks[0]) + len(blocks[1])
    with pytest.raises(BlkFileError, match=f"blk00002.dat: offset {offset}: .*truncated"):
        next(reader)
    path.write_bytes(data[: len(data) - len(blocks[2]) - 3])  # cut inside a record header
    with pytest.raises(BlkFileError, match="cut short"):
        list(iter_blk_file(path, MAINNET))


def test_wrong_magic(tmp_path: Path, blocks: list[bytes]) -> None:
    path = tmp_path / "blk00003.dat"
    path.write_bytes(_records(blocks[:2], NETWORK_MAGIC["testnet4"]))
    with pytest.raises(BlkFileError, match="offset 0: magic 1c163f28 is testnet4's"):
        list(iter_blk_file(path, MAINNET))
    path.write_bytes(_records(blocks[:1]) + b"GIF89a" + bytes(100))
    reader = iter_blk_file(path, MAINNET)
    assert next(reader) == blocks[0]
    with pytest.raises(BlkFileError, match=f"offset {8 + len(blocks[0])}: .*not a block file"):
        next(reader)


def test_a_record_whose_magic_only_starts_with_zero_is_not_the_tail(
    tmp_path: Path, blocks: list[bytes]
) -> None:
    """Only four zero bytes end a file; a magic of 00 11 22 33 is another file's, or damage."""
    path = tmp_path / "blk00000.dat"
    path.write_bytes(_records(blocks[:2]) + b"\x00\x11\x22\x33" + bytes(64))
    with pytest.raises(BlkFileError, match="offset"):
        list(iter_blk_file(path, MAINNET))
