"""`drainwatch alerts CONFIG` and `drainwatch alerts ack CONFIG ID --by NAME` on real stores
(SQLite and PostgreSQL): the listing shows rule, severity, state, acknowledgement and delivery
per sink; an acknowledgement is written with its outbox rows in one transaction, once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drainwatch.cli import main
from drainwatch.model import Alert, AlertState, BlockRef, Severity
from drainwatch.store import SqlStore, open_store
from tests.fixtures.postgres import PgServer
from tests.unit.test_intake import CONFIG

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SINKS = ["console", "slack:#security"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dw.db'}"
        return
    server: PgServer = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url


@pytest.fixture
def config(tmp_path: Path, store_url: str) -> str:
    path = tmp_path / "dw.yaml"
    text = CONFIG.replace(
        "alerts: {", "alerts: {channels: [{kind: console}, {kind: slack, channel: '#security'}], "
    )
    path.write_text(text + f'store: {{url: "{store_url}"}}\n')
    return str(path)


@pytest.fixture
def store(config: str, store_url: str) -> Iterator[SqlStore]:
    made = open_store(store_url)
    yield made
    made.close()


def alert(alert_id: str, at: datetime = T0) -> Alert:
    return Alert(
        id=alert_id,
        rule_id="cold-outflow",
        severity=Severity.CRITICAL,
        state=AlertState.CONFIRMED,
        chain="eth",
        wallet="hot",
        subject=("eth", "0xabc", "tx"),
        raised_at=at,
        tx_hash="0xabc",
        block=BlockRef(7, "0xb7"),
        asset="native",
        amount=10**18,
        counterparty="0xAway",
    )


def seed(store: SqlStore) -> None:
    """Two alerts: the first delivered to the console and failing on Slack."""
    for a in (alert("a-1"), alert("a-2", T0 + timedelta(seconds=1))):
        with store.batch():
            store.save_alert(a)
            store.enqueue_delivery(a, SINKS, None, None, a.raised_at)
    first = store.outbox("a-1")
    console = next(d for d, _, _ in first if d.sink == "console")
    slack = next(d for d, _, _ in first if d.sink != "console")
    store.finish_delivery(console.id, T0)
    store.retry_delivery(slack.id, "HTTP 500", T0 + timedelta(seconds=5))


def listed(config: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["alerts", config, "--json"]) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_alerts_lists_state_ack_and_delivery(
    config: str, store: SqlStore, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store)
    rows = listed(config, capsys)
    assert [r["id"] for r in rows] == ["a-1", "a-2"]
    first = rows[0]
    assert (first["rule_id"], first["severity"], first["state"]) == (
        "cold-outflow",
        "critical",
        "confirmed",
    )
    assert first["acked_by"] is None
    assert first["delivery"] == {
        "console": {"status": "delivered", "pending": 0, "last_error": None},
        "slack:#security": {"status": "pending", "pending": 1, "last_error": "HTTP 500"},
    }
    assert main(["alerts", config]) == 0
    text = capsys.readouterr().out.splitlines()
    assert "cold-outflow" in text[0] and "critical" in text[0] and "a-1" in text[0]
    assert "console delivered" in text[0] and "slack:#security pending (HTTP 500)" in text[0]
    assert "not acked / 未確認" in text[1]


def test_ack_once_with_its_announcement(
    config: str, store: SqlStore, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store)
    assert main(["alerts", "ack", config, "a-1", "--by", "sato"]) == 0
    assert "acknowledged by sato" in capsys.readouterr().out
    acked = store.get_alert("a-1")
    assert acked is not None and acked.acked_by == "sato" and acked.acked_at is not None
    news = [(d.sink, d.news, d.previous_state) for d, _, _ in store.outbox("a-1") if d.news]
    assert news == [(s, "ack", AlertState.CONFIRMED) for s in SINKS]
    assert all(d.alert.acked_by == "sato" for d, _, _ in store.outbox("a-1") if d.news)
    # Twice: the first acknowledgement stays, nothing more is announced.
    assert main(["alerts", "ack", config, "a-1", "--by", "suzuki"]) == 0
    assert "already acknowledged by sato" in capsys.readouterr().out
    assert len(store.outbox("a-1")) == 4
    assert store.get_alert("a-1") == acked
    row = listed(config, capsys)[0]
    assert row["acked_by"] == "sato"
    assert row["delivery"]["console"] == {"status": "pending", "pending": 1, "last_error": None}


def test_ack_of_an_unknown_alert_exits_2_naming_it(
    config: str, store: SqlStore, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store)
    assert main(["alerts", "ack", config, "no-such-id", "--by", "sato"]) == 2
    err = capsys.readouterr().err
    assert "no-such-id" in err and "Traceback" not in err
    assert all(len(store.outbox(a)) == 2 for a in ("a-1", "a-2"))


@pytest.mark.parametrize(
    "argv",
    [
        ["alerts", "ack", "{config}", "a-1"],  # no --by
        ["alerts", "ack", "{config}", "a-1", "--by", " "],
        ["alerts", "ack", "{config}"],
        ["alerts", "{config}", "extra"],
        ["alerts", "{config}", "--by", "sato"],
        ["alerts"],
    ],
)
def test_bad_alerts_arguments_exit_2(
    config: str, store: SqlStore, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store)
    assert main([a.format(config=config) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "drainwatch" in err and "Traceback" not in err
    assert store.get_alert("a-1") == alert("a-1")
