"""JSON-RPC over real HTTP: error classes, failover from a dead endpoint to anvil, and no
credentials in anything a user sees."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from drainwatch.errors import BadInput, MalformedRpcResponse, RetriableRpcError, RpcError
from tests.fixtures.evm_nodes import free_port
from watchers.jsonrpc import HttpJsonRpc, redact_url
from watchers.rpc_stack import FailoverRpc

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
    "/wrongchain": (200, b'{"jsonrpc":"2.0","id":1,"result":"0x5"}'),
    # Bitcoin Core before v28 answers a refused call with HTTP 500 and the error in the body:
    "/core-notx": (
        500,
        b'{"result":null,"error":{"code":-5,"message":"No such mempool transaction"},"id":1}',
    ),
    "/core-warmup": (
        500,
        b'{"result":null,"error":{"code":-28,"message":"Loading block index..."},"id":1}',
    ),
    "/core-internal": (500, b'{"result":null,"error":{"code":-32603,"message":"x"},"id":1}'),
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
        ("/core-notx", RetriableRpcError),  # from an EVM node: a server failure
    ],
)
def test_answers_are_classified(odd_server: str, path: str, error: type[Exception]) -> None:
    with pytest.raises((RpcError, MalformedRpcResponse)) as err:
        HttpJsonRpc(odd_server + path).call("eth_blockNumber", [])
    assert type(err.value) is error
    assert "eth_blockNumber" in str(err.value)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/core-notx", RpcError),  # an answer: no such transaction
        ("/core-warmup", RetriableRpcError),  # still loading: ask again
        ("/core-internal", RetriableRpcError),  # not an application error
        ("/overloaded", RetriableRpcError),
    ],
)
def test_bitcoin_cores_http_500_errors_are_answers(
    odd_server: str, path: str, error: type[Exception]
) -> None:
    with pytest.raises(RpcError) as err:
        HttpJsonRpc(odd_server + path, core_errors=True).call("getrawtransaction", ["00"])
    assert type(err.value) is error


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


@pytest.mark.parametrize("path", ["/nomethod", "/denied", "/garbage"])
def test_a_final_error_on_one_endpoint_tries_the_next(
    odd_server: str, anvil_url: str, path: str
) -> None:
    rpc = FailoverRpc([HttpJsonRpc(odd_server + path), HttpJsonRpc(anvil_url)])
    assert rpc.call("eth_getBlockByNumber", ["0x0", False])["number"] == "0x0"
    assert rpc.failovers == 1


def test_when_every_endpoint_refuses_the_final_error_comes_at_once(odd_server: str) -> None:
    naps: list[float] = []
    rpc = FailoverRpc(
        [HttpJsonRpc(odd_server + "/nomethod"), HttpJsonRpc(odd_server + "/overloaded")],
        sleep=naps.append,
    )
    with pytest.raises(RpcError, match="no such method") as err:
        rpc.call("debug_traceBlockByNumber", ["0x1", {}])
    assert not isinstance(err.value, RetriableRpcError) and naps == []


def test_an_endpoint_on_the_wrong_chain_is_taken_out_of_rotation(anvil_url: str) -> None:
    from drainwatch.errors import ConfigError
    from watchers.evm.follower import chain_id_check

    wrong = HttpJsonRpc(anvil_url)  # anvil is chain 31337
    rpc = FailoverRpc([wrong], verify=chain_id_check("ethereum", 1))
    with pytest.raises(ConfigError, match="31337"):
        rpc.verify_all()
    assert list(rpc.excluded) == [wrong.endpoint]


class _Switchable:
    """An endpoint whose node can be swapped for another one behind the same name."""

    def __init__(self, target: HttpJsonRpc) -> None:
        self.target: HttpJsonRpc | None = target
        self.endpoint = "http://node.example:8545"

    def call(self, method: str, params: object) -> object:
        if self.target is None:
            raise RetriableRpcError("node.example: down")
        return self.target.call(method, list(params))  # type: ignore[call-overload]


def test_a_backup_on_the_wrong_chain_is_found_at_start_and_never_read(
    anvil_url: str, odd_server: str
) -> None:
    from watchers.evm.follower import chain_id_check

    good = _Switchable(HttpJsonRpc(anvil_url))
    wrong = HttpJsonRpc(odd_server + "/wrongchain")
    rpc = FailoverRpc([good, wrong], verify=chain_id_check("dev", 31337), sleep=lambda _: None)
    rpc.verify_all()
    assert list(rpc.excluded) == [wrong.endpoint]
    good.target = None  # the primary goes down: there is no backup to fall to
    with pytest.raises(RetriableRpcError):
        rpc.call("eth_blockNumber", [])


def test_a_node_replaced_behind_its_endpoint_is_checked_again(anvil_url: str) -> None:
    from drainwatch.errors import ConfigError
    from tests.fixtures.evm_nodes import start_anvil
    from watchers.evm.follower import chain_id_check

    node = _Switchable(HttpJsonRpc(anvil_url))
    rpc = FailoverRpc([node], verify=chain_id_check("dev", 31337), sleep=lambda _: None)
    assert rpc.call("eth_blockNumber", []) is not None
    node.target = None  # down ...
    with pytest.raises(RetriableRpcError):
        rpc.call("eth_blockNumber", [])
    proc, other_url = start_anvil(chain_id=5)  # ... and back, on another network
    try:
        node.target = HttpJsonRpc(other_url)
        with pytest.raises(ConfigError, match="chain id 5"):
            rpc.call("eth_blockNumber", [])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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


def test_a_ca_bundle_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy settings are read once at start; so is the CA bundle a node behind a corporate CA
    needs (requests reads it only while trusting the environment at every call)."""
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp-ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    rpc = HttpJsonRpc("https://node.example:8545")
    assert rpc._session.verify == "/etc/corp-ca.pem"
    assert rpc._session.proxies.get("https") == "http://proxy.example:3128"
    assert "https" not in HttpJsonRpc("https://internal.example:8545")._session.proxies
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert HttpJsonRpc("https://node.example:8545")._session.verify is True
