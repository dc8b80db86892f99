"""`drainwatch expect` and `drainwatch expectations` on a real SQLite store: what is registered,
what is refused (exit 2, nothing written), files all or nothing, and the listed status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drainwatch.cli import main
from drainwatch.model import BlockRef, Expectation
from drainwatch.ports import ExpectationRecord
from drainwatch.store import open_store
from tests.contract.test_store import transfer
from tests.unit.test_intake import AWAY, CONFIG, USDC


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "dw.yaml"
    path.write_text(CONFIG + 'store: {url: "sqlite:///dw.db"}\n')
    return str(path)


def expect(config: str, *extra: str) -> list[str]:
    return ["expect", config, "--reference", "wd-1", "--wallet", "hot", "--to", AWAY, *extra]


def listed(config: str, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["expectations", config, "--json", *extra]) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_expect_registers_and_lists(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(expect(config, "--amount", "1.5", "--valid-for", "2h")) == 0
    out = capsys.readouterr().out
    assert "wd-1" in out and "1.5 ETH" in out and "1 new" in out and "新規 1 件" in out
    [row] = listed(config, capsys)
    assert (row["reference"], row["wallet"], row["chain"]) == ("wd-1", "hot", "eth")
    assert (row["amount"], row["asset"], row["status"]) == (str(15 * 10**17), "native", "open")
    assert row["source"] == "cli" and row["used_by"] is None
    until = datetime.fromisoformat(row["valid_until"])
    assert timedelta(minutes=119) < until - datetime.now(UTC) <= timedelta(hours=2)
    # The same command again (a retry) is a replay, though "2h" now ends later.
    assert main(expect(config, "--amount", "1.5", "--valid-for", "2h")) == 0
    assert "0 new" in capsys.readouterr().out
    assert listed(config, capsys)[0]["valid_until"] == row["valid_until"]


def test_a_token_with_an_explicit_validity(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    until = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert main(expect(config, "--amount", "250", "--asset", "USDC", "--valid-until", until)) == 0
    [row] = listed(config, capsys)
    assert (row["asset"], row["amount"]) == (USDC.lower(), "250000000")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--amount", "1.5", "--wallet", "nope"], "wallet"),
        (["--amount", "0.0000000000000000001"], "amount"),
        (["--amount", "1", "--asset", "DOGE"], "asset"),
        (["--amount", "1", "--to", "0x1234"], "destination"),
        (["--amount", "1", "--valid-for", "soon"], "--valid-for"),
        (["--amount", "1", "--valid-for", "31d"], "valid_until"),
        (["--amount", "1", "--valid-until", "2020-01-01T00:00:00Z"], "valid_until"),
        (["--amount", "1", "--valid-until", "x", "--valid-for", "1h"], "not allowed"),
        ([], "--amount"),
        (["--amount", "1", "--file", "x.jsonl"], "--file"),
    ],
)
def test_bad_input_exits_2_naming_it_and_writes_nothing(
    config: str, extra: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(expect(config, *extra)) == 2  # a repeated option: the last one counts
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (Path(config).parent / "dw.db").exists() or listed(config, capsys) == []


def test_a_conflicting_reference_exits_2(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(expect(config, "--amount", "1")) == 0
    assert main(expect(config, "--amount", "2")) == 2
    err = capsys.readouterr().err
    assert "wd-1" in err and "amount" in err and "登録済み" in err
    assert [r["amount"] for r in listed(config, capsys)] == [str(10**18)]


def line(ref: str, **kw: Any) -> str:
    doc = {"reference": ref, "wallet": "hot", "destination": AWAY, "asset": "ETH", "amount": "1"}
    return json.dumps(doc | kw)


def test_a_file_all_or_nothing(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([line("wd-1"), line("wd-2", destination="nowhere"), ""]))
    assert main(["expect", config, "--file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: line 2: destination:" in err
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join([line("wd-1"), line("wd-2", amount_base_units="5", amount=None)]))
    assert main(["expect", config, "--file", str(good)]) == 2  # amount and amount_base_units
    good.write_text("\n".join([line("wd-1"), line("wd-2", asset="USDC", amount="3")]))
    assert main(["expect", config, "--file", str(good)]) == 0
    assert "2 expectation(s) registered, 2 new" in capsys.readouterr().out
    rows = listed(config, capsys)
    assert [(r["reference"], r["source"]) for r in rows] == [
        ("wd-1", "file:good.jsonl"),
        ("wd-2", "file:good.jsonl"),
    ]
    assert main(["expect", config, "--file", str(tmp_path / "missing.jsonl")]) == 2


def test_expectations_show_open_used_and_expired(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(expect(config, "--amount", "1")) == 0
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    try:
        past = datetime.now(UTC) - timedelta(hours=1)
        old = Expectation("wd-0", "eth", "hot", AWAY, "native", 5, past)
        store.add_expectations([ExpectationRecord(old, past - timedelta(hours=1), "kafka")])
        used = Expectation("wd-2", "eth", "hot", AWAY, "native", 7, past + timedelta(days=1))
        store.add_expectations([ExpectationRecord(used, past, "kafka")])
        store.upsert_transfers([transfer("0xfeed", block=BlockRef(3, "0xb3"))])
        assert store.consume_expectation("wd-2", ("eth", "0xfeed", "tx"), past)
    finally:
        store.close()
    rows = listed(config, capsys)
    assert [(r["reference"], r["status"]) for r in rows] == [
        ("wd-0", "expired"),
        ("wd-2", "used"),
        ("wd-1", "open"),
    ]
    assert rows[1]["used_by"] == {"chain": "eth", "tx_hash": "0xfeed", "index": "tx"}
    assert listed(config, capsys, "--wallet", "btc-hot") == []
    assert main(["expectations", config]) == 0
    text = capsys.readouterr().out.splitlines()
    assert "expired / 期限切れ" in text[0] and "0xfeed" in text[1] and "open / 未使用" in text[2]
    assert main(["expectations", config, "--wallet", "nope"]) == 2


def test_expectations_of_a_store_that_does_not_exist(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["expectations", config]) == 2
    assert "Traceback" not in capsys.readouterr().err
