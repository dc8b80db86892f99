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

import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from drainwatch.errors import UsageError
from drainwatch.events import TransferSeen
from drainwatch.model import BlockRef
from drainwatch.ports import AlertSink, DeliverySink, JsonRpc
from drainwatch.wiring import App, build_rpc
from watchers.bitcoin.blkfile import BlkFileError, iter_blk_file, read_xor_key
from watchers.bitcoin.block import NETWORK_MAGIC, BlockFormatError, parse_block, parse_header
from watchers.bitcoin.follower import coins_marker
from watchers.bitcoin.node import BitcoinNode, FetchedBitcoinBlock, verified_block
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
    sinks: Sequence[AlertSink | DeliverySink],
    err: TextIO | None,
) -> HistoryResult:
    err = err or sys.stderr
    settings = app.settings.chains[chain_name]
    rpc = build_rpc(chain_name, settings)
    rpc.verify_all()  # every endpoint on the configured network before anything is read
    confirmed = BitcoinNode(rpc).head() - max(app.chains[chain_name].confirmations - 1, 0)
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
    history = _History(app, chain_name, sinks, err)
    history.run(_over_rpc(app, chain_name, rpc, first, last, workers), last - first + 1)
    return history.result


def _over_rpc(
    app: App, chain_name: str, rpc: JsonRpc, first: int, last: int, workers: int
) -> Iterator[FetchedBitcoinBlock]:
    """Blocks ``first..last`` fetched by ``workers`` threads, in height order."""
    from drainwatch.backfill import _in_order, _PerThreadRpc

    settings = app.settings.chains[chain_name]
    per_thread = _PerThreadRpc(lambda: build_rpc(chain_name, settings), rpc)
    reader = BitcoinNode(per_thread)

    def fetch(height: int) -> FetchedBitcoinBlock:
        block = reader.block(height)
        if block is None:
            raise NodeInconsistent(f"{per_thread.endpoint}: has no block {height} (any more)")
        return block

    with closing(_in_order(fetch, range(first, last + 1), workers)) as blocks:
        yield from blocks


def import_blk(
    app: App,
    chain_name: str,
    files: Sequence[Path],
    sinks: Sequence[AlertSink | DeliverySink],
    err: TextIO | None,
) -> HistoryResult:
    """Blocks of Bitcoin Core's ``blk*.dat`` files, the best chain among them in height order.

    Everything is read and checked (framing, every block parsed and held against its header's
    merkle root and witness commitment, one chain from the genesis block without a gap, reaching
    the watcher's checkpoint if it has one) before anything is written: a bad file is refused
    whole."""
    err = err or sys.stderr
    magic = NETWORK_MAGIC[app.settings.chains[chain_name].network]
    chain = _best_chain(files, magic, err)
    checkpoint = app.store.get_checkpoint(chain_name)
    if checkpoint is not None:
        if len(chain) <= checkpoint.height:
            raise UsageError(
                f"the files end at block {len(chain) - 1}, below the watcher's checkpoint "
                f"{checkpoint.height} on {chain_name}: the coins they hold may have been spent "
                "in the blocks between, which the watcher read without knowing them. Add the "
                "later blk*.dat files, or use `drainwatch backfill` / ファイルがウォッチャーの"
                "チェックポイントまで届いていません"
            )
        if chain[checkpoint.height] != checkpoint.hash:
            raise UsageError(
                f"the files' block {checkpoint.height} is {chain[checkpoint.height]}, not the "
                f"watcher's checkpoint {checkpoint.hash}: another branch (are the files from a "
                "node of this network, synced?) / ファイルのチェーンが監視中のチェーンと異なります"
            )
        chain = chain[: checkpoint.height + 1]
    print(
        f"{chain_name}: {len(chain)} blocks of the best chain in {len(files)} file(s) / "
        f"{len(files)} ファイル中の最良チェーン {len(chain)} ブロック",
        file=err,
    )
    history = _History(app, chain_name, sinks, err)
    history.run(_in_chain_order(files, magic, chain), len(chain))
    return history.result


class _History:
    """Blocks applied in order to the store's coins (from the coins it holds), their events
    published and processed (``Replay``); on a chain the watcher has not started, the blocks
    are recorded and the last one becomes its checkpoint."""

    def __init__(
        self, app: App, chain_name: str, sinks: Sequence[AlertSink | DeliverySink], err: TextIO
    ) -> None:
        self._app = app
        self._chain = chain_name
        self._sinks = sinks
        self._err = err
        store = app.store
        self._had_checkpoint = store.get_checkpoint(chain_name) is not None
        settings = app.settings.chains[chain_name]
        self._scanner = UtxoScanner(
            chain_name, app.scripts[chain_name], settings.address_params(), store.utxos(chain_name)
        )
        self.result = HistoryResult(chain_name, -1, -1)
        self._last: BlockRef | None = None

    def run(self, blocks: Iterable[FetchedBitcoinBlock], total: int) -> None:
        from drainwatch.backfill import Replay

        store, chain_name, r = self._app.store, self._chain, self.result
        with Replay(self._app, chain_name, self._sinks, total, self._err) as replay:
            for block in blocks:
                if self._last is not None and block.parent_hash != self._last.hash:
                    raise NodeInconsistent(
                        f"{chain_name}: block {block.ref.height} does not build on the block "
                        "read before it (a reorg during the run?); run it again"
                    )
                if r.first < 0:
                    r.first = block.ref.height
                scan = self._scanner.scan_block(block.block, block.ref, block.time)
                with store.batch():
                    store.apply_utxo_block(chain_name, block.ref, scan.created, scan.spent)
                    if not self._had_checkpoint:
                        store.record_block(
                            chain_name,
                            block.ref,
                            block.parent_hash,
                            block.time,
                            confirmed=True,  # below the confirmed head, published confirmed
                        )
                r.coins += len(scan.created)
                r.spends += len(scan.spent)
                r.transfers += sum(isinstance(e, TransferSeen) for e in scan.events)
                replay.block(scan.events)
                self._last = block.ref
        r.blocks += replay.blocks
        r.alerts += replay.alerts
        r.seconds += replay.seconds
        if self._last is not None:
            r.last = self._last.height
            if not self._had_checkpoint and store.get_checkpoint(chain_name) is None:
                store.set_checkpoint(chain_name, self._last)
                r.checkpoint_set = True
        self._tell_watcher()

    def _tell_watcher(self) -> None:
        """A watcher running beside this run went on without the coins found here: the marker
        sends it back to this run's last block, to read the blocks after it again with them."""
        marker = BlockRef(self.result.last, secrets.token_hex(32))
        self._app.store.set_checkpoint(coins_marker(self._chain), marker)


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
        f"{r.chain}: a `drainwatch watch` running meanwhile takes the coins found here at its "
        "next round, and reads again with them the blocks it read without them / 稼働中の watch "
        "は次の周回でこのコインを取り込み、それまでに読んだブロックを読み直します",
        file=err,
    )


# --- block files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    prev: str
    work: int


def _headers(
    files: Sequence[Path], magic: bytes, err: TextIO | None
) -> Iterator[tuple[str, bytes]]:
    """Every raw block of the files, in file order; with ``err``, a line per file read."""
    for path in files:
        count = 0
        try:
            key = read_xor_key(path.parent)
            for raw in iter_blk_file(path, magic, xor_key=key):
                count += 1
                yield str(path), raw
        except BlkFileError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from None
        if err is not None:
            print(f"{path}: {count} blocks checked / {count} ブロック確認済み", file=err)


def _best_chain(files: Sequence[Path], magic: bytes, err: TextIO) -> list[str]:
    """The hashes of the chain with the most work among the files' blocks, from the genesis
    block on. Every block is parsed and checked against its header first (a damaged block is
    refused before anything is written); a block that does not descend from the genesis block
    through the files' blocks means a file is missing, and is refused too: a chain with a hole
    would be imported with coins missing, silently."""
    links: dict[str, _Link] = {}
    for path, raw in _headers(files, magic, err):
        try:
            header = verified_block(raw).header
        except BlockFormatError as exc:
            raise UsageError(f"{path}: {exc}") from None
        links[header.hash] = _Link(header.prev_hash, _work(header.bits))
    if not links:
        raise UsageError("the block files hold no block / ブロックファイルにブロックがありません")
    total: dict[str, int] = {}
    for start in links:
        walk: list[str] = []
        node = start
        while node in links and node not in total:
            walk.append(node)
            node = links[node].prev
        if node not in total and node != ZERO_HASH:
            raise UsageError(
                f"block {walk[-1]} builds on block {node}, which is in none of the files: a "
                "file is missing (give every blk*.dat from blk00000.dat on) / 途中のブロック"
                "ファイルが欠けています（blk00000.dat から順にすべて指定してください）"
            )
        base = total.get(node, 0)
        for h in reversed(walk):
            base += links[h].work
            total[h] = base
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
    """The chain's blocks in order, each with its height (the first is the genesis block);
    blocks that arrive early (Core writes them as they are downloaded, a little out of order)
    wait in memory until their turn."""
    wanted = {h: i for i, h in enumerate(chain)}
    early: dict[int, bytes] = {}
    position = 0
    for _path, raw in _headers(files, magic, None):
        i = wanted.get(parse_header(raw).hash)
        if i is None or i < position:
            continue  # a stale block, or one seen twice
        early[i] = raw
        while position in early:
            yield FetchedBitcoinBlock(parse_block(early.pop(position)), position)
            position += 1
        if len(early) > EARLY_LIMIT:
            raise UsageError(
                f"block {position} ({chain[position]}) was in the files when they were checked "
                "and is not now: did they change during the import? / 取り込み中にファイルが"
                "変更されました"
            )
    if position < len(chain):
        raise UsageError(
            f"block {position} ({chain[position]}) was in the files when they were checked and "
            "is not now: did they change during the import? / 取り込み中にファイルが変更されました"
        )


#: Blocks held back waiting for an earlier one: Core downloads up to 1,024 blocks ahead.
EARLY_LIMIT = 4096
