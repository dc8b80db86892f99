"""Alert text in English and Japanese. Pure: the same alert always renders the same text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from alerts.rules import COLD_OUTFLOW, CONTROL_PREFIX, WalletBook
from drainwatch.addresses import is_valid_evm_address, to_checksum
from drainwatch.model import (
    NATIVE_ASSET_ID,
    Alert,
    AlertState,
    Asset,
    Chain,
    ChainKind,
    Custody,
    Severity,
)
from drainwatch.units import format_amount

_SEVERITY = {
    Severity.INFO: ("INFO", "情報"),
    Severity.WARNING: ("WARNING", "警告"),
    Severity.HIGH: ("HIGH", "高"),
    Severity.CRITICAL: ("CRITICAL", "重大"),
}
_STATE = {
    AlertState.PENDING: ("pending (mempool)", "未承認（メモリプール）"),
    AlertState.PROVISIONAL: ("provisional (in a block)", "暫定（ブロック取り込み済み）"),
    AlertState.CONFIRMED: ("confirmed", "確定"),
    AlertState.RETRACTED: ("RETRACTED (block orphaned)", "取消（ブロックが孤立）"),
}
_RULE_TITLE = {
    COLD_OUTFLOW: ("Outflow from cold wallet", "コールドウォレットからの送金"),
    CONTROL_PREFIX + "approval": ("Token approval by wallet", "ウォレットによるトークン承認"),
    CONTROL_PREFIX + "approval_for_all": (
        "Operator approved for all tokens",
        "全トークンの操作権限の付与",
    ),
    CONTROL_PREFIX + "owner_added": ("Multisig owner added", "マルチシグ署名者の追加"),
    CONTROL_PREFIX + "owner_removed": ("Multisig owner removed", "マルチシグ署名者の削除"),
    CONTROL_PREFIX + "threshold_changed": ("Multisig threshold changed", "マルチシグ閾値の変更"),
    CONTROL_PREFIX + "guard_changed": ("Safe guard changed", "Safe ガードの変更"),
    CONTROL_PREFIX + "module_enabled": ("Safe module enabled", "Safe モジュールの有効化"),
    CONTROL_PREFIX + "master_copy_changed": (
        "Safe singleton (implementation) changed",
        "Safe シングルトン（実装）の変更",
    ),
    CONTROL_PREFIX + "implementation_changed": (
        "Proxy implementation changed",
        "プロキシ実装の変更",
    ),
}
_ROLE = {"hot": "ホット", "warm": "ウォーム", "cold": "コールド"}


@dataclass(frozen=True)
class AlertText:
    en: str
    ja: str


def amount_text(alert: Alert, chain: Chain, assets: Mapping[str, Asset]) -> str:
    if alert.amount is None:
        return "-"
    if alert.asset in (None, NATIVE_ASSET_ID):
        return f"{format_amount(alert.amount, chain.native_decimals)} {chain.native_symbol}"
    asset = assets.get(alert.asset or "")
    if asset is None:  # an unknown token: show base units and the contract, never guess decimals
        return f"{alert.amount} base units of token {alert.asset}"
    return f"{format_amount(alert.amount, asset.decimals)} {asset.symbol}"


def _custody_text(custody: Custody) -> str:
    if custody.threshold is not None and custody.signers:
        return f"{custody.kind} {custody.threshold}-of-{len(custody.signers)}"
    return str(custody.kind)


def show_address(chain: Chain, address: str) -> str:
    """An address as people compare it: EVM addresses in their EIP-55 checksum form."""
    if chain.kind is ChainKind.EVM and is_valid_evm_address(address):
        return to_checksum(address)
    return address


def render(alert: Alert, chain: Chain, assets: Mapping[str, Asset], book: WalletBook) -> AlertText:
    sev_en, sev_ja = _SEVERITY[alert.severity]
    state_en, state_ja = _STATE[alert.state]
    title_en, title_ja = _RULE_TITLE.get(alert.rule_id, (alert.rule_id, alert.rule_id))
    wallet = book.get(alert.wallet)
    role = str(wallet.role) if wallet else "?"
    custody = _custody_text(wallet.custody) if wallet else "?"
    amount = amount_text(alert, chain, assets)
    own = book.owner(alert.chain, alert.counterparty) if alert.counterparty else None
    dest = show_address(chain, alert.counterparty) if alert.counterparty else "-"
    dest_en = f"{dest} (own wallet {own.name})" if own else dest
    dest_ja = f"{dest}（自社ウォレット {own.name}）" if own else dest
    block = f"{alert.block.height} ({alert.block.hash})" if alert.block else "-"
    link = ""
    if chain.explorer_tx_url and alert.tx_hash:
        link = "\n  " + chain.explorer_tx_url.replace("{tx}", alert.tx_hash)
    what_en, what_ja = f"amount {amount} → {dest_en}", f"金額 {amount} → 送金先 {dest_ja}"
    if alert.rule_id.startswith(CONTROL_PREFIX):
        what_en, what_ja = _control_text(alert, chain, assets, dest)
    en = (
        f"[{sev_en}] {title_en}: {alert.wallet} ({role}, {custody}) on {chain.name}\n"
        f"  {what_en}\n"
        f"  tx {alert.tx_hash or '-'}  block {block}\n"
        f"  state {state_en}  rule {alert.rule_id}  alert {alert.id}{link}"
    )
    ja = (
        f"【{sev_ja}】{title_ja}: {alert.wallet}（{_ROLE.get(role, role)}, {custody}）"
        f" チェーン {chain.name}\n"
        f"  {what_ja}\n"
        f"  取引 {alert.tx_hash or '-'}  ブロック {block}\n"
        f"  状態 {state_ja}  ルール {alert.rule_id}  アラート {alert.id}{link}"
    )
    return AlertText(en=en, ja=ja)


def _control_text(
    alert: Alert, chain: Chain, assets: Mapping[str, Asset], subject: str
) -> tuple[str, str]:
    kind = alert.rule_id.removeprefix(CONTROL_PREFIX)
    if kind == "approval":
        token = (alert.asset or "").split("/")[0]
        asset = assets.get(token)
        if asset is not None and alert.amount is not None and "/" not in (alert.asset or ""):
            allowance = f"{format_amount(alert.amount, asset.decimals)} {asset.symbol}"
        else:
            allowance = f"{alert.amount} base units of token {alert.asset}"
        return (
            f"spender {subject} may now move {allowance}",
            f"承認先 {subject} が {allowance} を移動可能になりました",
        )
    if kind == "approval_for_all":
        return (
            f"operator {subject} may now move every token of {alert.asset}",
            f"操作者 {subject} が {alert.asset} の全トークンを移動可能になりました",
        )
    if kind == "threshold_changed":
        return (f"new threshold {alert.amount}", f"新しい閾値 {alert.amount}")
    return (f"now {subject}", f"変更後 {subject}")
