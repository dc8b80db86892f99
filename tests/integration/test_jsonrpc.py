"""JSON-RPC over real HTTP: error classes, failover from a dead endpoint to anvil, and no
credentials in anything a user sees."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from drainwatch.errors import BadInput, MalformedRpcResponse, RetriableRpcError, RpcError
from tests.fixtures.evm_nodes import free_port
from watchers.jsonrpc import FailoverRpc, HttpJsonRpc, redact_url

ANSWERS: dict[str, tuple[int, bytes]] = {
    "/garbage": (200, b"<html>gateway</html>"),
    "/overloaded": (503, b"busy"),
    "/limited": (429, b"slow down"),
    "/behind": (200, b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"header not found"}}'),
    "/limit": (200, b'{"jsonrpc":"2.0","error":{"code":-32005,"message":"slow down"}}'),
    "/nomethod": (200, b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"no such method"}}'),
    "/denied": (401, b"unauthorized"),
    "/neither": (200, b'{"jsonrpc":"2.0","id":1}'),
    "/list": (200, b"[1,2,3]"),
    "/decimal": (200, b'{"jsonrpc":"2.0","id":1,"result":{"fee":0.00001}}'),
}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = ANSWERS[self.path]  # an unknown path fails the test loudly
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def odd_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/garbage", MalformedRpcResponse),
        ("/overloaded", RetriableRpcError),
        ("/limited", RetriableRpcError),
        ("/behind", RetriableRpcError),
        ("/limit", RetriableRpcError),
        ("/nomethod", RpcError),
        ("/denied", RpcError),
        ("/neither", MalformedRpcResponse),
        ("/list", MalformedRpcResponse),
    ],
)
def test_answers_are_classified(odd_server: str, path: str, error: type[Exception]) -> None:
    with pytest.raises((RpcError, MalformedRpcResponse)) as err:
        HttpJsonRpc(odd_server + path).call("eth_blockNumber", [])
    assert type(err.value) is error
    assert "eth_blockNumber" in str(err.value)


def test_malformed_answers_are_bad_input_and_errors_are_not() -> None:
    assert issubclass(MalformedRpcResponse, BadInput)
    assert not issubclass(RetriableRpcError, BadInput)


def test_numbers_are_decimals_never_floats(odd_server: str) -> None:
    result = HttpJsonRpc(odd_server + "/decimal").call("getmempoolentry", [])
    assert str(result["fee"]) == "0.00001" and not isinstance(result["fee"], float)


def test_a_refused_connection_is_retriable() -> None:
    with pytest.raises(RetriableRpcError):
        HttpJsonRpc(f"http://127.0.0.1:{free_port()}", timeout=2).call("eth_chainId", [])


def test_failover_to_the_next_endpoint_and_stay_there(anvil_url: str) -> None:
    dead = HttpJsonRpc(f"http://127.0.0.1:{free_port()}", timeout=2)
    live = HttpJsonRpc(anvil_url)
    rpc = FailoverRpc([dead, live], sleep=lambda _: None)
    assert int(rpc.call("eth_chainId", []), 16) > 0
    assert rpc.failovers == 1
    assert rpc.endpoint == live.endpoint  # the live one is now tried first
    rpc.call("eth_blockNumber", [])
    assert rpc.failovers == 1


def test_every_endpoint_down_raises_after_bounded_rounds() -> None:
    naps: list[float] = []
    rpc = FailoverRpc(
        [HttpJsonRpc(f"http://127.0.0.1:{free_port()}", timeout=1) for _ in range(2)],
        rounds=3,
        backoff_seconds=0.5,
        sleep=naps.append,
    )
    with pytest.raises(RetriableRpcError):
        rpc.call("eth_chainId", [])
    assert naps == [0.5, 1.0]


def test_a_final_json_rpc_error_does_not_fail_over(odd_server: str, anvil_url: str) -> None:
    rpc = FailoverRpc([HttpJsonRpc(odd_server + "/nomethod"), HttpJsonRpc(anvil_url)])
    with pytest.raises(RpcError, match="no such method") as err:
        rpc.call("eth_getBlockByNumber", ["0x1", False])
    assert not isinstance(err.value, RetriableRpcError)


@pytest.mark.parametrize("path", ["/behind", "/limit", "/overloaded"])
def test_a_backend_behind_or_rate_limited_fails_over(
    odd_server: str, anvil_url: str, path: str
) -> None:
    rpc = FailoverRpc([HttpJsonRpc(odd_server + path), HttpJsonRpc(anvil_url)])
    assert rpc.call("eth_getBlockByNumber", ["0x0", False])["number"] == "0x0"
    assert rpc.failovers == 1


def test_an_api_key_in_the_url_path_never_reaches_a_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v3/SUPERSECRETAPIKEY123"
    rpc = FailoverRpc([HttpJsonRpc(url, timeout=1)], rounds=2, sleep=lambda _: None)
    with caplog.at_level("DEBUG"), pytest.raises(RetriableRpcError) as err:
        rpc.call("eth_chainId", [])
    assert "SUPERSECRETAPIKEY123" not in str(err.value)
    assert "SUPERSECRETAPIKEY123" not in caplog.text
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_credentials_never_appear_in_the_endpoint_name() -> None:
    url = "https://alice:s3cret@node.example:8545/v1/KEYKEY?apikey=zzz#frag"
    assert redact_url(url) == "https://node.example:8545/…"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    rpc = HttpJsonRpc(url, basic_auth=("alice", "s3cret"))
    for secret in ("alice", "s3cret", "KEYKEY", "zzz"):
        assert secret not in rpc.endpoint
