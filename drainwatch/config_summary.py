"""What ``drainwatch check-config`` prints for a valid config: no URLs, no credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from drainwatch.config_models import ChainSettings, WalletSettings

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
    return lines


def _store_kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return f"sqlite ({url.removeprefix('sqlite:///') or ':memory:'})"
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
        f"assets / 資産: {', '.join(symbols)}"
    )


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
