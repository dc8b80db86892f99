"""EVM backfill throughput: `drainwatch backfill` against blockchain-etl's `ethereumetl` 2.4.2
(the baseline: exporting blocks, transactions and token transfers), both as subprocesses reading
the same anvil chain over the same block range, interleaved round by round; then the per-block
processing time at the head (a `drainwatch watch` follower stepping one new block at a time).

What each side extracts differs, and drainwatch does MORE per block: on anvil (which offers
`trace_block`) it reads every block's header with its transaction hashes, the block's traces
(every transaction's value, whether it failed, and the internal transfers moved by contracts,
which ethereumetl's exports do not have) and every Transfer / control log of the block, and
finds control changes (approvals, Safe owner changes, upgrades); it keeps only what touches a
watched wallet, stores it in SQLite and runs the alert rules on it. ethereumetl writes every
block, transaction and token transfer to CSV files and needs no traces and no receipts.

The chain: anvil (loopback, free port, automine off) with N blocks of about M transactions each,
a mix of native transfers, token transfers (the hand-assembled emitter token) and calls of the
forwarder contract (an internal ETH transfer), among dev accounts of which a few are the watched
exchange wallets; a set share of the transactions touch one of them. Transactions are sent with
`eth_sendTransaction` in one JSON-RPC batch per block, then `evm_mine`.

Run:  .venv/bin/python bench/bench_evm_backfill.py [--blocks N] [--txs M] [--rounds R]
      [--head-blocks K] [--profile] [--record]
The first run creates bench/.cache/etl-venv (ethereumetl) and, with --profile,
bench/.cache/prof-venv (py-spy). --record appends the summary to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench/.cache"
ETL_VENV = CACHE / "etl-venv"
PROF_VENV = CACHE / "prof-venv"
ANVIL = ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
DRAINWATCH = ROOT / ".venv/bin/drainwatch"
RESULTS = ROOT / "bench/RESULTS.md"
CHAIN = "dev"

GAS = {"native": 21_000, "token": 60_000, "forward": 100_000}
MIX = (("native", 0.5), ("token", 0.3), ("forward", 0.2))

CONFIG = """\
exchange: {{name: Bench Exchange}}
store: {{url: "sqlite:///{store}"}}
chains:
  {chain}:
    kind: evm
    network: devnet
    chain_id: 31337
    rpc: [{{url: "{rpc}"}}]
    confirmations: 1
wallets:
{wallets}
alerts: {{channels: [{{kind: console}}]}}
"""


# ---------------------------------------------------------------------------------------- node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rpc:
    """Plain JSON-RPC over one HTTP session, with batches (a list payload)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self._id = 0

    def call(self, method: str, params: list[Any]) -> Any:
        self._id += 1
        r = self.session.post(
            self.url, json={"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
        )
        body = r.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        payload = []
        for method, params in calls:
            self._id += 1
            payload.append({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        answers = {a["id"]: a for a in self.session.post(self.url, json=payload).json()}
        out = []
        for request in payload:
            a = answers[request["id"]]
            if "error" in a:
                raise RuntimeError(f"{request['method']}: {a['error']}")
            out.append(a["result"])
        return out


def start_anvil(accounts: int) -> tuple[subprocess.Popen[bytes], str]:
    if not ANVIL.exists():
        sys.exit(f"anvil is missing at {ANVIL}: run `make setup` (npm install)")
    port = free_port()
    cmd = [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent", "--no-mining"]
    cmd += ["--accounts", str(accounts), "--balance", "1000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            Rpc(url).call("eth_chainId", [])
            return proc, url
        except requests.ConnectionError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"anvil did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (anvil) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------- the chain


@dataclass
class Chain:
    url: str
    accounts: list[str]
    watched: list[str]
    others: list[str]
    token: str = ""
    forwarder: str = ""
    first: int = 0
    last: int = 0
    txs: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    expected_dw: int = 0  # transfers touching a watched wallet: what drainwatch must find
    nonces: dict[str, int] = field(default_factory=dict)  # anvil runs a batch concurrently


def deploy(rpc: Rpc, sender: str, initcode: str) -> str:
    tx = rpc.call("eth_sendTransaction", [{"from": sender, "data": initcode, "gas": hex(200_000)}])
    rpc.call("evm_mine", [])
    return str(rpc.call("eth_getTransactionReceipt", [tx])["contractAddress"])


def make_tx(chain: Chain, rng: random.Random, share: float) -> tuple[dict[str, Any], bool, str]:
    kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
    touches = rng.random() < share
    if touches:
        a, b = rng.choice(chain.watched), rng.choice(chain.others)
        sender, to = (a, b) if rng.random() < 0.5 else (b, a)
    else:
        sender, to = rng.sample(chain.others, 2)
    value = rng.randrange(10**12, 10**16)
    tx: dict[str, Any] = {"from": sender, "gas": hex(GAS[kind]), "nonce": hex(chain.nonces[sender])}
    chain.nonces[sender] += 1
    if kind == "native":
        tx |= {"to": to, "value": hex(value)}
    elif kind == "token":
        data = to.lower()[2:].rjust(64, "0") + f"{value:064x}"
        tx |= {"to": chain.token, "value": "0x0", "data": "0x" + data}
    else:
        tx |= {
            "to": chain.forwarder,
            "value": hex(value),
            "data": "0x" + to.lower()[2:].rjust(64, "0"),
        }
    return tx, touches, kind


def mine_block(chain: Chain, rpc: Rpc, rng: random.Random, txs: int, share: float) -> int:
    """One block of ``txs`` transactions (one batch of eth_sendTransaction, then evm_mine);
    returns how many of them touch a watched wallet."""
    calls, touching = [], 0
    for _ in range(txs):
        tx, touches, kind = make_tx(chain, rng, share)
        calls.append(("eth_sendTransaction", [tx]))
        touching += touches
        chain.kinds[kind] += 1
    rpc.batch(calls)
    rpc.call("evm_mine", [])
    chain.txs += txs
    return touching


def generate(url: str, blocks: int, txs: int, share: float, seed: int) -> Chain:
    from drainwatch.drill_contracts import EMITTER_INITCODE, FORWARDER_INITCODE

    rpc = Rpc(url)
    accounts = [str(a) for a in rpc.call("eth_accounts", [])]
    n_watched = max(1, len(accounts) // 10)
    chain = Chain(url, accounts, accounts[:n_watched], accounts[n_watched:])
    chain.token = deploy(rpc, accounts[-1], EMITTER_INITCODE)
    chain.forwarder = deploy(rpc, accounts[-1], FORWARDER_INITCODE)
    chain.first = int(rpc.call("eth_blockNumber", []), 16) + 1
    counts = rpc.batch([("eth_getTransactionCount", [a, "latest"]) for a in accounts])
    chain.nonces = {a: int(c, 16) for a, c in zip(accounts, counts, strict=True)}
    rng = random.Random(seed)
    for _ in range(blocks):
        chain.expected_dw += mine_block(chain, rpc, rng, txs, share)
    chain.last = int(rpc.call("eth_blockNumber", []), 16)
    # Every transaction in its block (a full block would push some into the next one).
    pending = rpc.call("eth_getBlockTransactionCountByNumber", ["pending"])
    assert chain.last - chain.first + 1 == blocks, "evm_mine made more or fewer blocks"
    if pending not in (None, "0x0"):
        print(f"WARNING: {int(pending, 16)} transactions left pending", file=sys.stderr)
    return chain


# --------------------------------------------------------------------------------- ethereumetl


def ensure_etl() -> Path:
    exe = ETL_VENV / "bin/ethereumetl"
    if exe.exists():
        return exe
    print(f"creating {ETL_VENV} (ethereum-etl 2.4.2, once)...", file=sys.stderr)
    subprocess.run(["python3.11", "-m", "venv", str(ETL_VENV)], check=True)
    pip = [str(ETL_VENV / "bin/pip"), "install", "-q"]
    # Two steps: its eth-abi pins parsimonious<0.9, which breaks on Python 3.11, and one
    # `pip install ethereum-etl 'parsimonious>=0.9'` is refused by the resolver as a conflict.
    subprocess.run([*pip, "ethereum-etl==2.4.2"], check=True)
    subprocess.run([*pip, "parsimonious>=0.9"], check=True)
    return exe


@dataclass
class Run:
    seconds: float
    blocks: int
    events: int
    detail: str
    client_cpu: float
    node_cpu: float


def run_timed(cmd: list[str], anvil_pid: int, **kw: Any) -> tuple[float, float, float, str]:
    c0, n0 = children_cpu(), cpu_seconds(anvil_pid)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])}... failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return seconds, children_cpu() - c0, cpu_seconds(anvil_pid) - n0, p.stderr


def csv_rows(path: Path) -> int:
    with path.open(newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def run_etl(etl: Path, chain: Chain, anvil_pid: int, workers: int, batch: int) -> Run:
    out = Path(tempfile.mkdtemp(prefix="etl-", dir=CACHE))
    try:
        common = ["--start-block", str(chain.first), "--end-block", str(chain.last)]
        common += ["--provider-uri", chain.url, "--batch-size", str(batch)]
        common += ["--max-workers", str(workers)]
        s1, c1, n1, _ = run_timed(
            [
                str(etl),
                "export_blocks_and_transactions",
                *common,
                "--blocks-output",
                str(out / "blocks.csv"),
                "--transactions-output",
                str(out / "transactions.csv"),
            ],
            anvil_pid,
        )
        s2, c2, n2, _ = run_timed(
            [str(etl), "export_token_transfers", *common, "--output", str(out / "tt.csv")],
            anvil_pid,
        )
        blocks, txs, tts = (csv_rows(out / f) for f in ("blocks.csv", "transactions.csv", "tt.csv"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    want = (chain.last - chain.first + 1, chain.txs, chain.kinds["token"])
    if (blocks, txs, tts) != want:
        sys.exit(
            f"ethereumetl sanity check failed: blocks/txs/token transfers {blocks, txs, tts}, "
            f"expected {want}"
        )
    detail = f"{blocks} blocks, {txs} transactions, {tts} token transfers"
    return Run(s1 + s2, blocks, txs + tts, detail, c1 + c2, n1 + n2)


# ---------------------------------------------------------------------------------- drainwatch


def write_config(directory: Path, chain: Chain) -> Path:
    wallets = "\n".join(
        f"  ex-hot-{i}: {{chain: {CHAIN}, role: hot, custody: {{kind: single_key}}, "
        f'addresses: ["{a}"]}}'
        for i, a in enumerate(chain.watched)
    )
    path = directory / "drainwatch.yaml"
    path.write_text(
        CONFIG.format(store=directory / "dw.db", chain=CHAIN, rpc=chain.url, wallets=wallets)
    )
    return path


SUMMARY = re.compile(r"(\d+) blocks, (\d+) transfers, (\d+) control changes, (\d+) alerts")


def backfill_cmd(config: Path, chain: Chain, workers: int) -> list[str]:
    return [
        str(DRAINWATCH),
        "backfill",
        str(config),
        "--chain",
        CHAIN,
        "--from",
        str(chain.first),
        "--to",
        str(chain.last),
        "--workers",
        str(workers),
    ]


def run_drainwatch(chain: Chain, anvil_pid: int, workers: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="dw-", dir=CACHE) as d:
        config = write_config(Path(d), chain)
        seconds, client, node, err = run_timed(backfill_cmd(config, chain, workers), anvil_pid)
    m = SUMMARY.search(err)
    if m is None:
        sys.exit(f"drainwatch backfill printed no summary:\n{err[-3000:]}")
    blocks, transfers, changes, alerts = map(int, m.groups())
    want = chain.last - chain.first + 1
    if (blocks, transfers) != (want, chain.expected_dw):
        sys.exit(
            f"drainwatch sanity check failed: {blocks} blocks, {transfers} transfers; "
            f"expected {want} blocks, {chain.expected_dw} transfers"
        )
    detail = f"{blocks} blocks, {transfers} transfers, {changes} control changes, {alerts} alerts"
    return Run(seconds, blocks, transfers + changes, detail, client, node)


# ------------------------------------------------------------------------------ head latency


def head_latency(chain: Chain, k: int, txs: int, share: float, seed: int) -> list[float]:
    """A `drainwatch watch` follower (SQLite store, in-process bus and processor) steps each of
    ``k`` new blocks as it is mined: milliseconds per block, the node's mining not included."""
    from drainwatch.wiring import build_pipeline, build_sinks, open_app

    rpc, rng = Rpc(chain.url), random.Random(seed + 1)
    times = []
    with tempfile.TemporaryDirectory(prefix="dw-head-", dir=CACHE) as d:
        config = write_config(Path(d), chain)
        with open_app(config) as app:
            head = int(rpc.call("eth_blockNumber", []), 16)
            pipeline = build_pipeline(
                app, build_sinks(app.settings, io.StringIO()), start_heights={CHAIN: head + 1}
            )
            follower = pipeline.followers[0]
            try:
                follower.step()  # start-up checks (chain id), nothing to process yet
                for _ in range(k):
                    mine_block(chain, rpc, rng, txs, share)
                    t0 = time.perf_counter()
                    done = follower.step()
                    times.append((time.perf_counter() - t0) * 1000)
                    assert done == 1, f"the follower processed {done} blocks, not 1"
            finally:
                pipeline.close()
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------------- profile


def ensure_pyspy() -> Path | None:
    exe = PROF_VENV / "bin/py-spy"
    if exe.exists():
        return exe
    try:
        subprocess.run(["python3.11", "-m", "venv", str(PROF_VENV)], check=True)
        subprocess.run([str(PROF_VENV / "bin/pip"), "install", "-q", "py-spy"], check=True)
    except subprocess.CalledProcessError:
        return None
    return exe if exe.exists() else None


def profile(chain: Chain, workers: int, top: int = 12) -> list[str]:
    """py-spy (every thread, idle time excluded) on one `drainwatch backfill` run: the functions
    where drainwatch's own CPU goes, as a share of its samples, self and inclusive."""
    spy = ensure_pyspy()
    if spy is None:
        return ["py-spy unavailable: no profile"]
    with tempfile.TemporaryDirectory(prefix="dw-prof-", dir=CACHE) as d:
        config = write_config(Path(d), chain)
        out = Path(d) / "stacks.txt"
        cmd = [
            str(spy),
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "-o",
            str(out),
            "--",
            *backfill_cmd(config, chain, workers),
        ]
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0 or not out.exists():
            return [f"py-spy failed: {p.stderr[-500:]}"]
        self_s: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        total = 0
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            count = int(n)
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            self_s[_frame(frames[-1])] += count
            for name in {_frame(f) for f in frames}:
                incl[name] += count
    lines = [
        f"py-spy, --workers {workers}, {total} samples at 200/s "
        "(all threads; waits on the node show as socket reads):",
        "  self:",
    ]
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in self_s.most_common(top)]
    lines.append("  inclusive (drainwatch / watchers code and the libraries it calls):")
    keep = [
        (n, c)
        for n, c in incl.most_common()
        if not n.startswith(
            ("<module>", "run ", "_bootstrap", "_worker", "main ", "__call__ (concurrent")
        )
    ]
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in keep[:top]]
    return lines


def node_costs(chain: Chain, samples: int = 5) -> list[str]:
    """What each of the extractor's requests costs at the node, one at a time, on a few blocks:
    the client profile only shows a thread waiting on its socket."""
    rpc = Rpc(chain.url)
    watched = {a.lower() for a in chain.watched}
    step = max(1, (chain.last - chain.first) // samples)
    cost: dict[str, list[float]] = {}

    def timed(name: str, method: str, params: list[Any]) -> Any:
        t0 = time.perf_counter()
        result = rpc.call(method, params)
        cost.setdefault(name, []).append(time.perf_counter() - t0)
        return result

    for h in range(chain.first, chain.last + 1, step)[:samples]:
        block = timed("eth_getBlockByNumber(full)", "eth_getBlockByNumber", [hex(h), True])
        timed(
            "debug_traceBlockByNumber(callTracer)",
            "debug_traceBlockByNumber",
            [hex(h), {"tracer": "callTracer"}],
        )
        timed("trace_block", "trace_block", [hex(h)])
        timed("eth_getLogs(blockHash)", "eth_getLogs", [{"blockHash": block["hash"]}])
        mine = [
            t["hash"]
            for t in block["transactions"]
            if t["from"].lower() in watched or (t.get("to") or "").lower() in watched
        ]
        t0 = time.perf_counter()
        for tx in mine:
            rpc.call("eth_getTransactionReceipt", [tx])
        name = "eth_getTransactionReceipt, one per watched tx (~share x txs), summed"
        cost.setdefault(name, []).append(time.perf_counter() - t0)
    lines = [f"node cost per block, sequential, median of {samples} blocks:"]
    lines += [f"  {1000 * statistics.median(v):8.1f} ms  {k}" for k, v in cost.items()]
    return lines


def _frame(frame: str) -> str:
    """'function (path/to/file.py:123)' -> 'function (file.py)'."""
    m = re.match(r"(.*?) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    path = m.group(2)
    short = (
        "/".join(Path(path).parts[-2:])
        if "site-packages" not in path
        else (path.split("site-packages/", 1)[1])
    )
    return f"{m.group(1)} ({short})"


# ------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--txs", type=int, default=100, help="transactions per block")
    ap.add_argument(
        "--watched-share",
        type=float,
        default=0.2,
        help="share of the transactions that touch a watched wallet",
    )
    ap.add_argument("--accounts", type=int, default=40, help="dev accounts; a tenth are watched")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="1,8", help="drainwatch --workers values")
    ap.add_argument("--etl-workers", type=int, default=8, help="ethereumetl --max-workers")
    ap.add_argument("--etl-batch", type=int, default=100, help="ethereumetl --batch-size")
    ap.add_argument("--head-blocks", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="py-spy one drainwatch run")
    ap.add_argument("--record", action="store_true", help="append the summary to RESULTS.md")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    CACHE.mkdir(parents=True, exist_ok=True)
    etl = ensure_etl()

    anvil, url = start_anvil(args.accounts)
    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    try:
        t0 = time.perf_counter()
        chain = generate(url, args.blocks, args.txs, args.watched_share, args.seed)
        gen = time.perf_counter() - t0
        n = chain.last - chain.first + 1
        kinds = ", ".join(f"{chain.kinds[k]} {k}" for k, _ in MIX)
        say(
            f"chain: blocks {chain.first}..{chain.last} ({n} blocks), {chain.txs} transactions "
            f"({kinds}), {len(chain.watched)} of {len(chain.accounts)} accounts watched, "
            f"{chain.expected_dw} transactions touch them"
        )
        say(
            f"generated in {gen:.1f} s ({chain.txs / gen:,.0f} tx/s, batched eth_sendTransaction "
            "+ evm_mine)"
        )

        runs: dict[str, list[Run]] = {"etl": [], **{f"dw{w}": [] for w in workers}}
        for r in range(args.rounds):
            order = list(runs)
            if r % 2:
                order.reverse()  # interleaved, and the order alternates between rounds
            for name in order:
                if name == "etl":
                    run = run_etl(etl, chain, anvil.pid, args.etl_workers, args.etl_batch)
                else:
                    run = run_drainwatch(chain, anvil.pid, int(name[2:]))
                runs[name].append(run)
                print(
                    f"  round {r + 1} {name}: {run.seconds:.1f} s, {run.blocks / run.seconds:.1f}"
                    f" blocks/s ({run.detail}); CPU s: client {run.client_cpu:.1f}, anvil "
                    f"{run.node_cpu:.1f}",
                    file=sys.stderr,
                    flush=True,
                )

        def med(name: str, f: Callable[[Run], float]) -> float:
            return statistics.median(f(run) for run in runs[name])

        base_bps = med("etl", lambda x: x.blocks / x.seconds)
        base_eps = med("etl", lambda x: x.events / x.seconds)
        say()
        say(f"medians of {args.rounds} interleaved rounds, wall time of the whole subprocess:")
        say(
            f"  ethereumetl 2.4.2 (export_blocks_and_transactions + export_token_transfers, "
            f"--max-workers {args.etl_workers} --batch-size {args.etl_batch}): "
            f"{base_bps:.1f} blocks/s, {base_eps:,.0f} rows/s ({runs['etl'][0].detail}); "
            f"CPU s client {med('etl', lambda x: x.client_cpu):.1f}, "
            f"anvil {med('etl', lambda x: x.node_cpu):.1f}"
        )
        ratios = {}
        for w in workers:
            name = f"dw{w}"
            # ratio of each round's pair, then the median: each pair ran side by side
            ratio = statistics.median(
                (d.blocks / d.seconds) / (e.blocks / e.seconds)
                for d, e in zip(runs[name], runs["etl"], strict=True)
            )
            ratios[w] = ratio
            say(
                f"  drainwatch backfill --workers {w}: "
                f"{med(name, lambda x: x.blocks / x.seconds):.1f} blocks/s, "
                f"{med(name, lambda x: x.events / x.seconds):,.0f} events/s "
                f"({runs[name][0].detail}); CPU s client "
                f"{med(name, lambda x: x.client_cpu):.1f}, anvil "
                f"{med(name, lambda x: x.node_cpu):.1f}; ratio to ethereumetl (blocks/s): "
                f"{ratio:.2f}x"
            )
        say(
            "  drainwatch extracts more per block than the baseline: every block's header and "
            "traces (each transaction's value and outcome, internal transfers), every "
            "Transfer/control log, control changes; "
            "it keeps only watched wallets' events (its events/s counts those, ethereumetl's "
            "rows/s counts every transaction and token transfer), stores them and runs the "
            "alert rules."
        )

        head: list[float] = []
        if args.head_blocks:
            head = head_latency(chain, args.head_blocks, args.txs, args.watched_share, args.seed)
            say(
                f"head: follower.step() per new block of {args.txs} txs, {len(head)} blocks: "
                f"p50 {percentile(head, 0.5):.1f} ms, p99 {percentile(head, 0.99):.1f} ms, "
                f"max {max(head):.1f} ms"
            )

        best = max(ratios.values())
        met = best >= 3.0
        say(
            f"goal (>= 3x ethereumetl's blocks/s while also extracting internal transfers): "
            f"{'MET' if met else 'NOT met'} (best {best:.2f}x)"
        )
        prof: list[str] = []
        if args.profile:
            prof = node_costs(chain) + profile(chain, max(workers))
            for line in prof:
                say(line)
        if args.record:
            record(args, chain, gen, runs, ratios, base_bps, head, met, prof)
    finally:
        anvil.terminate()
        anvil.wait(timeout=10)


def record(
    args: Any,
    chain: Chain,
    gen: float,
    runs: dict[str, list[Run]],
    ratios: dict[int, float],
    base_bps: float,
    head: list[float],
    met: bool,
    prof: list[str],
) -> None:
    host = os.environ.get("BENCH_MACHINE", platform.node())
    machine = f"{host}, {os.cpu_count()} cores, Python {platform.python_version()}"
    n = chain.last - chain.first + 1
    rows = []
    for w, ratio in ratios.items():
        dw = statistics.median(r.blocks / r.seconds for r in runs[f"dw{w}"])
        rows.append(
            f"| {date.today()} | {machine} | {n} × {args.txs} | --workers {w} | "
            f"{dw:.1f} blocks/s | {base_bps:.1f} blocks/s | {ratio:.2f}x |"
        )
    text = "\n".join(
        [
            "",
            "## EVM backfill — `bench/bench_evm_backfill.py` (appended by the script)",
            "",
            f"Command: `.venv/bin/python bench/bench_evm_backfill.py --blocks {args.blocks} "
            f"--txs {args.txs} --rounds {args.rounds} --head-blocks {args.head_blocks}"
            f"{' --profile' if args.profile else ''} "
            "--record`. Chain generated in "
            f"{gen:.0f} s. Baseline: ethereumetl 2.4.2 export_blocks_and_transactions + "
            f"export_token_transfers, --max-workers {args.etl_workers}. Medians of {args.rounds} "
            "interleaved rounds.",
            "",
            "| date | machine | blocks × txs | drainwatch | drainwatch | ethereumetl | ratio |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            (
                f"Head: p50 {percentile(head, 0.5):.1f} ms, p99 {percentile(head, 0.99):.1f} ms "
                f"per block ({len(head)} blocks)."
                if head
                else ""
            ),
            f"Goal ≥ 3x while extracting internal transfers: {'met' if met else 'NOT met'}.",
            *([""] + ["    " + line for line in prof] if prof else []),
            "",
        ]
    )
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
