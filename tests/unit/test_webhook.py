"""The webhook's request: canonical JSON body, the HMAC signature a receiver recomputes, and
the ``Retry-After`` forms it honours."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alerts.slack import parse_retry_after
from alerts.webhook import signature, webhook_body
from drainwatch import codec
from drainwatch.model import Alert, AlertState
from drainwatch.ports import Delivery
from tests.fixtures.outbox import T0, alert, cards


def delivery(previous: AlertState | None = None, news: str | None = None) -> Delivery:
    current = replace(alert(7, AlertState.CONFIRMED, label="取引所X 入金アドレス"), acked_by="山田")
    return Delivery(42, "webhook:https://x.example/", current, previous, news, T0, 1)


def test_body_is_canonical_json_with_the_alert_and_its_texts() -> None:
    row = delivery(AlertState.PROVISIONAL, "ack")
    card = cards()(row.alert)
    body = webhook_body(row, card)
    document = json.loads(body)
    assert set(document) == {"alert", "previous_state", "news", "delivery_id", "text_en", "text_ja"}
    assert codec.loads(Alert, json.dumps(document["alert"])) == row.alert
    assert document["alert"]["amount"] == str(row.alert.amount)  # amounts as decimal strings
    assert (document["previous_state"], document["news"], document["delivery_id"]) == (
        "provisional",
        "ack",
        42,
    )
    assert (document["text_en"], document["text_ja"]) == (card.text_en, card.text_ja)
    # canonical: sorted keys, no spaces, UTF-8 as is, so equal rows sign equally
    assert body == json.dumps(document, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()  # fmt: skip
    assert "取引所X".encode() in body
    assert webhook_body(row, card) == body


def test_first_delivery_has_no_previous_state() -> None:
    document = json.loads(webhook_body(delivery(), cards()(delivery().alert)))
    assert document["previous_state"] is None and document["news"] is None


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret", "1700000000", body) == f"sha256={expected}"
    assert signature("other", "1700000000", body) != signature("s3cret", "1700000000", body)
    assert signature("s3cret", "1700000001", body) != signature("s3cret", "1700000000", body)


def test_retry_after_forms() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after("soon") == 1.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("999999") == 3600.0
    later = datetime.now(UTC) + timedelta(seconds=120)
    from_date = parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert 100 < from_date <= 120
