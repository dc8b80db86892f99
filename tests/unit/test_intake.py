"""Parsing expectation documents (alerts/intake.py): every field checked against the config,
errors naming the field (and line), amounts exact, and JSON Lines files all or nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.intake import ExpectationInputError, ExpectationParser
from drainwatch.config import load_config_text

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
HOT = "0x407A11e7000000000000000000000000000000a1"
AWAY = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BTC_AWAY = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"

CONFIG = f"""
exchange: {{name: Test}}
chains:
  eth:
    kind: evm
    network: mainnet
    chain_id: 1
    rpc: [{{url: "http://127.0.0.1:1"}}]
    tokens: [{{symbol: USDC, contract: "{USDC}", decimals: 6}}]
  btc:
    kind: bitcoin
    network: mainnet
    rpc: [{{url: "http://127.0.0.1:2"}}]
wallets:
  hot: {{chain: eth, role: hot, custody: {{kind: single_key}}, addresses: ["{HOT}"]}}
  btc-hot: {{chain: btc, role: hot, custody: {{kind: single_key}}, addresses: ["{BTC_AWAY}"]}}
alerts: {{expectations: {{default_valid_seconds: 3600}}}}
"""


PARSER = ExpectationParser.for_settings(load_config_text(CONFIG))


@pytest.fixture
def parser() -> ExpectationParser:
    return PARSER


def doc(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "reference": "wd-1",
        "wallet": "hot",
        "destination": AWAY.lower(),
        "asset": "ETH",
        "amount": "1.5",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def refused(parser: ExpectationParser, document: object, field: str) -> str:
    with pytest.raises(ExpectationInputError) as info:
        parser.parse(document, NOW)
    assert info.value.field == field, str(info.value)
    assert field in str(info.value)
    return str(info.value)


def test_a_withdrawal_in_display_units(parser: ExpectationParser) -> None:
    parsed = parser.parse(doc(), NOW)
    e = parsed.expectation
    assert (e.reference, e.chain, e.wallet, e.asset) == ("wd-1", "eth", "hot", "native")
    assert e.amount == 15 * 10**17 and e.destination == AWAY  # EIP-55 form
    assert e.valid_until == NOW + timedelta(seconds=3600) and parsed.relative


def test_a_token_by_symbol_any_case_or_contract(parser: ExpectationParser) -> None:
    for asset in ("USDC", "usdc", USDC.lower(), USDC):
        e = parser.parse(doc(asset=asset, amount="2.000001"), NOW).expectation
        assert (e.asset, e.amount) == (USDC.lower(), 2_000_001)
    assert parser.parse(doc(asset="native"), NOW).expectation.asset == "native"


def test_base_units_and_explicit_validity(parser: ExpectationParser) -> None:
    until = "2025-03-02T09:00:00+09:00"
    parsed = parser.parse(doc(amount=None, amount_base_units="7", valid_until=until), NOW)
    assert parsed.expectation.amount == 7 and not parsed.relative
    assert parsed.expectation.valid_until == datetime(2025, 3, 2, tzinfo=UTC)
    zulu = parser.parse(doc(valid_until="2025-03-02T00:00:00Z"), NOW).expectation
    assert zulu.valid_until == datetime(2025, 3, 2, tzinfo=UTC)


def test_a_bitcoin_wallet_takes_its_chain(parser: ExpectationParser) -> None:
    e = parser.parse(
        doc(wallet="btc-hot", destination=BTC_AWAY.upper(), asset="BTC", amount="0.00000001"),
        NOW,
    ).expectation
    assert (e.chain, e.destination, e.amount) == ("btc", BTC_AWAY, 1)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (doc(reference=None), "reference"),
        (doc(reference=""), "reference"),
        (doc(reference=" wd-1"), "reference"),
        (doc(reference="x" * 201), "reference"),
        (doc(reference="a\nb"), "reference"),
        (doc(reference=7), "reference"),
        (doc(wallet="nope"), "wallet"),
        (doc(wallet=None), "wallet"),
        (doc(chain="btc"), "chain"),
        (doc(destination="0x123"), "destination"),
        (doc(destination=AWAY.replace("a", "A", 1)), "destination"),  # bad EIP-55 checksum
        (doc(destination=BTC_AWAY), "destination"),  # a Bitcoin address on an EVM chain
        (doc(asset="DOGE"), "asset"),
        (doc(asset=None), "asset"),
        (doc(amount="1.0000000000000000001"), "amount"),  # 19 decimals for an 18 one
        (doc(amount=1.5), "amount"),  # a JSON number: give a string
        (doc(amount="1e3"), "amount"),
        (doc(amount="-1"), "amount"),
        (doc(amount="0"), "amount"),
        (doc(amount=None), "amount"),
        (doc(amount_base_units="7"), "amount"),  # both
        (doc(amount=None, amount_base_units="1.5"), "amount_base_units"),
        (doc(amount=None, amount_base_units=str(2**256)), "amount_base_units"),
        (doc(valid_until="2025-03-02T00:00:00"), "valid_until"),  # no zone
        (doc(valid_until="tomorrow"), "valid_until"),
        (doc(valid_until="2025-03-01T11:00:00Z"), "valid_until"),  # past
        (doc(valid_until="2025-04-01T00:00:00Z"), "valid_until"),  # beyond 30 days
        (doc(amonut="1"), "amonut"),  # a typo is not silently ignored
        (["a list"], "document"),
    ],
)
def test_a_bad_document_names_its_field(
    parser: ExpectationParser, document: object, field: str
) -> None:
    message = refused(parser, document, field)
    assert "/" in message  # English / Japanese


def test_a_token_amount_finer_than_its_decimals(parser: ExpectationParser) -> None:
    message = refused(parser, doc(asset="USDC", amount="1.0000001"), "amount")
    assert "6 decimal places" in message


def test_json_text_duplicates_and_non_objects(parser: ExpectationParser) -> None:
    assert parser.parse_json(json.dumps(doc()).encode(), NOW).expectation.reference == "wd-1"
    with pytest.raises(ExpectationInputError, match="amount: given twice"):
        parser.parse_json('{"amount": "1", "amount": "2"}', NOW)
    with pytest.raises(ExpectationInputError, match="document"):
        parser.parse_json("{not json", NOW)
    with pytest.raises(ExpectationInputError, match="document"):
        parser.parse_json(b"\xff\xfe", NOW)


def test_a_file_is_all_or_nothing_and_names_the_line(parser: ExpectationParser) -> None:
    good = [json.dumps(doc(reference=f"wd-{i}")) for i in range(3)]
    text = "\n".join([good[0], "", good[1], json.dumps(doc(wallet="nope")), good[2]])
    with pytest.raises(ExpectationInputError) as info:
        parser.parse_lines(text, NOW, "batch.jsonl")
    assert info.value.line == 4
    assert str(info.value).startswith("batch.jsonl: line 4: wallet:")
    parsed = parser.parse_lines("\n".join(good) + "\n", NOW, "batch.jsonl")
    assert [p.expectation.reference for p in parsed] == ["wd-0", "wd-1", "wd-2"]


def test_valid_for_replaces_the_default(parser: ExpectationParser) -> None:
    parsed = parser.parse(doc(), NOW, valid_for=timedelta(minutes=30))
    assert parsed.expectation.valid_until == NOW + timedelta(minutes=30) and parsed.relative
    refused_long = doc()
    with pytest.raises(ExpectationInputError, match="valid_until"):
        parser.parse(refused_long, NOW, valid_for=timedelta(days=31))


@given(st.integers(min_value=1, max_value=2**256 - 1))
def test_display_amounts_are_exact(base_units: int) -> None:
    parser = PARSER
    whole, fraction = divmod(base_units, 10**18)
    text = f"{whole}.{fraction:018d}"
    assert parser.parse(doc(amount=text), NOW).expectation.amount == base_units
    via_units = parser.parse(doc(amount=None, amount_base_units=str(base_units)), NOW)
    assert via_units.expectation.amount == base_units
