"""A local EVM development node (anvil, from the project's npm packages) that the drill starts,
drives and always stops.

anvil runs with ``--no-mining``: a transaction waits in the node's mempool until ``mine()``, so
the drill decides what each block holds and can show a transaction while it is still pending.
The genesis time is fixed and every block is 12 s after its parent, so the same drill makes the
same blocks (and hashes) on every run. The binary is run directly, never through ``npx``
(ready in a fraction of a second).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from drainwatch.errors import BadInput, DrainwatchError, RetriableRpcError
from watchers.jsonrpc import HttpJsonRpc

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: npm installs the binary of the machine's platform only, in a package named after it.
ANVIL_GLOB = "node_modules/@foundry-rs/anvil-*/bin/anvil"
GENESIS_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
BLOCK_SECONDS = 12
START_SECONDS = 15.0


class AnvilMissing(BadInput):
    """anvil is not installed where the npm packages of the project go."""


class DevNodeError(DrainwatchError):
    """anvil did not start, or did not do what it was asked."""


def find_anvil(roots: Sequence[Path] | None = None) -> Path:
    """The anvil binary of the project's npm packages (or of those of the current directory)."""
    roots = roots or (PROJECT_ROOT, Path.cwd())
    for root in roots:
        for candidate in sorted(root.glob(ANVIL_GLOB)):
            if candidate.is_file():
                return candidate
    where = " or ".join(str(root / ANVIL_GLOB) for root in roots)
    raise AnvilMissing(
        f"anvil (npm @foundry-rs/anvil) is not installed: looked for {where}. Run `make drill`, "
        "which installs the npm packages first / anvil がインストールされていません。"
        "npm パッケージを先に導入する `make drill` で実行してください"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevNode:
    """A running anvil; a context manager that stops it on the way out, whatever happened."""

    def __init__(self, binary: Path, *, balance_eth: int, chain_id: int) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.chain_id = chain_id
        args = [
            str(binary),
            *("--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id)),
            *("--balance", str(balance_eth), "--timestamp", str(GENESIS_TIME)),
            *("--no-mining", "--silent"),
        ]
        # A file, not a pipe: nothing reads it while anvil runs, and a full pipe would block it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the node)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.rpc = HttpJsonRpc(self.url, timeout=10)
        try:
            self._wait_ready()
            self.call("anvil_setBlockTimestampInterval", [BLOCK_SECONDS])
            self.accounts: list[str] = [str(a) for a in self.call("eth_accounts", [])]
        except BaseException:
            self.stop()
            self._stderr.close()
            raise

    def __enter__(self) -> DevNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._stderr.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                self.rpc.call("eth_chainId", [])
                return
            except RetriableRpcError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace").strip()
        raise DevNodeError(f"anvil did not start at {self.url}: {err or 'no message'}")

    def stop(self) -> None:
        """Stop anvil and wait for it (idempotent)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def call(self, method: str, params: Sequence[Any]) -> Any:
        return self.rpc.call(method, params)

    def send(self, sender: str, to: str | None, value: int = 0, data: str = "0x") -> str:
        """Submit a transaction of an unlocked account; it waits in the mempool until mined."""
        tx: dict[str, Any] = {"from": sender, "value": hex(value), "data": data}
        if to is not None:
            tx["to"] = to
        return str(self.call("eth_sendTransaction", [tx]))

    def raw_transaction(self, tx_hash: str) -> str:
        """The signed bytes of a known transaction, to submit it again after a reorg."""
        return str(self.call("eth_getRawTransactionByHash", [tx_hash]))

    def send_raw(self, raw: str) -> str:
        return str(self.call("eth_sendRawTransaction", [raw]))

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks (the first takes what the mempool holds); the new head."""
        for _ in range(blocks):
            self.call("evm_mine", [])
        return self.head()

    def head(self) -> int:
        return int(self.call("eth_blockNumber", []), 16)

    def receipt(self, tx_hash: str) -> dict[str, Any]:
        receipt = self.call("eth_getTransactionReceipt", [tx_hash])
        if not isinstance(receipt, dict) or receipt.get("status") != "0x1":
            raise DevNodeError(f"transaction {tx_hash} was not mined successfully: {receipt}")
        return receipt

    def deploy(self, sender: str, initcode: str) -> str:
        tx = self.send(sender, None, 0, initcode)
        self.mine()
        return str(self.receipt(tx)["contractAddress"])

    def snapshot(self) -> str:
        return str(self.call("evm_snapshot", []))

    def revert(self, snapshot: str) -> None:
        if self.call("evm_revert", [snapshot]) is not True:
            raise DevNodeError(f"anvil refused to revert to snapshot {snapshot}")
