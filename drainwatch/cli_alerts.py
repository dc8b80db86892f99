"""The command line of leak alerts: ``expect``, ``expectations``, ``alerts`` and ``alerts ack``.

Parsing, messages and exit codes only (``drainwatch.cli`` turns errors into exit codes); the
checks of an expectation live in ``alerts.intake``.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drainwatch.errors import UsageError

if TYPE_CHECKING:
    from drainwatch.model import Alert
    from drainwatch.ports import ExpectationRecord
    from drainwatch.wiring import App

_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parsers(sub: Any) -> None:
    """Add the commands to ``drainwatch``'s subparsers."""
    p = sub.add_parser(
        "expect",
        help="announce a planned outflow / 予定された送金を登録する",
        description=(
            "Register an outflow the exchange is about to make (a withdrawal, a sweep, a "
            "refill), so that it raises no alert; or every line of a JSON Lines file, all or "
            "nothing (docs/expectations.md).\n"
            "取引所が行う予定の送金（出金・コールドへの移動・補充）を登録し、アラート対象から"
            "外す。--file では JSON Lines ファイルの全行を登録する（1 行でも不正なら何も登録"
            "しない）。"
        ),
    )
    p.add_argument("config", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument("--reference", help="the exchange's id of it / 取引所側の参照 ID")
    p.add_argument("--wallet", help="wallet it leaves / 送金元ウォレット")
    p.add_argument("--to", metavar="ADDRESS", help="destination address / 送金先アドレス")
    p.add_argument("--amount", help="amount in display units (1.5) / 数量（表示単位）")
    p.add_argument(
        "--asset", default="native", help="asset symbol (default native) / 資産（既定: native）"
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--valid-until", metavar="ISO", help="ISO 8601 with zone / 有効期限")
    when.add_argument(
        "--valid-for", metavar="DURATION", help="30m, 2h, 1d… from now / 現在からの有効期間"
    )
    p.add_argument("--file", type=Path, help="JSON Lines file / JSON Lines ファイル")

    p = sub.add_parser(
        "expectations",
        help="list planned outflows / 登録済みの送金予定を一覧表示",
        description=(
            "List the registered expectations with their status: open, used (by which "
            "transaction) or expired.\n"
            "登録済みの送金予定と状態（未使用・使用済み（取引）・期限切れ）を表示する。"
        ),
    )
    p.add_argument("config", type=Path, help="YAML config file / 設定ファイル")
    p.add_argument("--wallet", help="only this wallet / このウォレットのみ")
    p.add_argument("--json", action="store_true", help="JSON Lines output / JSON Lines で出力")

    p = sub.add_parser(
        "alerts",
        help="list / acknowledge alerts / アラートの一覧・確認",
        usage="drainwatch alerts [-h] [--json] CONFIG\n"
        "       drainwatch alerts ack CONFIG ID --by NAME",
        description=(
            "`alerts CONFIG` lists the alerts with rule, severity, state, acknowledgement and "
            "delivery per channel; `alerts ack CONFIG ID --by NAME` acknowledges one (the "
            "running watcher then says so in Slack).\n"
            "`alerts CONFIG` はアラートをルール・重要度・状態・確認・配信状況つきで表示する。"
            "`alerts ack CONFIG ID --by NAME` はアラートを確認済みにする（Slack にも通知）。"
        ),
    )
    p.add_argument(
        "words",
        nargs="+",
        metavar="CONFIG | ack CONFIG ID",
        help="a config file, or ack, a config file and an alert id / 設定ファイル、または "
        "ack・設定ファイル・アラート ID",
    )
    p.add_argument("--json", action="store_true", help="JSON Lines output / JSON Lines で出力")
    p.add_argument("--by", metavar="NAME", help="who acknowledges (ack) / 確認者")


def run_expect(args: argparse.Namespace) -> int:
    from alerts.intake import ExpectationParser, store_parsed
    from drainwatch.config import load_config
    from drainwatch.wiring import open_app

    single = {"--reference": args.reference, "--wallet": args.wallet, "--to": args.to}
    single |= {"--amount": args.amount}
    now = datetime.now(UTC)
    parser = ExpectationParser.for_settings(load_config(args.config))
    if args.file is not None:
        given = [name for name, value in single.items() if value is not None]
        if given or args.valid_until or args.valid_for or args.asset != "native":
            raise UsageError("--file takes no other expectation option / --file は単独で指定")
        parsed = parser.parse_lines(_read(args.file), now, str(args.file))
        source = f"file:{args.file.name}"
    else:
        missing = [name for name, value in single.items() if value is None]
        if missing:
            raise UsageError(f"expect needs {', '.join(missing)} (or --file) / 指定が足りません")
        document = {
            "reference": args.reference,
            "wallet": args.wallet,
            "destination": args.to,
            "asset": args.asset,
            "amount": args.amount,
        }
        if args.valid_until:
            document["valid_until"] = args.valid_until
        valid_for = _duration(args.valid_for) if args.valid_for else None
        parsed = [parser.parse(document, now, valid_for=valid_for)]
        source = "cli"
    with open_app(args.config) as app:
        added = store_parsed(app.store, parsed, source, now)
        stored = {
            r.expectation.reference: r.expectation
            for w in {(p.expectation.chain, p.expectation.wallet) for p in parsed}
            for r in app.store.expectations(*w)
        }
        for p in parsed:
            print(f"  {_describe(app, stored.get(p.expectation.reference, p.expectation))}")
        print(
            f"{len(parsed)} expectation(s) registered, {added} new, "
            f"{len(parsed) - added} already known / "
            f"{len(parsed)} 件登録（新規 {added} 件、登録済み {len(parsed) - added} 件）"
        )
    return 0


def run_expectations(args: argparse.Namespace) -> int:
    from drainwatch import codec
    from drainwatch.wiring import open_app

    now = datetime.now(UTC)
    with open_app(args.config, create=False) as app:
        chain = app.wallet(args.wallet).chain if args.wallet else None
        for record in app.store.expectations(chain=chain, wallet=args.wallet):
            status = _status(record, now)
            if args.json:
                out = codec.encode(record.expectation)
                used = record.consumed_by
                out |= {"created_at": codec.format_time(record.created_at)}
                out |= {"source": record.source, "status": status}
                out["used_by"] = (
                    None
                    if used is None
                    else {"chain": used[0], "tx_hash": used[1], "index": used[2]}
                )
                print(json.dumps(out, ensure_ascii=False, sort_keys=True))
            else:
                shown = {"open": "open / 未使用", "expired": "expired / 期限切れ"}.get(status)
                if record.consumed_by is not None:
                    shown = f"used by / 使用済み {record.consumed_by[1]} {record.consumed_by[2]}"
                print(f"{_describe(app, record.expectation)}\t{shown}")
    return 0


def _status(record: ExpectationRecord, now: datetime) -> str:
    if record.consumed_by is not None:
        return "used"
    return "expired" if record.expectation.valid_until < now else "open"


def run_alerts(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if words[0] == "ack" and len(words) > 1:
        if len(words) != 3 or not args.by:
            raise UsageError(
                "usage: drainwatch alerts ack CONFIG ID --by NAME / 確認者を --by で指定"
            )
        return _ack(Path(words[1]), words[2], args.by)
    if len(words) != 1 or args.by:
        raise UsageError(
            "usage: drainwatch alerts CONFIG [--json] or drainwatch alerts ack CONFIG ID "
            "--by NAME / 使い方が違います"
        )
    return _list_alerts(Path(words[0]), json_lines=args.json)


def _list_alerts(config: Path, *, json_lines: bool) -> int:
    from drainwatch import codec
    from drainwatch.wiring import open_app

    with open_app(config, create=False) as app:
        for alert in app.store.alerts():
            delivery = _delivery(app, alert)
            if json_lines:
                print(json.dumps(codec.encode(alert) | {"delivery": delivery}, sort_keys=True))
                continue
            acked = f"acked by {alert.acked_by}" if alert.acked_by else "not acked / 未確認"
            sinks = ", ".join(
                f"{sink} {d['status']}" + (f" ({d['last_error']})" if d["last_error"] else "")
                for sink, d in delivery.items()
            )
            print(
                f"{alert.raised_at:%Y-%m-%d %H:%M:%S}Z\t{alert.severity}\t{alert.state}\t"
                f"{alert.rule_id}\t{alert.wallet}\t{alert.tx_hash or '-'}\t{alert.id}\t"
                f"{acked}\t{sinks or '-'}"
            )
    return 0


def _delivery(app: App, alert: Alert) -> dict[str, dict[str, Any]]:
    """Per sink: delivered (every row sent) or pending (how many not yet), the last error."""
    out: dict[str, dict[str, Any]] = {}
    for row, delivered_at, error in app.store.outbox(alert.id):
        entry = out.setdefault(row.sink, {"status": "delivered", "pending": 0, "last_error": None})
        if delivered_at is None:
            entry["status"] = "pending"
            entry["pending"] += 1
        if error is not None:
            entry["last_error"] = error
    return out


def ack_alert(config: Path, alert_id: str, by: str) -> int:
    """``drainwatch alerts ack``: record who took the alert in hand, and announce it on every
    channel through the outbox (the running watcher's notifier sends it)."""
    return _ack(config, alert_id, by)


def _ack(config: Path, alert_id: str, by: str) -> int:
    from drainwatch.wiring import open_app, sink_names

    if not by.strip():
        raise UsageError("--by needs a name / --by に名前を指定してください")
    now = datetime.now(UTC)
    with open_app(config, create=False) as app, app.store.batch():
        alert = app.store.ack_alert(alert_id, by, now)
        if alert is None:
            raise UsageError(f"no alert with id {alert_id!r} / そのアラート ID はありません")
        if (alert.acked_by, alert.acked_at) != (by, now):
            print(
                f"alert {alert_id} was already acknowledged by {alert.acked_by} at "
                f"{alert.acked_at:%Y-%m-%d %H:%M:%S}Z / 既に {alert.acked_by} が確認済みです"
            )
            return 0
        app.store.enqueue_delivery(
            alert, sink_names(app.settings), previous_state=alert.state, news="ack", at=now
        )
    print(f"alert {alert_id} acknowledged by {by} / {by} がアラートを確認しました")
    return 0


def _describe(app: App, e: Any) -> str:
    from drainwatch.units import format_amount

    asset = app.assets.get(e.chain, {}).get(e.asset)
    shown = (
        f"{format_amount(e.amount, asset.decimals)} {asset.symbol}"
        if asset is not None
        else f"{e.amount} base units of {e.asset}"
    )
    return (
        f"{e.reference}\t{e.wallet} ({e.chain}) → {e.destination}\t{shown}\t"
        f"valid until / 有効期限 {e.valid_until.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
    )


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(
            f"--valid-for takes a number and s, m, h or d (30m, 2h, 1d), got {text!r} / "
            "30m・2h・1d のように指定してください"
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _read(path: Path) -> str:
    from alerts.intake import decode_lines

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read: {exc.strerror} / 読めません") from None
    return decode_lines(raw, str(path))
