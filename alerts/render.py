"""Alert text in English and Japanese. Pure: the same alert always renders the same text.

The verdicts on a pending alert say what comes next: SUPERSEDED, "mined in block X; the
block's alert takes over" (provisional at once, confirmed after N confirmations); EXECUTED, for
a kind nothing in a block reports, "EXECUTED in block X", titled as such and at the alert's own
severity: it is the news, not a hand-over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from alerts.rules import (
    BALANCE_FALL,
    COLD_OUTFLOW,
    CONTROL_PREFIX,
    LABELLED_DESTINATION,
    LIMIT_SINGLE,
    LIMIT_WINDOW,
    UNPLANNED_OUTFLOW,
    WalletBook,
)
from drainwatch.addresses import is_valid_evm_address, to_checksum
from drainwatch.model import (
    LAX_ENCODING,
    NATIVE_ASSET_ID,
    PENDING_INDEX,
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
    AlertState.SUPERSEDED: ("superseded", "引継ぎ"),
    AlertState.EXECUTED: ("EXECUTED", "実行済み"),
}
#: A pending verdict has no block: the transaction left the mempool unmined, or did nothing.
_WITHDRAWN = (
    "WITHDRAWN (dropped or replaced unmined, or mined but reverted / failed: nothing moved)",
    "取消（未承認のまま破棄・置換、またはブロックに取り込まれたが失敗：移動なし）",
)
_PENDING_NOTE = (
    "read from the calldata of a transaction still in the mempool: not executed yet",
    "メモリプール上の未承認トランザクションの入力データから読み取った内容です（未実行）",
)
_READ_NOTE = (
    "read from the calldata of the transaction while it waited in the mempool",
    "トランザクションがメモリプールにある間に入力データから読み取った内容です",
)
_LAX_NOTE = (
    "malformed encoding: a strict (ABI coder v2) decoder refuses it, but a Safe 1.1.1 (ABI "
    "coder v1) masks the dirty words and runs the DELEGATECALL all the same",
    "不正なエンコード：厳密な（ABI coder v2）デコーダは拒否しますが、Safe 1.1.1（ABI coder v1）"
    "は不正な上位ビットを無視して DELEGATECALL を実行します",
)
_RULE_TITLE = {
    COLD_OUTFLOW: ("Outflow from cold wallet", "コールドウォレットからの送金"),
    UNPLANNED_OUTFLOW: ("Unplanned outflow", "計画外の送金"),
    LIMIT_SINGLE: ("Single outflow above the wallet's limit", "1 回の送金が限度額を超過"),
    LIMIT_WINDOW: ("Outflows above the wallet's window limit", "期間内の送金合計が限度額を超過"),
    BALANCE_FALL: ("Wallet balance fell sharply", "ウォレット残高の急減"),
    LABELLED_DESTINATION: ("Outflow to a labelled address", "要注意ラベル付きアドレスへの送金"),
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
    CONTROL_PREFIX + "delegate_call": (
        "Safe transaction runs another contract's code (DELEGATECALL)",
        "Safe トランザクションによる外部コードの実行（DELEGATECALL）",
    ),
    CONTROL_PREFIX + "malformed_call": (
        "Token or Safe call whose arguments do not decode",
        "引数を解読できないトークン／Safe 呼び出し",
    ),
    CONTROL_PREFIX + "fallback_handler_changed": (
        "Safe fallback handler changed",
        "Safe フォールバックハンドラの変更",
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
        fixed = chain.kind is ChainKind.BITCOIN  # BTC is read with all 8 decimals
        amount = format_amount(alert.amount, chain.native_decimals, fixed=fixed)
        return f"{amount} {chain.native_symbol}"
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
    state_en, state_ja = _state_text(alert, chain)
    title_en, title_ja = _RULE_TITLE.get(alert.rule_id, (alert.rule_id, alert.rule_id))
    if alert.state is AlertState.EXECUTED:
        title_en, title_ja = f"EXECUTED: {title_en}", f"実行済み：{title_ja}"
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
    found = _facts_text(alert, chain, assets)
    if found is not None:
        what_en, what_ja = f"{what_en}\n  {found[0]}", f"{what_ja}\n  {found[1]}"
    if alert.subject[2].startswith(PENDING_INDEX):
        note_en, note_ja = _PENDING_NOTE if alert.state is AlertState.PENDING else _READ_NOTE
        what_en, what_ja = f"{what_en}\n  {note_en}", f"{what_ja}\n  {note_ja}"
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


def _state_text(alert: Alert, chain: Chain) -> tuple[str, str]:
    if alert.state is AlertState.RETRACTED and dict(alert.facts).get("retracted") == "planned":
        return (
            "RETRACTED: planned after all (the outflow matches what the exchange announced)",
            "取消：計画済み（事前登録された予定送金と一致）",
        )
    if alert.state is AlertState.RETRACTED and alert.block is None:
        return _WITHDRAWN
    if alert.state is AlertState.SUPERSEDED and alert.block is not None:
        height, n = alert.block.height, max(chain.confirmations, 1)
        return (
            f"superseded: mined in block {height}; the block's own alert takes over (provisional "
            f"now, confirmed after {n} confirmation(s); the same event, not a second one)",
            f"引継ぎ：ブロック {height} に取り込まれました。以後はこのブロックのアラートが"
            f"引き継ぎます（現在は暫定、{n} 承認後に確定。同じ事象であり、別の事象ではありません）",
        )
    if alert.state is AlertState.EXECUTED and alert.block is not None:
        height = alert.block.height
        return (
            f"EXECUTED in block {height}: mined and succeeded; no block event reports it, "
            "this alert is the record: act on it",
            f"ブロック {height} で実行されました（成功）。ブロックのイベントでは報告されないため、"
            "このアラートが唯一の記録です。対応してください",
        )
    return _STATE[alert.state]


def _control_text(
    alert: Alert, chain: Chain, assets: Mapping[str, Asset], subject: str
) -> tuple[str, str]:
    kind = alert.rule_id.removeprefix(CONTROL_PREFIX)
    if kind == "approval" and _maybe_token_zero(alert):
        token = show_address(chain, alert.asset) if alert.asset else "-"
        return (
            f"approve({subject}, 0) on {token}, a token not known to be ERC-20: an ERC-20 "
            f"revocation, or an ERC-721 approval of token id 0 to {subject} (the block's "
            "Approval event tells which)",
            f"{token} の approve({subject}, 0)（ERC-20 として登録されていないトークン）："
            f"ERC-20 の承認取消、または ERC-721 トークン ID 0 の {subject} への承認です"
            "（ブロックの Approval イベントでどちらか判明します）",
        )
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
    if kind == "delegate_call":
        en, ja = (
            f"the Safe would run the code of {subject} on its own storage: that code can "
            "rewrite its owners, threshold and singleton and move everything it holds (how "
            "the Bybit cold Safe was drained, Feb 2025)",
            f"Safe が {subject} のコードを自身のストレージ上で実行しようとしています。"
            "署名者・閾値・シングルトンの書き換えや全資産の移動が可能です"
            "（2025年2月の Bybit コールドウォレット流出の手口）",
        )
        if alert.amount == LAX_ENCODING:
            en, ja = f"{en}\n  {_LAX_NOTE[0]}", f"{ja}\n  {_LAX_NOTE[1]}"
        return en, ja
    if kind == "fallback_handler_changed":
        return (
            f"new fallback handler {subject}: it answers every call the Safe does not know, "
            "signature checks (EIP-1271) included",
            f"新しいフォールバックハンドラ {subject}：Safe が知らない呼び出し（EIP-1271 の"
            "署名検証を含む）すべてに応答します",
        )
    if kind == "malformed_call":
        called = show_address(chain, alert.asset) if alert.asset else "-"
        return (
            f"calls {called} with a token-transfer, approval or Safe selector whose "
            "arguments do not decode strictly: what it would do is not known",
            f"{called} をトークン送金・承認・Safe の関数セレクタで呼び出していますが、"
            "引数を厳密に解読できないため、実行内容は不明です",
        )
    if kind == "threshold_changed":
        return (f"new threshold {alert.amount}", f"新しい閾値 {alert.amount}")
    return (f"now {subject}", f"変更後 {subject}")


def _maybe_token_zero(alert: Alert) -> bool:
    """A pending ``approve(spender, 0)`` to a non-zero spender: the rules raise one only when
    the token is not known to be ERC-20, so it may be ERC-721's approval of token id 0."""
    spender = (alert.counterparty or "0x0").removeprefix("0x")
    return (
        alert.subject[2].startswith(PENDING_INDEX)
        and alert.amount == 0
        and spender.strip("0") != ""
    )


_CATEGORY = {"sanctioned": "制裁対象", "mixer": "ミキサー", "attacker": "攻撃者"}


def _facts_text(alert: Alert, chain: Chain, assets: Mapping[str, Asset]) -> tuple[str, str] | None:
    """What the outflow rules found (``alert.facts``), in words."""
    f = dict(alert.facts)

    def units(name: str) -> str:
        return amount_text(replace(alert, amount=int(f[name])), chain, assets)

    if alert.rule_id in (UNPLANNED_OUTFLOW, COLD_OUTFLOW) and "expectation" in f:
        n = f.get("open_expectations", "0")
        if "own_wallet" in f:
            own = f["own_wallet"]
            return (
                f"refill of own wallet {own} without an expectation (refills must be announced)",
                f"予定の登録がない自社ウォレット {own} への補充です（補充は事前登録が必要です）",
            )
        return (
            f"no matching expectation ({n} open with this amount, to other destinations)",
            f"一致する予定送金がありません（同じ金額の有効な予定 {n} 件は送金先が異なります）",
        )
    if alert.rule_id == LIMIT_SINGLE:
        amount, limit = units("amount"), units("max_single")
        return (
            f"single outflow {amount} above the limit {limit}",
            f"1 回の送金 {amount} が限度額 {limit} を超えています",
        )
    if alert.rule_id == LIMIT_WINDOW:
        total, limit, n = units("window_sum"), units("max_window"), f["outflows"]
        en_window, ja_window = _duration(int(f["window_seconds"]))
        return (
            f"{n} unplanned outflow(s) within {en_window} total {total}, above the limit {limit}",
            f"{ja_window}以内の計画外送金 {n} 件の合計 {total} が限度額 {limit} を超えています",
        )
    if alert.rule_id == BALANCE_FALL:
        before, after = units("balance_before"), units("balance_after")
        fall, share = f["fall_percent"], f["share_percent"]
        en_window, ja_window = _duration(int(f["window_seconds"]))
        return (
            f"balance fell from {before} to {after} within {en_window}: -{fall}% "
            f"(threshold {share}%)",
            f"残高が{ja_window}以内に {before} から {after} へ減少しました：-{fall}%"
            f"（基準 {share}%）",
        )
    if alert.rule_id == LABELLED_DESTINATION:
        category, label, source = f["category"], f["label"], f["label_source"]
        en = f"destination labelled {category}: {label} (source: {source})"
        kind = _CATEGORY.get(category, category)
        ja = f"送金先は{kind}としてラベル付けされています：{label}（出典：{source}）"
        if "expectation" in f:
            ref = f["expectation"]
            en += f"; announced as {ref}, alerted all the same"
            ja += f"。予定送金 {ref} として登録済みですが、通知します"
        return en, ja
    return None


def _duration(seconds: int) -> tuple[str, str]:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h", f"{seconds // 3600} 時間"
    if seconds % 60 == 0:
        return f"{seconds // 60} min", f"{seconds // 60} 分"
    return f"{seconds} s", f"{seconds} 秒"
