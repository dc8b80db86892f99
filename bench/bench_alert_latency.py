"""Alert latency: from the moment a block is mined on anvil (and on bcoin) to the Slack stub
receiving the message that shows the alert in that block, with `drainwatch watch` running as a
service (a follower thread per chain polling the node, the processor, the notifier sending
through slack-sdk to the local Slack stub of the tests).

Per chain, and per poll interval (the default, i.e. the config says nothing; then others):

1. Block latency: cold-wallet drains sent and mined straight away (several per block), then the
   time from `evm_mine` / `generatetoaddress` returning to the stub receiving the first
   `chat.postMessage` or `chat.update` that shows the drain's cold-outflow alert in a block
   (provisional, with the default 12 / 6 confirmations). Each block is mined after a random
   pause of up to one poll interval, so blocks fall at random points of the poll cycle.
2. Pending: drains left in the mempool for `--hold` seconds (default 1.5 poll intervals)
   before their block is mined: the share whose pending message reached the stub before the
   block was mined, the time from the send returning (the node holds the transaction) to that
   message, and from the block to the message's update.
3. Baseline, in the same run: a bare thread polling the node's head (eth_blockNumber /
   getblockcount, then the mempool, as the follower does) at the same interval, noting when it
   first sees each block and each pending transaction. drainwatch's latency over that floor is
   its own cost. Probes (wrapped methods, nothing changed) split drainwatch's time into: the
   follower reading the new head, the block's events processed (outbox rows committed), the
   notifier starting the Slack call, the stub receiving it.

Run:  .venv/bin/python bench/bench_alert_latency.py [--alerts N] [--chain evm|btc|both]
      [--per-block K] [--pending P] [--intervals default,0.25] [--hold S] [--record]
--record appends the summary to bench/RESULTS.md (machine name from $BENCH_MACHINE).
No test asserts these timings.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.alert_latency_rig import (  # noqa: E402
    AnvilChain,
    BcoinChain,
    Chain,
    HeadPoller,
    Probes,
    TimedStub,
    slack_stub,
)
from drainwatch.config_models import ChainSettings  # noqa: E402
from tests.fixtures.watch_service import WatchService  # noqa: E402

RESULTS = ROOT / "bench/RESULTS.md"
#: chains.<c>.poll_interval_seconds when the config says nothing (read from the schema)
DEFAULT_POLL = float(ChainSettings.model_fields["poll_interval_seconds"].default)
GOAL = 1.0  # seconds after the block exists at the node (p99)
WAIT_LIMIT = 60.0
WARMUP_BLOCKS = 2


@dataclass
class BlockSample:
    height: int
    position: int  # the drain's place among its block's drains (0: first sent)
    latency: float  # block mined → stub got the message showing it in the block
    baseline: float  # block mined → the bare poller saw the head
    follower_saw: float | None  # block mined → the follower read a head at or above it
    processed: float | None  # block mined → the block's events processed (outbox written)
    send_start: float | None  # block mined → the notifier called SlackSink.send for it
    pending_first: bool  # a pending message had come first (the mempool caught it anyway)
    method: str
    state: str
    right_block: bool
    t_mined: float = 0.0  # monotonic, for the look at the slowest samples


@dataclass
class PendingSample:
    to_pending: float | None  # send returned → pending message at the stub
    baseline: float | None  # send returned → the bare poller saw it in the mempool
    before_block: bool
    held: float  # send returned → block mined
    block_update: float | None  # block mined → the message updated to show the block


@dataclass
class Case:
    chain: str
    node: str
    interval: float | None
    per_block: int
    blocks: list[BlockSample] = field(default_factory=list)
    pending: list[PendingSample] = field(default_factory=list)
    top_level_calls: int = 0
    reply_calls: int = 0
    seconds: float = 0.0
    head_gaps: list[float] = field(default_factory=list)  # between the follower's head reads
    probes: Probes | None = None
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def poll(self) -> float:
        return DEFAULT_POLL if self.interval is None else self.interval

    @property
    def poll_label(self) -> str:
        return f"{DEFAULT_POLL:g} s (default)" if self.interval is None else f"{self.interval:g} s"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return f"{value * 1000:.0f}"


def triple(values: Sequence[float]) -> str:
    """p50 / p99 / max in ms."""
    if not values:
        return "-"
    return f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))} / {ms(max(values))}"


def pair(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))}"


def wait_for(what: str, check: Callable[[], bool], limit: float = WAIT_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"never happened within {limit:.0f} s: {what}")
        time.sleep(0.005)


def in_block(
    stub: TimedStub, needles: list[str], poller: HeadPoller | None = None, height: int = 0
) -> Callable[[], bool]:
    """Whether every drain's alert reached the stub in a block (and the poller saw it)."""

    def check() -> bool:
        shown = all(stub.seen[n].in_block is not None for n in needles)
        return shown and (poller is None or height in poller.heights)

    return check


# ------------------------------------------------------------------------------------ a case


def run_case(
    chain: Chain,
    stub: TimedStub,
    interval: float | None,
    alerts: int,
    per_block: int,
    pending: int,
    hold: float | None,
    rng: random.Random,
    say: Callable[[str], None],
) -> Case:
    case = Case(chain.name, chain.node_name, interval, per_block)
    poll = case.poll
    hold = 1.5 * poll if hold is None else hold
    load0 = os.getloadavg()[0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dw-latency-") as tmp:
        config = Path(tmp) / "dw.yaml"
        config.write_text(chain.config(Path(tmp) / "dw.db", stub.base_url, interval))
        chain.prepare(config)
        probes = Probes()
        probes.install()
        service = WatchService(config)
        poller = HeadPoller(poll, *chain.poller_calls())
        poller.start()
        drains = 0

        def mined_block(count: int) -> tuple[list[str], float, int]:
            nonlocal drains
            needles = []
            for _ in range(count):
                needle = chain.drain(drains)
                drains += 1
                stub.expect(needle)
                needles.append(needle)
            chain.mine()
            t_mined = time.monotonic()
            return needles, t_mined, chain.height()

        try:
            for _ in range(WARMUP_BLOCKS):  # the service's first steps, the channel looked up
                needles, _t, height = mined_block(1)
                wait_for("warm-up alert", in_block(stub, needles))
            blocks = -(-alerts // per_block)
            for b in range(blocks):
                time.sleep(rng.uniform(0.0, poll))  # a random point of the poll cycle
                count = min(per_block, alerts - b * per_block)
                needles, t_mined, height = mined_block(count)
                wait_for(
                    f"block {height}'s alerts",
                    in_block(stub, needles, poller, height),
                )
                for position, needle in enumerate(needles):
                    seen = stub.seen[needle]
                    assert seen.in_block is not None
                    saw = probes.head_seen(height)
                    done = probes.processed.get(height)
                    send = probes.send_before(needle, t_mined, seen.in_block)
                    case.blocks.append(
                        BlockSample(
                            height,
                            position,
                            seen.in_block - t_mined,
                            poller.heights[height] - t_mined,
                            None if saw is None else saw - t_mined,
                            None if done is None else done - t_mined,
                            None if send is None else send - t_mined,
                            seen.pending is not None and seen.pending < t_mined,
                            seen.in_block_method,
                            seen.in_block_state,
                            f"block {height} (" in seen.in_block_text,
                            t_mined,
                        )
                    )
                if (b + 1) % 10 == 0:
                    say(f"    {chain.node_name} poll {case.poll_label}: {b + 1}/{blocks} blocks")
            for _ in range(pending):
                time.sleep(rng.uniform(0.0, poll))
                needle = chain.drain(drains)
                t_sent = time.monotonic()
                drains += 1
                stub.expect(needle)
                time.sleep(max(0.0, hold - (time.monotonic() - t_sent)))
                chain.mine()
                t_mined = time.monotonic()
                height = chain.height()
                wait_for(
                    f"pending drain's block {height}",
                    in_block(stub, [needle]),
                )
                seen = stub.seen[needle]
                assert seen.in_block is not None
                got = poller.pending.get(needle)
                case.pending.append(
                    PendingSample(
                        None if seen.pending is None else seen.pending - t_sent,
                        None if got is None else got - t_sent,
                        seen.pending is not None and seen.pending < t_mined,
                        t_mined - t_sent,
                        seen.in_block - t_mined,
                    )
                )
        finally:
            poller.stop()
            service.close()
            probes.uninstall()
        case.probes = probes
        times = [t for t, _h in probes.heads]
        case.head_gaps = [b - a for a, b in itertools.pairwise(times)]
    case.top_level_calls, case.reply_calls = stub.top_level_calls, stub.reply_calls
    case.seconds = time.monotonic() - started
    case.load = (load0, os.getloadavg()[0])
    return case


def make_chain(kind: str, coins: int) -> Chain:
    return AnvilChain() if kind == "evm" else BcoinChain(coins)


# ----------------------------------------------------------------------------------- report


def summary_rows(cases: Sequence[Case]) -> list[str]:
    rows = [
        "| chain | poll | alerts (blocks × per block) | drainwatch p50 / p99 / max ms "
        "| bare poller p50 / p99 / max ms | ratio p50 / p99 | ≤ 1 s | pending before block "
        "| send → pending p50 / p99 / max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lat = [s.latency for s in c.blocks]
        base = [s.baseline for s in c.blocks]
        ratio = "-"
        if lat and base:
            r50 = percentile(lat, 0.5) / max(percentile(base, 0.5), 1e-6)
            r99 = percentile(lat, 0.99) / max(percentile(base, 0.99), 1e-6)
            ratio = f"{r50:.2f}x / {r99:.2f}x"
        within = f"{sum(x <= GOAL for x in lat) / len(lat):.0%}" if lat else "-"
        before = f"{sum(p.before_block for p in c.pending)}/{len(c.pending)}"
        to_pending = [p.to_pending for p in c.pending if p.to_pending is not None]
        blocks = len({s.height for s in c.blocks})
        rows.append(
            f"| {c.node} | {c.poll_label} | {len(lat)} ({blocks} × {c.per_block}) "
            f"| {triple(lat)} | {triple(base)} | {ratio} | {within} | {before} "
            f"| {triple(to_pending)} |"
        )
    return rows


def detail_lines(c: Case) -> list[str]:
    def of(get: Callable[[BlockSample], float | None]) -> list[float]:
        return [v for s in c.blocks if (v := get(s)) is not None]

    saw = of(lambda s: s.follower_saw)
    processed = of(lambda s: None if s.processed is None or s.follower_saw is None
                   else s.processed - s.follower_saw)  # fmt: skip
    queued = of(lambda s: None if s.send_start is None or s.processed is None
                else s.send_start - s.processed)  # fmt: skip
    slack = of(lambda s: None if s.send_start is None else s.latency - s.send_start)
    after_head = of(lambda s: None if s.follower_saw is None else s.latency - s.follower_saw)
    first = [s.latency for s in c.blocks if s.position == 0]
    last = [s.latency for s in c.blocks if s.position == c.per_block - 1]
    methods = sorted({f"{s.method} ({s.state})" for s in c.blocks})
    wrong = sum(not s.right_block for s in c.blocks)
    early = sum(s.pending_first for s in c.blocks)
    pend_base = [p.baseline for p in c.pending if p.baseline is not None]
    updates = [p.block_update for p in c.pending if p.block_update is not None]
    held = [p.held for p in c.pending]
    lines = [
        f"{c.node}, poll {c.poll_label}, {c.seconds:.0f} s, load {c.load[0]:.1f} → {c.load[1]:.1f}",
        f"  follower's cycle (between two head reads)             p50/p99 {pair(c.head_gaps)} ms",
        f"  block mined → follower read the head (its poll wait)  p50/p99 {pair(saw)} ms",
        f"  head read → block's events processed (outbox rows)    p50/p99 {pair(processed)} ms",
        f"  processed → notifier calls SlackSink.send (queue)     p50/p99 {pair(queued)} ms",
        f"  send called → stub received it (slack-sdk, HTTP)      p50/p99 {pair(slack)} ms",
        f"  head read → stub (drainwatch's own cost)              p50/p99 {pair(after_head)} ms",
        f"  first drain of a block {pair(first)} ms, drain #{c.per_block} {pair(last)} ms "
        "(p50/p99; the notifier sends one message at a time)",
        f"  reached Slack as: {', '.join(methods)}; wrong block number in text: {wrong}; "
        f"pending seen first (mempool caught it between send and mine): {early}",
        f"  pending: held {pair(held)} ms before mining; bare poller send → seen in mempool "
        f"{pair(pend_base)} ms; block mined → message updated {pair(updates)} ms (p50/p99)",
        f"  Slack calls: {c.top_level_calls} post/update of messages, "
        f"{c.reply_calls} thread replies",
    ]
    p = c.probes
    if p is not None:
        steps = [e - s for s, e in p.steps]
        http = [e - s for s, e, _m in p.http]
        lines += [
            f"  follower steps {len(steps)}: p50/p99/max {triple(steps)} ms; blocks not ready "
            f"at the node when fetched: {len(p.not_ready)}",
            f"  slack-sdk HTTP calls {len(http)}: p50/p99/max {triple(http)} ms; "
            f"over 0.5 s: {sum(h > 0.5 for h in http)}",
        ]
    return lines


def worst_lines(c: Case, n: int) -> list[str]:
    """Where the time of the slowest blocks went (absolute times relative to the mining)."""
    p = c.probes
    if p is None or n <= 0:
        return []
    slowest: dict[int, BlockSample] = {}
    for s in sorted(c.blocks, key=lambda s: -s.latency):
        slowest.setdefault(s.height, s)
        if len(slowest) == n:
            break
    out = [f"{c.node}, poll {c.poll_label}: the {len(slowest)} slowest blocks"]
    for s in slowest.values():
        t0, t1 = s.t_mined, s.t_mined + s.latency

        def rel(t: float, t0: float = t0) -> str:
            return f"{(t - t0) * 1000:+.0f}"

        steps = [f"{rel(a)}..{rel(b)}" for a, b in p.steps if b >= t0 - 1.5 and a <= t1]
        waits = [rel(t) for t, h in p.not_ready if h == s.height]
        slow_http = [f"{m} {rel(a)}..{rel(b)}" for a, b, m in p.http
                     if b - a > 0.2 and b >= t0 and a <= t1]  # fmt: skip
        out.append(
            f"  block {s.height}: {ms(s.latency)} ms; head read "
            f"{s.follower_saw and ms(s.follower_saw)}, processed {s.processed and ms(s.processed)}"
            f", send {s.send_start and ms(s.send_start)}"
            f"; steps (ms) {', '.join(steps)}; not ready at {waits}; slow HTTP {slow_http}"
        )
    return out


def verdict(cases: Sequence[Case]) -> list[str]:
    out = []
    for c in cases:
        if c.interval is not None or not c.blocks:
            continue
        p99 = percentile([s.latency for s in c.blocks], 0.99)
        pend_ok = bool(c.pending) and all(p.before_block for p in c.pending)
        out.append(
            f"{c.node}, default polling: p99 {ms(p99)} ms after the block — "
            f"{'met' if p99 < GOAL else 'NOT met'} (goal < {ms(GOAL)} ms); pending before the "
            f"block {sum(p.before_block for p in c.pending)}/{len(c.pending)} — "
            f"{'met' if pend_ok else 'NOT met'}"
        )
    return out


def record(cases: Sequence[Case], command: str) -> None:
    host = os.environ.get("BENCH_MACHINE", platform.node())
    machine = f"{host}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        "",
        "## Alert latency — `bench/bench_alert_latency.py` (appended by the script)",
        "",
        f"Command: `{command}`. Date {date.today().isoformat()}, machine {machine}. Latency: "
        "block mined (the mining call returned) → the Slack stub received the first message or "
        "update showing the cold-outflow alert in that block (provisional; default "
        "confirmations). Baseline: a bare thread polling the head (then the mempool) at the "
        "same interval, same run. Pending: drains held in the mempool before mining.",
        "",
        *summary_rows(cases),
        "",
        "    " + "\n    ".join(line for c in cases for line in detail_lines(c)),
        "",
        *verdict(cases),
        "",
    ]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines))


# ------------------------------------------------------------------------------------- main


def parse_intervals(text: str) -> list[float | None]:
    return [None if part == "default" else float(part) for part in text.split(",") if part]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=200, help="block-latency alerts per case")
    ap.add_argument("--per-block", type=int, default=4, help="drains per block")
    ap.add_argument("--pending", type=int, default=24, help="drains held in the mempool")
    ap.add_argument("--chain", choices=("evm", "btc", "both"), default="both")
    ap.add_argument(
        "--intervals",
        default="default,0.25",
        help="poll intervals, comma-separated; 'default' leaves the config silent",
    )
    ap.add_argument(
        "--hold",
        type=float,
        default=None,
        help="seconds a pending drain waits before mining (default 1.5 intervals)",
    )
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument(
        "--worst", type=int, default=3, help="show where the N slowest blocks' time went"
    )
    ap.add_argument("--record", action="store_true", help="append the summary to RESULTS.md")
    args = ap.parse_args(argv)
    kinds = ["evm", "btc"] if args.chain == "both" else [args.chain]
    intervals = parse_intervals(args.intervals)
    rng = random.Random(args.seed)

    def say(line: str = "") -> None:
        print(line, flush=True)

    cases: list[Case] = []
    for kind in kinds:
        for interval in intervals:
            label = f"{DEFAULT_POLL:g} s (default)" if interval is None else f"{interval:g} s"
            say(f"{kind}: poll {label}: {args.alerts} drains in blocks of {args.per_block}, "
                f"{args.pending} pending")  # fmt: skip
            coins = args.alerts + args.pending + WARMUP_BLOCKS + 5
            chain = make_chain(kind, coins)
            try:
                with slack_stub() as stub:
                    case = run_case(chain, stub, interval, args.alerts, args.per_block,
                                    args.pending, args.hold, rng, say)  # fmt: skip
            finally:
                chain.close()
            cases.append(case)
            for line in detail_lines(case) + worst_lines(case, args.worst):
                say(line)
            say()
    say("\n".join(summary_rows(cases)))
    say()
    for line in verdict(cases):
        say(line)
    if args.record:
        command = ".venv/bin/python bench/bench_alert_latency.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        record(cases, command.strip())
        say(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
