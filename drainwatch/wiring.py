"""The one place that turns settings into adapters and connects them.

Nothing else in drainwatch reads the config file or the environment: secrets named by ``*_env``
fields are looked up here, optional dependencies (Kafka, PostgreSQL drivers, web3 test chains)
are imported here, lazily, and everything else receives what it needs through constructors.
"""

from __future__ import annotations

import base64
import logging
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from alerts.rules import WalletBook
from drainwatch.errors import ConfigError, UsageError
from drainwatch.model import Asset, Chain, ChainKind, Wallet
from drainwatch.pipeline import Pipeline
from drainwatch.policy import label_book, rule_policy
from drainwatch.ports import AlertSink, DeliverySink, EventBus, JsonRpc, Store
from drainwatch.processor import Processor

# Re-exported: the alert wiring lives in wiring_alerts, callers import it from here too.
from drainwatch.wiring_alerts import (
    Intake as Intake,
)
from drainwatch.wiring_alerts import (
    _env as _env,
)
from drainwatch.wiring_alerts import (
    build_notifier as build_notifier,
)
from drainwatch.wiring_alerts import (
    build_sinks as build_sinks,
)
from drainwatch.wiring_alerts import (
    delivery_sinks as delivery_sinks,
)
from drainwatch.wiring_alerts import (
    sink_names as sink_names,
)
from graph.labels import LabelBook
from watchers.bitcoin.derive import ScriptBook
from watchers.bitcoin.follower import BitcoinFollower
from watchers.bitcoin.node import BITCOIN_ANSWER_CHECKS, network_check
from watchers.evm.answers import EVM_ANSWER_CHECKS
from watchers.evm.follower import EvmFollower, chain_id_check
from watchers.follow import Follower
from watchers.heads import HeadWatch
from watchers.jsonrpc import HttpJsonRpc
from watchers.rpc_stack import FailoverRpc
from watchers.wsrpc import WS_SCHEMES, WsJsonRpc

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
    #: Per Bitcoin chain: the watched scripts (configured and derived addresses).
    scripts: dict[str, ScriptBook] = field(default_factory=dict)
    #: The config's label sources, read at start (None: none configured).
    labels: LabelBook | None = None

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
    book = WalletBook(settings.domain_wallets())
    try:
        scripts = build_script_books(settings)
    except ConfigError:
        store.close()
        bus.close()
        raise
    for name, script_book in scripts.items():
        book.derive(name, script_book.owner_of_address)
    try:
        labels = label_book(settings) if settings.labels else None
    except ConfigError:
        store.close()
        bus.close()
        raise
    return App(settings, store, bus, chains, book, assets, scripts, labels)


def build_script_books(settings: Settings) -> dict[str, ScriptBook]:
    """Per Bitcoin chain, the watched scripts of its wallets: listed addresses and the first
    ``gap_limit`` of every xpub and descriptor chain. A key that cannot be derived from public
    keys (a hardened step after the xpub, say) is a ``ConfigError``."""
    wallets = settings.domain_wallets()
    scripts: dict[str, ScriptBook] = {}
    for name, chain in settings.chains.items():
        if chain.kind is ChainKind.BITCOIN:
            mine = [w for w in wallets if w.chain == name]
            try:
                scripts[name] = ScriptBook(mine, chain.address_params(), gap_limit=chain.gap_limit)
            except ValueError as exc:
                raise ConfigError(f"chains.{name}", str(exc)) from None
    return scripts


@contextmanager
def open_app(config_path: Path, *, create: bool = True) -> Iterator[App]:
    from drainwatch.config import load_config

    app = build_app(load_config(config_path), create=create)
    try:
        yield app
    finally:
        app.close()


def build_rpc(name: str, chain: ChainSettings) -> FailoverRpc:
    """Every configured endpoint of a chain behind failover; URLs and credentials named by
    ``url_env`` / ``auth_env`` come from the environment."""

    endpoints: list[JsonRpc] = [_endpoint(name, i, chain) for i in range(len(chain.rpc))]
    if chain.kind is ChainKind.BITCOIN:
        return FailoverRpc(
            endpoints,
            verify=network_check(name, chain.network),
            checks=BITCOIN_ANSWER_CHECKS,
        )
    verify = chain_id_check(name, chain.chain_id) if chain.chain_id is not None else None
    return FailoverRpc(endpoints, verify=verify, checks=EVM_ANSWER_CHECKS)


def _endpoint(name: str, i: int, chain: ChainSettings) -> HttpJsonRpc | WsJsonRpc:
    """One endpoint's transport, picked by its URL's scheme: http(s) or a WebSocket."""
    where = f"chains.{name}.rpc[{i}]"
    endpoint = chain.rpc[i]
    url = _endpoint_url(where, endpoint.url, endpoint.url_env, chain.kind)
    auth: tuple[str, str] | None = None
    headers: dict[str, str] = {}
    if endpoint.auth_env:
        secret = _env(f"{where}.auth_env", endpoint.auth_env)
        if ":" in secret:
            user, _, password = secret.partition(":")
            auth = (user, password)
        else:
            headers["Authorization"] = f"Bearer {secret}"
    if urlsplit(url).scheme in WS_SCHEMES:
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return WsJsonRpc(url, headers=headers)
    bitcoin = chain.kind is ChainKind.BITCOIN
    return HttpJsonRpc(url, basic_auth=auth, headers=headers, core_errors=bitcoin)


def _endpoint_url(where: str, url: str | None, url_env: str | None, kind: ChainKind) -> str:
    """The endpoint's URL, from the file or the environment, with a scheme `watch` can reach.

    Messages name the scheme, never the URL: one from ``url_env`` may carry an API key."""
    field_path = f"{where}.url" if url else f"{where}.url_env"
    url = url or _env(field_path, url_env)
    parts = urlsplit(url)
    try:
        valid = bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:
        valid = False
    if parts.scheme not in ("http", "https", *WS_SCHEMES) or not valid:
        shown = f"{parts.scheme}://" if parts.scheme else "a value without a scheme"
        raise ConfigError(
            field_path,
            f"`drainwatch watch` reaches http://, https://, ws:// and wss:// endpoints "
            f"(got {shown}, or no host) / http://・https://・ws://・wss:// のエンドポイントのみ"
            "接続できます",
        )
    if parts.scheme in WS_SCHEMES and kind is not ChainKind.EVM:
        raise ConfigError(
            field_path,
            "Bitcoin Core serves JSON-RPC over http(s) only, not WebSocket / "
            "Bitcoin Core の JSON-RPC は http(s) のみ（WebSocket 不可）",
        )
    return url


def build_head_watches(app: App, chains: Iterable[str]) -> dict[str, HeadWatch]:
    """A ``newHeads`` subscription for each of ``chains`` that has a WebSocket endpoint (the
    first one listed), on a connection of its own; the other chains are polled only."""
    watches: dict[str, HeadWatch] = {}
    for name in chains:
        chain = app.settings.chains[name]
        for i, endpoint in enumerate(chain.rpc):
            where = f"chains.{name}.rpc[{i}]"
            url = _endpoint_url(where, endpoint.url, endpoint.url_env, chain.kind)
            if urlsplit(url).scheme in WS_SCHEMES:
                rpc = _endpoint(name, i, chain)
                assert isinstance(rpc, WsJsonRpc)
                watches[name] = HeadWatch(
                    name, rpc, on_lost=_report_heads_lost, on_restored=_report_heads_restored
                )
                break
    return watches


def build_pipeline(
    app: App,
    sinks: Sequence[AlertSink | DeliverySink],
    *,
    rpc_overrides: Mapping[str, JsonRpc] | None = None,
    start_heights: Mapping[str, int] | None = None,
) -> Pipeline:
    topic = app.topic(EVENTS_TOPIC)
    notifier = build_notifier(app, sinks)
    wake = threading.Event()
    processor = Processor(
        app.store,
        app.book,
        app.chains,
        app.assets,
        rule_policy(app.settings),
        notifier.sink_names,
        clock=lambda: datetime.now(UTC),
        on_commit=wake.set,
        labels=app.labels,
    )
    in_process = app.settings.bus.kind == "inprocess"
    subscription = app.bus.subscribe(topic, app.topic(PROCESSOR_GROUP))
    # In process, an empty poll means drained: no reason to wait on it.
    pipeline = Pipeline(
        processor,
        subscription,
        poll_timeout=0.0 if in_process else 0.2,
        notifier=notifier,
        wake=wake,
    )
    # The in-process bus keeps nothing across a restart: the processor must have handled a
    # block's events before the watcher's checkpoint passes it, or a crash would lose them.
    after_publish = pipeline.settle if in_process else None
    for name, chain in app.chains.items():
        overrides = rpc_overrides or {}
        prepare = None
        if name in overrides:
            rpc: JsonRpc = overrides[name]
        else:
            failover = rpc = build_rpc(name, app.settings.chains[name])
            # Every endpoint's network is checked by the chain's first step, in its own thread:
            # a backup on the wrong network is found at start, not when the primary fails.
            prepare = failover.verify_all
        settings = app.settings.chains[name]
        start_height = (start_heights or {}).get(name)
        follower: Follower[Any]
        if chain.kind is ChainKind.BITCOIN:
            follower = BitcoinFollower(
                chain,
                rpc,
                app.store,
                app.bus,
                topic,
                app.scripts[name],
                settings.address_params(),
                start_height=start_height,
                max_reorg_depth=settings.max_reorg_depth,
                after_publish=after_publish,
                prepare=prepare,
            )
        else:
            follower = EvmFollower(
                chain,
                rpc,
                app.store,
                app.bus,
                topic,
                app.book.addresses(name),
                start_height=start_height,
                max_reorg_depth=settings.max_reorg_depth,
                after_publish=after_publish,
                prepare=prepare,
                safes=app.book.multisig_addresses(name),
                wallets={
                    a: w.name for w in app.book.wallets if w.chain == name for a in w.addresses
                },
            )
        pipeline.followers.append(follower)
    return pipeline


def _report_heads_lost(chain: str, exc: Exception, pause: float) -> None:
    print(
        f"drainwatch: {chain}: newHeads subscription down ({exc}) — polling meanwhile, "
        f"subscribing again in {pause:g} s / newHeads の購読が切れています。{pause:g} 秒後に"
        "再購読します（その間はポーリングで監視を継続）",
        file=sys.stderr,
    )


def _report_heads_restored(chain: str) -> None:
    print(
        f"drainwatch: {chain}: newHeads subscription restored / newHeads の購読を再開しました",
        file=sys.stderr,
    )
