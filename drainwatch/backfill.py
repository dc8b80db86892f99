"""``drainwatch backfill``: a past stretch of one EVM chain gives the events live following gives.

The transfers and control changes of each block (the follower's ``BlockExtractor``) are fetched by
worker threads, a sliding window ahead, and published strictly in height order; the processor
stores and alerts them idempotently, so a re-run adds nothing. The follower's bookkeeping (its
checkpoint, block records, block connected / disconnected events) is never touched, and nothing
above the confirmed head, which a reorg could still replace, is read.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

from drainwatch import codec
from drainwatch.errors import UsageError
from drainwatch.events import ControlChangeSeen, Event, TransferSeen
from drainwatch.model import ChainKind
from drainwatch.pipeline import Pipeline
from drainwatch.policy import rule_policy
from drainwatch.ports import AlertSink, DeliverySink, JsonRpc
from drainwatch.processor import Processor
from drainwatch.wiring import (
    EVENTS_TOPIC,
    PROCESSOR_GROUP,
    App,
    build_notifier,
    build_rpc,
    build_sinks,
    open_app,
)
from watchers.evm.extract import BlockExtractor, BlockFacts
from watchers.evm.follower import EvmFollower
from watchers.evm.mapping import EvmBlock
from watchers.follow import NodeInconsistent
from watchers.jsonrpc import Call, call_many

MAX_WORKERS = 32
WINDOW_PER_WORKER = 4
NOT_READY_ATTEMPTS = 5  # a block without all its receipts is asked for again, then an error
NOT_READY_PAUSE = 0.5


@dataclass
class BackfillResult:
    first: int
    last: int
    blocks: int = 0
    transfers: int = 0
    changes: int = 0
    alerts: int = 0
    seconds: float = 0.0

    def add(self, facts: BlockFacts) -> None:
        self.blocks += 1
        self.transfers += len(facts.transfers)
        self.changes += len(facts.changes)


def run_backfill(
    config_path: Path,
    chain: str,
    first: int,
    last: int | None,
    workers: int = 4,
    *,
    stream: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The CLI command: alerts go to ``stream`` (stdout), progress and summary to ``err``."""
    check_arguments(first, last, workers)
    with open_app(config_path) as app:
        err = err or sys.stderr
        sinks = build_sinks(app.settings, stream)
        if chain in app.scripts:
            from drainwatch.bitcoin_history import backfill_bitcoin, say_history

            say_history(backfill_bitcoin(app, chain, first, last, workers, sinks, err), err)
        else:
            r = backfill(app, chain, first, last, workers, sinks, err)
            print(
                f"{chain} {r.first}..{r.last}: {r.blocks} blocks, {r.transfers} transfers, "
                f"{r.changes} control changes, {r.alerts} alerts in {r.seconds:.1f} s / "
                f"{r.blocks} ブロック、送金 {r.transfers} 件、制御変更 {r.changes} 件、"
                f"アラート {r.alerts} 件、{r.seconds:.1f} 秒",
                file=err,
            )
        if app.settings.bus.kind != "inprocess":
            print(
                "events published to Kafka: the running `drainwatch watch` stores and alerts "
                "them (the alert count above is what it had done when this run ended) / "
                "イベントは Kafka に送信済み。保存と通知は稼働中の watch が行います",
                file=err,
            )
    return 0


def check_arguments(first: int, last: int | None, workers: int) -> None:
    if first < 0:
        raise UsageError(f"--from must be a block height, 0 or more; got {first}")
    if last is not None and last < 0:
        raise UsageError(f"--to must be a block height, 0 or more; got {last}")
    if last is not None and first > last:
        raise UsageError(f"--from {first} is above --to {last}: the stretch is empty")
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}; got {workers}")


def backfill(
    app: App,
    chain_name: str,
    first: int,
    last: int | None,
    workers: int = 4,
    sinks: Sequence[AlertSink | DeliverySink] = (),
    err: TextIO | None = None,
) -> BackfillResult:
    check_arguments(first, last, workers)
    chain = app.chains.get(chain_name)
    if chain is None:
        known = ", ".join(sorted(app.chains))
        raise UsageError(f"--chain {chain_name!r} is not in the config (known: {known})")
    if chain.kind is not ChainKind.EVM:
        raise UsageError(f"--chain {chain_name!r} is a {chain.kind} chain: backfill reads EVM only")
    settings = app.settings.chains[chain_name]
    main_rpc = build_rpc(chain_name, settings)
    main_rpc.verify_all()  # every endpoint on the configured network before anything is read
    topic = app.topic(EVENTS_TOPIC)
    watched = app.book.addresses(chain_name)
    # For the head and the confirmation rule only: this follower never steps.
    follower = EvmFollower(chain, main_rpc, app.store, app.bus, topic, watched)
    last = _last_height(chain_name, first, last, follower)
    rpc = _PerThreadRpc(lambda: build_rpc(chain_name, settings), main_rpc)
    lowered = frozenset(a.lower() for a in watched)
    safes = app.book.multisig_addresses(chain_name)
    fetch = _Fetcher(chain_name, rpc, BlockExtractor(chain_name, rpc, lowered, safes=safes))
    result = BackfillResult(first, last)
    with Replay(app, chain_name, sinks, last - first + 1, err) as replay:
        parent: str | None = None
        with closing(_in_order(fetch, range(first, last + 1), workers)) as blocks:
            for block, facts in blocks:
                if parent is not None and block.parent_hash != parent:
                    raise NodeInconsistent(
                        f"{chain_name}: block {block.ref.height} does not build on block "
                        f"{block.ref.height - 1} as read just before (a reorg below the "
                        "confirmed head, or backends that disagree?); run the backfill again"
                    )
                parent = block.ref.hash
                events: list[Event] = [TransferSeen(t) for t in facts.transfers]
                events += [ControlChangeSeen(c) for c in facts.changes]
                result.add(facts)
                replay.block(events)
    result.alerts = replay.alerts
    result.seconds = replay.seconds
    return result


class Replay:
    """Publishes a past stretch's events block by block, in order, with a progress line; on the
    in-process bus it is its own processor, a window of ``SETTLE_EVERY`` blocks at a time (one
    store transaction per window). On Kafka the live service's processor group consumes what is
    published here: joining that group would pull live events (and their alerts) into this run
    and rebalance the service, so this run only publishes.

    Leaving the block normally waits until everything is handled; leaving it by an error or an
    interrupt still has what was published handled (unless the processor itself failed), so the
    counts reported hold."""

    def __init__(
        self,
        app: App,
        chain: str,
        sinks: Sequence[AlertSink | DeliverySink],
        total: int,
        err: TextIO | None,
    ) -> None:
        self._app = app
        self._chain = chain
        self._topic = app.topic(EVENTS_TOPIC)
        self._pipeline: Pipeline | None = None
        if app.settings.bus.kind == "inprocess":
            clock = partial(datetime.now, UTC)
            policy = rule_policy(app.settings)
            notifier = build_notifier(app, sinks)
            processor = Processor(
                app.store,
                app.book,
                app.chains,
                app.assets,
                policy,
                notifier.sink_names,
                clock,
                labels=app.labels,
            )
            subscription = app.bus.subscribe(self._topic, app.topic(PROCESSOR_GROUP))
            self._pipeline = Pipeline(processor, subscription, poll_timeout=0.0, notifier=notifier)
        self._progress = _Progress(chain, max(total, 1), err or sys.stderr)
        self._alerts_before = len(app.store.alerts())
        self._processor_failed = False
        self.blocks = 0
        self.events = 0
        self.alerts = 0
        self.seconds = 0.0

    def __enter__(self) -> Replay:
        return self

    def block(self, events: Sequence[Event]) -> None:
        """Publish one block's events (in order after the blocks before)."""
        for event in events:
            self._app.bus.publish(self._topic, self._chain, codec.dumps_event(event))
        self.blocks += 1
        self.events += len(events)
        if self._pipeline is not None and self.blocks % SETTLE_EVERY == 0:
            self._settle(self._pipeline.settle)
        if self._progress.tick(self.blocks, self.events):
            self._app.bus.flush()

    def _settle(self, how: Callable[[], object]) -> None:
        self._processor_failed = True
        how()
        self._processor_failed = False

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            if kind is None:
                self._app.bus.flush()
                if self._pipeline is not None:
                    self._settle(self._pipeline.catch_up)
            elif self._pipeline is not None and not self._processor_failed:
                self._pipeline.settle()
        finally:
            if self._pipeline is not None:
                self._pipeline.close()
            self._progress.end()
        self.alerts = len(self._app.store.alerts()) - self._alerts_before
        self.seconds = time.monotonic() - self._progress.started


def _last_height(chain: str, first: int, last: int | None, follower: EvmFollower) -> int:
    confirmed = follower.confirmed_height(follower.node_head())
    if last is None and first > confirmed:
        raise UsageError(
            f"--from {first} is above {chain}'s confirmed head {confirmed}: nothing to backfill"
        )
    if last is not None and last > confirmed:
        raise UsageError(
            f"--to {last} is above {chain}'s confirmed head {confirmed} "
            f"({follower.chain.confirmations} confirmations): it would read blocks a reorg can "
            "still replace; leave those to `drainwatch watch`"
        )
    return confirmed if last is None else last


T = TypeVar("T")


def _in_order(fetch: Callable[[int], T], heights: range, workers: int) -> Generator[T]:
    """Fetched by ``workers`` threads at most ``WINDOW_PER_WORKER`` blocks a worker ahead,
    yielded in height order."""
    pending: deque[Future[T]] = deque()
    todo = iter(heights)
    with ThreadPoolExecutor(workers, thread_name_prefix="backfill") as pool:
        try:
            for height in todo:
                pending.append(pool.submit(fetch, height))
                if len(pending) >= workers * WINDOW_PER_WORKER:
                    break
            while pending:
                done = pending.popleft().result()
                more = next(todo, None)
                if more is not None:
                    pending.append(pool.submit(fetch, more))
                yield done
        finally:
            for future in pending:  # a failure or an interrupt: nothing more is started
                future.cancel()


#: Blocks published between two hand-overs to the in-process processor.
SETTLE_EVERY = 32


class _Fetcher:
    """One block with its facts, asked for again while a receipt is not ready."""

    def __init__(self, chain: str, rpc: JsonRpc, extractor: BlockExtractor) -> None:
        self._chain = chain
        self._rpc = rpc
        self._extractor = extractor
        self._probe = threading.Lock()

    def __call__(self, height: int) -> tuple[EvmBlock, BlockFacts]:
        for attempt in range(NOT_READY_ATTEMPTS):
            if attempt:
                time.sleep(NOT_READY_PAUSE)
            # Until the first block with transactions has probed the trace dialect, one at a
            # time: the node is probed once, and a node without traces is reported once.
            with self._probe if self._extractor.dialect is None else nullcontext():
                block = self._extractor.fetch(height)
                if block is None:
                    continue
                facts = self._extractor.extract(block)
            if facts is not None:
                return block, facts
        raise NodeInconsistent(
            f"{self._chain}: block {height} is still not available with all its receipts after "
            f"{NOT_READY_ATTEMPTS} attempts (is the node pruning or still indexing?)"
        )


class _PerThreadRpc:
    """A chain's failover endpoints, one instance per thread: HTTP sessions and failover state
    are not shared between workers. The calling thread uses the instance already checked."""

    def __init__(self, make: Callable[[], JsonRpc], mine: JsonRpc) -> None:
        self._make = make
        self._local = threading.local()
        self._local.rpc = mine

    def _rpc(self) -> JsonRpc:
        rpc: JsonRpc | None = getattr(self._local, "rpc", None)
        if rpc is None:
            rpc = self._local.rpc = self._make()
        return rpc

    @property
    def endpoint(self) -> str:
        return self._rpc().endpoint

    def call(self, method: str, params: Sequence[Any]) -> Any:
        return self._rpc().call(method, params)

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        return call_many(self._rpc(), calls)


class _Progress:
    """One line rewritten in place on a terminal; otherwise a line every 5 %."""

    def __init__(self, chain: str, total: int, stream: TextIO) -> None:
        self._chain = chain
        self._total = total
        self._stream = stream
        self._tty = stream.isatty()
        self.started = time.monotonic()
        self._shown = 0  # the last 5 % step shown (on a terminal: tenth of a second)

    def tick(self, done: int, events: int) -> bool:
        """Show the line if due: on a terminal at most ten times a second, otherwise every 5 %."""
        elapsed = time.monotonic() - self.started
        step = int(elapsed * 10) if self._tty else done * 20 // self._total
        if step <= self._shown and done < self._total:
            return False
        self._shown = max(step, 1)
        rate = done / max(elapsed, 1e-9)
        line = (
            f"{self._chain}: {done}/{self._total} blocks ブロック ({100 * done // self._total}%), "
            f"{rate:.1f} blocks/s, {events} events イベント, "
            f"ETA 残り {(self._total - done) / rate:.0f} s"
        )
        self._stream.write(f"\r{line}\x1b[K" if self._tty else line + "\n")
        self._stream.flush()
        return True

    def end(self) -> None:
        if self._tty and self._shown:
            self._stream.write("\n")
