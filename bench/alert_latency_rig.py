"""The rig of `bench_alert_latency.py`: the chains it drains (anvil, bcoin), the Slack stub that
timestamps what reaches it, the bare head poller (the baseline) and the probes that time the
steps inside the running `drainwatch watch` (follower saw the head, block processed, Slack call
started). Nothing here changes what drainwatch does: the probes wrap methods and only record.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slack_sdk.web.base_client import BaseClient

from alerts.slack import SlackSink
from drainwatch.cli import main as cli_main
from drainwatch.devnode import DevNode, find_anvil
from drainwatch.devnode_bitcoin import SINK_ADDRESS, BcoinNode
from drainwatch.regtest_wallet import RegtestWallet, Utxo
from tests.fixtures.alert_configs import btc_config, chain_lines, evm_config
from tests.fixtures.slack_stub import TOKEN, SlackStub
from watchers.bitcoin.follower import BitcoinFollower
from watchers.evm.follower import EvmFollower
from watchers.follow import Follower
from watchers.jsonrpc import HttpJsonRpc

TOKEN_ENV = "DW_BENCH_SLACK_TOKEN"
BCOIN_AUTH_ENV = "DW_BENCH_BCOIN_AUTH"
RULE = "rule cold-outflow"
#: A message "shows the alert in a block" in these states (a pending alert whose transaction is
#: mined is either updated to provisional or said to be superseded by the block's alert).
IN_BLOCK = ("state provisional", "state superseded", "state confirmed")
PENDING = "state pending"

# ------------------------------------------------------------------------------------ Slack


@dataclass
class Seen:
    """When the stub first got a top-level message or update about a drain, per state."""

    pending: float | None = None
    in_block: float | None = None
    in_block_state: str = ""
    in_block_method: str = ""
    in_block_text: str = ""


class TimedStub(SlackStub):
    """The test Slack stub, timing (``time.monotonic()``) each ``chat.postMessage`` and
    ``chat.update`` as it arrives, for the drains it was told to look for (``expect``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, Seen] = {}
        self.top_level_calls = 0
        self.reply_calls = 0
        self._watch_lock = threading.Lock()

    def __enter__(self) -> TimedStub:
        super().__enter__()
        return self

    def expect(self, needle: str) -> None:
        with self._watch_lock:
            self.seen.setdefault(needle, Seen())

    def call(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        if method in ("chat.postMessage", "chat.update"):
            if args.get("thread_ts"):
                self.reply_calls += 1
            else:
                self.top_level_calls += 1
                self._note(now, method, str(args.get("text", "")))
        return super().call(method, args)

    def _note(self, now: float, method: str, text: str) -> None:
        if RULE not in text:
            return
        with self._watch_lock:
            for needle, seen in self.seen.items():
                if needle not in text:
                    continue
                if seen.pending is None and PENDING in text:
                    seen.pending = now
                state = next((s for s in IN_BLOCK if s in text), None)
                if seen.in_block is None and state is not None:
                    seen.in_block, seen.in_block_state = now, state.removeprefix("state ")
                    seen.in_block_method, seen.in_block_text = method, text


# ----------------------------------------------------------------------------------- probes


@dataclass
class Probes:
    """Times inside the running service, from wrapped methods (recorded, nothing changed):
    each head the follower read (when the call returned), each block processed (events
    published and handled by the processor, outbox rows committed), each Slack send started."""

    heads: list[tuple[float, int]] = field(default_factory=list)
    processed: dict[int, float] = field(default_factory=dict)
    process_started: dict[int, float] = field(default_factory=dict)
    sends: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, tx hash
    send_starts: list[tuple[float, str]] = field(default_factory=list)  # start, tx hash
    steps: list[tuple[float, float]] = field(default_factory=list)  # follower.step start, end
    not_ready: list[tuple[float, int]] = field(default_factory=list)  # fetch gave None
    http: list[tuple[float, float, str]] = field(default_factory=list)  # slack-sdk HTTP calls
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def install(self) -> None:
        for cls in (EvmFollower, BitcoinFollower):
            self._wrap(cls, "node_head", self._head)
        self._wrap(Follower, "_process", self._process)
        self._wrap(Follower, "step", self._step)
        self._wrap(EvmFollower, "fetch", self._fetch)
        self._wrap(BitcoinFollower, "fetch", self._fetch)
        self._wrap(SlackSink, "send", self._send)
        self._wrap(BaseClient, "_perform_urllib_http_request", self._http)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _wrap(self, cls: type, name: str, make: Callable[[Any], Any]) -> None:
        original = cls.__dict__[name]
        setattr(cls, name, make(original))
        self._undo.append(lambda: setattr(cls, name, original))

    def _head(self, original: Any) -> Any:
        def node_head(follower: Any) -> int:
            head = int(original(follower))
            self.heads.append((time.monotonic(), head))
            return head

        return node_head

    def _step(self, original: Any) -> Any:
        def step(follower: Any, *args: Any, **kwargs: Any) -> int:
            start = time.monotonic()
            try:
                return int(original(follower, *args, **kwargs))
            finally:
                self.steps.append((start, time.monotonic()))

        return step

    def _fetch(self, original: Any) -> Any:
        def fetch(follower: Any, height: int) -> Any:
            block = original(follower, height)
            if block is None:
                self.not_ready.append((time.monotonic(), height))
            return block

        return fetch

    def _http(self, original: Any) -> Any:
        def perform(client: Any, *, url: str, args: Any) -> Any:
            start = time.monotonic()
            try:
                return original(client, url=url, args=args)
            finally:
                self.http.append((start, time.monotonic(), url.rsplit("/", 1)[-1]))

        return perform

    def _process(self, original: Any) -> Any:
        def _process(follower: Any, block: Any) -> bool:
            height = block.ref.height
            self.process_started.setdefault(height, time.monotonic())
            done = bool(original(follower, block))
            if done:
                self.processed.setdefault(height, time.monotonic())
            return done

        return _process

    def _send(self, original: Any) -> Any:
        def send(sink: Any, delivery: Any, card: Any, previous_ref: Any) -> Any:
            start = time.monotonic()
            tx = (delivery.alert.tx_hash or "").lower()
            self.send_starts.append((start, tx))  # now: the stub may get it before it returns
            try:
                return original(sink, delivery, card, previous_ref)
            finally:
                self.sends.append((start, time.monotonic(), tx))

        return send

    def head_seen(self, height: int) -> float | None:
        """When the follower first read a head at or above ``height``."""
        return next((t for t, h in self.heads if h >= height), None)

    def send_before(self, needle: str, after: float, until: float) -> float | None:
        """The start of the last send about ``needle`` between ``after`` and ``until`` (the one
        that carried the message the stub got at ``until``; a pending message may have gone out
        just after the mining, before the block was read)."""
        starts = [s for s, tx in self.send_starts if tx == needle and after <= s <= until]
        return max(starts, default=None)


# --------------------------------------------------------------------------------- baseline


class HeadPoller:
    """The baseline: a bare thread that asks the node for its head (then its mempool, as the
    follower does) every ``interval`` seconds, waiting the interval after each round as the
    follower does, and notes when it first saw each height and each pending transaction."""

    def __init__(
        self, interval: float, head: Callable[[], int], mempool: Callable[[], set[str]]
    ) -> None:
        self.interval = interval
        self._head = head
        self._mempool = mempool
        self.heights: dict[int, float] = {}
        self.pending: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bare-head-poller", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        last = -1
        while not self._stop.is_set():
            try:
                head = self._head()
                now = time.monotonic()
                for height in range(max(last + 1, head), head + 1):
                    self.heights.setdefault(height, now)
                last = max(last, head)
                txids = self._mempool()
                now = time.monotonic()
                for txid in txids:
                    self.pending.setdefault(txid, now)
            except Exception:  # the node is being stopped, or hiccupped: counted
                self.errors += 1
            self._stop.wait(self.interval)


# ----------------------------------------------------------------------------------- service


# ------------------------------------------------------------------------------------ chains


class Chain(ABC):
    """What the bench needs of a chain: a config, cold-wallet drains, mining, and the calls of
    the bare poller (on a connection of its own)."""

    name: str
    node_name: str

    @abstractmethod
    def config(self, db: Path, base_url: str, interval: float | None) -> str: ...

    def prepare(self, config: Path) -> None:  # noqa: B027 (a hook: nothing by default)
        """What must happen before the service starts."""

    @abstractmethod
    def drain(self, i: int) -> str:
        """Send one cold-wallet outflow (into the node's mempool); its tx hash (lower case)."""

    @abstractmethod
    def mine(self) -> int:
        """Mine one block holding what the mempool holds; returns once the node has it."""

    @abstractmethod
    def height(self) -> int: ...

    @abstractmethod
    def poller_calls(self) -> tuple[Callable[[], int], Callable[[], set[str]]]: ...

    @abstractmethod
    def close(self) -> None: ...


class AnvilChain(Chain):
    """anvil as the drill runs it (``drainwatch.devnode.DevNode``: ``--no-mining``, so a sent
    transaction waits in the mempool until ``evm_mine``); the cold wallet is a dev account."""

    name, node_name = "dev", "anvil"

    def __init__(self) -> None:
        self.node = DevNode(find_anvil(), balance_eth=10_000_000, chain_id=31337)
        accounts = self.node.accounts
        self.hot, self.cold, self.attacker = accounts[1], accounts[2], accounts[8]

    def config(self, db: Path, base_url: str, interval: float | None) -> str:
        return evm_config(
            db=db, rpc=self.node.url, hot=self.hot, cold=self.cold, slack_url=base_url,
            token_env=TOKEN_ENV, chain_extra=chain_lines(poll_interval_seconds=interval),
            exchange="Bench Exchange",
        )  # fmt: skip

    def drain(self, i: int) -> str:
        return self.node.send(self.cold, self.attacker, 10**18 + i).lower()

    def mine(self) -> int:
        self.node.call("evm_mine", [])
        return -1  # the caller asks for the height after taking the time

    def height(self) -> int:
        return self.node.head()

    def poller_calls(self) -> tuple[Callable[[], int], Callable[[], set[str]]]:
        rpc = HttpJsonRpc(self.node.url, timeout=10)

        def head() -> int:
            return int(rpc.call("eth_blockNumber", []), 16)

        def mempool() -> set[str]:
            pool = rpc.call("txpool_content", [])
            return {
                str(tx["hash"]).lower()
                for txs in (pool.get("pending") or {}).values()
                for tx in txs.values()
            }

        return head, mempool

    def close(self) -> None:
        self.node.stop()


class BcoinChain(Chain):
    """bcoin regtest (``drainwatch.devnode_bitcoin.BcoinNode``, segwit active) with the drill's
    2-of-3 multisig cold wallet. The cold wallet gets one coin per drain first (a faucet pays it
    many equal outputs, buried under more than the confirmation depth, so that a pending
    spend of each is seen from the mempool); each drain spends one coin whole (no change)."""

    name, node_name = "btc", "bcoin"
    COIN = 2_000_000  # satoshi per prepared cold coin
    FEE = 2_000
    FAN_OUT = 200  # outputs per faucet transaction

    def __init__(self, coins: int) -> None:
        self.node = BcoinNode()
        try:
            self.node.activate_segwit()
            self.hot = RegtestWallet.single("bench-hot")
            self.cold = RegtestWallet.multisig("bench-cold")
            self.attacker = RegtestWallet.single("bench-attacker").address()
            faucet = RegtestWallet.single("bench-faucet")
            faucet.fund(self.node, blocks=max(1, -(-coins * self.COIN // 1_000_000_000)))
            target = self.cold.address()
            left = coins
            while left > 0:
                n = min(left, self.FAN_OUT)
                signed = faucet.send(self.node, [(target, self.COIN)] * n, fee=50_000)
                left -= n
                self.node.mine(1, SINK_ADDRESS)
                self.cold.receive(signed.raw)
            self.node.mine(7, SINK_ADDRESS)  # past 6 confirmations: spends are seen pending
            self.coins: list[Utxo] = list(self.cold.utxos)
        except BaseException:
            self.node.stop()
            raise
        user, password = self.node.auth
        os.environ[BCOIN_AUTH_ENV] = f"{user}:{password}"

    def config(self, db: Path, base_url: str, interval: float | None) -> str:
        return btc_config(
            db=db, url=self.node.url, auth_env=BCOIN_AUTH_ENV, vpub=self.hot.xpub_slip132(),
            descriptor=self.cold.descriptor(), slack_url=base_url, token_env=TOKEN_ENV,
            chain_extra=chain_lines(poll_interval_seconds=interval), exchange="Bench Exchange",
        )  # fmt: skip

    def prepare(self, config: Path) -> None:
        # The watcher starts at the head and knows no older coin: a backfill gives it them.
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli_main(["backfill", str(config), "--chain", "btc", "--from", "0"])
        if code != 0:
            raise RuntimeError(f"backfill failed ({code}): {out.getvalue()[-2000:]}")

    def drain(self, i: int) -> str:
        coin = self.coins.pop()
        signed = self.cold.build([(self.attacker, coin.value - self.FEE)], fee=self.FEE,
                                 inputs=[coin])  # fmt: skip
        self.node.send_raw(signed.raw)  # returns once the mempool holds it
        self.cold.record(signed)
        return signed.txid

    def mine(self) -> int:
        self.node.mine(1, SINK_ADDRESS)
        return -1

    def height(self) -> int:
        return self.node.height()

    def poller_calls(self) -> tuple[Callable[[], int], Callable[[], set[str]]]:
        rpc = HttpJsonRpc(self.node.url, basic_auth=self.node.auth, timeout=10, core_errors=True)

        def head() -> int:
            return int(rpc.call("getblockcount", []))

        def mempool() -> set[str]:
            return {str(t) for t in rpc.call("getrawmempool", [])}

        return head, mempool

    def close(self) -> None:
        self.node.stop()


@contextlib.contextmanager
def slack_stub() -> Iterator[TimedStub]:
    os.environ[TOKEN_ENV] = TOKEN
    with TimedStub() as stub:
        yield stub
