"""A Bitcoin chain's past: ``drainwatch backfill`` over RPC and ``drainwatch import --format
bitcoin-blk`` from Bitcoin Core's block files.

Unlike an account chain, a Bitcoin wallet's outflows can only be seen by one who knows its coins:
a spend names the outpoints it spends, not an address. So a Bitcoin stretch is always scanned in
height order with the watched coins as they were (``UtxoScanner``), each block's effect applied
to the store's UTXO set, and it must run on up to where the watcher stands: a coin found in the
stretch may have been spent in a later block that the watcher read before it knew the coin. On a
chain the watcher has not started yet, the run ends at the confirmed head (or the files' last
block) and sets the watcher's checkpoint there, so that ``watch`` goes on from it.

Blocks are fetched by worker threads and scanned strictly in order; events are published and,
on the in-process bus, processed as the EVM backfill does (``Replay``). Re-running adds nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from drainwatch.errors import UsageError
from drainwatch.model import BlockRef
from drainwatch.ports import AlertSink
from drainwatch.wiring import App, build_rpc
from watchers.bitcoin.blkfile import BlkFileError, iter_blk_file, read_xor_key
from watchers.bitcoin.block import NETWORK_MAGIC, BlockFormatError, parse_block, parse_header
from watchers.bitcoin.node import BitcoinNode, FetchedBitcoinBlock
from watchers.bitcoin.utxos import UtxoScanner
from watchers.follow import NodeInconsistent

ZERO_HASH = "0" * 64


@dataclass
class HistoryResult:
    chain: str
    first: int
    last: int
    blocks: int = 0
    transfers: int = 0
    spends: int = 0
    coins: int = 0
    alerts: int = 0
    seconds: float = 0.0
    checkpoint_set: bool = False


def bitcoin_chain(app: App, name: str | None) -> str:
    """The Bitcoin chain a command works on: ``name``, or the config's only Bitcoin chain."""
    bitcoin = [n for n in app.scripts]
    if name is None:
        if len(bitcoin) != 1:
            which = ", ".join(bitcoin) or "none"
            raise UsageError(f"name the Bitcoin chain with --chain (Bitcoin chains: {which})")
        return bitcoin[0]
    if name not in app.scripts:
        raise UsageError(
            f"--chain {name!r} is not a Bitcoin chain of the config "
            f"(Bitcoin chains: {', '.join(bitcoin) or 'none'})"
        )
    return name


def backfill_bitcoin(
    app: App,
    chain_name: str,
    first: int,
    last: int | None,
    workers: int,
    sinks: Sequence[AlertSink],
    err: TextIO | None,
) -> HistoryResult:
    from drainwatch.backfill import _in_order, _PerThreadRpc

    err = err or sys.stderr
    settings = app.settings.chains[chain_name]
    main_rpc = build_rpc(chain_name, settings)
    main_rpc.verify_all()  # every endpoint on the configured network before anything is read
    node = BitcoinNode(main_rpc)
    confirmed = node.head() - max(app.chains[chain_name].confirmations - 1, 0)
    checkpoint = app.store.get_checkpoint(chain_name)
    if checkpoint is not None:
        if last is not None and last != checkpoint.height:
            print(
                f"{chain_name}: a Bitcoin backfill runs on to the watcher's checkpoint "
                f"{checkpoint.height} (the coins it finds may be spent up to there), not to "
                f"{last} / ウォッチャーのチェックポイント {checkpoint.height} まで処理します",
                file=err,
            )
        last = checkpoint.height
    elif last is None:
        last = confirmed
    elif last > confirmed:
        raise UsageError(
            f"--to {last} is above {chain_name}'s confirmed head {confirmed} "
            f"({settings.confirmations} confirmations): leave those blocks to `drainwatch watch`"
        )
    if first > last:
        raise UsageError(
            f"--from {first} is above {last}, where {chain_name}'s stretch ends: nothing to do"
        )
    rpc = _PerThreadRpc(lambda: build_rpc(chain_name, settings), main_rpc)
    reader = BitcoinNode(rpc)

    def fetch(height: int) -> FetchedBitcoinBlock:
        block = reader.block(height)
        if block is None:
            raise NodeInconsistent(f"{rpc.endpoint}: has no block {height} (any more)")
        return block

    with closing(_in_order(fetch, range(first, last + 1), workers)) as blocks:
        return _apply(app, chain_name, blocks, last - first + 1, sinks, err, first)


def import_blk(
    app: App,
    chain_name: str,
    files: Sequence[Path],
    sinks: Sequence[AlertSink],
    err: TextIO | None,
) -> HistoryResult:
    """Blocks of Bitcoin Core's ``blk*.dat`` files, the best chain among them in height order."""
    err = err or sys.stderr
    network = app.settings.chains[chain_name].network
    magic = NETWORK_MAGIC[network]
    chain = _best_chain(files, magic)
    print(
        f"{chain_name}: {len(chain)} blocks of the best chain in {len(files)} file(s) / "
        f"{len(files)} ファイル中の最良チェーン {len(chain)} ブロック",
        file=err,
    )
    return _apply(app, chain_name, _in_chain_order(files, magic, chain), len(chain), sinks, err)


def _apply(
    app: App,
    chain_name: str,
    blocks: Iterable[FetchedBitcoinBlock],
    total: int,
    sinks: Sequence[AlertSink],
    err: TextIO,
    first: int | None = None,
) -> HistoryResult:
    from drainwatch.backfill import Replay

    settings = app.settings.chains[chain_name]
    store = app.store
    had_checkpoint = store.get_checkpoint(chain_name) is not None
    scanner = UtxoScanner(
        chain_name,
        app.scripts[chain_name],
        settings.address_params(),
        store.utxos(chain_name),
    )
    result = HistoryResult(chain_name, first if first is not None else -1, -1)
    parent: str | None = None
    last: BlockRef | None = None
    with Replay(app, chain_name, sinks, total, err) as replay:
        for block in blocks:
            if parent is not None and block.parent_hash != parent:
                raise NodeInconsistent(
                    f"{chain_name}: block {block.ref.height} does not build on the block read "
                    "before it (a reorg during the run?); run it again"
                )
            parent = block.ref.hash
            if result.first < 0:
                result.first = block.ref.height
            scan = scanner.scan_block(block.block, block.ref, block.time)
            with store.batch():
                store.apply_utxo_block(chain_name, block.ref, scan.created, scan.spent)
                if not had_checkpoint:
                    store.record_block(chain_name, block.ref, block.parent_hash, block.time)
            result.coins += len(scan.created)
            result.spends += len(scan.spent)
            result.transfers += sum(1 for e in scan.events if type(e).__name__ == "TransferSeen")
            replay.block(scan.events)
            last = block.ref
    result.blocks = replay.blocks
    result.alerts = replay.alerts
    result.seconds = replay.seconds
    if last is not None:
        result.last = last.height
        if not had_checkpoint and store.get_checkpoint(chain_name) is None:
            store.set_checkpoint(chain_name, last)
            result.checkpoint_set = True
    return result


def say_history(r: HistoryResult, err: TextIO) -> None:
    print(
        f"{r.chain} {r.first}..{r.last}: {r.blocks} blocks, {r.transfers} transfers, "
        f"{r.coins} watched coins received, {r.spends} spent, {r.alerts} alerts in "
        f"{r.seconds:.1f} s / {r.blocks} ブロック、送金 {r.transfers} 件、受領コイン "
        f"{r.coins} 件、使用 {r.spends} 件、アラート {r.alerts} 件、{r.seconds:.1f} 秒",
        file=err,
    )
    if r.checkpoint_set:
        print(
            f"{r.chain}: `drainwatch watch` goes on from block {r.last} / "
            f"watch はブロック {r.last} の次から監視を続けます",
            file=err,
        )
    print(
        f"{r.chain}: a `drainwatch watch` already running reads the coins found here within "
        "10 minutes (or at once when restarted) / 稼働中の watch は 10 分以内（再起動時は即時）に"
        "このコインを監視対象にします",
        file=err,
    )


# --- block files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    prev: str
    work: int


def _headers(files: Sequence[Path], magic: bytes) -> Iterator[tuple[str, bytes]]:
    for path in files:
        key = read_xor_key(path.parent)
        try:
            for raw in iter_blk_file(path, magic, xor_key=key):
                yield str(path), raw
        except BlkFileError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def _best_chain(files: Sequence[Path], magic: bytes) -> list[str]:
    """The hashes of the chain with the most work among the files' blocks, oldest first."""
    links: dict[str, _Link] = {}
    for path, raw in _headers(files, magic):
        try:
            header = parse_header(raw)
        except BlockFormatError as exc:
            raise UsageError(f"{path}: {exc}") from None
        links[header.hash] = _Link(header.prev_hash, _work(header.bits))
    total: dict[str, int] = {}
    for start in links:
        walk: list[str] = []
        node = start
        while node in links and node not in total:
            walk.append(node)
            node = links[node].prev
        base = total.get(node, 0)
        for h in reversed(walk):
            base += links[h].work
            total[h] = base
    if not total:
        raise UsageError("the block files hold no block / ブロックファイルにブロックがありません")
    tip = max(total, key=lambda h: total[h])
    chain: list[str] = []
    node = tip
    while node in links:
        chain.append(node)
        node = links[node].prev
    chain.reverse()
    return chain


def _work(bits: int) -> int:
    exponent, mantissa = bits >> 24, bits & 0x7FFFFF
    target = mantissa << (8 * (exponent - 3)) if exponent > 3 else mantissa >> (8 * (3 - exponent))
    return (1 << 256) // (target + 1) if target > 0 else 0


def _in_chain_order(
    files: Sequence[Path], magic: bytes, chain: list[str]
) -> Iterator[FetchedBitcoinBlock]:
    """The chain's blocks in order, each with its height; blocks that arrive early (Core writes
    them as they are downloaded, a little out of order) wait in memory until their turn."""
    wanted = {h: i for i, h in enumerate(chain)}
    early: dict[int, bytes] = {}
    position = 0
    base: int | None = None
    for path, raw in _headers(files, magic):
        i = wanted.get(parse_header(raw).hash)
        if i is None or i < position:
            continue  # a stale block, or one seen twice
        early[i] = raw
        while position in early:
            data = early.pop(position)
            try:
                block = parse_block(data)
            except BlockFormatError as exc:
                raise UsageError(f"{path}: block {chain[position]}: {exc}") from None
            if base is None:
                base = _first_height(block, chain[0])
            yield FetchedBitcoinBlock(block, base + position)
            position += 1


def _first_height(block: object, block_hash: str) -> int:
    from watchers.bitcoin.block import Block

    assert isinstance(block, Block)
    if block.header.prev_hash == ZERO_HASH:
        return 0
    height = _bip34_height(block)
    if height is None:
        raise UsageError(
            f"the files' first block {block_hash} is not the genesis block and carries no "
            "height (BIP34): import from the first block file (blk00000.dat) on / "
            "最初のブロックファイル（blk00000.dat）から取り込んでください"
        )
    return height


def _bip34_height(block: object) -> int | None:
    from watchers.bitcoin.block import Block

    assert isinstance(block, Block)
    if block.header.version < 2 or not block.txs:
        return None
    script = block.txs[0].inputs[0].script_sig
    if not script:
        return None
    size = script[0]
    if 0x51 <= size <= 0x60:  # OP_1 .. OP_16
        return size - 0x50
    if not 1 <= size <= 8 or len(script) < 1 + size:
        return None
    return int.from_bytes(script[1 : 1 + size], "little")
