"""Leak alerts end to end: `drainwatch watch` running as a service (its threads: a follower
per chain, the notifier, the expectations intake) on anvil and on bcoin, delivering to the local
Slack stub through slack-sdk. A planned withdrawal (announced with `drainwatch expect`) raises
nothing; a cold-wallet drain raises one critical message, provisional as soon as its block
exists and updated in place to confirmed; a reorg that removes the drain's block updates the
same message to retracted and says so in its thread."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drainwatch.cli import main
from drainwatch.devnode_bitcoin import SINK_ADDRESS, BcoinNode
from drainwatch.regtest_wallet import RegtestWallet
from tests.fixtures.alert_configs import btc_config, chain_lines, evm_config
from tests.fixtures.evm_nodes import AnvilNode
from tests.fixtures.slack_stub import TOKEN, SlackStub
from tests.fixtures.watch_service import WatchService
from watchers.jsonrpc import HttpJsonRpc

ETH = 10**18
SAT = 10**8
CHANNEL = "C0ALERTS01"  # "#security-alerts" in the stub
TOKEN_ENV = "DW_E2E_SLACK_TOKEN"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStub]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with SlackStub() as stub:
        yield stub


def wait_for(
    what: str, check: Callable[[], Any], limit: float = 60.0, slack: SlackStub | None = None
) -> Any:
    """Poll until ``check`` gives something true (a bound, not a timing assertion); when it
    never does, say what Slack had, for the log."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    seen = "" if slack is None else "\n".join(m.get("text", "")[-200:] for m in messages(slack))
    raise AssertionError(f"never happened: {what}; Slack had:\n{seen}")


def messages(slack: SlackStub) -> list[dict[str, Any]]:
    return slack.top_level(CHANNEL)


def the_message(slack: SlackStub, needle: str) -> dict[str, Any] | None:
    """The one message of the cold-outflow alert about ``needle`` (a transaction)."""
    found = [
        m
        for m in messages(slack)
        if needle in m.get("text", "") and "rule cold-outflow" in m["text"]
    ]
    assert len(found) <= 1, f"more than one message about {needle}: {found}"
    return found[0] if found else None


def with_state(slack: SlackStub, needle: str, state: str) -> dict[str, Any] | None:
    message = the_message(slack, needle)
    return message if message is not None and f"state {state}" in message["text"] else None


def thread_says(slack: SlackStub, message: dict[str, Any], words: str) -> bool:
    return any(words in reply.get("text", "") for reply in slack.replies(CHANNEL, message["ts"]))


def test_evm_planned_withdrawal_quiet_cold_drain_alerted_once_and_retracted_by_reorg(
    tmp_path: Path, anvil_url: str, slack: SlackStub, capsys: pytest.CaptureFixture[str]
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    hot, cold, customer, attacker = (node.accounts[i] for i in (1, 2, 5, 8))
    config = tmp_path / "dw.yaml"
    config.write_text(
        evm_config(
            db=tmp_path / "dw.db",
            rpc=anvil_url,
            hot=hot,
            cold=cold,
            slack_url=slack.base_url,
            token_env=TOKEN_ENV,
            chain_extra=chain_lines(confirmations=2, poll_interval_seconds=0.05),
        )
    )
    until = functools.partial(wait_for, slack=slack)
    service = WatchService(config)
    try:
        # A withdrawal the exchange announced: no message, ever.
        announce = ["expect", str(config), "--reference", "wd-1", "--wallet", "hot"]
        assert main([*announce, "--to", customer, "--amount", "1.5", "--valid-for", "1h"]) == 0
        planned = node.send(hot, customer, 3 * ETH // 2)
        node.mine(2)

        # The cold wallet drained: one critical message as soon as the block exists.
        snapshot = node.snapshot()
        drain = node.send(cold, attacker, 7 * ETH).lower()
        first = until("provisional message", lambda: with_state(slack, drain, "provisional"))
        assert "[CRITICAL] Outflow from cold wallet: cold" in first["text"]
        assert "【重大】コールドウォレットからの送金" in first["text"]
        assert first["metadata"]["event_type"] == "drainwatch_alert"
        node.mine(1)  # its second confirmation
        confirmed = until("confirmed", lambda: with_state(slack, drain, "confirmed"))
        assert confirmed["ts"] == first["ts"]  # updated in place
        until(
            "thread news",
            lambda: thread_says(slack, confirmed, "provisional → confirmed"),
        )

        # A reorg: a longer branch without the drain's block.
        node.revert(snapshot)
        node.mine(4)
        retracted = until("retracted", lambda: with_state(slack, drain, "RETRACTED"))
        assert retracted["ts"] == first["ts"]
        until("thread says so", lambda: thread_says(slack, retracted, "RETRACTED"))
    finally:
        service.close()
    assert len(messages(slack)) == 1  # the planned withdrawal raised nothing
    assert planned.lower() not in str(messages(slack))
    assert main(["alerts", str(config), "--json"]) == 0
    assert capsys.readouterr().out.count('"rule_id"') == 1


def test_bitcoin_cold_drain_pending_then_confirmed_then_retracted_by_reorg(
    tmp_path: Path,
    bcoin_node: BcoinNode,
    slack: SlackStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user, password = bcoin_node.auth
    monkeypatch.setenv("DW_E2E_BCOIN_AUTH", f"{user}:{password}")
    hot, cold = RegtestWallet.single("hot"), RegtestWallet.multisig("cold")
    attacker, customer = RegtestWallet.single("attacker"), RegtestWallet.single("customer")
    hot.fund(bcoin_node)
    cold.fund(bcoin_node, blocks=2)
    config = tmp_path / "dw.yaml"
    config.write_text(
        btc_config(
            db=tmp_path / "dw.db",
            url=bcoin_node.url,
            auth_env="DW_E2E_BCOIN_AUTH",
            vpub=hot.xpub_slip132(),
            descriptor=cold.descriptor(),
            slack_url=slack.base_url,
            token_env=TOKEN_ENV,
            chain_extra=chain_lines(confirmations=2, poll_interval_seconds=0.05),
        )
    )
    # The watcher starts at the head: its coins come from a backfill first.
    assert main(["backfill", str(config), "--chain", "btc", "--from", "0"]) == 0
    until = functools.partial(wait_for, slack=slack)
    service = WatchService(config)
    try:
        payee = customer.address()
        announce = ["expect", str(config), "--reference", "wd-1", "--wallet", "btc-hot"]
        assert main([*announce, "--to", payee, "--amount", "0.5", "--valid-for", "1h"]) == 0
        hot.send(bcoin_node, [(payee, SAT // 2)])
        bcoin_node.mine(2, SINK_ADDRESS)

        drain = cold.send(bcoin_node, [(attacker.address(), 7 * SAT)])
        pending = until("pending", lambda: with_state(slack, drain.txid, "pending"))
        assert "[CRITICAL] Outflow from cold wallet: btc-cold" in pending["text"]
        [block] = bcoin_node.mine(1, SINK_ADDRESS)
        until("provisional", lambda: with_state(slack, drain.txid, "provisional"))
        bcoin_node.mine(1, SINK_ADDRESS)
        confirmed = until("confirmed", lambda: with_state(slack, drain.txid, "confirmed"))
        assert confirmed["ts"] == pending["ts"]

        bcoin_node.invalidate(block)  # the drain's block, and the one after it, are replaced
        for _ in range(3):
            bcoin_node.mine_block([], SINK_ADDRESS)
        retracted = until("retracted", lambda: with_state(slack, drain.txid, "RETRACTED"))
        assert retracted["ts"] == pending["ts"]
        until("thread says so", lambda: thread_says(slack, retracted, "RETRACTED"))
    finally:
        service.close()
    drains = [m for m in messages(slack) if drain.txid in m.get("text", "")]
    about_drain = {m["metadata"]["event_payload"]["alert_id"] for m in drains}
    # The drain's own alert, and the fall of btc-cold's balance it caused: one message each.
    assert len(drains) == len(about_drain) <= 2
    assert not [m for m in messages(slack) if payee in m.get("text", "")]
