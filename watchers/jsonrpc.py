"""JSON-RPC over HTTP for EVM nodes and Bitcoin Core alike: the transport, calls and batches.

Errors are sorted once, here: a timeout, a refused connection, HTTP 429 or 5xx is retriable
(``RetriableRpcError``: try the next endpoint, back off); a JSON-RPC error object is an
``RpcError``; an answer that is not JSON-RPC at all is ``MalformedRpcResponse``. Numbers that are
not integers are parsed as ``Decimal`` (Bitcoin Core reports BTC amounts as JSON numbers), never
as floats. Failover, back-off and answer checks are middlewares around it: ``rpc_stack``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from drainwatch.errors import MalformedRpcResponse, RetriableRpcError, RpcError
from drainwatch.ports import JsonRpc

log = logging.getLogger(__name__)

#: One JSON-RPC call: method and params.
Call = tuple[str, Sequence[Any]]

#: Calls per HTTP request in a batch: hosted providers refuse larger ones (some at 100).
MAX_BATCH = 50


def redact_url(url: str) -> str:
    """Scheme, host and port only: safe for logs, alerts and reports.

    Hosted node providers put the API key in the path (``/v3/<key>``), so the path goes too.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    path = "/…" if parts.path.strip("/") else ""
    return urlunsplit((parts.scheme, host, path, "", ""))


class HttpJsonRpc:
    """One JSON-RPC endpoint over HTTP(S).

    ``basic_auth`` is ``(user, password)`` and ``headers`` may carry a bearer token, both taken
    from the environment by the wiring; neither is ever part of ``endpoint``.
    """

    def __init__(
        self,
        url: str,
        *,
        basic_auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        core_errors: bool = False,
    ) -> None:
        """``core_errors``: the node is a Bitcoin Core, which (before v28) answers a refused
        call with HTTP 500 and its error in the body: read that as an answer (see
        ``_application_error``), not as a server failure."""
        self._url = url
        self._core_errors = core_errors
        self._auth = basic_auth
        self._timeout = timeout
        self._session = session or requests.Session()
        self._session.headers.update(headers or {})
        # Proxy settings (HTTPS_PROXY, NO_PROXY, ...) are read from the environment once, here,
        # not at every request: requests would otherwise scan the environment and look for a
        # ~/.netrc on each call (about 0.8 ms a call, measured). Credentials come only from
        # auth_env, never from ~/.netrc.
        self._session.trust_env = False
        self._session.proxies.update(requests.utils.get_environ_proxies(url))
        # What trust_env would have read too: a CA bundle for nodes behind a corporate CA.
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self._session.verify = bundle
        self._ids = itertools.count(1)
        self.endpoint = redact_url(url)
        self.batches = True  # until the node refuses a batch

    def call(self, method: str, params: Sequence[Any]) -> Any:
        payload = {
            "jsonrpc": "2.0",
            "id": next(self._ids),
            "method": method,
            "params": list(params),
        }
        return unwrap_response(self.endpoint, method, self._post(payload, method))

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Several calls in JSON-RPC batches of at most ``MAX_BATCH``, results in call order.

        Any error answer in a batch raises (as ``call`` would have for that call). A node that
        refuses batches altogether (an error object, or an answer that is not a list) is asked
        one call at a time from then on, and that is logged once.
        """
        results: list[Any] = []
        for start in range(0, len(calls), MAX_BATCH):
            chunk = calls[start : start + MAX_BATCH]
            answers = self._batch(chunk) if len(chunk) > 1 and self.batches else None
            if answers is None:  # one call at a time
                answers = [self.call(method, params) for method, params in chunk]
            results.extend(answers)
        return results

    def _batch(self, calls: Sequence[Call]) -> list[Any] | None:
        """The answers of one batch request; None when the node turns out not to batch."""
        ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": list(params)}
            for i, (method, params) in zip(ids, calls, strict=True)
        ]
        label = f"batch of {len(calls)} ({calls[0][0]}, …)"
        body = self._post(payload, label)
        if not isinstance(body, list):
            log.warning(
                "%s does not answer JSON-RPC batches; asking one call at a time", self.endpoint
            )
            self.batches = False
            return None
        by_id: dict[Any, Any] = {
            answer["id"]: answer for answer in body if isinstance(answer, dict) and "id" in answer
        }
        if any(i not in by_id for i in ids) or len(body) != len(ids):
            # Some proxies answer a batch they cannot pair up (ids dropped or nulled): not a
            # broken node, just not one to batch with.
            log.warning(
                "%s answered a batch of %d calls with %d unpaired answers; asking one call at "
                "a time from now on",
                self.endpoint,
                len(ids),
                len(body),
            )
            self.batches = False
            return None
        return [
            unwrap_response(self.endpoint, method, by_id[i])
            for i, (method, _) in zip(ids, calls, strict=True)
        ]

    def _post(self, payload: Any, label: str) -> Any:
        try:
            response = self._session.post(
                self._url, json=payload, auth=self._auth, timeout=self._timeout
            )
        except requests.RequestException as exc:
            # Only the exception's class: its text quotes the URL, whose path may hold an API key.
            raise RetriableRpcError(
                f"{self.endpoint}: {label} failed: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if (
            status == 500
            and self._core_errors
            and (answer := _application_error(response.content)) is not None
        ):
            return answer
        if status == 429 or status >= 500:
            raise RetriableRpcError(f"{self.endpoint}: {label} answered HTTP {status}")
        if status in (401, 403):
            raise RpcError(
                f"{self.endpoint}: {label} refused with HTTP {status}: check the credentials "
                "named by auth_env"
            )
        try:
            return json.loads(response.content, parse_float=Decimal)
        except RecursionError:
            raise MalformedRpcResponse(
                self.endpoint, label, "the answer is nested too deep to read"
            ) from None
        except ValueError as exc:
            raise MalformedRpcResponse(
                self.endpoint, label, f"HTTP {response.status_code}, not JSON"
            ) from exc


def _application_error(content: bytes) -> dict[str, Any] | None:
    """The JSON-RPC answer in an HTTP 500 when it carries an application error (code -1 to -99):
    how Bitcoin Core before v28 answers a refused call (a transaction it does not have, a
    height beyond its tip), which is an answer, not a server failure to fail over from. Any
    other 500 (a proxy's error page, "work queue depth exceeded") is None: retriable."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and -99 <= code <= -1:
        return body  # type: ignore[no-any-return]
    return None


def call_many(rpc: JsonRpc, calls: Sequence[Call]) -> list[Any]:
    """``calls`` as one JSON-RPC batch where the endpoint (or middleware stack) batches, else one
    call at a time; results in call order."""
    batch = getattr(rpc, "batch", None)
    if batch is not None and len(calls) > 1:
        results: list[Any] = batch(calls)
        return results
    return [rpc.call(method, params) for method, params in calls]


def unwrap_response(endpoint: str, method: str, body: Any) -> Any:
    """The ``result`` of a JSON-RPC response object, or the error it carries, as an exception."""
    if not isinstance(body, dict):
        raise MalformedRpcResponse(endpoint, method, "the answer is not a JSON object")
    error = body.get("error")
    if error is not None:
        code, message = None, error
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
        text = f"{endpoint}: {method} returned error {code}: {message}"
        if is_transient(code, str(message)):
            raise RetriableRpcError(text)
        raise RpcError(text)
    if "result" not in body:
        raise MalformedRpcResponse(endpoint, method, "neither result nor error in the answer")
    return body["result"]


#: Error answers that say "not now" rather than "never": a rate limit (-32005, EIP-1474; some
#: providers put HTTP's 429 in the error object, per call of a batch) or a
#: backend behind a load balancer that has not got the block yet. Another endpoint, or the same
#: one a moment later, will answer.
_TRANSIENT_CODES = {-32005, 429, -28}  # -28: Bitcoin Core still loading (RPC_IN_WARMUP)
_TRANSIENT_TEXT = ("header not found", "unknown block", "missing trie node", "rate limit")


#: Answers that share a rate limit's code (Infura: -32005) but say the query is too big:
#: asking again will not help, asking for less will (the caller splits the query).
_TOO_BIG_TEXT = ("query returned more than", "range too large", "response size")


def is_transient(code: Any, message: str) -> bool:
    lowered = message.lower()
    if any(text in lowered for text in _TOO_BIG_TEXT):
        return False
    return code in _TRANSIENT_CODES or any(text in lowered for text in _TRANSIENT_TEXT)
