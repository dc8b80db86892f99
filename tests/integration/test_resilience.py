"""The watcher under faults, on anvil: the primary endpoint dies mid-run and the secondary takes
over with no block skipped; the watcher process is SIGKILLed mid-run and restarted, and loses
and duplicates nothing."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from drainwatch.store import open_store
from tests.fixtures.evm_nodes import AnvilNode
from watchers.jsonrpc import HttpJsonRpc

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
    poll_interval_seconds: 0.05
wallets:
  hot: {{chain: dev, role: hot, custody: {{kind: single_key}}, addresses: ["{hot}"]}}
  cold:
    chain: dev
    role: cold
    custody: {{kind: multisig, threshold: 2, signers: [a, b, c]}}
    addresses: ["{cold}"]
"""


class TcpProxy:
    """A loopback TCP relay in front of a node, which a test can kill like a dead endpoint."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._alive = True
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._alive:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while self._alive:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return

    def kill(self) -> None:
        self._alive = False
        self._server.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass


def _config(tmp_path: Path, node: AnvilNode, rpc: str) -> Path:
    path = tmp_path / "dw.yaml"
    path.write_text(
        CONFIG.format(db=tmp_path / "dw.db", rpc=rpc, hot=node.accounts[1], cold=node.accounts[2])
    )
    return path


def _wait(predicate, seconds: float = 60) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _wait_until_watching(tmp_path: Path) -> None:
    db = tmp_path / "dw.db"
    assert _wait(db.exists)
    store = open_store(f"sqlite:///{db}")
    try:
        assert _wait(lambda: store.get_checkpoint("dev") is not None)
    finally:
        store.close()


def _assert_every_block_once(tmp_path: Path, node: AnvilNode, sent: list[str]) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'dw.db'}", create=False)
    try:
        blocks = sorted(ref.height for ref, _ in store.recent_blocks("dev", 100_000))
        assert blocks == list(range(blocks[0], node.head() + 1)), "a block was skipped"
        transfers = store.transfers(chain="dev")
        hashes = [t.tx_hash for t in transfers]
        assert sorted(hashes) == sorted(h.lower() for h in sent)  # each exactly once
    finally:
        store.close()


def test_the_secondary_endpoint_takes_over_with_no_block_skipped(
    tmp_path: Path, anvil_url: str
) -> None:
    from drainwatch.watch import run_watch

    node = AnvilNode(HttpJsonRpc(anvil_url))
    proxy = TcpProxy(int(anvil_url.rsplit(":", 1)[1]))
    endpoints = f'{{url: "{proxy.url}"}}, {{url: "{anvil_url}"}}'
    config = _config(tmp_path, node, endpoints)
    stop = threading.Event()
    import io

    thread = threading.Thread(
        target=run_watch, args=(config, {}), kwargs={"stop": stop, "stream": io.StringIO()}
    )
    thread.start()
    sent: list[str] = []
    try:
        _wait_until_watching(tmp_path)
        for i in range(30):
            sent.append(node.send(node.accounts[1], node.accounts[5], i + 1))
            if i == 10:
                proxy.kill()  # the primary dies mid-run
            time.sleep(0.02)
        store = open_store(f"sqlite:///{tmp_path / 'dw.db'}")
        assert _wait(lambda: len(store.transfers(chain="dev")) == len(sent))
        store.close()
    finally:
        stop.set()
        thread.join(timeout=60)
    _assert_every_block_once(tmp_path, node, sent)


def test_a_killed_watcher_restarts_and_loses_and_duplicates_nothing(
    tmp_path: Path, anvil_url: str
) -> None:
    node = AnvilNode(HttpJsonRpc(anvil_url))
    config = _config(tmp_path, node, f'{{url: "{anvil_url}"}}')
    command = [sys.executable, "-m", "drainwatch.cli", "watch", str(config)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sent: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for round_ in range(3):
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(proc)
            if round_ == 0:
                _wait_until_watching(tmp_path)  # a new deployment starts at the head
            for i in range(12):
                sent.append(node.send(node.accounts[2], node.accounts[6], round_ * 100 + i + 1))
                time.sleep(0.03)
            proc.send_signal(signal.SIGKILL)  # mid-run, whatever it was doing
            proc.wait(timeout=30)
        final = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(final)
        store = open_store(f"sqlite:///{tmp_path / 'dw.db'}", create=False)
        assert _wait(lambda: len(store.transfers(chain="dev")) >= len(sent))
        # Every cold-wallet drain alerted exactly once, across three kills.
        assert _wait(lambda: len(store.alerts()) == len(sent))
        assert sorted(a.tx_hash or "" for a in store.alerts()) == sorted(s.lower() for s in sent)
        store.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    _assert_every_block_once(tmp_path, node, sent)
