"""`drainwatch drill`: the first path through the whole system, kept green by every issue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drainwatch.cli import main


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_drill_detects_the_cold_wallet_drain(
    tmp_path: Path, lang: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drill", "--out", str(tmp_path), "--lang", lang]) == 0
    out = capsys.readouterr().out
    alert = out[out.index("[CRITICAL] Outflow from cold wallet") :]
    assert "eth-cold" in alert
    assert "4,800 ETH" in alert
    tx = re.search(r"tx (0x[0-9a-f]{64})", alert)
    block = re.search(r"block (\d+) \((0x[0-9a-f]{64})\)", alert)
    assert tx and block
    assert "【重大】コールドウォレットからの送金" in out
    # The token drain (an ERC-20 Transfer log) is alerted as well, in the token's own units.
    token_alert = alert[alert.index("[CRITICAL]", 1) :]
    assert "2,500,000 DUSD" in token_alert and "eth-cold" in token_alert
    assert out.count("[CRITICAL]") == 2  # normal life raised nothing critical
    summary = "成功: すべての流出を検知しました" if lang == "ja" else "OK: every drain was detected"
    assert summary in out

    # The generated config is a normal config, and the store holds what was reported.
    assert main(["check-config", str(tmp_path / "drainwatch.yaml")]) == 0
    capsys.readouterr()
    assert main(["alerts", str(tmp_path / "drainwatch.yaml"), "--json"]) == 0
    assert tx.group(1) in capsys.readouterr().out


def test_a_second_drill_starts_from_an_empty_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drill", "--out", str(tmp_path), "--seed", "7"]) == 0
    assert main(["drill", "--out", str(tmp_path), "--seed", "7"]) == 0
    capsys.readouterr()
    assert main(["alerts", str(tmp_path / "drainwatch.yaml"), "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
