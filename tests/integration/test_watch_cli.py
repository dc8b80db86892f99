"""`drainwatch watch`, `transfers` and `alerts` end to end on anvil, with the store on SQLite and
on the real PostgreSQL server: the cold-wallet drain is alerted once, a restart resumes without
repeating it, and bad settings fail with exit 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from drainwatch.cli import main
from tests.fixtures.evm_nodes import AnvilNode
from tests.fixtures.postgres import PgServer
from watchers.jsonrpc import HttpJsonRpc

CONFIG = """\
exchange: {{name: Test Exchange}}
store: {{url: "{store}"{password}}}
{bus}
chains:
  dev:
    kind: evm
    network: devnet
    chain_id: 31337
    rpc: [{{url: "{rpc}"}}]
    confirmations: 0
    poll_interval_seconds: 0.05
wallets:
  hot: {{chain: dev, role: hot, custody: {{kind: single_key}}, addresses: ["{hot}"]}}
  cold:
    chain: dev
    role: cold
    custody: {{kind: multisig, threshold: 2, signers: [a, b, c]}}
    addresses: ["{cold}"]
alerts: {{channels: [{{kind: console}}]}}
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dw.db'}"
        return
    server: PgServer = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url


def _config(
    tmp_path: Path, node: AnvilNode, url: str, store: str, password: str = "", bus: str = ""
) -> Path:
    path = tmp_path / "dw.yaml"
    path.write_text(
        CONFIG.format(
            store=store,
            password=password,
            bus=bus,
            rpc=url,
            hot=node.accounts[1],
            cold=node.accounts[2],
        )
    )
    return path


def test_watch_alerts_once_and_resumes(
    tmp_path: Path, anvil_url: str, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    config = _config(tmp_path, node, anvil_url, store_url)
    start = node.head()
    assert main(["watch", str(config), "--until-height", f"dev={start}"]) == 0
    drain = node.send(node.accounts[2], node.accounts[8], 7 * 10**18)
    payout = node.send(node.accounts[1], node.accounts[8], 10**18)  # hot, announced by nothing
    head = node.head()
    assert main(["watch", str(config), "--until-height", f"dev={head}"]) == 0
    out = capsys.readouterr().out
    assert out.count("[CRITICAL] Outflow from cold wallet") == 1
    assert "7 ETH" in out and drain.lower() in out and "コールドウォレットからの送金" in out
    assert out.count("[HIGH] Unplanned outflow") == 1 and payout.lower() in out
    headers = [line for line in out.splitlines() if line.startswith("[")]
    assert len(headers) == 2, headers  # two alerts, each printed once

    # A restart with nothing new repeats nothing.
    assert main(["watch", str(config), "--until-height", f"dev={head}"]) == 0
    assert capsys.readouterr().out == ""

    assert main(["transfers", str(config), "--wallet", "cold", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert (record["tx_hash"], record["amount"]) == (drain.lower(), str(7 * 10**18))
    assert main(["alerts", str(config), "--json"]) == 0
    alerts = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sorted((a["rule_id"], a["severity"], a["tx_hash"]) for a in alerts) == [
        ("cold-outflow", "critical", drain.lower()),
        ("unplanned-outflow", "high", payout.lower()),
    ]


def test_unknown_chain_in_until_height(
    tmp_path: Path, anvil_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    config = _config(tmp_path, node, anvil_url, f"sqlite:///{tmp_path / 'x.db'}")
    assert main(["watch", str(config), "--until-height", "mars=5"]) == 2
    assert "mars" in capsys.readouterr().err


def test_missing_database_password_variable(
    tmp_path: Path,
    anvil_url: str,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    password = ", password_env: DW_TEST_DB_PASSWORD"
    config = _config(tmp_path, node, anvil_url, postgres_url, password)
    monkeypatch.delenv("DW_TEST_DB_PASSWORD", raising=False)
    assert main(["alerts", str(config)]) == 2
    err = capsys.readouterr().err
    assert "store.password_env" in err and "DW_TEST_DB_PASSWORD" in err
    monkeypatch.setenv("DW_TEST_DB_PASSWORD", "not-needed-with-trust-auth")
    assert main(["watch", str(config), "--until-height", f"dev={node.head()}"]) == 0
    assert main(["alerts", str(config)]) == 0


def test_the_database_password_is_never_printed(
    tmp_path: Path,
    anvil_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.fixtures.evm_nodes import free_port

    node = AnvilNode(HttpJsonRpc(anvil_url))
    nowhere = f"postgresql://drainwatch@127.0.0.1:{free_port()}/drainwatch"
    config = _config(tmp_path, node, anvil_url, nowhere, ", password_env: DW_TEST_DB_PASSWORD")
    monkeypatch.setenv("DW_TEST_DB_PASSWORD", "Pw-9f8e7d-secret")
    assert main(["alerts", str(config)]) == 1
    captured = capsys.readouterr()
    assert "127.0.0.1" in captured.err  # says where it could not connect
    assert "Pw-9f8e7d-secret" not in captured.err + captured.out


def test_read_only_commands_never_create_an_empty_store(
    tmp_path: Path, anvil_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    db = tmp_path / "never-written.db"
    config = _config(tmp_path, node, anvil_url, f"sqlite:///{db}")
    for command in (["alerts", str(config)], ["transfers", str(config), "--json"]):
        assert main(command) == 2
        assert "no store at" in capsys.readouterr().err
    assert not db.exists()


def test_unreachable_node_is_an_error_not_a_hang(
    tmp_path: Path, anvil_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    from tests.fixtures.evm_nodes import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    config = _config(tmp_path, node, dead, f"sqlite:///{tmp_path / 'y.db'}")
    assert main(["watch", str(config), "--until-height", "dev=1"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1" in err and "Traceback" not in err


def test_the_service_waits_for_a_node_that_comes_back(tmp_path: Path) -> None:
    """Without --until-height, `watch` is a service: a dead node is retried, not fatal."""
    import io
    import threading
    import time

    from drainwatch.store import open_store
    from drainwatch.watch import run_watch
    from tests.fixtures.evm_nodes import free_port, start_anvil

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "svc.db"
    stop = threading.Event()
    out = io.StringIO()
    proc = None
    try:
        proc, _ = start_anvil(port)
        node = AnvilNode(HttpJsonRpc(url))
        accounts = node.accounts
        proc.terminate()
        proc.wait(timeout=10)
        path = tmp_path / "svc.yaml"
        path.write_text(
            CONFIG.format(
                store=f"sqlite:///{db}",
                password="",
                bus="",
                rpc=url,
                hot=accounts[1],
                cold=accounts[2],
            )
        )
        result: list[int] = []
        thread = threading.Thread(
            target=lambda: result.append(run_watch(path, {}, stop=stop, stream=out)), daemon=True
        )
        thread.start()
        time.sleep(1.5)  # the service is now retrying a dead node
        assert thread.is_alive()
        proc, _ = start_anvil(port)
        node = AnvilNode(HttpJsonRpc(url))
        deadline = time.monotonic() + 60
        store = open_store(f"sqlite:///{db}")
        while store.get_checkpoint("dev") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        drain = node.send(accounts[2], accounts[8], 3 * 10**18)
        while not store.alerts() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [a.tx_hash for a in store.alerts()] == [drain.lower()]
        store.close()
    finally:
        stop.set()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    thread.join(timeout=30)
    assert result == [0]
    assert "Outflow from cold wallet" in out.getvalue()


def test_endpoint_url_and_token_from_the_environment(
    tmp_path: Path,
    anvil_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    config = _config(tmp_path, node, anvil_url, f"sqlite:///{tmp_path / 'e.db'}")
    text = config.read_text().replace(
        f'rpc: [{{url: "{anvil_url}"}}]', "rpc: [{url_env: DW_TEST_RPC, auth_env: DW_TEST_TOKEN}]"
    )
    config.write_text(text)
    monkeypatch.delenv("DW_TEST_RPC", raising=False)
    monkeypatch.setenv("DW_TEST_TOKEN", "tok-123")
    assert main(["watch", str(config), "--until-height", "dev=0"]) == 2
    assert "chains.dev.rpc[0].url_env" in capsys.readouterr().err
    monkeypatch.setenv("DW_TEST_RPC", anvil_url + "/")
    assert main(["watch", str(config), "--until-height", "dev=0"]) == 0
    err = capsys.readouterr().err
    assert "tok-123" not in err


@pytest.mark.kafka
def test_watch_on_kafka_alerts_once(
    tmp_path: Path, anvil_url: str, kafka_broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The all-in-one watcher on a real Kafka-protocol broker: the run does not end before the
    processor (a consumer group, seconds to join) has handled what the watcher published."""
    import secrets

    node = AnvilNode(HttpJsonRpc(anvil_url))
    prefix = f"dw{secrets.token_hex(4)}"
    bus = (
        f'bus: {{kind: kafka, bootstrap_servers: ["{kafka_broker}"], topic_prefix: {prefix}, '
        "session_timeout_ms: 6000, heartbeat_interval_ms: 1000}"
    )
    config = _config(tmp_path, node, anvil_url, f"sqlite:///{tmp_path / 'k.db'}", bus=bus)
    assert main(["watch", str(config), "--until-height", f"dev={node.head()}"]) == 0
    drain = node.send(node.accounts[2], node.accounts[8], 2 * 10**18)
    assert main(["watch", str(config), "--until-height", f"dev={node.head()}"]) == 0
    out = capsys.readouterr().out
    assert out.count("[CRITICAL] Outflow from cold wallet") == 1 and drain.lower() in out
    assert main(["watch", str(config), "--until-height", f"dev={node.head()}"]) == 0
    assert "Outflow" not in capsys.readouterr().out


def test_what_is_not_enforced_yet_is_said_and_a_batch_follows_the_chains_it_names(
    tmp_path: Path, anvil_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    config = _config(tmp_path, node, anvil_url, f"sqlite:///{tmp_path / 'u.db'}")
    text = config.read_text().replace(
        "    poll_interval_seconds: 0.05\n",
        "    poll_interval_seconds: 0.05\n"
        "    tokens: [{symbol: USDT, contract: '0xdAC17F958D2ee523a2206206994597C13D831ec7',"
        " decimals: 6}]\n"
        "  btc:\n    kind: bitcoin\n    network: regtest\n"
        "    rpc: [{url: 'http://127.0.0.1:1'}]\n",
    )
    config.write_text(text)
    # The Bitcoin chain's node is down: a batch run that names it fails (exit 1), one that
    # names only the EVM chain does not touch it.
    assert main(["watch", str(config), "--until-height", "btc=5"]) == 1
    assert "getblockchaininfo failed" in capsys.readouterr().err
    assert main(["watch", str(config), "--until-height", f"dev={node.head()}"]) == 0
    err = capsys.readouterr().err
    assert "not yet enforced" in err and "waiting in the mempool" in err and "btc" in err


def test_a_relative_sqlite_path_is_relative_to_the_config_file(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "elsewhere").mkdir()
    config = _config(tmp_path / "cfg", node, anvil_url, "sqlite:///rel.db")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["watch", str(config), "--until-height", f"dev={node.head()}"]) == 0
    assert (tmp_path / "cfg" / "rel.db").exists()
    assert not (tmp_path / "elsewhere" / "rel.db").exists()
    assert main(["alerts", "../cfg/dw.yaml"]) == 0  # found from another directory too


class Blackhole:
    """A node that accepts connections and never answers."""

    def __init__(self) -> None:
        import socket
        import threading

        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.accepted.set()

    def first_still_waiting(self) -> bool:
        """The first request is still unanswered and its client has not given up on it."""
        import socket

        conn = self.connections[0]
        conn.setblocking(False)
        try:
            return conn.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True  # nothing to read, not closed: still waiting

    def close(self) -> None:
        self._server.close()
        for conn in self.connections:
            conn.close()


def test_a_node_that_never_answers_delays_only_its_own_chain(
    tmp_path: Path, anvil_url: str
) -> None:
    import io
    import threading
    import time

    from drainwatch.store import open_store
    from drainwatch.watch import run_watch

    node = AnvilNode(HttpJsonRpc(anvil_url))
    hole = Blackhole()
    db = tmp_path / "two.db"
    config = _config(tmp_path, node, anvil_url, f"sqlite:///{db}")
    stuck = (
        "chains:\n  stuck:\n    kind: evm\n    network: devnet\n    chain_id: 31337\n"
        f'    rpc: [{{url: "{hole.url}"}}]\n'
    )
    config.write_text(config.read_text().replace("chains:\n", stuck, 1))  # listed first
    stop = threading.Event()
    thread = threading.Thread(
        target=run_watch, args=(config, {}), kwargs={"stop": stop, "stream": io.StringIO()}
    )
    thread.start()
    try:
        assert hole.accepted.wait(30)  # the stuck chain's first request hangs ...
        store = open_store(f"sqlite:///{db}")
        deadline = time.monotonic() + 30
        while store.get_checkpoint("dev") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        drain = node.send(node.accounts[2], node.accounts[8], 10**18)
        while not store.alerts() and time.monotonic() < deadline:
            time.sleep(0.05)
        # ... and meanwhile the other chain was followed and its drain alerted.
        assert [a.tx_hash for a in store.alerts()] == [drain.lower()]
        assert hole.first_still_waiting()
        store.close()
    finally:
        stop.set()
        hole.close()
        thread.join(timeout=60)
    assert not thread.is_alive()
