"""The command line: exit codes, bilingual help, and every command documented in the README."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from drainwatch.cli import build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> list[str]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_is_in_the_readme(command: str) -> None:
    assert re.search(rf"`drainwatch {re.escape(command)}\b", README.read_text())


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_bilingual_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"[a-z]{3}", out) and re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", out)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["drill", "--lang", "fr"],
        ["drill", "--seed", "many"],
        ["watch"],
        ["watch", "x.yaml", "--until-height", "ethereum"],
        ["watch", "x.yaml", "--until-height", "ethereum=tall"],
        ["check-config"],
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "drainwatch" in err and "Traceback" not in err


def test_drill_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["drill", "--out", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_drill_out_that_cannot_be_created(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "--out", "/dev/null/inside"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "Traceback" not in err


XPUB = (
    "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5"
    "ski8PX9rL2dZXvgGDnw"
)


def test_check_config_derives_every_descriptor_as_watch_will(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A descriptor whose shape is fine but which public keys cannot derive (a hardened step
    after the xpub) is refused by check-config, not first by `watch`."""
    path = tmp_path / "c.yaml"
    text = (
        "exchange: {name: T}\n"
        "chains:\n  btc: {kind: bitcoin, network: mainnet, rpc: [{url: 'http://127.0.0.1:8332'}]}\n"
        "wallets:\n  cold:\n    chain: btc\n    role: cold\n    custody: {kind: single_key}\n"
        f"    descriptors: ['wpkh({XPUB}/STEP/*)']\n"
    )
    path.write_text(text.replace("STEP", "0"))
    assert main(["check-config", str(path)]) == 0
    capsys.readouterr()
    path.write_text(text.replace("STEP", "0h"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "wallet 'cold' descriptors[0]" in err and "hardened" in err
    assert XPUB not in err and "Traceback" not in err


def test_import_refuses_bad_files_and_configs_without_a_bitcoin_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "evm.yaml"
    config.write_text(
        "exchange: {name: T}\n"
        f"store: {{url: 'sqlite:///{tmp_path / 'dw.db'}'}}\n"
        "chains:\n  eth: {kind: evm, network: mainnet, chain_id: 1, "
        "rpc: [{url: 'http://127.0.0.1:8545'}]}\n"
        "wallets:\n  hot: {chain: eth, role: hot, custody: {kind: single_key}, "
        "addresses: ['0x00000000219ab540356cBB839Cbe05303d7705Fa']}\n"
    )
    blk = tmp_path / "blk00000.dat"
    blk.write_bytes(b"")
    for files, said in (
        ([str(tmp_path)], "is a directory"),
        ([str(tmp_path / "nope.dat")], "no such file"),
        ([str(blk)], "has no Bitcoin chain"),
    ):
        assert main(["import", str(config), "--format", "bitcoin-blk", *files]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    assert not (tmp_path / "dw.db").exists()  # nothing written, not even an empty store
    assert main(["import", str(config), "--format", "etherscan-csv", str(blk)]) == 2
