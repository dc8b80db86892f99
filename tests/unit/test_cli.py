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
