"""Bitcoin block parsing throughput: drainwatch's parser doing a watcher's whole per-block job
against python-bitcoinlib's ``CBlock.deserialize`` alone (the baseline), same bytes, same
process, interleaved.

The job: ``parse_block``, then for every transaction every input's outpoint looked up in
1,000,000 watched outpoints and every output's scriptPubKey in 100,000 watched scripts (random
p2wpkh / p2pkh scripts and outpoints plus a few real ones of the block, so some match); matched
outputs are collected with their txid, index and value. txids are computed on demand, so only
for the transactions that match; a second figure adds every txid of the block (what checking
the merkle root, or storing every transaction, costs on top). Also: blocks/s of reading a
blk*.dat file of 200 blocks (the nine real blocks repeated) with ``iter_blk_file`` and
parsing each, against ``CBlock.deserialize`` over the same blocks already in memory.

Run: .venv/bin/python -m bench.bench_btc_parse [--rounds N] [--repeat N]
Prints per-block times (best and median of the rounds) and ratios drainwatch / baseline (lower
is better; the goal is <= 0.25); the ratios are what bench/RESULTS.md records.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bitcoin.core import CBlock

from drainwatch.addresses import MAINNET
from drainwatch.model import BlockRef, Custody, CustodyKind, Wallet, WalletRole
from watchers.bitcoin.blkfile import iter_blk_file
from watchers.bitcoin.block import NETWORK_MAGIC, outpoint_key, parse_block
from watchers.bitcoin.derive import ScriptBook
from watchers.bitcoin.node import verified_block
from watchers.bitcoin.script import script_address
from watchers.bitcoin.utxos import UtxoScanner, WatchedCoin

DATA = Path(__file__).resolve().parents[2] / "shared/data/bitcoin/mainnet-blocks"
JOB_BLOCKS = ["block413567.raw", "block481815.raw"]
WATCHED_SCRIPTS = 100_000
WATCHED_OUTPOINTS = 1_000_000
REAL_SHARE = 50  # one real script / outpoint of the block in this many is watched too

Match = tuple[str, int, int]


def watchlists(
    raw: bytes, rng: random.Random, share: int = REAL_SHARE
) -> tuple[set[bytes], dict[bytes, int]]:
    """100k random p2wpkh/p2pkh scripts and 1M random outpoints, plus some of the block's."""
    scripts = {
        b"\x00\x14" + rng.randbytes(20)
        if i % 2
        else b"\x76\xa9\x14" + rng.randbytes(20) + b"\x88\xac"
        for i in range(WATCHED_SCRIPTS)
    }
    pool = rng.randbytes(36 * WATCHED_OUTPOINTS)
    outpoints = {pool[i : i + 36]: i for i in range(0, len(pool), 36)}
    block = CBlock.deserialize(raw)  # the real ones come from the baseline, not from us
    real_outs = [bytes(o.scriptPubKey) for tx in block.vtx for o in tx.vout]
    real_ins = [
        i.prevout.hash + i.prevout.n.to_bytes(4, "little") for tx in block.vtx for i in tx.vin
    ]
    scripts.update(real_outs[::share])
    outpoints.update((key, n) for n, key in enumerate(real_ins[1::share]))
    return scripts, outpoints


def job(
    raw: bytes, scripts: set[bytes], outpoints: dict[bytes, int], every_txid: bool = False
) -> tuple[list[Match], int]:
    """A watcher's per-block loop: (received by watched scripts, watched outpoints spent)."""
    received: list[Match] = []
    spent = 0
    for tx in parse_block(raw).txs:
        if every_txid:
            tx.txid_bytes  # noqa: B018 (computed and cached)
        for inp in tx.inputs:
            if inp.outpoint in outpoints:
                spent += 1
        for vout, out in enumerate(tx.outputs):
            if out.script in scripts:
                received.append((tx.txid, vout, out.value))
    return received, spent


def watcher(raw: bytes, scripts: set[bytes], outpoints: dict[bytes, int]) -> Callable[[], object]:
    """The product's own path, as a followed block goes: ``verified_block`` (parse, merkle root
    and witness commitment checked) then ``UtxoScanner.scan_block`` with a
    ``ScriptBook`` of the 100,000 scripts (as configured addresses) and the 1,000,000 outpoints
    as watched coins; it builds every event, coin and spend a followed block gives. The coins a
    call spends are put back after it (outside the timing) so that every call does the same."""
    addresses = [a for s in scripts if (a := script_address(s, MAINNET)) is not None]
    wallet = Wallet(
        "bench", "btc", WalletRole.HOT, Custody(CustodyKind.SINGLE_KEY), tuple(addresses)
    )
    scanner = UtxoScanner("btc", ScriptBook([wallet], MAINNET), MAINNET)
    coin = WatchedCoin("bench", addresses[0], 1)
    scanner.coins = dict.fromkeys(outpoints, coin)
    ref = BlockRef(0, "00" * 32)
    when = datetime(2017, 1, 1, tzinfo=UTC)

    def call() -> object:
        scan = scanner.scan_block(verified_block(raw), ref, when)
        for key in scan.spends:
            scanner.coins[key] = coin
        for created in scan.created:
            scanner.coins.pop(outpoint_key(created.txid, created.vout), None)
        return scan

    return call


def _per_call(fn: Callable[[], object], repeat: int) -> float:
    gc.collect()  # neither side pays for the other's garbage (the collector stays on)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def bench_job(name: str, rounds: int, repeat: int, share: int) -> None:
    raw = (DATA / name).read_bytes()
    scripts, outpoints = watchlists(raw, random.Random(name), share)
    received, spent = job(raw, scripts, outpoints)
    ref = CBlock.deserialize(raw)
    ins = sum(len(tx.vin) for tx in ref.vtx)
    outs = sum(len(tx.vout) for tx in ref.vtx)
    assert job(raw, scripts, outpoints, True) == (received, spent)
    scan = watcher(raw, scripts, outpoints)
    ours, every, real, base = [], [], [], []
    for _ in range(rounds):  # interleaved so that machine noise hits all alike
        ours.append(_per_call(lambda: job(raw, scripts, outpoints), repeat))
        every.append(_per_call(lambda: job(raw, scripts, outpoints, True), repeat))
        real.append(_per_call(scan, repeat))
        base.append(_per_call(lambda: CBlock.deserialize(raw), repeat))
    b_best, b_med = min(base), statistics.median(base)
    print(f"{name}: {len(raw):,} bytes, {len(ref.vtx)} txs, {ins} inputs, {outs} outputs;")
    print(f"  matched {len(received)} outputs, {spent} spent outpoints")
    print(f"  baseline CBlock.deserialize: best {b_best * 1e3:.2f} ms, median {b_med * 1e3:.2f} ms")
    jobs = (
        ("job", ours),
        ("job + every txid", every),
        ("verified_block + UtxoScanner.scan_block", real),
    )
    for label, times in jobs:
        o_best, o_med = min(times), statistics.median(times)
        print(
            f"  drainwatch {label}: best {o_best * 1e3:.2f} ms, median {o_med * 1e3:.2f} ms;",
            end="",
        )
        print(f" ratio to baseline: best {o_best / b_best:.3f}, median {o_med / b_med:.3f}")


def bench_blkfile(count: int, rounds: int) -> None:
    raws = [p.read_bytes() for p in sorted(DATA.glob("block*.raw"))]
    blocks = [raws[i % len(raws)] for i in range(count)]
    magic = NETWORK_MAGIC["mainnet"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blk00000.dat"
        records = b"".join(magic + len(b).to_bytes(4, "little") + b for b in blocks)
        path.write_bytes(records + bytes(1 << 20))  # Core's zero-filled tail

        expected_txs = sum(len(CBlock.deserialize(b).vtx) for b in blocks)

        def ours() -> None:
            txs = 0
            for raw in iter_blk_file(path, magic):
                txs += len(parse_block(raw).txs)
            assert txs == expected_txs

        def base() -> None:
            for raw in blocks:
                CBlock.deserialize(raw)

        o_rates, b_rates = [], []
        for _ in range(rounds):
            o_rates.append(count / _per_call(ours, 1))
            b_rates.append(count / _per_call(base, 1))
    o, b = statistics.median(o_rates), statistics.median(b_rates)
    size = len(records) / 2**20
    print(f"blk file: {count} blocks ({size:.0f} MiB, the 9 real blocks repeated)")
    print(f"  drainwatch iter_blk_file + parse_block: {o:,.0f} blocks/s (median of {rounds})")
    print(f"  baseline CBlock.deserialize (blocks in memory): {b:,.0f} blocks/s")
    print(f"  ratio drainwatch / baseline (throughput): {o / b:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--blk-blocks", type=int, default=200)
    parser.add_argument(
        "--real-share",
        type=int,
        default=REAL_SHARE,
        help="one real output script / input outpoint of the block in this many is watched",
    )
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; watched: {WATCHED_SCRIPTS:,} scripts, ", end="")
    print(f"{WATCHED_OUTPOINTS:,} outpoints; {args.rounds} rounds x {args.repeat} calls;", end="")
    print(f" 1 real script/outpoint in {args.real_share} watched")
    for name in JOB_BLOCKS:
        bench_job(name, args.rounds, args.repeat, args.real_share)
    bench_blkfile(args.blk_blocks, args.rounds)


if __name__ == "__main__":
    main()
