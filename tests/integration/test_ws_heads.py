"""WebSocket endpoints: the transport on anvil (which serves WebSocket on its HTTP port), the
``newHeads`` subscription that wakes a chain's follow loop, its return after the node comes
back, clear errors for bad URLs and unfriendly servers, and `drainwatch watch` on ws://.

Waits are liveness bounds (generous ``Event.wait`` / queue timeouts), never timing assertions:
a follow loop whose poll interval is an hour still handles a new block within the bound only
because the subscription woke it.
"""

from __future__ import annotations

import io
import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import Request, Response, ServerConnection, serve

from alerts.rules import RulePolicy, WalletBook
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.cli import main
from drainwatch.errors import MalformedRpcResponse, RetriableRpcError, RpcError
from drainwatch.model import (
    AlertState,
    Chain,
    ChainKind,
    Custody,
    CustodyKind,
    Wallet,
    WalletRole,
)
from drainwatch.pipeline import Pipeline
from drainwatch.store import open_store
from tests.fixtures.evm_nodes import AnvilNode, free_port, start_anvil
from tests.fixtures.processing import make_processor
from watchers.evm.follower import EvmFollower
from watchers.heads import HeadWatch
from watchers.jsonrpc import HttpJsonRpc
from watchers.wsrpc import WsJsonRpc

BOUND = 30.0  # seconds: a liveness bound, far above what any step here takes
HOUR = 3600.0  # a poll interval that never fires within a test


def _ws(http_url: str) -> str:
    return "ws://" + http_url.removeprefix("http://")


def _wait_for(condition: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {bound:.0f} s")
        time.sleep(0.02)


class Anvil:
    """anvil on a port of its own that can be killed and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc, _ = start_anvil(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    node = Anvil()
    try:
        yield node
    finally:
        node.kill()


class WsServer:
    """A real WebSocket server on loopback (the ``websockets`` package's own), for behaviours
    anvil never shows: refused credentials, silence, garbage."""

    def __init__(
        self,
        handler: Callable[[ServerConnection], None],
        process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
    ) -> None:
        self._server = serve(handler, "127.0.0.1", 0, process_request=process_request)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()


def _answer_chain_id(conn: ServerConnection) -> None:
    for raw in conn:
        request = json.loads(raw)
        conn.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x7a69"}))


# ---------------------------------------------------------------------------------------------
# The transport


def test_calls_batches_and_errors_over_websocket(anvil: Anvil) -> None:
    rpc = WsJsonRpc(anvil.ws)
    try:
        assert rpc.call("eth_chainId", []) == "0x7a69"
        AnvilNode(HttpJsonRpc(anvil.http)).mine(5)
        heads = rpc.batch([("eth_getBlockByNumber", [hex(h), False]) for h in range(6)])
        assert [int(b["number"], 16) for b in heads] == list(range(6))
        with pytest.raises(RpcError, match="no_such_method") as refused:
            rpc.call("no_such_method", [])
        assert not isinstance(refused.value, RetriableRpcError)

        # Many threads at once on one connection: each answer reaches its own caller.
        wrong: list[str] = []

        def ask(height: int) -> None:
            for _ in range(20):
                block = rpc.call("eth_getBlockByNumber", [hex(height), False])
                if int(block["number"], 16) != height:
                    wrong.append(f"asked {height}, got {block['number']}")

        threads = [threading.Thread(target=ask, args=(h,)) for h in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND)
        assert wrong == [] and rpc.connects == 1
    finally:
        rpc.close()


def test_the_endpoint_name_hides_the_path_and_only_ws_urls_are_taken() -> None:
    rpc = WsJsonRpc("wss://mainnet.example:8546/v3/0123456789abcdef")
    assert rpc.endpoint == "wss://mainnet.example:8546/…"
    with pytest.raises(ValueError, match="ws:// or wss://"):
        WsJsonRpc("http://127.0.0.1:8545")


def test_a_notification_for_each_mined_block(anvil: Anvil) -> None:
    rpc = WsJsonRpc(anvil.ws)
    heads: queue.Queue[Any] = queue.Queue()
    lost = threading.Event()
    try:
        subscription = rpc.subscribe(["newHeads"], heads.put, lost.set)
        assert subscription.startswith("0x")
        for _ in range(3):
            assert rpc.call("evm_mine", []) == "0x0"
        numbers = [int(heads.get(timeout=BOUND)["number"], 16) for _ in range(3)]
        assert numbers == [1, 2, 3]
        assert not lost.is_set()
    finally:
        rpc.close()
    assert lost.wait(BOUND)  # closing the connection ends its subscriptions, and says so


def test_a_call_reconnects_after_the_node_restarts(anvil: Anvil) -> None:
    rpc = WsJsonRpc(anvil.ws, timeout=5)
    try:
        assert rpc.call("eth_blockNumber", []) == "0x0"
        anvil.kill()
        with pytest.raises(RetriableRpcError) as down:
            rpc.call("eth_blockNumber", [])
        assert anvil.ws in str(down.value)
        anvil.start()
        assert rpc.call("eth_chainId", []) == "0x7a69"
        assert rpc.connects == 2
    finally:
        rpc.close()


def test_an_unreachable_endpoint_is_retriable_and_named() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(RetriableRpcError, match="cannot connect") as down:
        WsJsonRpc(url).call("eth_blockNumber", [])
    assert url in str(down.value)


def test_an_http_only_server_is_named_as_not_a_websocket_endpoint() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # as JSON-RPC nodes answer

        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"ws://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(MalformedRpcResponse, match="HTTP 404, not 101"):
            WsJsonRpc(url, timeout=5).call("eth_blockNumber", [])
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_go_in_the_handshake_and_are_never_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from drainwatch.config_models import ChainSettings
    from drainwatch.wiring import build_rpc

    seen: list[str | None] = []

    def check(conn: ServerConnection, request: Request) -> Response | None:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") in ("Bearer tok-ws-123", "Basic dXNlcjpwdw=="):
            return None
        return conn.respond(401, "no\n")

    server = WsServer(_answer_chain_id, check)
    try:
        chain = ChainSettings.model_validate(
            {
                "kind": "evm",
                "network": "devnet",
                "chain_id": 31337,
                "rpc": [{"url": server.url, "auth_env": "DW_TEST_WS_AUTH"}],
            }
        )
        monkeypatch.setenv("DW_TEST_WS_AUTH", "tok-ws-123")
        assert build_rpc("dev", chain).call("eth_chainId", []) == "0x7a69"
        monkeypatch.setenv("DW_TEST_WS_AUTH", "user:pw")
        assert build_rpc("dev", chain).call("eth_chainId", []) == "0x7a69"
        monkeypatch.setenv("DW_TEST_WS_AUTH", "wrong-token-456")
        with pytest.raises(RpcError, match="auth_env") as refused:
            build_rpc("dev", chain).call("eth_chainId", [])
        assert "HTTP 401" in str(refused.value)
        assert "wrong-token-456" not in str(refused.value)
        assert seen[-1] == "Bearer wrong-token-456"  # sent, never shown
    finally:
        server.close()


def test_a_silent_server_times_out_per_call_and_garbage_is_malformed() -> None:
    def silent(conn: ServerConnection) -> None:
        for _ in conn:
            pass

    def garbage(conn: ServerConnection) -> None:
        for _ in conn:
            conn.send("<html>Bad gateway</html>")

    quiet, noisy = WsServer(silent), WsServer(garbage)
    try:
        rpc = WsJsonRpc(quiet.url, timeout=0.5)
        with pytest.raises(RetriableRpcError, match=r"no answer within 0\.5 s"):
            rpc.call("eth_blockNumber", [])
        rpc.close()
        rpc = WsJsonRpc(noisy.url, timeout=5)
        for _ in range(2):  # the connection is dropped, and the next call opens a new one
            with pytest.raises(MalformedRpcResponse, match="not JSON"):
                rpc.call("eth_blockNumber", [])
        assert rpc.connects == 2
        rpc.close()
    finally:
        quiet.close()
        noisy.close()


# ---------------------------------------------------------------------------------------------
# The head subscription


def test_the_subscription_comes_back_after_the_node_restarts(anvil: Anvil) -> None:
    reports: list[tuple[str, str, float]] = []
    restored = threading.Event()
    watch = HeadWatch(
        "dev",
        WsJsonRpc(anvil.ws, timeout=5),
        on_lost=lambda chain, exc, pause: reports.append((chain, str(exc), pause)),
        on_restored=lambda chain: restored.set(),
        backoff_seconds=0.2,
        max_backoff_seconds=1.0,
    )
    node = AnvilNode(HttpJsonRpc(anvil.http))
    watch.start()
    try:
        assert watch.subscribed.wait(BOUND)
        assert watch.signal.wait(BOUND)  # set once on subscribing: look for what was missed
        watch.signal.clear()
        node.mine()
        assert watch.signal.wait(BOUND) and watch.notifications == 1

        anvil.kill()
        _wait_for(lambda: bool(reports), "the loss is reported")
        assert reports[0][0] == "dev" and "lost" in reports[0][1]
        assert not watch.subscribed.is_set()
        _wait_for(lambda: len(reports) >= 3, "resubscription is tried again and again")
        pauses = [pause for _, _, pause in reports]
        assert pauses[:3] == [0.2, 0.4, 0.8]  # growing pauses, capped later

        anvil.start()
        assert restored.wait(BOUND) and watch.subscribed.wait(BOUND)
        assert watch.subscriptions == 2
        watch.signal.clear()
        AnvilNode(HttpJsonRpc(anvil.http)).mine()
        assert watch.signal.wait(BOUND) and watch.notifications == 2
    finally:
        watch.stop()
    assert not watch.subscribed.is_set()


def _follower(node: AnvilNode, http_url: str, tmp_path: Path) -> tuple[Pipeline, Any]:
    chain = Chain("dev", ChainKind.EVM, "devnet", "ETH", 18, confirmations=0)
    cold = node.accounts[2]
    book = WalletBook(
        [
            Wallet(
                "cold",
                "dev",
                WalletRole.COLD,
                Custody(CustodyKind.MULTISIG, 2, ("a", "b", "c")),
                (cold,),
            )
        ]
    )
    store = open_store(f"sqlite:///{tmp_path / 'heads.db'}")
    bus = InProcessBus()
    processor = make_processor(
        store, book, {"dev": chain}, {}, RulePolicy(), [], lambda: datetime.now(UTC)
    )
    pipeline = Pipeline(processor, bus.subscribe("t", "processor"), poll_timeout=0.0)
    pipeline.followers.append(
        EvmFollower(
            chain,
            HttpJsonRpc(http_url),
            store,
            bus,
            "t",
            [cold],
            after_publish=pipeline.settle,
        )
    )
    return pipeline, store


def test_a_new_head_wakes_a_follow_loop_that_polls_once_an_hour(
    anvil: Anvil, tmp_path: Path
) -> None:
    """The follower still asks the node and walks block by block: the subscription only woke it."""
    node = AnvilNode(HttpJsonRpc(anvil.http))
    pipeline, store = _follower(node, anvil.http, tmp_path)
    watch = HeadWatch("dev", WsJsonRpc(anvil.ws))
    stop = threading.Event()
    errors: list[Exception] = []
    service = threading.Thread(
        target=pipeline.run_service,
        args=(stop, {"dev": HOUR}, lambda chain, exc, pause: errors.append(exc)),
        kwargs={"consume": False, "heads": {"dev": watch.signal}},
    )
    watch.start()
    try:
        assert watch.subscribed.wait(BOUND)
        service.start()
        _wait_for(lambda: store.get_checkpoint("dev") is not None, "the first step")
        drain = node.send(node.accounts[2], node.accounts[8], 10**18)
        head = node.head()
        _wait_for(lambda: store.get_checkpoint("dev").height == head, "the new block followed")
        assert [a.tx_hash for a in store.alerts()] == [drain.lower()]
        assert watch.notifications >= 1
        node.mine(3)  # and again: every wake-up walks up to the node's head
        _wait_for(lambda: store.get_checkpoint("dev").height == head + 3, "three more blocks")
    finally:
        stop.set()
        service.join(BOUND)
        watch.stop()
        pipeline.close()
        store.close()
    assert not service.is_alive() and errors == []


# ---------------------------------------------------------------------------------------------
# Config and the command line

CONFIG = """\
exchange: {{name: Test Exchange}}
store: {{url: "sqlite:///{db}"}}
chains:
  dev:
    kind: evm
    network: devnet
    chain_id: 31337
    rpc: [{rpc}]
    confirmations: 0
    poll_interval_seconds: {interval}
wallets:
  cold:
    chain: dev
    role: cold
    custody: {{kind: multisig, threshold: 2, signers: [a, b, c]}}
    addresses: ["{cold}"]
alerts: {{channels: [{{kind: console}}]}}
"""


def _config(tmp_path: Path, rpc: str, cold: str, interval: float = HOUR) -> Path:
    path = tmp_path / "dw.yaml"
    path.write_text(CONFIG.format(db=tmp_path / "dw.db", rpc=rpc, cold=cold, interval=interval))
    return path


def test_watch_service_on_a_websocket_endpoint(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drainwatch.watch import run_watch

    node = AnvilNode(HttpJsonRpc(anvil.http))
    config = _config(tmp_path, f'{{url: "{anvil.ws}"}}', node.accounts[2])
    assert main(["check-config", str(config)]) == 0
    assert "newHeads subscription on rpc[0] + polling every 3600 s" in capsys.readouterr().out

    # As a batch job: the follower reads through the WebSocket transport.
    start = node.head()
    assert main(["watch", str(config), "--until-height", f"dev={start}"]) == 0

    # As a service: polled once an hour, woken by each new head.
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    service = threading.Thread(
        target=lambda: result.append(run_watch(config, {}, stop=stop, stream=out))
    )
    service.start()
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    try:
        _wait_for(lambda: "newHeads" in capsys.readouterr().err, "the service says newHeads")
        _wait_for(lambda: store.get_checkpoint("dev") is not None, "the first step")
        drain = node.send(node.accounts[2], node.accounts[8], 5 * 10**18)
        # The mempool may announce it first (pending); the block's alert is what is waited for.
        _wait_for(
            lambda: any(a.state is AlertState.CONFIRMED for a in store.alerts()),
            "the drain alerted from its block",
        )
        assert [a.tx_hash for a in store.alerts()] == [drain.lower()]
    finally:
        stop.set()
        service.join(BOUND)
        store.close()
    assert result == [0]
    text = out.getvalue()
    assert text.count("Outflow from cold wallet") in (1, 2)  # pending, if seen, then confirmed
    assert text.count("state confirmed") == 1


def test_polling_goes_on_while_the_websocket_endpoint_is_down(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The subscription's endpoint is dead: `watch` says so, tries again after growing pauses,
    and meanwhile the chain is followed by polling its other endpoint."""
    from drainwatch.watch import run_watch

    node = AnvilNode(HttpJsonRpc(anvil.http))
    dead = f"ws://127.0.0.1:{free_port()}"
    rpc = f'{{url: "{anvil.http}"}}, {{url: "{dead}"}}'
    config = _config(tmp_path, rpc, node.accounts[2], interval=0.1)
    stop = threading.Event()
    service = threading.Thread(
        target=run_watch, args=(config, {}), kwargs={"stop": stop, "stream": io.StringIO()}
    )
    service.start()
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
    err = ""
    try:
        _wait_for(lambda: store.get_checkpoint("dev") is not None, "the first step")
        drain = node.send(node.accounts[2], node.accounts[8], 10**18)
        _wait_for(lambda: bool(store.alerts()), "the drain alerted by polling")
        assert [a.tx_hash for a in store.alerts()] == [drain.lower()]

        def reported_twice() -> bool:
            nonlocal err
            err += capsys.readouterr().err
            return err.count("newHeads subscription down") >= 2

        _wait_for(reported_twice, "the failed subscription reported, then tried again")
    finally:
        stop.set()
        service.join(BOUND)
        store.close()
    assert not service.is_alive()
    assert "subscribing again in 0.5 s" in err and "subscribing again in 1 s" in err
    assert "newHeads の購読が切れています" in err and dead in err


@pytest.mark.parametrize(
    ("rpc", "env", "field", "hint"),
    [
        ('{url: "ftp://127.0.0.1:21"}', None, "chains.dev.rpc[0].url", "got ftp://"),
        ("{url_env: DW_TEST_WS_URL}", "ws://", "chains.dev.rpc[0].url_env", "no host"),
        ("{url_env: DW_TEST_WS_URL}", "wss://h:port/v3/sekrit", "rpc[0].url_env", "no host"),
    ],
    ids=["scheme", "no-host", "bad-port"],
)
def test_bad_endpoint_urls_are_refused_naming_the_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rpc: str,
    env: str | None,
    field: str,
    hint: str,
) -> None:
    if env is not None:
        monkeypatch.setenv("DW_TEST_WS_URL", env)
    config = _config(tmp_path, rpc, "0x000000000000000000000000000000000000dEaD")
    assert main(["watch", str(config), "--until-height", "dev=0"]) == 2
    err = capsys.readouterr().err
    assert field in err and hint in err and "ws://" in err and "Traceback" not in err
    assert "sekrit" not in err


def test_a_websocket_url_on_a_bitcoin_chain_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "btc.yaml"
    path.write_text(
        "exchange: {name: T}\n"
        "chains:\n  btc:\n    kind: bitcoin\n    network: regtest\n"
        '    rpc: [{url: "ws://127.0.0.1:18443"}]\n'
        "wallets:\n  hot: {chain: btc, role: hot, custody: {kind: single_key}, "
        'addresses: ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"]}\n'
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "chains.btc.rpc[0].url" in err and "http(s) only" in err


def test_a_frame_that_breaks_the_reader_drops_the_connection_not_the_endpoint() -> None:
    """A frame the JSON reader cannot take (nested too deep) must not leave a dead reader
    behind a live-looking connection: the connection goes, the next call opens a new one.
    (Python's own recursion limit: py-evm, loaded by other tests, raises it so far that the
    same frame would overflow the C stack instead.)"""
    import sys

    calls = {"n": 0}

    def nested_once(conn: ServerConnection) -> None:
        for raw in conn:
            request = json.loads(raw)
            calls["n"] += 1
            if calls["n"] == 1:
                conn.send("[" * 5_000 + "]" * 5_000)
            conn.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}))

    server = WsServer(nested_once)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        rpc = WsJsonRpc(server.url, timeout=5)
        with pytest.raises(MalformedRpcResponse):
            rpc.call("eth_blockNumber", [])
        assert rpc.call("eth_blockNumber", []) == "0x1" and rpc.connects == 2
        rpc.close()
    finally:
        sys.setrecursionlimit(limit)
        server.close()


def test_a_server_that_stops_answering_is_left_for_a_fresh_connection() -> None:
    answered = {"n": 0}

    def answers_once(conn: ServerConnection) -> None:
        for raw in conn:
            request = json.loads(raw)
            answered["n"] += 1
            if answered["n"] in (1, 3):  # the first call of each connection only
                conn.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}))

    server = WsServer(answers_once)
    try:
        rpc = WsJsonRpc(server.url, timeout=0.5)
        assert rpc.call("eth_blockNumber", []) == "0x1"
        with pytest.raises(RetriableRpcError, match="no answer"):
            rpc.call("eth_blockNumber", [])
        assert rpc.call("eth_blockNumber", []) == "0x1" and rpc.connects == 2
        rpc.close()
    finally:
        server.close()


def test_a_subscription_dropped_at_once_backs_off_more_each_time() -> None:
    """A provider that accepts the subscription and closes straight away: the pauses grow,
    never a reconnect storm on the exchange's API key."""

    def accept_then_close(conn: ServerConnection) -> None:
        request = json.loads(conn.recv())
        conn.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0xsub"}))
        conn.close(1008, "subscription limit")

    server = WsServer(accept_then_close)
    pauses: list[float] = []
    watch = HeadWatch(
        "dev",
        WsJsonRpc(server.url, timeout=5),
        on_lost=lambda chain, exc, pause: pauses.append(pause),
        on_restored=lambda chain: None,
        backoff_seconds=0.05,
        max_backoff_seconds=0.4,
    )
    watch.start()
    try:
        _wait_for(lambda: len(pauses) >= 4, "four losses reported")
    finally:
        watch.stop()
        server.close()
    assert pauses[:4] == [0.05, 0.1, 0.2, 0.4]
