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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from alerts.console import ConsoleSink
from alerts.rules import RulePolicy, WalletBook
from drainwatch.errors import BusError, ConfigError, DrainwatchError, UsageError
from drainwatch.model import Asset, Chain, ChainKind, Severity, Wallet
from drainwatch.ports import AlertSink, EventBus, JsonRpc, Store, Subscription
from drainwatch.processor import Processor
from watchers.evm.follower import EvmFollower, chain_id_check

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


def build_store(settings: Settings, *, create: bool = True) -> Store:
    from drainwatch.store import open_store

    password = None
    if settings.store.password_env:
        password = _env("store.password_env", settings.store.password_env)
    return open_store(settings.store_url_resolved(), password=password, create=create)


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


def build_app(settings: Settings, *, create: bool = True) -> App:
    """``create=False`` for read-only commands: they never make an empty store and then report
    that it holds nothing."""
    chains = settings.domain_chains()
    store = build_store(settings, create=create)
    try:
        bus = build_bus(settings)
    except Exception:
        store.close()
        raise
    assets = {name: {a.asset_id: a for a in settings.assets(name)} for name in chains}
    return App(settings, store, bus, chains, WalletBook(settings.domain_wallets()), assets)


@contextmanager
def open_app(config_path: Path, *, create: bool = True) -> Iterator[App]:
    from drainwatch.config import load_config

    app = build_app(load_config(config_path), create=create)
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
    verify = None
    if chain.kind == "evm" and chain.chain_id is not None:
        verify = chain_id_check(name, chain.chain_id)
    rpc = FailoverRpc(endpoints, verify=verify)
    rpc.verify_all()  # a backup on the wrong network is found now, not when the primary fails
    return rpc


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
    return sinks or [ConsoleSink(stream)]


def rule_policy(settings: Settings) -> RulePolicy:
    rule = settings.alerts.rules.cold_outflow
    return RulePolicy(cold_outflow=rule.enabled, cold_outflow_severity=Severity(rule.severity))


class Pipeline:
    """Followers publish to the bus; the processor consumes; one loop drives both.

    Each chain fails on its own: a chain whose every endpoint is down is retried after a
    growing pause while the others go on being watched and alerted.
    """

    def __init__(
        self, processor: Processor, subscription: Subscription, poll_timeout: float = 0.2
    ) -> None:
        self.followers: list[EvmFollower] = []
        self.processor = processor
        self._subscription = subscription
        self._poll_timeout = poll_timeout
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}

    def run_once(
        self,
        until: Mapping[str, int] | None = None,
        *,
        on_error: Callable[[str, DrainwatchError, float], None] | None = None,
    ) -> int:
        """One round over every chain. Without ``on_error`` a failure propagates; with it, the
        failure is reported and that chain alone is paused (growing pauses, up to a minute)
        while the others go on: a bad node, a reorg too deep to locate or an endpoint on the
        wrong network stops watching on that chain, never on all of them."""
        blocks = 0
        for follower in self.followers:
            name = follower.chain.name
            if time.monotonic() < self._retry_at.get(name, 0.0):
                continue
            try:
                blocks += follower.step((until or {}).get(name))
                self._failures.pop(name, None)
            except DrainwatchError as exc:
                if on_error is None:
                    raise
                failures = self._failures[name] = self._failures.get(name, 0) + 1
                pause = min(60.0, 2.0**failures)
                self._retry_at[name] = time.monotonic() + pause
                on_error(name, exc, pause)
            self.drain()
        return blocks

    def drain(self) -> int:
        total = 0
        handle = self.processor.handle_message
        while (taken := self._subscription.poll(handle, timeout=self._poll_timeout)) > 0:
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
    processor = Processor(
        app.store,
        app.book,
        app.chains,
        app.assets,
        rule_policy(app.settings),
        sinks,
        clock=lambda: datetime.now(UTC),
    )
    in_process = app.settings.bus.kind == "inprocess"
    subscription = app.bus.subscribe(topic, app.topic(PROCESSOR_GROUP))
    # In process, an empty poll means drained: no reason to wait on it.
    pipeline = Pipeline(processor, subscription, poll_timeout=0.0 if in_process else 0.2)
    # The in-process bus keeps nothing across a restart: the processor must have handled a
    # block's events before the watcher's checkpoint passes it, or a crash would lose them.
    after_publish = pipeline.drain if in_process else None
    for name, chain in app.chains.items():
        if chain.kind is not ChainKind.EVM:
            continue  # the Bitcoin watcher arrives with issue #4; `watch` says so at start
        overrides = rpc_overrides or {}
        rpc = overrides[name] if name in overrides else build_rpc(name, app.settings.chains[name])
        pipeline.followers.append(
            EvmFollower(
                chain,
                rpc,
                app.store,
                app.bus,
                topic,
                app.book.addresses(name),
                start_height=(start_heights or {}).get(name),
                after_publish=after_publish,
            )
        )
    return pipeline


def run_watch(
    config_path: Path,
    until: Mapping[str, int],
    *,
    stop: threading.Event | None = None,
    stream: TextIO | None = None,
) -> int:
    """``drainwatch watch``: follow every chain until stopped or every ``until`` is reached.

    Without ``until`` it is a service: when every endpoint of a chain fails, it says so and
    retries that chain after growing pauses (up to a minute) while the other chains go on. With
    ``until`` it is a batch job and such a failure ends it with exit code 1.
    """
    stop = stop or threading.Event()
    with open_app(config_path) as app:
        pipeline = build_pipeline(app, build_sinks(app.settings, stream))
        watched = {f.chain.name for f in pipeline.followers}
        _check_until(until, app, watched)
        _warn_unenforced(app)
        interval = min(
            (app.settings.chains[name].poll_interval_seconds for name in watched), default=1.0
        )
        try:
            while not stop.is_set():
                pipeline.run_once(until, on_error=None if until else _report_node_failure)
                if until and all(_reached(app, chain, h) for chain, h in until.items()):
                    pipeline.catch_up()
                    return 0
                stop.wait(interval)
            return 0
        finally:
            pipeline.close()


def _check_until(until: Mapping[str, int], app: App, watched: set[str]) -> None:
    unknown = sorted(set(until) - set(app.chains))
    if unknown:
        raise UsageError(f"--until-height names an unknown chain: {', '.join(unknown)}")
    unwatched = sorted(set(until) - watched)
    if unwatched:
        raise UsageError(
            f"--until-height names a chain that is not followed yet: {', '.join(unwatched)}"
        )


def _report_node_failure(chain: str, exc: DrainwatchError, pause: float) -> None:
    print(
        f"drainwatch: {chain}: {exc} — this chain is retried in {pause:.0f} s, the others go "
        f"on / このチェーンは {pause:.0f} 秒後に再試行します（他のチェーンの監視は継続）",
        file=sys.stderr,
    )


def _warn_unenforced(app: App) -> None:
    """Say at start what the config asks for that this version does not act on yet."""
    from drainwatch.config_summary import unenforced

    for en, ja in unenforced(app.settings):
        print(f"drainwatch: not yet enforced / 未対応: {en} / {ja}", file=sys.stderr)


def _reached(app: App, chain: str, height: int) -> bool:
    checkpoint = app.store.get_checkpoint(chain)
    return checkpoint is not None and checkpoint.height >= height
