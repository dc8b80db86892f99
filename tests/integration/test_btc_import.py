"""``drainwatch import --format bitcoin-blk``: Bitcoin Core block files of a real bcoin regtest
chain (written here as Core writes them: magic, size, block; slightly out of order, with a stale
block, obfuscated with an xor.dat key) fill the watched wallets' coins and transfers without RPC,
exactly as following the chain does; the watcher then goes on from the files' last block."""

from __future__ import annotations

import io
import os
import random
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from drainwatch.cli import main
from drainwatch.devnode_bitcoin import SINK_ADDRESS, BcoinNode
from drainwatch.ports import Store
from drainwatch.regtest_wallet import RegtestWallet
from drainwatch.store import open_store
from tests.integration.test_btc_watch import (
    ATTACKER,
    CHAIN,
    Watch,
    write_config,
)

MAGIC = bytes.fromhex("fabfb5da")


def _facts(store: Store) -> set[tuple[str, str, int, str]]:
    return {(t.tx_hash, t.index, t.amount, t.to_address) for t in store.transfers()}


def _xor(data: bytes, key: bytes, offset: int) -> bytes:
    return bytes(b ^ key[(offset + i) % 8] for i, b in enumerate(data))


def write_blk(path: Path, blocks: list[bytes], key: bytes | None = None) -> None:
    out = bytearray()
    for raw in blocks:
        out += MAGIC + len(raw).to_bytes(4, "little") + raw
    out += bytes(4096)  # Core pre-allocates: the file ends in zeros
    data = bytes(out) if key is None else _xor(bytes(out), key, 0)
    path.write_bytes(data)
    if key is not None:
        (path.parent / "xor.dat").write_bytes(key)


@pytest.fixture
def history(
    bcoin_node: BcoinNode, monkeypatch: pytest.MonkeyPatch
) -> tuple[RegtestWallet, RegtestWallet, list[bytes], list[str]]:
    """A chain where both wallets received and spent, the raw blocks of its best chain from
    genesis with a stale block among them, and the txids of the spends."""
    user, password = bcoin_node.auth
    monkeypatch.setenv("BCOIN_TEST_AUTH", f"{user}:{password}")
    hot, cold = RegtestWallet.single("hot"), RegtestWallet.multisig("cold")
    hot.fund(bcoin_node)
    cold.fund(bcoin_node, blocks=2)
    spends = []
    for i in range(3):
        spends.append(cold.send(bcoin_node, [(ATTACKER.address(index=i), 50_000_000)]).txid)
        spends.append(hot.send(bcoin_node, [(cold.address(0, 5 + i), 20_000_000)]).txid)
        bcoin_node.mine(1, SINK_ADDRESS)
    for s in spends[1::2]:  # the hot wallet's payments to the cold wallet arrived there
        cold.receive(bcoin_node.raw_transaction(s).hex())
    # A stale block: the head is replaced by a longer branch of empty blocks.
    stale_hash = bcoin_node.best_hash()
    stale = bcoin_node.raw_block(stale_hash)
    bcoin_node.invalidate(stale_hash)
    bcoin_node.mine_block([], SINK_ADDRESS)
    bcoin_node.mine_block([], SINK_ADDRESS)
    # The replaced block carried the last two spends: they are undone on the best chain.
    undone = spends[-2:]
    for wallet in (hot, cold):
        wallet.utxos = []
    best = [bcoin_node.raw_block(bcoin_node.block_hash(h)) for h in range(bcoin_node.height() + 1)]
    blocks = [*best[:-2], stale, *best[-2:]]
    return hot, cold, blocks, [s for s in spends if s not in undone]


def test_import_fills_the_history_the_watcher_would_have_seen(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    history: tuple[RegtestWallet, RegtestWallet, list[bytes], list[str]],
) -> None:
    hot, cold, blocks, spends = history
    # Reference: the watcher following the same chain from genesis.
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    reference = Watch(write_config(ref_dir, bcoin_node, hot, cold, confirmations=1), start=0)
    try:
        reference.step()
        want_balances = reference.balances()
        want = {
            (t.tx_hash, t.index, t.amount, t.to_address) for t in reference.app.store.transfers()
        }
        want_coins = {(u.txid, u.vout, u.spent_by) for u in reference.app.store.utxos(CHAIN)}
    finally:
        reference.close()
    assert want_balances and all(s in {t[0] for t in want} for s in spends)

    # Core's files: blocks a little out of order (as downloaded), split in two files, the
    # second one obfuscated (Core 28+) in a directory of its own.
    order = list(blocks)
    rng = random.Random(4)
    for _ in range(30):
        i = rng.randrange(len(order) - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
    (tmp_path / "plain").mkdir()
    (tmp_path / "xored").mkdir()
    first, second = tmp_path / "plain" / "blk00000.dat", tmp_path / "xored" / "blk00001.dat"
    write_blk(first, order[: len(order) // 2])
    write_blk(second, order[len(order) // 2 :], key=os.urandom(8))
    config = write_config(tmp_path, bcoin_node, hot, cold, confirmations=1)

    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["import", str(config), "--format", "bitcoin-blk", str(first), str(second)])
    assert code == 0, err.getvalue()
    assert f"{len(blocks) - 1} blocks of the best chain" in err.getvalue()
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}", create=False)
    try:
        assert store.utxo_balances(CHAIN) == want_balances
        got = _facts(store)
        assert got == want
        assert {(u.txid, u.vout, u.spent_by) for u in store.utxos(CHAIN)} == want_coins
        checkpoint = store.get_checkpoint(CHAIN)
        assert checkpoint is not None and checkpoint.hash == bcoin_node.best_hash()
    finally:
        store.close()

    # Run again: nothing added. Then the watcher goes on from the files' last block.
    with redirect_stderr(io.StringIO()):
        assert (
            main(["import", str(config), "--format", "bitcoin-blk", str(first), str(second)]) == 0
        )
    watch = Watch(config, start=None)
    try:
        assert {
            (t.tx_hash, t.index, t.amount, t.to_address) for t in watch.app.store.transfers()
        } == want
        bcoin_node.mine(1, SINK_ADDRESS)
        watch.step()
        assert watch.app.store.get_checkpoint(CHAIN).height == bcoin_node.height()  # type: ignore[union-attr]
        assert watch.balances() == want_balances
    finally:
        watch.close()


def test_a_damaged_file_is_refused_before_anything_is_written(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    history: tuple[RegtestWallet, RegtestWallet, list[bytes], list[str]],
) -> None:
    hot, cold, blocks, _ = history
    good, cut = tmp_path / "blk00000.dat", tmp_path / "blk00001.dat"
    write_blk(good, blocks[:300])
    write_blk(cut, blocks[300:])
    data = cut.read_bytes().rstrip(b"\0")
    cut.write_bytes(data[:-100])  # the last record is cut short
    config = write_config(tmp_path, bcoin_node, hot, cold)
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["import", str(config), "--format", "bitcoin-blk", str(good), str(cut)])
    assert code == 2
    assert "blk00001.dat" in err.getvalue() and "truncated" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    try:
        assert store.utxos(CHAIN) == [] and store.transfers() == []
        assert store.get_checkpoint(CHAIN) is None
    finally:
        store.close()
    # Another network's file (mainnet magic) is named as such.
    mainnet = tmp_path / "blk00002.dat"
    mainnet.write_bytes(bytes.fromhex("f9beb4d9") + (100).to_bytes(4, "little") + bytes(100))
    with redirect_stderr(err):
        assert main(["import", str(config), "--format", "bitcoin-blk", str(mainnet)]) == 2
    with redirect_stderr(err):
        assert main(["import", str(config), "--format", "bitcoin-blk", "nope.dat"]) == 2


def test_a_missing_file_or_a_tampered_block_is_refused_whole(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    history: tuple[RegtestWallet, RegtestWallet, list[bytes], list[str]],
) -> None:
    from watchers.bitcoin.block import parse_block

    hot, cold, blocks, _ = history
    config = write_config(tmp_path, bcoin_node, hot, cold)
    # A file missing in the middle: blocks 200.. build on a block in no file.
    first, third = tmp_path / "blk00000.dat", tmp_path / "blk00002.dat"
    write_blk(first, blocks[:200])
    write_blk(third, blocks[300:])
    # Blocks altered under an intact header: a transaction's output value (its txid changes:
    # the merkle root), a witness (only its wtxid changes: the witness commitment).
    spend = next(i for i, b in enumerate(blocks) if len(parse_block(b).txs) > 1)
    altered = {}
    for name in ("value", "witness"):
        block = parse_block(blocks[spend])
        tx = block.txs[-1]
        if name == "value":
            tx.outputs[0].value += 1
        else:
            items = list(tx.inputs[0].witness)
            k = next(i for i, item in enumerate(items) if item)  # a signature
            items[k] = bytes([items[k][0] ^ 1]) + items[k][1:]
            tx.inputs[0].witness = tuple(items)
        path = tmp_path / name / "blk00000.dat"
        path.parent.mkdir()
        write_blk(path, [*blocks[:spend], block.serialize(), *blocks[spend + 1 :]])
        altered[name] = path
    for files, said in (
        ([first, third], "a file is missing"),
        ([altered["value"]], "merkle root"),
        ([altered["witness"]], "witness commitment"),
    ):
        err = io.StringIO()
        with redirect_stderr(err):
            code = main(["import", str(config), "--format", "bitcoin-blk", *map(str, files)])
        assert code == 2 and said in err.getvalue(), err.getvalue()
        assert "Traceback" not in err.getvalue()
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    try:
        assert store.utxos(CHAIN) == [] and store.transfers() == []
        assert store.get_checkpoint(CHAIN) is None
    finally:
        store.close()


def test_files_that_end_below_the_watchers_checkpoint_are_refused(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    history: tuple[RegtestWallet, RegtestWallet, list[bytes], list[str]],
) -> None:
    hot, cold, blocks, _ = history
    config = write_config(tmp_path, bcoin_node, hot, cold)
    watch = Watch(config, start=None)  # a watcher already at the head
    try:
        watch.step()
    finally:
        watch.close()
    early = tmp_path / "blk00000.dat"
    write_blk(early, blocks[:300])
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["import", str(config), "--format", "bitcoin-blk", str(early)]) == 2
    assert "below the watcher's checkpoint" in err.getvalue()
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    try:
        assert store.utxos(CHAIN) == []
    finally:
        store.close()
