"""What ``drainwatch check-config`` prints for a valid config: no URLs, no credentials.

It ends with what this version validates but does not act on yet (``unenforced``), so that a
configured setting is never mistaken for a working one; ``drainwatch watch``
prints the same list when it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from drainwatch.config_models import ChainSettings, WalletSettings
from drainwatch.model import ChainKind

if TYPE_CHECKING:
    from drainwatch.config import Settings


def summary_lines(settings: Settings) -> list[str]:
    ex = settings.exchange
    name = f"{ex.name} / {ex.name_ja}" if ex.name_ja else ex.name
    license_id = f" [{ex.license_id}]" if ex.license_id else ""
    lines = [
        "OK: config is valid / 設定は有効です",
        f"exchange / 交換業者: {name}{license_id}",
        f"store / 保存先: {_store_kind(settings.store.url)}",
        f"bus / イベントバス: {_bus(settings)}",
    ]
    for chain_name, chain in settings.chains.items():
        lines.append(_chain_line(chain_name, chain))
        for wallet_name, wallet in settings.wallets.items():
            if wallet.chain == chain_name:
                lines.append(_wallet_line(wallet_name, wallet))
    channels = ", ".join(_channel(c) for c in settings.alerts.channels) or "none / なし"
    lines.append(f"alerts / アラート: {channels}")
    lines.append(f"labels / ラベル: {len(settings.labels)} source(s)")
    r = settings.reports
    lines.append(f"reports / レポート: lang={r.lang}, TLP:{r.tlp.upper()}, out_dir={r.out_dir}")
    pending = unenforced(settings)
    if pending:
        lines.append(
            "not yet enforced / 未対応 (validated, but this version does not act on it yet / "
            "検証済みですが、このバージョンではまだ動作しません):"
        )
        lines.extend(f"  - {en} / {ja}" for en, ja in pending)
    return lines


def unenforced(settings: Settings) -> list[tuple[str, str]]:
    """What the config sets up that this version validates but does not act on yet, as
    ``(English, Japanese)`` pairs; only what the given config uses, ``[]`` when nothing."""
    out: list[tuple[str, str]] = []
    evm = [name for name, c in settings.chains.items() if c.kind is ChainKind.EVM]
    if evm:
        names = ", ".join(evm)
        out.append(
            (
                f"EVM chains ({names}): a Safe MultiSend batch waiting in the mempool is alerted "
                "as one delegatecall, its inner calls once mined",
                f"EVM チェーン（{names}）: メモリプール中の Safe MultiSend は delegatecall として"
                "通知し、内部の呼び出しは取り込み後に通知",
            )
        )
    bitcoin = [name for name, c in settings.chains.items() if c.kind is ChainKind.BITCOIN]
    if bitcoin:
        names = ", ".join(bitcoin)
        out.append(
            (
                f"bitcoin chains ({names}): a pending spend of a coin that is itself still "
                "unconfirmed (a chain of mempool transactions) is alerted once mined",
                f"Bitcoin チェーン（{names}）: 未承認のコインをさらに送金する未承認取引は、"
                "ブロック取り込み後に通知",
            )
        )
    if settings.labels:
        out.append(
            (
                f"labels ({len(settings.labels)} source(s)): read at start for the "
                "labelled-destination rule; `drainwatch labels import` and tracing come with "
                "issue #6",
                f"ラベル（{len(settings.labels)} 件）: 起動時に読み込み、送金先ラベルのルールで"
                "使用。labels import と追跡は issue #6 から",
            )
        )
    return out


def _store_kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return f"sqlite ({url.removeprefix('sqlite://').removeprefix('/') or ':memory:'})"
    return f"postgresql (host {urlsplit(url).hostname or 'local socket'})"


def _bus(settings: Settings) -> str:
    bus = settings.bus
    if bus.kind == "kafka":
        servers = len(bus.bootstrap_servers)
        return f"kafka ({servers} bootstrap server(s), topic prefix {bus.topic_prefix})"
    return "inprocess"


def _chain_line(name: str, chain: ChainSettings) -> str:
    chain_id = f", chain_id {chain.chain_id}" if chain.chain_id is not None else ""
    symbols = [chain.native_symbol, *(t.symbol for t in chain.tokens)]
    return (
        f"chain / チェーン {name}: {chain.kind.value} {chain.network}{chain_id}, "
        f"{len(chain.rpc)} RPC endpoint(s), {chain.confirmations} confirmation(s), "
        f"assets / 資産: {', '.join(symbols)}, new blocks / 新ブロック検知: {_heads(chain)}"
    )


def _heads(chain: ChainSettings) -> str:
    """How ``watch`` learns of new blocks: a ``newHeads`` subscription on the first WebSocket
    endpoint (polling goes on as the safety net), else polling alone. A URL held in an
    environment variable is not read here: only what it would change is said."""
    polling = f"polling every {chain.poll_interval_seconds:g} s"
    polling_ja = f"{chain.poll_interval_seconds:g} 秒ごとのポーリング"
    if chain.kind is not ChainKind.EVM:
        return f"{polling} / {polling_ja}"
    for i, endpoint in enumerate(chain.rpc):
        if endpoint.url is None:
            return (
                f"{polling}, or newHeads if the URL in {endpoint.url_env} (rpc[{i}]) is ws(s):// "
                f"/ {polling_ja}（{endpoint.url_env} が ws(s):// なら newHeads 購読）"
            )
        if urlsplit(endpoint.url).scheme in ("ws", "wss"):
            return (
                f"newHeads subscription on rpc[{i}] + {polling} / "
                f"rpc[{i}] の newHeads 購読 + {polling_ja}"
            )
    return f"{polling} / {polling_ja}"


def _wallet_line(name: str, wallet: WalletSettings) -> str:
    custody = wallet.custody
    kind = custody.kind.value
    if custody.threshold is not None:
        kind += f" {custody.threshold}-of-{len(custody.signers)}"
    keys = [f"{len(wallet.addresses)} address(es)"]
    if wallet.xpubs:
        keys.append(f"{len(wallet.xpubs)} xpub(s)")
    if wallet.descriptors:
        keys.append(f"{len(wallet.descriptors)} descriptor(s)")
    limits = f", limits / 限度額: {', '.join(wallet.limits)}" if wallet.limits else ""
    return f"  wallet / ウォレット {name}: {wallet.role.value} ({kind}), {', '.join(keys)}{limits}"


def _channel(channel: object) -> str:
    kind = getattr(channel, "kind", "?")
    target = getattr(channel, "channel", None)
    return f"{kind} {target}" if target else str(kind)
