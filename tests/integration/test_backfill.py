"""`drainwatch backfill` on anvil: a past stretch with native, token and internal transfers and a
cold-wallet drain gives the same events as live following, alerts the drain once, repeats
nothing when run again, leaves the watcher's checkpoint alone, publishes in height order whatever
the number of workers, and refuses bad arguments with exit 2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from drainwatch import codec
from drainwatch.backfill import backfill
from drainwatch.cli import main
from drainwatch.config import load_config
from drainwatch.events import TransferSeen, event_key
from drainwatch.model import Severity, TransferKind
from drainwatch.ports import Message
from drainwatch.store import open_store
from drainwatch.wiring import EVENTS_TOPIC, build_app
from tests.fixtures.evm_nodes import AnvilNode
from watchers.jsonrpc import HttpJsonRpc

CONFIRMATIONS = 2

CONFIG = """\
exchange: {{name: Test Exchange}}
store: {{url: "sqlite:///{store}"}}
chains:
  dev:
    kind: evm
    network: devnet
    chain_id: 31337
    rpc: [{{url: "{rpc}"}}]
    confirmations: {confirmations}
  btc:
    kind: bitcoin
    network: regtest
    rpc: [{{url: "http://127.0.0.1:1"}}]
wallets:
  hot: {{chain: dev, role: hot, custody: {{kind: single_key}}, addresses: ["{hot}"]}}
  cold:
    chain: dev
    role: cold
    custody: {{kind: multisig, threshold: 2, signers: [a, b, c]}}
    addresses: ["{cold}"]
alerts: {{channels: [{{kind: console}}]}}
"""


@dataclass
class Stretch:
    node: AnvilNode
    url: str
    native: str
    token: str
    internal: str
    drain: str
    confirmed: int

    def config(self, directory: Path, store: str = "dw.db") -> Path:
        path = directory / f"{store}.yaml"
        path.write_text(
            CONFIG.format(
                store=directory / store,
                rpc=self.url,
                confirmations=CONFIRMATIONS,
                hot=self.node.accounts[1],
                cold=self.node.accounts[2],
            )
        )
        return path


@pytest.fixture
def stretch(anvil_url: str) -> Stretch:
    from drainwatch.drill_contracts import EMITTER_INITCODE, FORWARDER_INITCODE

    node = AnvilNode(HttpJsonRpc(anvil_url))
    funder, hot, cold, outside = (node.accounts[i] for i in (0, 1, 2, 8))
    token = node.deploy(EMITTER_INITCODE)
    forwarder = node.deploy(FORWARDER_INITCODE)
    native = node.send(funder, hot, 5 * 10**18)
    token_tx = node.token_transfer(token, hot, outside, 1234)
    internal = node.forward(forwarder, funder, hot, 2 * 10**18)
    drain = node.send(cold, outside, 7 * 10**18)
    for i in range(12):  # more blocks to fetch out of order
        node.send(funder, hot, 10**15 + i)
    node.mine(3)
    confirmed = node.head() - (CONFIRMATIONS - 1)
    return Stretch(node, anvil_url, native, token_tx, internal, drain, confirmed)


def test_backfill_finds_everything_alerts_once_and_repeats_nothing(
    tmp_path: Path, stretch: Stretch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stretch.config(tmp_path)
    assert main(["backfill", str(config), "--chain", "dev", "--from", "1"]) == 0
    captured = capsys.readouterr()
    # The cold drain, and the hot wallet's token payment that no expectation announced.
    assert captured.out.count("[CRITICAL] Outflow from cold wallet") == 1
    assert captured.out.count("[HIGH] Unplanned outflow") == 1
    assert stretch.drain.lower() in captured.out and stretch.token.lower() in captured.out
    blocks = stretch.confirmed
    assert f"dev 1..{blocks}: {blocks} blocks, 16 transfers, 0 control changes, 2 alerts" in (
        captured.err
    )
    assert "blocks/s" in captured.err and "ETA" in captured.err and "Traceback" not in captured.err

    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    try:
        transfers = store.transfers()
        found = {(t.tx_hash, t.kind) for t in transfers}
        assert {
            (stretch.native.lower(), TransferKind.NATIVE),
            (stretch.token.lower(), TransferKind.TOKEN),
            (stretch.internal.lower(), TransferKind.INTERNAL),
            (stretch.drain.lower(), TransferKind.NATIVE),
        } <= found
        assert len(transfers) == 16
        alerts = store.alerts()
        assert sorted((a.rule_id, a.severity, a.wallet, a.tx_hash) for a in alerts) == [
            ("cold-outflow", Severity.CRITICAL, "cold", stretch.drain.lower()),
            ("unplanned-outflow", Severity.HIGH, "hot", stretch.token.lower()),
        ]
        # The watcher's bookkeeping is not backfill's.
        assert store.get_checkpoint("dev") is None
        assert store.recent_blocks("dev", 100) == []

        # Again: nothing new stored, nothing alerted.
        assert main(["backfill", str(config), "--chain", "dev", "--from", "1"]) == 0
        captured = capsys.readouterr()
        assert captured.out == "" and "0 alerts" in captured.err
        assert store.transfers() == transfers and store.alerts() == alerts
        assert store.get_checkpoint("dev") is None

        # After `watch` ran, its checkpoint and block records stay as they were.
        assert main(["watch", str(config), "--until-height", f"dev={stretch.confirmed}"]) == 0
        checkpoint = store.get_checkpoint("dev")
        recorded = store.recent_blocks("dev", 100)
        assert checkpoint is not None
        args = ["--from", "3", "--to", str(stretch.confirmed - 2), "--workers", "2"]
        assert main(["backfill", str(config), "--chain", "dev", *args]) == 0
        assert store.get_checkpoint("dev") == checkpoint
        assert store.recent_blocks("dev", 100) == recorded
        assert capsys.readouterr().out == ""
        assert store.alerts() == alerts
    finally:
        store.close()


def test_one_worker_and_eight_publish_the_same_events_in_height_order(
    tmp_path: Path, stretch: Stretch
) -> None:
    published: dict[int, list[str]] = {}
    stored = {}
    for workers in (1, 8):
        app = build_app(load_config(stretch.config(tmp_path, f"w{workers}.db")))
        try:
            observer = app.bus.subscribe(app.topic(EVENTS_TOPIC), "test-observer")
            result = backfill(app, "dev", 0, None, workers)
            # The cold drain and the hot wallet's unannounced token payment.
            assert (result.first, result.last, result.alerts) == (0, stretch.confirmed, 2)
            messages: list[Message] = []
            while observer.poll(messages.append, timeout=0.0):
                pass
            events = [codec.loads_event(m.value) for m in messages]
            assert all(isinstance(e, TransferSeen) for e in events)  # no block events
            heights = [e.transfer.block.height for e in events if isinstance(e, TransferSeen)]
            assert heights == sorted(heights) and len(heights) == 16
            published[workers] = [event_key(e) for e in events]
            stored[workers] = app.store.transfers()
            assert app.store.get_checkpoint("dev") is None
        finally:
            app.close()
    assert published[1] == published[8]
    assert stored[1] == stored[8]


def test_bad_arguments_exit_2_naming_the_argument(
    tmp_path: Path, stretch: Stretch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(stretch.config(tmp_path))
    above = str(stretch.confirmed + 1)
    cases = [
        (["--chain", "dev", "--from", "-1"], "--from"),
        (["--chain", "dev", "--from", "5", "--to", "3"], "--from 5"),
        (["--chain", "dev", "--from", "0", "--to", "-2"], "--to"),
        (["--chain", "dev", "--from", "ten"], "--from"),
        (["--chain", "dev"], "--from"),
        (["--from", "1"], "--chain"),
        (["--chain", "mars", "--from", "1"], "mars"),
        (["--chain", "dev", "--from", "1", "--workers", "0"], "--workers"),
        (["--chain", "dev", "--from", "1", "--workers", "33"], "--workers"),
        (["--chain", "dev", "--from", above], "--from"),
        (["--chain", "dev", "--from", "1", "--to", above], "reorg"),
    ]
    for args, named in cases:
        assert main(["backfill", config, *args]) == 2, args
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) <= 2, err  # one paragraph (argparse adds a hint)
    # The confirmed head itself is fine.
    args = ["--from", str(stretch.confirmed), "--to", str(stretch.confirmed)]
    assert main(["backfill", config, "--chain", "dev", *args]) == 0


def test_a_node_failing_mid_stretch_keeps_what_was_read_before(
    tmp_path: Path, stretch: Stretch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The processor takes a window of blocks at a time; when the node fails part way, the
    blocks read before the failure are still handled: stored and alerted, not lost with it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    drain_height = int(
        stretch.node.rpc.call("eth_getTransactionReceipt", [stretch.drain])["blockNumber"], 16
    )
    broken_from = drain_height + 2

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = json.loads(body)
            calls = request if isinstance(request, list) else [request]
            if any(
                c["method"] == "eth_getBlockByNumber" and int(c["params"][0], 16) >= broken_from
                for c in calls
                if c["params"] and str(c["params"][0]).startswith("0x")
            ):
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {"Content-Type": "application/json"}
            answer = requests.post(stretch.url, data=body, headers=headers, timeout=10).content
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxied = Stretch(
            **{**stretch.__dict__, "url": f"http://127.0.0.1:{server.server_address[1]}"}
        )
        config = proxied.config(tmp_path)
        code = main(["backfill", str(config), "--chain", "dev", "--from", "1", "--workers", "1"])
    finally:
        server.shutdown()
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out.count("[CRITICAL] Outflow from cold wallet") == 1
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    try:
        kept = {t.tx_hash for t in store.transfers()}
        assert {stretch.native.lower(), stretch.drain.lower()} <= kept
        assert all(t.block is not None and t.block.height < broken_from for t in store.transfers())
    finally:
        store.close()
