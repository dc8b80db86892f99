"""A local Bitcoin regtest node (bcoin 1.0.2, from the project's npm packages) that the drill
and the tests start, drive and always stop.

bcoin keeps its chain in memory (``--memory=true``), so every node starts from genesis; one
``generatetoaddress`` call mines the 432 blocks that activate segwit in under a second. bcoin's
quirks live here and in the test helpers, never in the watcher adapter (plain Core JSON-RPC):

- its own regtest address prefixes (``BCOIN_REGTEST``: ``R…`` p2pkh, ``rb1…`` segwit);
- segwit is enforced only from height 432; the subsidy halves every 150 blocks;
- ``sendrawtransaction`` answers with the txid even when the mempool refused the transaction:
  ``send_raw`` checks the mempool and raises with the reason bcoin logged;
- its mempool has no replace-by-fee (a conflicting spend is refused): ``mine_block`` puts
  chosen transactions straight into a block, as a miner that took the replacement would, and
  connecting that block evicts the pending original;
- ``invalidateblock`` rewinds to the parent but empties the whole mempool;
- on a reorg, a disconnected block's transactions go back to the mempool only if the mempool
  is not empty, and never those spending a coinbase; ``getblock`` of a stale block still
  counts confirmations (compare ``getblockhash(height)`` instead);
- two nodes peer by dialling each other (``addnode``; bcoin asks for blocks only of peers it
  dialled) and are cut with ``setban`` on both sides (a ban covers the whole IP);
- a listening node first looks up its public IP (two DNS queries, up to ~2 s each) and opens
  its P2P port only then, after RPC already answers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
from embit.transaction import Transaction

from drainwatch.addresses import (
    BitcoinAddressParams,
    decode_bitcoin_address,
    encode_segwit_address,
)
from drainwatch.devnode import PROJECT_ROOT, free_port
from drainwatch.errors import BadInput, DrainwatchError

BCOIN_BIN = "node_modules/.bin/bcoin"
#: bcoin's own regtest prefixes (lib/protocol/networks.js), not Bitcoin Core's (m/n, 2, bcrt1).
BCOIN_REGTEST = BitcoinAddressParams(p2pkh=0x3C, p2sh=0x26, bech32_hrp="rb")
SEGWIT_HEIGHT = 432  # three 144-block BIP9 windows: defined, started, locked in
COINBASE_MATURITY = 100
HALVING_INTERVAL = 150
START_SECONDS = 30.0
WAIT_SECONDS = 10.0
#: Where blocks nobody cares about go: p2wsh of OP_TRUE (anyone can spend it; it is regtest).
SINK_ADDRESS = encode_segwit_address(BCOIN_REGTEST.bech32_hrp, 0, hashlib.sha256(b"\x51").digest())
_DEAD_PEER = "127.0.0.1:1"  # --only needs a value, or bcoin dials the default regtest seed


class BcoinMissing(BadInput):
    """bcoin is not installed where the npm packages of the project go."""


class BcoinError(DrainwatchError):
    """bcoin did not start, refused a call, or did not do what it was asked in time."""


def find_bcoin(roots: Sequence[Path] | None = None) -> Path:
    """The bcoin launcher script of the project's npm packages (or of the current directory)."""
    roots = roots or (PROJECT_ROOT, Path.cwd())
    for root in roots:
        candidate = root / BCOIN_BIN
        if candidate.is_file():
            return candidate
    where = " or ".join(str(root / BCOIN_BIN) for root in roots)
    raise BcoinMissing(
        f"bcoin (npm bcoin 1.0.2) is not installed: looked for {where}. Run `make setup` "
        "(npm install of package.json) / bcoin がインストールされていません。"
        "`make setup`（package.json の npm install）を実行してください"
    )


def script_for_address(address: str, params: BitcoinAddressParams = BCOIN_REGTEST) -> bytes:
    """The output script an address stands for (legacy or segwit)."""
    decoded = decode_bitcoin_address(address, params)
    if decoded.script_type == "p2pkh":
        return b"\x76\xa9\x14" + decoded.program + b"\x88\xac"
    if decoded.script_type == "p2sh":
        return b"\xa9\x14" + decoded.program + b"\x87"
    assert decoded.witness_version is not None
    version = decoded.witness_version + 0x50 if decoded.witness_version else 0
    return bytes([version, len(decoded.program)]) + decoded.program


class BcoinNode:
    """A running bcoin regtest node; a context manager that stops it on the way out.

    ``listen=True`` opens its P2P port to peers; ``only`` names the P2P ports it dials (and
    nothing else). Without them it is alone.
    """

    def __init__(
        self,
        binary: Path | None = None,
        *,
        listen: bool = False,
        only: Sequence[int] = (),
        start_seconds: float = START_SECONDS,
        wait: bool = True,
        wallet: bool = False,
    ) -> None:
        binary = binary or find_bcoin()
        self.p2p_port, self.http_port = free_port(), free_port()
        self.wallet_port = free_port() if wallet else None
        self.url = f"http://127.0.0.1:{self.http_port}/"
        self.listening = listen
        api_key = secrets.token_hex(16)
        self.auth = ("drainwatch", api_key)
        self.prefix = Path(tempfile.mkdtemp(prefix="bcoin-"))
        peers = ",".join(f"127.0.0.1:{port}" for port in only) or _DEAD_PEER
        args = [
            str(binary),
            *("--network=regtest", "--memory=true", "--index-tx=true", "--workers=false"),
            f"--prefix={self.prefix}",
            *("--host=127.0.0.1", f"--port={self.p2p_port}", f"--listen={str(listen).lower()}"),
            f"--only={peers}",
            *("--http-host=127.0.0.1", f"--http-port={self.http_port}"),
            # bcoin's own wallet is not used (the drill signs with drainwatch.regtest_wallet);
            # without it a node starts in half the time.
            f"--wallet-http-port={self.wallet_port}" if wallet else "--no-wallet=true",
            f"--api-key={api_key}",
        ]
        # A file, not a pipe: nothing reads it while bcoin runs, and a full pipe would block it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the node)
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NODE_BACKEND": "js"},
            start_new_session=True,  # its own process group, so stop() reaches every child
        )
        self._session = requests.Session()
        self._session.auth = self.auth
        self.start_seconds = start_seconds
        if wait:  # wait=False lets a caller start several nodes, then wait for each
            self.wait_ready()

    def __enter__(self) -> BcoinNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"BcoinNode(rpc={self.url}, p2p={self.p2p_port})"

    def wait_ready(self) -> None:
        """Wait until the node answers RPC (and, listening, takes peers); stop it and raise
        ``BcoinError`` with its last words if it does not within ``start_seconds``."""
        try:
            self._wait_ready(self.start_seconds)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                self.rpc("getblockcount")
                # RPC answers before the P2P port opens (bcoin first looks up its public IP).
                if not self.listening or _port_open(self.p2p_port):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        state = "exited" if self.process.poll() is not None else f"not ready in {seconds:.0f} s"
        raise BcoinError(f"bcoin did not start at {self.url} ({state}): {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines bcoin printed (it logs to stdout), for error messages."""
        if self._log.closed:
            return "(log closed)"
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:]) or "no output"

    def stop(self) -> None:
        """Stop bcoin (its whole process group), wait for it, remove its prefix (idempotent)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self._session.close()
        self._log.close()
        shutil.rmtree(self.prefix, ignore_errors=True)

    # --- JSON-RPC ------------------------------------------------------------------------------

    def rpc(self, method: str, *params: Any, timeout: float = 60.0) -> Any:
        """Call one JSON-RPC method; raise ``BcoinError`` with the node's message on error."""
        body = {"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}
        response = self._session.post(self.url, json=body, timeout=timeout)
        if response.status_code == 401:
            raise BcoinError(f"bcoin at {self.url} refused the API key")
        try:
            answer = json.loads(response.text, parse_float=Decimal)
        except ValueError:
            raise BcoinError(
                f"bcoin answered {method} with HTTP {response.status_code}: {response.text[:200]}"
            ) from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise BcoinError(f"bcoin refused {method}: {message}")
        return answer["result"]

    # --- chain ---------------------------------------------------------------------------------

    def height(self) -> int:
        return int(self.rpc("getblockcount"))

    def best_hash(self) -> str:
        return str(self.rpc("getbestblockhash"))

    def block_hash(self, height: int) -> str:
        return str(self.rpc("getblockhash", height))

    def raw_block(self, block_hash: str) -> bytes:
        return bytes.fromhex(self.rpc("getblock", block_hash, 0))

    def raw_transaction(self, txid: str) -> bytes:
        """A transaction of the mempool or of the chain (the node indexes every one)."""
        return bytes.fromhex(self.rpc("getrawtransaction", txid, 0))

    def mine(self, blocks: int, address: str) -> list[str]:
        """Mine ``blocks`` blocks paying ``address`` (each takes what the mempool holds)."""
        return [str(h) for h in self.rpc("generatetoaddress", blocks, address)]

    def activate_segwit(self) -> None:
        """Mine (to the sink) up to the height where bcoin's regtest enforces segwit."""
        if self.height() < SEGWIT_HEIGHT:
            self.mine(SEGWIT_HEIGHT - self.height(), SINK_ADDRESS)
        status = self.rpc("getblockchaininfo")["bip9_softforks"]["segwit"]["status"]
        if status != "active":
            raise BcoinError(f"segwit is {status!r}, not active, at height {self.height()}")

    def invalidate(self, block_hash: str) -> None:
        """Rewind the chain to the parent of ``block_hash`` (bcoin empties the mempool)."""
        self.rpc("invalidateblock", block_hash)

    def reconsider(self, block_hash: str) -> None:
        self.rpc("reconsiderblock", block_hash)

    # --- mempool -------------------------------------------------------------------------------

    def mempool(self) -> list[str]:
        return [str(txid) for txid in self.rpc("getrawmempool")]

    def send_raw(self, raw_hex: str) -> str:
        """Submit a signed transaction; return its txid once it is in the mempool, or raise
        ``BcoinError`` with bcoin's reason (it logs the reason and answers with the txid)."""
        self._log.seek(0, io.SEEK_END)
        since = self._log.tell()
        txid = str(self.rpc("sendrawtransaction", raw_hex))
        said: list[str] = []

        def settled() -> bool:
            self._log.seek(since)
            lines = self._log.read().decode(errors="replace").splitlines()
            said[:] = [ln for ln in lines if txid in ln and "(rpc)" not in ln]
            return bool(said) or txid in self.mempool()

        poll(settled, 5.0)
        if txid not in self.mempool():
            reason = " / ".join(said[-3:]) or "no reason logged"
            raise BcoinError(f"bcoin did not accept transaction {txid} into its mempool: {reason}")
        return txid

    def mine_block(self, transactions: Sequence[str], address: str) -> str:
        """Mine one block holding exactly ``transactions`` (raw hex, in order), whatever the
        mempool holds; the block's hash. Pending transactions that conflict are evicted."""
        template = self.rpc("getblocktemplate", {"rules": ["segwit"]})
        fees = sum(int(tx["fee"]) for tx in template["transactions"])
        subsidy = int(template["coinbasevalue"]) - fees  # claim no fees: never too much
        raws = [bytes.fromhex(tx) for tx in transactions]
        block = assemble_block(template, subsidy, script_for_address(address), raws)
        self.rpc("submitblock", block.hex())
        block_hash = _sha256d(block[:80])[::-1].hex()
        if self.best_hash() != block_hash:
            raise BcoinError(f"bcoin did not take block {block_hash}: {self.log_tail(5)}")
        return block_hash

    # --- peers ---------------------------------------------------------------------------------

    def peer_count(self) -> int:
        return len(self.rpc("getpeerinfo"))

    def _has_outbound(self, other: BcoinNode) -> bool:
        """Whether this node dialled ``other`` and every peer finished the version handshake
        (bcoin announces nothing to a peer before that)."""
        peers = self.rpc("getpeerinfo")
        shaken = all(int(p.get("version", -1)) > 0 for p in peers)
        return shaken and any(p.get("addr") == f"127.0.0.1:{other.p2p_port}" for p in peers)

    def connect(self, other: BcoinNode, seconds: float = WAIT_SECONDS) -> None:
        """Lift the bans between the two nodes, dial ``other`` (it must listen), and wait
        until both hold the same best block."""
        self.rpc("setban", f"127.0.0.1:{other.p2p_port}", "remove")
        other.rpc("setban", f"127.0.0.1:{self.p2p_port}", "remove")
        # Each dials the other: a bcoin node asks for blocks (getblocks) only of peers it dialled.
        pairs = [(self, other), (other, self)] if self.listening else [(self, other)]

        def dialled() -> bool:
            done = True
            for node, peer in pairs:
                if not node._has_outbound(peer):
                    node.rpc("addnode", f"127.0.0.1:{peer.p2p_port}", "onetry")  # not retried
                    done = False
            return done

        wait_until(dialled, f"{self} and {other} to connect", seconds)
        self.wait_synced(other, seconds)

    def disconnect(self, other: BcoinNode, seconds: float = WAIT_SECONDS) -> None:
        """Cut the two nodes apart: each bans the other (bcoin bans per IP: all of 127.0.0.1)."""
        self.rpc("setban", f"127.0.0.1:{other.p2p_port}", "add")
        other.rpc("setban", f"127.0.0.1:{self.p2p_port}", "add")
        wait_until(
            lambda: self.peer_count() == 0 and other.peer_count() == 0,
            f"{self} and {other} to drop each other",
            seconds,
        )

    def wait_synced(self, other: BcoinNode, seconds: float = WAIT_SECONDS) -> str:
        """Wait until both nodes have the same best block; its hash."""
        wait_until(
            lambda: self.best_hash() == other.best_hash(), f"{self} to sync with {other}", seconds
        )
        return self.best_hash()


def start_pair(
    binary: Path | None = None, *, activate_segwit: bool = True
) -> tuple[BcoinNode, BcoinNode]:
    """Two listening nodes started side by side (each takes ~2 s: bcoin looks up its public
    IP first), connected and in sync; the caller stops both. Segwit is activated on the first
    before they connect, so the second takes the 432 blocks in one getblocks sync."""
    nodes: list[BcoinNode] = []
    try:
        for _ in range(2):
            nodes.append(BcoinNode(binary, listen=True, wait=False))
        for node in nodes:
            node.wait_ready()
        if activate_segwit:
            nodes[0].activate_segwit()
        nodes[0].connect(nodes[1], seconds=30)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes[0], nodes[1]


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def poll(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` came true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_until(condition: Callable[[], bool], what: str, seconds: float) -> None:
    if not poll(condition, seconds):
        raise BcoinError(f"timed out after {seconds:.0f} s waiting for {what}")


# --- block assembly (for mine_block) -----------------------------------------------------------


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    return b"\xfe" + n.to_bytes(4, "little")


def _push_int(n: int) -> bytes:
    body = n.to_bytes((n.bit_length() + 8) // 8, "little")  # minimal, with a sign bit to spare
    return bytes([len(body)]) + body


def _merkle_root(leaves: list[bytes]) -> bytes:
    level = leaves
    while len(level) > 1:
        if len(level) % 2:
            level = [*level, level[-1]]
        level = [_sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def assemble_block(
    template: dict[str, Any], subsidy: int, payout_script: bytes, transactions: list[bytes]
) -> bytes:
    """A valid block on ``template`` (a getblocktemplate answer) holding ``transactions``."""
    parsed = [Transaction.parse(raw) for raw in transactions]
    txids = [bytes(reversed(tx.txid())) for tx in parsed]  # internal byte order
    segwit = any(tx.is_segwit for tx in parsed)
    height = int(template["height"])
    script_sig = _push_int(height) + _push_int(int(time.time_ns() % 2**32))
    outputs = [subsidy.to_bytes(8, "little") + _varint(len(payout_script)) + payout_script]
    if segwit:  # BIP141 commitment to the wtxids (the coinbase's counts as zero)
        wtxids = [b"\0" * 32] + [_sha256d(raw) for raw in transactions]
        commitment = _sha256d(_merkle_root(wtxids) + b"\0" * 32)
        script = b"\x6a\x24\xaa\x21\xa9\xed" + commitment
        outputs.append((0).to_bytes(8, "little") + _varint(len(script)) + script)
    coinbase_in = b"\0" * 32 + b"\xff" * 4 + _varint(len(script_sig)) + script_sig + b"\xff" * 4
    body = b"\x01" + coinbase_in + _varint(len(outputs)) + b"".join(outputs)
    version = (2).to_bytes(4, "little")
    legacy = version + body + b"\0" * 4
    coinbase = version + b"\x00\x01" + body + b"\x01\x20" + b"\0" * 32 + b"\0" * 4
    coinbase = coinbase if segwit else legacy
    root = _merkle_root([_sha256d(legacy), *txids])
    header = (
        int(template["version"]).to_bytes(4, "little")
        + bytes.fromhex(template["previousblockhash"])[::-1]
        + root
        + int(template["curtime"]).to_bytes(4, "little")
        + bytes.fromhex(template["bits"])[::-1]
    )
    target = int(template["target"], 16)
    nonce = 0
    while int.from_bytes(_sha256d(header + nonce.to_bytes(4, "little"))[::-1], "big") > target:
        nonce += 1
    txs = [coinbase, *transactions]
    return header + nonce.to_bytes(4, "little") + _varint(len(txs)) + b"".join(txs)
