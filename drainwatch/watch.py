"""``drainwatch watch``: the service (a thread per chain, the processor on Kafka, the notifier,
the expectations intake) or, with ``--until-height``, a batch run in rounds; and what it tells
the operator as it starts and runs. Everything it runs is built by ``drainwatch.wiring``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from drainwatch.errors import UsageError
from drainwatch.wiring import (
    App,
    Intake,
    build_head_watches,
    build_pipeline,
    build_sinks,
    open_app,
)


def run_watch(
    config_path: Path,
    until: Mapping[str, int],
    *,
    stop: threading.Event | None = None,
    stream: TextIO | None = None,
) -> int:
    """``drainwatch watch``: follow every chain until stopped or every ``until`` is reached.

    Without ``until`` it is a service (a thread per chain): a failing chain is reported and
    retried after growing pauses while the others go on. With ``until`` it is a batch job, in
    rounds, and any failure ends it with exit code 1.
    """
    stop = stop or threading.Event()
    with open_app(config_path) as app:
        pipeline = build_pipeline(app, build_sinks(app.settings, stream))
        _check_until(until, app)
        if until:  # a batch job follows the chains it names, and only those
            pipeline.followers = [f for f in pipeline.followers if f.chain.name in until]
        watched = {f.chain.name for f in pipeline.followers}
        intake = Intake(app)
        _warn_unenforced(app)
        _warn_unknown_coins(app, watched)
        intervals = {name: app.settings.chains[name].poll_interval_seconds for name in watched}
        try:
            if not until:
                consume = app.settings.bus.kind != "inprocess"
                watches = build_head_watches(app, watched)
                for name, watch in watches.items():
                    _say_heads(name, watch.endpoint, intervals[name])
                    watch.start()
                intake_thread = None
                if intake.configured:
                    intake_thread = threading.Thread(
                        target=intake.run,
                        args=(stop, _report_failure),
                        name="expectations",
                        daemon=True,
                    )
                    intake_thread.start()
                try:
                    pipeline.run_service(
                        stop,
                        intervals,
                        _report_failure,
                        consume=consume,
                        heads={name: watch.signal for name, watch in watches.items()},
                    )
                finally:
                    for watch in watches.values():
                        watch.stop()
                    if intake_thread is not None:
                        intake_thread.join(timeout=30)
                return 0
            while not stop.is_set():
                intake.poll()  # what was announced before the next blocks are read
                pipeline.run_once(until)
                if all(_reached(app, chain, h) for chain, h in until.items()):
                    pipeline.catch_up()
                    return 0
                stop.wait(min(intervals.values(), default=1.0))
            return 0
        finally:
            intake.close()
            pipeline.close()


def _check_until(until: Mapping[str, int], app: App) -> None:
    unknown = sorted(set(until) - set(app.chains))
    if unknown:
        raise UsageError(f"--until-height names an unknown chain: {', '.join(unknown)}")


def _report_failure(chain: str, exc: Exception, pause: float) -> None:
    print(
        f"drainwatch: {chain}: {exc} — retried in {pause:.0f} s, the other chains go on / "
        f"{pause:.0f} 秒後に再試行します（他のチェーンの監視は継続）",
        file=sys.stderr,
    )


def _say_heads(chain: str, endpoint: str, interval: float) -> None:
    print(
        f"drainwatch: {chain}: new blocks announced by eth_subscribe(newHeads) on {endpoint}, "
        f"and polled every {interval:g} s as well / {endpoint} の newHeads 購読で新ブロックを"
        f"検知（{interval:g} 秒ごとのポーリングも継続）",
        file=sys.stderr,
    )


def _warn_unknown_coins(app: App, watched: set[str]) -> None:
    """A Bitcoin spend names the coins it spends, not an address: a watcher that starts at
    today's head cannot see the spend of a coin received before, unless it is told of them."""
    for name in sorted(set(app.scripts) & watched):
        if app.store.get_checkpoint(name) is None:
            print(
                f"drainwatch: {name}: a new deployment starts at the chain's head and knows no "
                "coin the wallets received before: spends of those are not seen until you run "
                f"`drainwatch backfill CONFIG --chain {name} --from HEIGHT` (HEIGHT: the "
                "wallets' first block) or `drainwatch import CONFIG --format bitcoin-blk "
                f"blk*.dat` / {name}: 新規導入時は最新ブロックから監視するため、"
                "それ以前に受け取ったコインの送金は検知できません。"
                "backfill（ウォレットの最初のブロックから）または import で"
                "過去のコインを取り込んでください",
                file=sys.stderr,
            )


def _warn_unenforced(app: App) -> None:
    """Say at start what the config asks for that this version does not act on yet."""
    from drainwatch.config_summary import unenforced

    for en, ja in unenforced(app.settings):
        print(f"drainwatch: not yet enforced / 未対応: {en} / {ja}", file=sys.stderr)


def _reached(app: App, chain: str, height: int) -> bool:
    checkpoint = app.store.get_checkpoint(chain)
    return checkpoint is not None and checkpoint.height >= height
