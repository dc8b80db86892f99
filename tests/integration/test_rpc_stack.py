"""The RPC middlewares against real HTTP: JSON-RPC batches on anvil, a node that refuses
batches, a node that answers garbage taken out of the rotation (and back after its quarantine,
checked again), and ``eth_getBlockReceipts`` used where offered."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from drainwatch.errors import ConfigError, MalformedRpcResponse, RetriableRpcError, RpcError
from tests.fixtures.evm_nodes import AnvilNode, start_anvil
from watchers.evm.answers import EVM_ANSWER_CHECKS
from watchers.evm.extract import BlockExtractor, TraceDialect
from watchers.evm.follower import chain_id_check
from watchers.evm.mapping import parse_block
from watchers.jsonrpc import MAX_BATCH, Call, HttpJsonRpc, call_many
from watchers.rpc_stack import AnswerCheck, Backoff, Failover, FailoverRpc, Verified

ANVIL_CHAIN = "0x7a69"  # 31337


class _Node(BaseHTTPRequestHandler):
    """A node of a given character, picked by the URL path: ``/garbage`` answers eth_chainId
    right and every block as a broken object; ``/nobatch`` answers single calls like a node and
    refuses batches with an error object; ``/lostid`` drops one answer of each batch."""

    hits: ClassVar[dict[str, int]] = {}

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        _Node.hits[self.path] = _Node.hits.get(self.path, 0) + 1
        if isinstance(request, list):
            if self.path == "/nobatch":
                body: Any = {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": "batch"},
                }
            else:
                body = [self._answer(r) for r in request]
                if self.path == "/lostid":
                    body = body[1:]
        else:
            body = self._answer(request)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        method, rid = request["method"], request["id"]
        if method == "eth_chainId":
            return {"jsonrpc": "2.0", "id": rid, "result": ANVIL_CHAIN}
        if self.path == "/garbage":
            return {"jsonrpc": "2.0", "id": rid, "result": {"number": "0xZZ", "hash": "yes"}}
        return {"jsonrpc": "2.0", "id": rid, "result": hex(len(request["params"]))}

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def odd_node() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_batch_answers_in_call_order_across_several_requests(anvil_url: str) -> None:
    rpc = HttpJsonRpc(anvil_url)
    calls: list[Call] = [("eth_getBlockByNumber", [hex(0), False])] * (MAX_BATCH + 7)
    calls = [("eth_chainId", []), *calls, ("eth_blockNumber", [])]
    results = rpc.batch(calls)
    assert len(results) == len(calls) and results[0] == ANVIL_CHAIN
    assert all(r["number"] == "0x0" for r in results[1:-1])
    assert int(results[-1], 16) >= 0 and rpc.batches


def test_one_error_in_a_batch_raises_it(anvil_url: str) -> None:
    rpc = HttpJsonRpc(anvil_url)
    with pytest.raises(RpcError, match="no_such_method"):
        rpc.batch([("eth_chainId", []), ("no_such_method", [])])


def test_a_node_that_refuses_batches_is_asked_one_call_at_a_time(
    odd_node: str, caplog: pytest.LogCaptureFixture
) -> None:
    rpc = HttpJsonRpc(odd_node + "/nobatch")
    with caplog.at_level("WARNING"):
        first = rpc.batch([("m", [1]), ("m", [1, 2]), ("m", [])])
        second = rpc.batch([("m", [1]), ("m", [])])
    assert (first, second) == (["0x1", "0x2", "0x0"], ["0x1", "0x0"])
    assert not rpc.batches
    assert caplog.text.count("does not answer JSON-RPC batches") == 1


def test_a_batch_answer_that_loses_a_call_is_asked_again_call_by_call(odd_node: str) -> None:
    rpc = HttpJsonRpc(odd_node + "/lostid")
    assert rpc.batch([("m", [1]), ("m", [1, 2]), ("m", [])]) == ["0x1", "0x2", "0x0"]
    assert not rpc.batches


def test_call_many_without_batch_support_calls_one_by_one() -> None:
    class Plain:
        endpoint = "plain"

        def __init__(self) -> None:
            self.seen: list[str] = []

        def call(self, method: str, params: Sequence[Any]) -> Any:
            self.seen.append(method)
            return len(self.seen)

    plain = Plain()
    assert call_many(plain, [("a", []), ("b", [])]) == [1, 2] and plain.seen == ["a", "b"]


def test_a_node_answering_garbage_is_dropped_from_rotation_then_checked_again(
    odd_node: str, anvil_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    garbage = HttpJsonRpc(odd_node + "/garbage")
    rpc = FailoverRpc(
        [garbage, HttpJsonRpc(anvil_url)],
        verify=chain_id_check("dev", 31337),
        checks=EVM_ANSWER_CHECKS,
        quarantine_seconds=60,
        clock=lambda: now[0],
    )
    with caplog.at_level("ERROR"):
        block = rpc.call("eth_getBlockByNumber", ["0x0", False])
    assert block["number"] == "0x0"  # from anvil: the garbage never reached the caller
    assert garbage.endpoint in rpc.excluded and "garbage" in caplog.text
    assert "block." in str(rpc.excluded[garbage.endpoint])  # the field is named
    before = _Node.hits.get("/garbage", 0)
    for _ in range(3):
        rpc.call("eth_getBlockByNumber", ["0x0", False])
    assert _Node.hits.get("/garbage", 0) == before  # out of the rotation: never asked
    now[0] += 61  # the quarantine is over: back in the rotation, behind the node that answers
    rpc.call("eth_blockNumber", [])
    assert rpc.excluded == {} and _Node.hits.get("/garbage", 0) == before


def test_without_answer_checks_garbage_reaches_the_caller(odd_node: str) -> None:
    """What the ``AnswerCheck`` layer is for: the bare transport passes the broken block on."""
    rpc = FailoverRpc([HttpJsonRpc(odd_node + "/garbage")])
    assert rpc.call("eth_getBlockByNumber", ["0x0", False])["number"] == "0xZZ"


def test_the_only_node_answering_garbage_is_never_benched(odd_node: str, anvil_url: str) -> None:
    """Benching the last node would leave nothing to ask for minutes (one HTML error page from
    a proxy, say): its garbage fails that call only, named, and it is asked again next time."""
    rpc = FailoverRpc([HttpJsonRpc(odd_node + "/garbage")], checks=EVM_ANSWER_CHECKS)
    with pytest.raises(MalformedRpcResponse, match=r"block\.number"):
        rpc.call("eth_getBlockByNumber", ["0x0", True])
    assert rpc.excluded == {}
    assert rpc.call("eth_chainId", []) == ANVIL_CHAIN  # still asked


def test_repeated_garbage_benches_longer_and_the_error_is_the_latest(
    odd_node: str, anvil_url: str
) -> None:
    now = [0.0]
    garbage, good = HttpJsonRpc(odd_node + "/garbage"), HttpJsonRpc(anvil_url)
    rpc = FailoverRpc([garbage, good], checks=EVM_ANSWER_CHECKS, clock=lambda: now[0])
    rpc.call("eth_getBlockByNumber", ["0x0", False])
    assert garbage.endpoint in rpc.excluded
    now[0] += 30  # back after its first 30 s ...
    rpc.call("eth_blockNumber", [])
    assert garbage.endpoint not in rpc.excluded
    rpc.failover._endpoints.reverse()  # ... asked first again, and garbage again
    rpc.call("eth_getBlockByNumber", ["0x0", False])
    now[0] += 30
    rpc.call("eth_blockNumber", [])
    assert garbage.endpoint in rpc.excluded  # 60 s this time
    now[0] += 30
    rpc.call("eth_blockNumber", [])
    assert garbage.endpoint not in rpc.excluded


def test_a_backup_that_cannot_be_checked_at_start_does_not_stop_the_chain(
    odd_node: str, anvil_url: str
) -> None:
    rpc = FailoverRpc(
        [HttpJsonRpc(anvil_url), HttpJsonRpc(odd_node + "/lostid")],
        verify=chain_id_check("dev", 31337),
    )
    rpc.verify_all()  # /lostid answers eth_chainId right; the point is nothing raises
    refused = FailoverRpc(
        [HttpJsonRpc(anvil_url), HttpJsonRpc(odd_node + "/garbage")],
        verify=lambda r: parse_block(r.call("eth_getBlockByNumber", ["0x0", True])) and None,
        checks=EVM_ANSWER_CHECKS,
    )
    refused.verify_all()  # the backup's check fails with garbage: warned, not raised
    assert int(refused.call("eth_blockNumber", []), 16) >= 0


def test_the_layers_compose_and_batch(anvil_url: str) -> None:
    naps: list[float] = []
    transport = HttpJsonRpc(anvil_url)
    stack = Backoff(
        Failover(
            [AnswerCheck(Verified(transport, chain_id_check("dev", 31337)), EVM_ANSWER_CHECKS)]
        ),
        sleep=naps.append,
    )
    chain_id, block = stack.batch([("eth_chainId", []), ("eth_getBlockByNumber", ["0x0", True])])
    assert chain_id == ANVIL_CHAIN and block["number"] == "0x0" and naps == []


def test_a_wrong_network_found_in_a_batch_is_excluded_for_good(anvil_url: str) -> None:
    rpc = FailoverRpc([HttpJsonRpc(anvil_url)], verify=chain_id_check("ethereum", 1))
    with pytest.raises(ConfigError, match="31337"):
        rpc.batch([("eth_blockNumber", []), ("eth_blockNumber", [])])
    assert list(rpc.excluded) == [HttpJsonRpc(anvil_url).endpoint]


def test_backoff_retries_only_retriable_errors() -> None:
    class Flaky:
        endpoint = "flaky"

        def __init__(self, failures: list[Exception]) -> None:
            self.failures = failures

        def call(self, method: str, params: Sequence[Any]) -> Any:
            if self.failures:
                raise self.failures.pop(0)
            return "ok"

    naps: list[float] = []
    assert Backoff(Flaky([RetriableRpcError("busy")] * 2), sleep=naps.append).call("m", []) == "ok"
    assert naps == [0.5, 1.0]
    with pytest.raises(RpcError, match="refused"):
        Backoff(Flaky([RpcError("refused")]), sleep=naps.append).call("m", [])
    assert naps == [0.5, 1.0]


class _Counting:
    def __init__(
        self, inner: HttpJsonRpc, block_receipts: bool = True, traces: bool = False
    ) -> None:
        self.inner = inner
        self.block_receipts = block_receipts
        self.traces = traces
        self.endpoint = inner.endpoint
        self.methods: list[str] = []

    def call(self, method: str, params: Sequence[Any]) -> Any:
        self.methods.append(method)
        missing: tuple[str, ...] = ()
        if not self.traces:
            missing = ("trace_block", "debug_traceBlockByNumber")  # a node without traces ...
        if not self.block_receipts:
            missing += ("eth_getBlockReceipts",)  # ... and, if so asked, without block receipts
        if method in missing:
            raise RpcError(f"the method {method} does not exist (-32601)")
        return self.inner.call(method, params)

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        self.methods.extend(f"batch:{m}" for m, _ in calls)
        return self.inner.batch(calls)


def _block_of_three_payouts(rpc: HttpJsonRpc, sender: str, to: str) -> int:
    """One block holding three transfers from ``sender`` (automine off while they are sent)."""
    rpc.call("evm_setAutomine", [False])
    try:
        for value in (1, 2, 3):
            rpc.call("eth_sendTransaction", [{"from": sender, "to": to, "value": hex(value)}])
        rpc.call("evm_mine", [])
    finally:
        rpc.call("evm_setAutomine", [True])
    return int(rpc.call("eth_blockNumber", []), 16)


@pytest.mark.parametrize("offered", [True, False])
def test_receipts_by_block_where_offered_else_one_batch(offered: bool) -> None:
    proc, url = start_anvil()
    try:
        plain = HttpJsonRpc(url)
        sender, to = plain.call("eth_accounts", [])[:2]
        height = _block_of_three_payouts(plain, sender, to)
        rpc = _Counting(plain, block_receipts=offered)
        extractor = BlockExtractor("dev", rpc, frozenset({sender.lower()}))
        block = extractor.fetch(height)  # the header: the dialect is probed on it
        assert block is not None
        facts = extractor.extract(block)
        assert facts is not None and extractor.dialect is TraceDialect.NONE
        assert [t.amount for t in facts.transfers] == [1, 2, 3]
        receipts = [m for m in rpc.methods if "Receipt" in m]
        if offered:
            assert receipts == ["eth_getBlockReceipts"] and extractor.block_receipts
        else:
            assert receipts == ["eth_getBlockReceipts"] + ["batch:eth_getTransactionReceipt"] * 3
            assert extractor.block_receipts is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_node_without_block_receipts_is_probed_once() -> None:
    from tests.fixtures.evm_nodes import EthTesterNode

    node = EthTesterNode()
    senders, to = node.accounts[:3], node.accounts[3]
    node.tester.disable_auto_mine_transactions()  # one block of three payouts (one per sender:
    hashes = [node.send(a, to, v) for a, v in zip(senders, (1, 2, 3), strict=True)]
    node.mine(1)  # eth-tester keeps one pending transaction per sender)
    head = int(node.rpc.call("eth_blockNumber", []), 16)
    asked: list[str] = []

    class Watch:
        endpoint = node.rpc.endpoint

        def call(self, method: str, params: Sequence[Any]) -> Any:
            asked.append(method)
            return node.rpc.call(method, params)

    extractor = BlockExtractor("dev", Watch(), frozenset(a.lower() for a in senders))
    for _ in range(2):
        block = extractor.fetch(head)
        assert block is not None
        transfers = extractor.transfers(block)
        assert transfers is not None
        assert [t.tx_hash for t in transfers] == [h.lower() for h in hashes]
    assert asked.count("eth_getBlockReceipts") == 1 and extractor.block_receipts is False


def test_on_a_trace_block_node_a_block_is_one_round_trip(anvil_url: str) -> None:
    """Once the node is known to speak trace_block, a block's header, traces and logs go in
    one JSON-RPC batch; the transfers are those read call by call."""
    plain = HttpJsonRpc(anvil_url)
    sender, to = plain.call("eth_accounts", [])[:2]
    watched = frozenset({sender.lower()})
    node = AnvilNode(plain)
    heights = []
    for value in (5, 6):
        node.send(sender, to, value)  # waits until mined
        heights.append(node.head())
    rpc = _Counting(plain)
    rpc.call = lambda method, params: (
        _Counting.call(rpc, method, params) if "trace" not in method else plain.call(method, params)
    )  # type: ignore[method-assign]
    extractor = BlockExtractor("dev", rpc, watched)
    first = extractor.fetch(heights[0])
    assert first is not None and extractor.transfers(first) is not None
    assert extractor.dialect is TraceDialect.PARITY
    rpc.methods.clear()
    second = extractor.fetch(heights[1])
    assert second is not None
    together = extractor.transfers(second)
    assert rpc.methods == [
        "batch:eth_getBlockByNumber",
        "batch:trace_block",
        *["batch:eth_getLogs"] * 4,  # from, to, ERC-1155 to, emitted by a watched contract
    ]
    apart = BlockExtractor("dev", plain, watched)
    apart.dialect = TraceDialect.GETH  # call by call: full block, receipts, callTracer
    full = apart.fetch(heights[1])
    assert full is not None and together == apart.transfers(full)
    assert together is not None and [t.amount for t in together] == [6]


def test_a_log_of_another_block_is_asked_again(anvil_url: str) -> None:
    """A log of another block in the answer (backends that disagree, a reorg meanwhile):
    retried later, never mixed in."""
    from watchers.evm.extract import NodeInconsistent

    plain = HttpJsonRpc(anvil_url)
    sender, to = plain.call("eth_accounts", [])[:2]
    node = AnvilNode(plain)
    node.send(sender, to, 1)  # waits until mined
    head = node.head()

    class OtherBlockLogs:
        endpoint = plain.endpoint

        def call(self, method: str, params: Sequence[Any]) -> Any:
            result = plain.call(method, params)
            if method == "eth_getLogs":
                fake = {
                    "address": "0x" + "11" * 20,
                    "topics": [
                        "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
                        "0x" + "00" * 12 + sender[2:].lower(),
                        "0x" + "00" * 12 + to[2:].lower(),
                    ],
                    "data": "0x" + "00" * 31 + "01",
                    "blockNumber": hex(head),
                    "blockHash": "0x" + "ee" * 32,
                    "transactionHash": "0x" + "dd" * 32,
                    "transactionIndex": "0x0",
                    "logIndex": "0x0",
                    "removed": False,
                }
                return [*result, fake]
            return result

    extractor = BlockExtractor("dev", OtherBlockLogs(), frozenset({sender.lower()}))
    extractor.dialect = TraceDialect.PARITY
    block = extractor.fetch(head)
    assert block is not None
    with pytest.raises(NodeInconsistent, match="a reorg meanwhile"):
        extractor.extract(block)


def test_a_query_too_big_is_not_a_rate_limit() -> None:
    """Infura answers both with -32005: a rate limit is retried later, a query returning too
    much is final, so the caller asks for less instead of waiting in vain."""
    from watchers.jsonrpc import is_transient

    assert is_transient(-32005, "daily request count exceeded, request rate limited")
    assert not is_transient(-32005, "query returned more than 10000 results")
    assert not is_transient(-32602, "block range too large")
