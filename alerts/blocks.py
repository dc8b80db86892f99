"""What an alert looks like in Slack: its card, its Block Kit message and the news of a change.

The card is made from the alert as the outbox row carries it (its state at that change), so a
retried row shows what it showed the first time. Slack shows the blocks; its notifications,
search and screen readers use the plain ``text`` (render()'s, Japanese then English), so both
carry the same facts. Slack refuses a message beyond its limits, and a refused message would
hold the alert's later rows up: every text is clipped to them here (a header ≤ 150 characters,
a section ≤ 3000, a field ≤ 2000 and ≤ 10 fields, ≤ 50 blocks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerts.render import amount_text, render, show_address
from alerts.rules import WalletBook
from drainwatch.codec import format_time
from drainwatch.model import Alert, AlertState, Asset, Chain, ChainKind, Severity
from drainwatch.ports import AlertCard, Delivery

HEADER_CHARS = 150
SECTION_CHARS = 3000
FIELD_CHARS = 2000
MAX_FIELDS = 10
MAX_BLOCKS = 50
#: Slack truncates a message's ``text`` beyond 40,000 characters; well below that here.
TEXT_CHARS = 12000

_SEVERITY = {
    Severity.INFO: "情報 / INFO",
    Severity.WARNING: "警告 / WARNING",
    Severity.HIGH: "高 / HIGH",
    Severity.CRITICAL: ":rotating_light: 重大 / CRITICAL",
}
_STATE = {
    AlertState.PENDING: ("未承認", "pending"),
    AlertState.PROVISIONAL: ("暫定", "provisional"),
    AlertState.CONFIRMED: ("確定", "confirmed"),
    AlertState.RETRACTED: ("取消", "RETRACTED"),
    AlertState.SUPERSEDED: ("引継ぎ", "superseded"),
    AlertState.EXECUTED: ("実行済み", "EXECUTED"),
}
_ROLE = {"hot": "ホット", "warm": "ウォーム", "cold": "コールド"}


class CardMaker:
    """Makes the card of an alert from the configured chains, assets and wallets: the
    notifier's ``describe``. An alert of a chain no longer configured still gets a card (its
    raw values): an outbox row must never wait on a config change."""

    def __init__(
        self,
        chains: Mapping[str, Chain],
        assets: Mapping[str, Mapping[str, Asset]],
        book: WalletBook,
    ) -> None:
        self._chains = chains
        self._assets = assets
        self._book = book

    def __call__(self, alert: Alert) -> AlertCard:
        chain = self._chains.get(alert.chain) or _unknown_chain(alert.chain)
        wallet = self._book.get(alert.wallet)
        role = str(wallet.role) if wallet else "?"
        text = render(alert, chain, self._assets.get(alert.chain, {}), self._book)
        own = self._book.owner(alert.chain, alert.counterparty) if alert.counterparty else None
        label = dict(alert.facts).get("label")
        if label is None and own is not None:
            label = f"自社ウォレット / own wallet {own.name}"
        tx_url = None
        if chain.explorer_tx_url and alert.tx_hash:
            tx_url = chain.explorer_tx_url.replace("{tx}", alert.tx_hash)
        return AlertCard(
            text_en=text.en,
            text_ja=text.ja,
            wallet=alert.wallet,
            role=role,
            amount=amount_text(alert, chain, self._assets.get(alert.chain, {})),
            destination=show_address(chain, alert.counterparty) if alert.counterparty else None,
            destination_label=label,
            tx_url=tx_url,
        )


def _unknown_chain(name: str) -> Chain:
    """A chain no longer in the config: its alert is still shown in full, amounts in base units
    (never guessed decimals)."""
    return Chain(name, ChainKind.EVM, "unknown (not in the config)", "base units", 0)


def fallback_text(card: AlertCard) -> str:
    """The message's plain text: Japanese, then English."""
    return _clip(f"{card.text_ja}\n\n{card.text_en}", TEXT_CHARS)


def alert_blocks(alert: Alert, card: AlertCard) -> list[dict[str, Any]]:
    """The Block Kit layout of the alert's one message, in its current state."""
    state_ja, state_en = _STATE[alert.state]
    first_ja = card.text_ja.splitlines()[0] if card.text_ja else alert.rule_id
    first_en = card.text_en.splitlines()[0] if card.text_en else alert.rule_id
    role = f"{_ROLE.get(card.role, card.role)} / {card.role}"
    destination = "-" if card.destination is None else f"`{escape(card.destination)}`"
    if card.destination_label:
        destination += f"\n{escape(card.destination_label)}"
    tx = "-"
    if alert.tx_hash:
        tx = f"`{escape(alert.tx_hash)}`"
        if card.tx_url:
            tx = f"<{_link(card.tx_url)}|{escape(alert.tx_hash)}>"
    block = "-" if alert.block is None else f"{alert.block.height}\n`{escape(alert.block.hash)}`"
    ack = "未確認 / not acknowledged"
    if alert.acked_by:
        when = format_time(alert.acked_at) if alert.acked_at else ""
        ack = f"{escape(alert.acked_by)} {when}".strip()
    fields = [
        ("ウォレット / Wallet", f"{escape(card.wallet)} ({escape(role)})"),
        ("金額 / Amount", escape(card.amount)),
        ("送金先 / Destination", destination),
        ("取引 / Transaction", tx),
        ("ブロック / Block", block),
        ("チェーン / Chain", escape(alert.chain)),
        ("ルール / Rule", f"`{escape(alert.rule_id)}`"),
        ("重大度 / Severity", _SEVERITY[alert.severity]),
        ("状態 / State", f"*{state_ja} / {state_en}*"),
        ("確認 / Acknowledged", ack),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_clip(first_ja, HEADER_CHARS))},
        {"type": "section", "text": _mrkdwn(escape(first_en), SECTION_CHARS)},
        {
            "type": "section",
            "fields": [_mrkdwn(f"*{k}*\n{v}", FIELD_CHARS) for k, v in fields[:MAX_FIELDS]],
        },
        {"type": "divider"},
        {"type": "section", "text": _mrkdwn(_code(card.text_ja), SECTION_CHARS)},
        {"type": "section", "text": _mrkdwn(_code(card.text_en), SECTION_CHARS)},
        {"type": "context", "elements": [_mrkdwn(f"drainwatch alert `{escape(alert.id)}`")]},
    ]
    return blocks[:MAX_BLOCKS]


def news(delivery: Delivery) -> tuple[str, str] | None:
    """What a later row says in the message's thread, (English, Japanese); None for a row that
    only brings the message up to date (an alert's first row, a replay of its state)."""
    alert, before = delivery.alert, delivery.previous_state
    if delivery.news == "ack":
        who = alert.acked_by or "?"
        return f"acknowledged by {who}", f"{who} が確認しました"
    if delivery.news:
        return delivery.news, delivery.news
    if before is None or before is alert.state:
        return None
    if alert.state is AlertState.RETRACTED:
        if alert.block is None:
            return "WITHDRAWN: the transaction left the mempool", "取消：未承認のまま取り下げ"
        return "RETRACTED: block orphaned", "取消：ブロックが孤立しました"
    old_ja, old_en = _STATE[before]
    new_ja, new_en = _STATE[alert.state]
    return f"{old_en} → {new_en}", f"{old_ja} → {new_ja}"


def news_text(delivery: Delivery) -> str | None:
    said = news(delivery)
    if said is None:
        return None
    en, ja = said
    return _clip(f"{ja}\n{en}  (alert {delivery.alert.id})", TEXT_CHARS)


def escape(text: str) -> str:
    """Slack's three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str) -> str:
    return url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")


def _code(text: str) -> str:
    return f"```{escape(text)}```"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text or "-", "emoji": True}


def _mrkdwn(text: str, limit: int = SECTION_CHARS) -> dict[str, Any]:
    if len(text) > limit and text.endswith("```"):  # keep the code block closed
        text = _clip(text[:-3], limit - 3) + "```"
    return {"type": "mrkdwn", "text": _clip(text, limit)}
