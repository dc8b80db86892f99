"""The ``drainwatch`` command line (DESIGN.md §5): parsing, exit codes and messages only.

Exit codes: 0 ok, 2 bad input (config, arguments, files) with a one-paragraph message naming the
field or line, 1 anything else. No traceback reaches a user for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from drainwatch import cli_alerts
from drainwatch.errors import BadInput, DrainwatchError, UsageError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting with its own format."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\n(try `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="drainwatch",
        description=(
            "On-chain asset-outflow monitor for crypto-asset exchanges.\n"
            "暗号資産交換業者のためのオンチェーン資産流出監視ツール。"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "check-config",
        help="validate a config file / 設定ファイルを検証する",
        description=(
            "Validate a config file and print a summary, or print the JSON Schema.\n"
            "設定ファイルを検証して概要を表示する（--schema で JSON Schema を出力）。"
        ),
    )
    p.add_argument("config", nargs="?", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument(
        "--schema", action="store_true", help="print the JSON Schema / JSON Schema を出力"
    )

    p = sub.add_parser(
        "drill",
        help="run a simulated leak end to end / 模擬流出訓練を実行する",
        description=(
            "Play a simulated incident against the real pipeline on a local chain.\n"
            "ローカルチェーン上で実際のパイプラインに対し模擬インシデントを実行する。"
        ),
    )
    p.add_argument("--out", type=Path, default=Path("drill-out"), help="output directory / 出力先")
    p.add_argument(
        "--lang", choices=("ja", "en"), default="ja", help="report language / レポートの言語"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed / 乱数シード")

    p = sub.add_parser(
        "watch",
        help="run watchers and rules / 監視とルール評価を実行する",
        description=(
            "Follow every configured chain, store transfers and raise alerts.\n"
            "設定された全チェーンを追跡し、送金を記録してアラートを発報する。"
        ),
    )
    p.add_argument("config", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument(
        "--until-height",
        action="append",
        default=[],
        metavar="CHAIN=H",
        help="stop once CHAIN has processed height H / 指定の高さまで処理したら停止",
    )

    p = sub.add_parser(
        "backfill",
        help="process a past stretch of blocks / 過去のブロック範囲を処理する",
        description=(
            "Publish and process the transfers and control changes of blocks --from..--to of "
            "one EVM chain, as live following would (a re-run stores and alerts nothing twice).\n"
            "EVM チェーンの指定範囲のブロックから送金と制御変更を取り込み、ライブ監視と同様に"
            "処理する（再実行しても重複しない）。"
        ),
    )
    p.add_argument("config", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument("--chain", required=True, help="chain name in the config / チェーン名")
    p.add_argument(
        "--from",
        dest="from_height",
        type=int,
        required=True,
        metavar="H",
        help="first block / 最初のブロック",
    )
    p.add_argument(
        "--to",
        dest="to_height",
        type=int,
        metavar="H",
        help="last block (default: the confirmed head) / 最後のブロック（既定: 確定済みの最新）",
    )
    p.add_argument(
        "--workers", type=int, default=4, help="concurrent fetches, 1-32 / 並列取得数（1〜32）"
    )

    p = sub.add_parser(
        "import",
        help="read transfers from files / ファイルから取り込む",
        description=(
            "Read a chain's history from files. --format bitcoin-blk reads Bitcoin Core's "
            "blocks/blk*.dat files directly (no node needed; xor.dat beside them is honoured): "
            "the best chain among their blocks, in height order, fills the watched wallets' "
            "coins, transfers and alerts as `backfill` would. Re-running adds nothing.\n"
            "ファイルから履歴を取り込む。bitcoin-blk は Bitcoin Core の blk*.dat を直接読み、"
            "監視対象ウォレットのコイン・送金・アラートを backfill と同様に記録する（再実行しても"
            "重複しない）。"
        ),
    )
    p.add_argument("config", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument(
        "--format",
        required=True,
        choices=IMPORT_FORMATS,
        help="file format / ファイル形式",
    )
    p.add_argument(
        "--chain", help="chain name (needed when several match) / チェーン名（複数ある場合）"
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="files / ファイル")

    p = sub.add_parser(
        "balances",
        help="watched Bitcoin wallets' balances / Bitcoin ウォレットの残高",
        description=(
            "Balances of the Bitcoin wallets from the watched coins: per wallet and in total, "
            "at the watcher's checkpoint or at --height.\n"
            "監視中のコインから Bitcoin ウォレットごとの残高と合計を表示する（--height で過去の"
            "高さ）。"
        ),
    )
    p.add_argument("config", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument("--chain", help="Bitcoin chain name / チェーン名")
    p.add_argument("--height", type=int, metavar="H", help="at this height / この高さ時点")
    p.add_argument("--json", action="store_true", help="JSON output / JSON で出力")

    p = sub.add_parser(
        "transfers",
        help="list stored transfers / 記録済みの送金を一覧表示",
    )
    p.add_argument("config", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument("--wallet", help="only this wallet / このウォレットのみ")
    p.add_argument("--address", help="only this address / このアドレスのみ")
    p.add_argument("--json", action="store_true", help="JSON Lines output / JSON Lines で出力")

    cli_alerts.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Warnings (a node without traces, an endpoint that failed over) reach the operator on
    # stderr; nothing below WARNING unless the environment asks for it elsewhere.
    logging.basicConfig(level=logging.WARNING, format="drainwatch: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except BadInput as exc:
        _print_error(exc)
        return EXIT_BAD_INPUT
    except DrainwatchError as exc:
        _print_error(exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted / 中断しました", file=sys.stderr)
        return 130


def _print_error(exc: Exception) -> None:
    print(f"drainwatch: error / エラー: {exc}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "drill":
        from drainwatch.drill import run_drill

        return run_drill(out=args.out, lang=args.lang, seed=args.seed)
    if args.command == "watch":
        from drainwatch.watch import run_watch

        return run_watch(args.config, _parse_until(args.until_height))
    if args.command == "backfill":
        from drainwatch.backfill import run_backfill

        return run_backfill(args.config, args.chain, args.from_height, args.to_height, args.workers)
    if args.command == "import":
        return _import(args)
    if args.command == "balances":
        return _balances(args)
    if args.command == "transfers":
        return _transfers(args)
    if args.command == "alerts":
        return cli_alerts.run_alerts(args)
    if args.command == "expect":
        return cli_alerts.run_expect(args)
    if args.command == "expectations":
        return cli_alerts.run_expectations(args)
    raise UsageError(f"unknown command {args.command!r}")


def _check_config(args: argparse.Namespace) -> int:
    from drainwatch.config import config_json_schema, load_config, summary_lines

    if args.schema:
        print(json.dumps(config_json_schema(), indent=2, ensure_ascii=False))
        return EXIT_OK
    if args.config is None:
        raise UsageError("check-config needs a CONFIG file (or --schema)")
    settings = load_config(args.config)
    from drainwatch.wiring import build_script_books

    build_script_books(settings)  # every xpub and descriptor derives, as `watch` will need
    for line in summary_lines(settings):
        print(line)
    return EXIT_OK


def _parse_until(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        chain, sep, height = value.partition("=")
        if not sep or not chain or not height.isdigit():
            raise UsageError(f"--until-height takes CHAIN=HEIGHT, got {value!r}")
        out[chain] = int(height)
    return out


IMPORT_FORMATS = ("bitcoin-blk",)


def _import(args: argparse.Namespace) -> int:
    from drainwatch.bitcoin_history import bitcoin_chain, import_blk, say_history
    from drainwatch.wiring import build_sinks, open_app

    for path in args.files:
        if path.is_dir():
            raise UsageError(f"{path} is a directory: give the blk*.dat files / ディレクトリです")
        if not path.is_file():
            raise UsageError(f"{path}: no such file / ファイルがありません")
    from drainwatch.config import load_config

    if not any(c.kind == "bitcoin" for c in load_config(args.config).chains.values()):
        raise UsageError(
            f"{args.config} has no Bitcoin chain: bitcoin-blk files fill a `kind: bitcoin` "
            "chain's history / 設定に Bitcoin チェーンがありません"
        )
    with open_app(args.config) as app:
        chain = bitcoin_chain(app, args.chain)
        result = import_blk(app, chain, args.files, build_sinks(app.settings), sys.stderr)
        say_history(result, sys.stderr)
    return EXIT_OK


def _balances(args: argparse.Namespace) -> int:
    from drainwatch.bitcoin_history import bitcoin_chain
    from drainwatch.wiring import open_app

    if args.height is not None and args.height < 0:
        raise UsageError(f"--height must be 0 or more; got {args.height}")
    with open_app(args.config, create=False) as app:
        chain = bitcoin_chain(app, args.chain)
        from drainwatch.units import format_amount

        decimals = app.chains[chain].native_decimals
        symbol = app.chains[chain].native_symbol
        checkpoint = app.store.get_checkpoint(chain)
        top = checkpoint.height if checkpoint is not None else None
        if args.height is not None and (top is None or args.height > top):
            raise UsageError(
                f"--height {args.height} is above what drainwatch has read of {chain} "
                f"({'nothing yet' if top is None else f'block {top}'}): balances there are "
                "not known / まだ読んでいない高さです"
            )
        height = args.height if args.height is not None else top
        balances = app.store.utxo_balances(chain, args.height)
        wallets = [w.name for w in app.book.wallets if w.chain == chain]
        total = sum(balances.values())
        if args.json:
            print(
                json.dumps(
                    {
                        "chain": chain,
                        "height": height,
                        "wallets": {w: str(balances.get(w, 0)) for w in wallets},
                        "total": str(total),
                    }
                )
            )
            return EXIT_OK
        print(f"{chain} at height / 高さ {height if height is not None else '-'}:")
        rows = [(name, balances.get(name, 0)) for name in wallets] + [("total / 合計", total)]
        for name, amount in rows:
            shown = format_amount(amount, decimals, fixed=True)
            print(f"  {name}\t{shown} {symbol}\t({amount} base units)")
    return EXIT_OK


def _transfers(args: argparse.Namespace) -> int:
    from drainwatch import codec
    from drainwatch.wiring import open_app

    with open_app(args.config, create=False) as app:
        addresses: list[str] | None = None
        if args.wallet:
            wallet = app.wallet(args.wallet)
            addresses = list(wallet.addresses)
            if wallet.chain in app.scripts:  # with the addresses derived from xpubs/descriptors
                derived = app.scripts[wallet.chain].scripts.values()
                addresses += [s.address for s in derived if s.wallet == wallet.name]
        if args.address:
            addresses = [*(addresses or []), args.address]
        for t in app.store.transfers(addresses=addresses):
            if args.json:
                print(codec.dumps(t))
            else:
                height = t.block.height if t.block else "-"
                print(
                    f"{t.chain}\t{height}\t{t.tx_hash}\t{t.index}\t{t.from_address}\t"
                    f"{t.to_address}\t{t.asset}\t{t.amount}\t{t.status}"
                )
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
