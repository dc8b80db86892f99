"""The one place that turns settings into adapters and connects them.

Nothing else in drainwatch reads the config file or the environment: secrets named by ``*_env``
fields are looked up here, optional dependencies (Kafka, PostgreSQL drivers, web3 test chains)
are imported here, lazily, and everything else receives what it needs through constructors.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from alerts.console import ConsoleSink
from alerts.rules import RulePolicy, WalletBook
from drainwatch.errors import BusError, ConfigError, RetriableRpcError, UsageError
from drainwatch.model import Asset, Chain, ChainKind, Severity, Wallet
from drainwatch.ports import AlertSink, EventBus, JsonRpc, Store, Subscription
from drainwatch.processor import Processor
from watchers.evm.follower import EvmFollower

if TYPE_CHECKING:
    from drainwatch.config import ChainSettings, Settings

log = logging.getLogger(__name__)

EVENTS_TOPIC = "events"
PROCESSOR_GROUP = "processor"


@dataclass
class App:
    settings: Settings
    store: Store
    bus: EventBus
    chains: dict[str, Chain]
    book: WalletBook
    assets: dict[str, dict[str, Asset]] = field(default_factory=dict)

    def wallet(self, name: str) -> Wallet:
        wallet = self.book.get(name)
        if wallet is None:
            known = ", ".join(w.name for w in self.book.wallets)
            raise UsageError(f"no wallet named {name!r} in the config (known: {known})")
        return wallet

    def topic(self, name: str) -> str:
        return f"{self.settings.bus.topic_prefix}.{name}"

    def close(self) -> None:
        self.bus.close()
        self.store.close()


def build_store(settings: Settings) -> Store:
    from drainwatch.store import open_store

    password = None
    if settings.store.password_env:
        password = _env("store.password_env", settings.store.password_env)
    return open_store(settings.store.url, password=password)


def build_bus(settings: Settings) -> EventBus:
    if settings.bus.kind == "kafka":
        from drainwatch.bus.kafka import KafkaBus

        return KafkaBus(
            list(settings.bus.bootstrap_servers),
            consumer_options={
                "session_timeout_ms": settings.bus.session_timeout_ms,
                "heartbeat_interval_ms": settings.bus.heartbeat_interval_ms,
            },
        )
    from drainwatch.bus.inprocess import InProcessBus

    return InProcessBus()


def build_app(settings: Settings) -> App:
    chains = settings.domain_chains()
    store = build_store(settings)
    try:
        bus = build_bus(settings)
    except Exception:
        store.close()
        raise
    assets = {name: {a.asset_id: a for a in settings.assets(name)} for name in chains}
    return App(settings, store, bus, chains, WalletBook(settings.domain_wallets()), assets)


@contextmanager
def open_app(config_path: Path) -> Iterator[App]:
    from drainwatch.config import load_config

    app = build_app(load_config(config_path))
    try:
        yield app
    finally:
        app.close()


def build_rpc(name: str, chain: ChainSettings) -> JsonRpc:
    """Every configured endpoint of a chain behind failover; URLs and credentials named by
    ``url_env`` / ``auth_env`` come from the environment."""
    from watchers.jsonrpc import FailoverRpc, HttpJsonRpc

    endpoints: list[JsonRpc] = []
    for i, endpoint in enumerate(chain.rpc):
        where = f"chains.{name}.rpc[{i}]"
        url = endpoint.url or _env(f"{where}.url_env", endpoint.url_env)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where}.url", "only http(s) endpoints can be reached from `drainwatch watch`"
            )
        auth: tuple[str, str] | None = None
        headers: dict[str, str] = {}
        if endpoint.auth_env:
            secret = _env(f"{where}.auth_env", endpoint.auth_env)
            if ":" in secret:
                user, _, password = secret.partition(":")
                auth = (user, password)
            else:
                headers["Authorization"] = f"Bearer {secret}"
        endpoints.append(HttpJsonRpc(url, basic_auth=auth, headers=headers))
    return FailoverRpc(endpoints)


def _env(field_path: str, name: str | None) -> str:
    value = os.environ.get(name or "")
    if not value:
        raise ConfigError(field_path, f"environment variable {name} is not set")
    return value


def build_sinks(settings: Settings, stream: TextIO | None = None) -> list[AlertSink]:
    sinks: list[AlertSink] = []
    for channel in settings.alerts.channels:
        if channel.kind == "console":
            sinks.append(ConsoleSink(stream))
        else:
            log.warning("alert channel %s is delivered from issue #5 on; skipped", channel.kind)
    return sinks or [ConsoleSink(stream)]


def rule_policy(settings: Settings) -> RulePolicy:
    rule = settings.alerts.rules.cold_outflow
    return RulePolicy(cold_outflow=rule.enabled, cold_outflow_severity=Severity(rule.severity))


class Pipeline:
    """Followers publish to the bus; the processor consumes; one loop drives both."""

    def __init__(
        self, followers: Sequence[EvmFollower], processor: Processor, subscription: Subscription
    ) -> None:
        self.followers = list(followers)
        self.processor = processor
        self._subscription = subscription

    def run_once(self, until: Mapping[str, int] | None = None) -> int:
        blocks = 0
        for follower in self.followers:
            limit = (until or {}).get(follower.chain.name)
            blocks += follower.step(limit)
        self.drain()
        return blocks

    def drain(self) -> int:
        total = 0
        while (taken := self._subscription.poll(self.processor.handle_message, timeout=0.2)) > 0:
            total += taken
        return total

    def catch_up(self, limit_seconds: float = 60.0) -> None:
        """Poll until the processor has handled everything published so far (bounded): on
        Kafka the group join alone takes seconds, so an empty poll does not mean caught up."""
        deadline = time.monotonic() + limit_seconds
        while True:
            self.drain()
            backlog = self._subscription.backlog()
            if backlog == 0:
                return
            if time.monotonic() > deadline:
                raise BusError(
                    f"the processor did not catch up within {limit_seconds:.0f} s "
                    f"(backlog: {'unknown' if backlog is None else backlog} message(s))"
                )

    def close(self) -> None:
        self._subscription.close()


def build_pipeline(
    app: App,
    sinks: Sequence[AlertSink],
    *,
    rpc_overrides: Mapping[str, JsonRpc] | None = None,
    start_heights: Mapping[str, int] | None = None,
) -> Pipeline:
    topic = app.topic(EVENTS_TOPIC)
    followers = []
    for name, chain in app.chains.items():
        if chain.kind is not ChainKind.EVM:
            print(
                f"drainwatch: chain {name!r} ({chain.kind}) is not watched yet: the Bitcoin "
                "watcher arrives with issue #4 / Bitcoin の監視は未実装です",
                file=sys.stderr,
            )
            continue
        overrides = rpc_overrides or {}
        rpc = overrides[name] if name in overrides else build_rpc(name, app.settings.chains[name])
        followers.append(
            EvmFollower(
                chain,
                rpc,
                app.store,
                app.bus,
                topic,
                app.book.addresses(name),
                start_height=(start_heights or {}).get(name),
            )
        )
    processor = Processor(
        app.store,
        app.book,
        app.chains,
        app.assets,
        rule_policy(app.settings),
        sinks,
        clock=lambda: datetime.now(UTC),
    )
    return Pipeline(followers, processor, app.bus.subscribe(topic, app.topic(PROCESSOR_GROUP)))


def run_watch(
    config_path: Path,
    until: Mapping[str, int],
    *,
    stop: threading.Event | None = None,
    stream: TextIO | None = None,
) -> int:
    """``drainwatch watch``: follow every chain until stopped or every ``until`` is reached.

    Without ``until`` it is a service: when every endpoint of a chain fails, it says so and
    keeps retrying with growing pauses (up to a minute) instead of exiting. With ``until`` it is
    a batch job and such a failure ends it with exit code 1.
    """
    stop = stop or threading.Event()
    with open_app(config_path) as app:
        unknown = sorted(set(until) - set(app.chains))
        if unknown:
            raise UsageError(f"--until-height names an unknown chain: {', '.join(unknown)}")
        pipeline = build_pipeline(app, build_sinks(app.settings, stream))
        interval = min(
            (app.settings.chains[f.chain.name].poll_interval_seconds for f in pipeline.followers),
            default=1.0,
        )
        failures = 0
        try:
            while not stop.is_set():
                try:
                    pipeline.run_once(until)
                    failures = 0
                except RetriableRpcError as exc:
                    if until:
                        raise
                    failures += 1
                    pause = min(60.0, interval * 2**failures)
                    print(
                        f"drainwatch: node unreachable, retrying in {pause:.0f} s / "
                        f"ノードに接続できません。{pause:.0f} 秒後に再試行します: {exc}",
                        file=sys.stderr,
                    )
                    stop.wait(pause)
                    continue
                if until and all(_reached(app, chain, h) for chain, h in until.items()):
                    pipeline.catch_up()
                    return 0
                stop.wait(interval)
            return 0
        finally:
            pipeline.close()


def _reached(app: App, chain: str, height: int) -> bool:
    checkpoint = app.store.get_checkpoint(chain)
    return checkpoint is not None and checkpoint.height >= height
