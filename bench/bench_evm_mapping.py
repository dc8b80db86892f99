"""EVM block mapping throughput: drainwatch's strict parser against web3.py's own block result
formatter (the baseline: what a web3.py-based watcher runs on every block before it can look at
it), on recorded Ethereum mainnet blocks, both in this process, interleaved.

Run: .venv/bin/python bench/bench_evm_mapping.py [--rounds N]
Prints blocks/s for each and the ratio; the ratio is what bench/RESULTS.md records.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from web3._utils.method_formatters import block_result_formatter

from watchers.evm.mapping import parse_block, touching

DATA = Path(__file__).resolve().parents[2] / "shared/data/ethereum/rpc-recordings"
FILES = [
    "test_export_blocks_job/blocks_with_transactions/web3_response.eth_getBlockByNumber_0xb872_true.json",
    "test_export_blocks_job/blocks_with_transactions/web3_response.eth_getBlockByNumber_0xb873_true.json",
    "test_export_blocks_job/block_with_logs/web3_response.eth_getBlockByNumber_0x76250_true.json",
    "test_stream/blocks_1755634_1755635/web3_response.eth_getBlockByNumber_0x1ac9f3_true.json",
]
WATCHED = frozenset({"0x" + "11" * 20})


def _blocks() -> list[Any]:
    return [json.loads((DATA / f).read_text())["result"] for f in FILES]


def _drainwatch(blocks: list[Any]) -> None:
    for raw in blocks:
        touching(parse_block(raw), WATCHED)


def _web3(blocks: list[Any]) -> None:
    for raw in blocks:
        block_result_formatter(raw)


def _rate(fn: Callable[[list[Any]], None], blocks: list[Any], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn(blocks)
    return repeat * len(blocks) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    blocks = _blocks()
    txs = sum(len(b["transactions"]) for b in blocks)
    ours, base = [], []
    for _ in range(args.rounds):  # interleaved so that machine noise hits both alike
        ours.append(_rate(_drainwatch, blocks, args.repeat))
        base.append(_rate(_web3, blocks, args.repeat))
    o, b = statistics.median(ours), statistics.median(base)
    print(f"blocks: {len(blocks)} recorded mainnet blocks, {txs} transactions")
    print(f"drainwatch parse_block+touching: {o:,.0f} blocks/s (median of {args.rounds})")
    print(f"baseline web3.py block_result_formatter: {b:,.0f} blocks/s")
    print(f"ratio drainwatch / web3.py: {o / b:.2f}x")


if __name__ == "__main__":
    main()
