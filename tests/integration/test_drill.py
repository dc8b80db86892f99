"""`drainwatch drill`: the first path through the whole system, kept green by every issue.

The drill starts its own anvil and bcoin; these tests run it as a user does (through the CLI) and
read what it printed: every scene's alert in both languages (EVM and Bitcoin), the retraction
after the reorg, the summary, the exit codes, that bcoin's API key is written nowhere, and that
no node is left behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

import drainwatch.devnode
import drainwatch.devnode_bitcoin
import drainwatch.drill
from drainwatch.cli import main
from drainwatch.devnode_bitcoin import BcoinNode
from drainwatch.drill_bitcoin import AUTH_ENV

TX = r"0x[0-9a-f]{64}"
BTC_TX = r"[0-9a-f]{64}"
BTC_CHECKS = [
    "Bitcoin: failover from the dead endpoint to bcoin",
    "Bitcoin normal life (deposits past the gap limit, change, sweep): no alert",
    "(f) Bitcoin cold drain alerted from the mempool before its block",
    "(f) Bitcoin drain confirmed; the change back to btc-cold recognised as its own",
    "(g) Bitcoin reorg: the payment orphaned, its alert retracted, its coins unspent again",
    "Bitcoin balances per wallet exact after every block",
]
BTC_CHECKS_JA = [
    "Bitcoin: 停止中のエンドポイントから bcoin への切替",
    "Bitcoin 平常業務（ギャップ上限を越える入金、おつり、移管）: アラートなし",
    "(f) Bitcoin コールドからの流出をブロック前にメモリプールで検知",
    "(f) Bitcoin の流出を確定、btc-cold へのおつりは自社分として認識",
    "(g) Bitcoin の再編成: 出金を孤立扱いにしてアラートを取消、コインを未使用に戻す",
    "Bitcoin の各ウォレット残高がすべてのブロックで一致",
]


def alert_blocks(out: str) -> list[str]:
    """Each delivered alert as printed by the console sink: Japanese then English, 8 lines
    (the drill's own lines before it are left out)."""
    blocks = [b for b in out.split("\n\n") if "\n  state " in b and "\n  状態 " in b]
    return [b[b.index("【") :] for b in blocks]


def only(blocks: list[str], *needles: str) -> list[str]:
    return [b for b in blocks if all(n in b for n in needles)]


def states(blocks: list[str]) -> list[str]:
    return [field(b, r"  state (.+?)  rule") for b in blocks]


def field(block: str, pattern: str) -> str:
    found = re.search(pattern, block)
    assert found, f"{pattern!r} not in:\n{block}"
    return found.group(1)


def anvil_url(out: str) -> str:
    return field(out, r"(?:Started anvil at |anvil を起動しました: )(http://\S+)")


def bcoin_url(out: str) -> str:
    return field(
        out, r"(?:Started bcoin \(regtest\) at |bcoin（regtest）を起動しました: )(http://\S+)"
    )


def assert_stopped(url: str, name: str) -> None:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 1):
        pass
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        if comm == name and int(rest.split()[1]) == os.getpid():
            children.append(stat.parent.name)
    assert children == [], f"{name} processes left running: {children}"


def assert_nodes_stopped(out: str) -> None:
    assert_stopped(anvil_url(out), "anvil")
    assert_stopped(bcoin_url(out), "bcoin")


@pytest.fixture
def bcoin_keys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The API key of every bcoin node the drill starts (a secret: it must show nowhere)."""
    keys: list[str] = []

    class Recorded(BcoinNode):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            keys.append(self.auth[1])

    monkeypatch.setattr(drainwatch.drill, "BcoinNode", Recorded)
    return keys


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_drill_shows_every_scene_of_the_evm_and_bitcoin_watchers(
    tmp_path: Path, lang: str, capsys: pytest.CaptureFixture[str], bcoin_keys: list[str]
) -> None:
    assert main(["drill", "--out", str(tmp_path), "--lang", lang]) == 0
    out = capsys.readouterr().out
    ja = lang == "ja"
    blocks = alert_blocks(out)

    # The first endpoint of the generated config is dead: the real RPC stack fails over.
    url = anvil_url(out)
    assert f"監視は 2 番目の {url}（anvil）に切り替わりました" in out or not ja
    assert f"failed over to the second, {url} (anvil); failovers: 1" in out or ja
    quiet = "平常業務の間のアラート: 0 件" if ja else "Alerts during normal life: 0"
    assert quiet in out
    announced = "出金システムが事前登録" if ja else "announced by the withdrawal system"
    assert announced in out[: out.index(quiet)]

    # (a) the cold wallet drained of ETH and of DUSD (an ERC-20 Transfer log): provisional as
    # soon as the block exists, then confirmed; the same alert. A third of its ETH gone within
    # the hour: the balance-fall rule too.
    eth = only(blocks, "[CRITICAL] Outflow from cold wallet: eth-cold", "amount 4,800 ETH")
    # (the third: scene (i), its acknowledgement, shown again on its channel)
    assert states(eth) == ["provisional (in a block)", "confirmed", "confirmed"]
    assert "【重大】コールドウォレットからの送金: eth-cold" in eth[0] and "金額 4,800 ETH" in eth[0]
    assert "no matching expectation" in eth[0] and "一致する予定送金がありません" in eth[0]
    dusd = only(blocks, "[CRITICAL] Outflow from cold wallet: eth-cold", "2,500,000 DUSD")
    assert "状態 暫定（ブロック取り込み済み）" in dusd[0] and "状態 確定" in dusd[1]
    drain_tx = field(eth[0], rf"  tx ({TX})")
    assert len({field(b, r"alert (A-[0-9a-f]+)") for b in eth}) == 1
    assert re.search(r"block \d+ \(0x[0-9a-f]{64}\)", eth[0])
    fall = only(blocks, "[HIGH]", "eth-cold", drain_tx, "rule balance-fall")
    assert states(fall) == ["provisional (in a block)", "confirmed"]

    # (b) the contract wallet pays out by a contract call: an internal transfer, from traces.
    (vault, _) = only(blocks, "[CRITICAL] Outflow from cold wallet: eth-vault", "amount 750 ETH")
    assert "【重大】コールドウォレットからの送金: eth-vault（コールド, hsm）" in vault
    vault_tx = field(vault, rf"  tx ({TX})")
    shown = "0 ETH。" if ja else "carries 0 ETH"
    assert vault_tx in out[: out.index(vault)] and shown in out  # said before the alert

    # (c) a control change: the cold wallet approves the attacker for DUSD.
    (approval, _) = only(blocks, "[CRITICAL] Token approval by wallet: eth-cold")
    assert "may now move 500,000 DUSD" in approval and "rule control/approval" in approval
    assert "【重大】ウォレットによるトークン承認: eth-cold" in approval
    assert "500,000 DUSD を移動可能になりました" in approval

    # (h) the hot wallet's key misused: six unannounced payments of 20 ETH, each under the
    # single limit; the sixth takes the hour's sum past 100 ETH. The announced withdrawal
    # beside them raises nothing.
    unplanned = only(blocks, "[HIGH]", "eth-hot", "amount 20 ETH", "rule unplanned-outflow")
    assert len(unplanned) == 12 and len({field(b, r"alert (A-[0-9a-f]+)") for b in unplanned}) == 6
    window = only(blocks, "[HIGH]", "eth-hot", "rule limit/window")
    assert states(window) == ["provisional (in a block)", "confirmed"]
    assert "120 ETH" in window[0] and "100 ETH" in window[0]
    assert not only(blocks, "amount 3 ETH")

    # (d) a reorg: the unannounced refill's alert is provisional, confirmed, retracted, then
    # provisional and confirmed in the new block: always the same alert.
    refill = only(blocks, "[WARNING] Outflow from cold wallet: eth-cold", "(own wallet eth-hot)")
    assert states(refill) == [
        "provisional (in a block)",
        "confirmed",
        "RETRACTED (block orphaned)",
        "provisional (in a block)",
        "confirmed",
    ]
    assert "状態 取消（ブロックが孤立）" in refill[2]
    assert len({field(b, r"alert (A-[0-9a-f]+)") for b in refill}) == 1
    heights = [field(b, r"block (\d+) ") for b in refill]
    assert heights[0] == heights[1] == heights[2] != heights[3] == heights[4]
    store_line = (
        "同じ取引のアラートは 1 件、送金記録は 1 件（重複なし）"
        if ja
        else "Alerts for that transaction in the store: 1; transfers: 1 (nothing duplicated)"
    )
    assert store_line in out

    # (e) an outflow seen in the mempool before any block holds it, then confirmed.
    late = only(blocks, "[CRITICAL] Outflow from cold wallet: eth-cold", "amount 150 ETH")
    assert states(late) == ["pending (mempool)", "provisional (in a block)", "confirmed"]
    assert "block -" in late[0] and "状態 未承認（メモリプール）" in late[0]
    assert len({field(b, r"alert (A-[0-9a-f]+)") for b in late}) == 1

    # Bitcoin: the dead endpoint fails over to bcoin; normal life (deposits past the gap
    # limit, withdrawals with change, a sweep to cold) is quiet.
    btc = bcoin_url(out)
    port = btc.rstrip("/").rsplit(":", 1)[1]
    assert "（bcoin regtest）に切り替わりました（切替 1 回）" in out or not ja
    assert f"failed over to the second, http://127.0.0.1:{port} (bcoin regtest)" in out or ja
    btc_quiet = "アラート: 0 件" if ja else "Alerts: 0"
    assert btc_quiet in out[out.index("btc-cold") : out.index("(f)")]

    # (f) the multisig cold wallet drained: critical, first from the mempool, then provisional,
    # then confirmed, the same alert; its change back to btc-cold is its own (no alert).
    drain = only(blocks, "[CRITICAL] Outflow from cold wallet: btc-cold", "amount 19.00000000 BTC")
    assert states(drain) == ["pending (mempool)", "provisional (in a block)", "confirmed"]
    assert "on bitcoin-drill" in drain[0] and "block -" in drain[0]
    assert "【重大】コールドウォレットからの送金: btc-cold（コールド, multisig 2-of-3）" in drain[0]
    assert re.search(r"block \d+ \([0-9a-f]{64}\)", drain[2])
    assert len({field(b, r"alert (A-[0-9a-f]+)") for b in drain}) == 1
    btc_drain_tx = field(drain[0], rf"  tx ({BTC_TX})")
    said = "はまだどのブロックにも入っていません" if ja else "is in no block yet"
    assert f"{btc_drain_tx} {said}" in out or f"{btc_drain_tx}{said}" in out
    assert not only(blocks, "(own wallet btc-cold)")
    assert states(only(blocks, "btc-cold", "rule balance-fall")) == [
        "provisional (in a block)",
        "confirmed",
    ]

    # (g) the reorg un-mines an unannounced hot-wallet payment: alerted (unplanned), then
    # retracted; its transfers orphaned and the balance back.
    paid = only(blocks, "[HIGH]", "btc-hot", "amount 2.00000000 BTC", "rule unplanned-outflow")
    assert states(paid) == ["confirmed", "RETRACTED (block orphaned)"]
    reorg = "の残高は出金前の" if ja else "btc-hot's balance is back to"
    assert reorg in out

    # (i) the duty officer acknowledges the drain's alert: said on its channel.
    acked = "確認を記録し、通知に反映します" if ja else "recorded, and announced on the alert's"
    assert acked in out and ">> acknowledged by duty-officer" in out
    assert ">> duty-officer が確認しました" in out

    # Nothing else was raised: normal life is quiet. Every delivery of every alert, counted
    # scene by scene: (a) 6, (b) 4, (c) 2, (h) 14, (d) 5, (e) 5, (i) 1, (f) 5, (g) 4.
    assert len(blocks) == 6 + 4 + 2 + 14 + 5 + 5 + 1 + 5 + 4
    summary = out[out.index("== 訓練の結果 ==" if ja else "== Drill summary ==") :]
    assert summary.count("[OK]") == 9 + 6 and "[MISSED]" not in summary and "未確認" not in summary
    for check in BTC_CHECKS_JA if ja else BTC_CHECKS:
        assert f"  [OK] {check}\n" in summary
    drained = (
        f"Bitcoin の流出額 (f): 19.00000000 BTC（取引 {btc_drain_tx}）"
        if ja
        else f"Bitcoin drained (f): 19.00000000 BTC (tx {btc_drain_tx})"
    )
    assert drained in summary
    table = r"^  (btc-hot|btc-cold) +(\d+\.\d{8}) BTC +(\d+\.\d{8}) BTC$"
    rows = re.findall(table, summary, re.MULTILINE)
    assert [r[0] for r in rows] == ["btc-hot", "btc-cold"]
    assert all(stored == books for _, stored, books in rows)
    assert dict((w, s) for w, s, _ in rows)["btc-cold"] == "0.99998000"  # 20 - 19 - fee
    verdict = (
        "成功: すべての項目を確認しました" if ja else "OK: every scenario was detected as expected"
    )
    assert verdict in summary
    assert ("検知の処理時間: " if ja else "Detection processing time: ") in summary
    assert ("anvil と bcoin を停止しました" if ja else "Stopped anvil and bcoin") in out
    assert_stopped(url, "anvil")
    assert_stopped(btc, "bcoin")

    # bcoin's API key reached the watcher through the environment only: it is in neither the
    # config, nor the output, nor the store, and the variable is gone after the drill.
    config_text = (tmp_path / "drainwatch.yaml").read_text()
    assert f"auth_env: {AUTH_ENV}" in config_text
    (key,) = bcoin_keys
    assert key not in config_text and key not in out
    assert key.encode() not in (tmp_path / "drainwatch.db").read_bytes()
    assert AUTH_ENV not in os.environ

    # The generated config is a normal config, and the store holds what was reported.
    config = str(tmp_path / "drainwatch.yaml")
    assert main(["check-config", config]) == 0
    checked = capsys.readouterr().out
    assert "chain / チェーン bitcoin-drill: bitcoin regtest, 2 RPC endpoint(s)" in checked
    assert key not in checked
    assert main(["alerts", config, "--json"]) == 0
    stored = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(stored) == 20
    assert {drain_tx, btc_drain_tx} <= {a["tx_hash"] for a in stored}


def test_a_second_drill_starts_from_an_empty_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drill", "--out", str(tmp_path), "--seed", "7"]) == 0
    first = capsys.readouterr().out
    assert main(["drill", "--out", str(tmp_path), "--seed", "7"]) == 0
    second = capsys.readouterr().out
    assert main(["alerts", str(tmp_path / "drainwatch.yaml"), "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 20
    # Seeded and with fixed block times: the same drill makes the same transactions.
    assert re.findall(TX, first) == re.findall(TX, second)


def test_a_scene_not_detected_fails_the_drill_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The exchange switched the control-change rule off: the approval goes unreported.
    template = drainwatch.drill.CONFIG_TEMPLATE
    switched_off = "control_changes: {{enabled: false, severity: critical}}"
    monkeypatch.setattr(
        drainwatch.drill,
        "CONFIG_TEMPLATE",
        template.replace("control_changes: {{enabled: true, severity: critical}}", switched_off),
    )
    assert main(["drill", "--out", str(tmp_path), "--lang", "en"]) == 1
    out = capsys.readouterr().out
    assert "  [MISSED] (c) control change: token approval to the attacker" in out
    assert "FAILED: not shown as expected: (c) control change" in out
    assert out.count("[MISSED]") == 1
    assert_nodes_stopped(out)


def test_without_anvil_the_drill_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(drainwatch.devnode, "PROJECT_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["drill", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "anvil (npm @foundry-rs/anvil) is not installed" in err and "`make drill`" in err
    assert not (tmp_path / "out").exists()


def test_without_bcoin_the_drill_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(drainwatch.devnode_bitcoin, "BCOIN_BIN", "node_modules/.bin/no-bcoin")
    monkeypatch.chdir(tmp_path)
    assert main(["drill", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bcoin (npm bcoin 1.0.2) is not installed" in err and "`make setup`" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
