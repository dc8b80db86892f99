"""The Slack layout of an alert (within Block Kit's limits, both languages), the news of a
change, the card of an alert whose chain is gone, and the console as an outbox sink."""

from __future__ import annotations

import io
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from alerts.blocks import alert_blocks, escape, fallback_text, news, news_text
from alerts.console import ConsoleSink
from drainwatch.model import AlertState
from drainwatch.ports import Delivery
from tests.fixtures.outbox import T0, alert, cards


def row(current: object, previous: AlertState | None = None, said: str | None = None) -> Delivery:
    return Delivery(9, "console", current, previous, said, T0, 1)  # type: ignore[arg-type]


def within_limits(blocks: list[dict[str, object]]) -> bool:
    if len(blocks) > 50:
        return False
    for block in blocks:
        text = str((block.get("text") or {}).get("text", ""))  # type: ignore[attr-defined]
        if block["type"] == "header" and len(text) > 150:
            return False
        if len(text) > 3000:
            return False
        fields = block.get("fields") or []
        if len(fields) > 10 or any(len(f["text"]) > 2000 for f in fields):  # type: ignore[index, arg-type]
            return False
    return True


def test_blocks_carry_every_fact_in_both_languages() -> None:
    current = replace(alert(3, AlertState.CONFIRMED, label="Mixer <A&B>"), acked_by="山田")
    card = cards()(current)
    blocks = alert_blocks(current, card)
    assert within_limits(blocks)
    fields = "\n".join(f["text"] for f in blocks[2]["fields"])
    for expected in (
        "cold1 (コールド / cold)",
        "1,234.000000000000000003 ETH",
        "Mixer &lt;A&amp;B&gt;",
        f"<https://explorer.example/tx/{current.tx_hash}|{current.tx_hash}>",
        "103",
        "`cold_outflow`",
        "重大 / CRITICAL",
        "確定 / confirmed",
        "山田",
    ):
        assert expected in fields
    assert blocks[0]["type"] == "header" and "【重大】" in blocks[0]["text"]["text"]
    assert fallback_text(card) == f"{card.text_ja}\n\n{card.text_en}"


@given(label=st.text(max_size=6000), rule=st.text(min_size=1, max_size=500))
def test_blocks_stay_within_block_kit_limits(label: str, rule: str) -> None:
    current = replace(alert(1, label=label or None), rule_id=rule, acked_by=label or None)
    assert within_limits(alert_blocks(current, cards()(current)))


def test_news_of_each_change() -> None:
    pending = alert(1)
    provisional = alert(1, AlertState.PROVISIONAL)
    assert news(row(pending)) is None
    assert news(row(provisional, AlertState.PROVISIONAL)) is None
    assert news(row(provisional, AlertState.PENDING)) == (
        "pending → provisional",
        "未承認 → 暫定",
    )
    retracted = alert(1, AlertState.RETRACTED)
    assert news(row(retracted, AlertState.PROVISIONAL)) == (
        "RETRACTED: block orphaned",
        "取消：ブロックが孤立しました",
    )
    acked = replace(provisional, acked_by="yamada")
    assert news(row(acked, AlertState.PROVISIONAL, "ack")) == (
        "acknowledged by yamada",
        "yamada が確認しました",
    )
    text = news_text(row(acked, AlertState.PROVISIONAL, "ack"))
    assert text is not None and "alert-0001" in text


def test_an_alert_of_a_chain_no_longer_configured_still_has_a_card() -> None:
    gone = replace(alert(1), chain="polygon")
    card = cards()(gone)
    assert "polygon" in card.text_en and gone.id in card.text_ja
    assert within_limits(alert_blocks(gone, card))


def test_escape() -> None:
    assert escape("<@U1> & <!here>") == "&lt;@U1&gt; &amp; &lt;!here&gt;"


def test_console_prints_news_then_the_alert() -> None:
    out = io.StringIO()
    console = ConsoleSink(out)
    current = alert(1, AlertState.CONFIRMED)
    card = cards()(current)
    assert console.send(row(current, AlertState.PROVISIONAL), card, None) is None
    text = out.getvalue()
    assert text.startswith(">> 暫定 → 確定\n>> provisional → confirmed\n")
    assert card.text_ja in text and card.text_en in text
    assert console.delivered == ["alert-0001"] and console.name == "console"
