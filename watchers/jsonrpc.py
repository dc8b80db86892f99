"""JSON-RPC over HTTP, for EVM nodes and Bitcoin Core alike, with failover between endpoints.

Errors are sorted once, here: a timeout, a refused connection, HTTP 429 or 5xx is retriable
(``RetriableRpcError``: try the next endpoint, back off); a JSON-RPC error object is an
``RpcError``; an answer that is not JSON-RPC at all is ``MalformedRpcResponse``. Numbers that are
not integers are parsed as ``Decimal`` (Bitcoin Core reports BTC amounts as JSON numbers), never
as floats.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from drainwatch.errors import (
    ConfigError,
    DrainwatchError,
    MalformedRpcResponse,
    RetriableRpcError,
    RpcError,
)
from drainwatch.ports import JsonRpc

log = logging.getLogger(__name__)


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
    ) -> None:
        self._url = url
        self._auth = basic_auth
        self._timeout = timeout
        self._session = session or requests.Session()
        self._session.headers.update(headers or {})
        self._ids = itertools.count(1)
        self.endpoint = redact_url(url)

    def call(self, method: str, params: Sequence[Any]) -> Any:
        request_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        try:
            response = self._session.post(
                self._url, json=payload, auth=self._auth, timeout=self._timeout
            )
        except requests.RequestException as exc:
            # Only the exception's class: its text quotes the URL, whose path may hold an API key.
            raise RetriableRpcError(
                f"{self.endpoint}: {method} failed: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetriableRpcError(f"{self.endpoint}: {method} answered HTTP {status}")
        if status in (401, 403):
            raise RpcError(
                f"{self.endpoint}: {method} refused with HTTP {status}: check the credentials "
                "named by auth_env"
            )
        try:
            body = json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise MalformedRpcResponse(
                self.endpoint, method, f"HTTP {response.status_code}, not JSON"
            ) from exc
        return unwrap_response(self.endpoint, method, body)


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


#: Error answers that say "not now" rather than "never": a rate limit (-32005, EIP-1474) or a
#: backend behind a load balancer that has not got the block yet. Another endpoint, or the same
#: one a moment later, will answer.
_TRANSIENT_CODES = {-32005}
_TRANSIENT_TEXT = ("header not found", "unknown block", "missing trie node", "rate limit")


def is_transient(code: Any, message: str) -> bool:
    lowered = message.lower()
    return code in _TRANSIENT_CODES or any(text in lowered for text in _TRANSIENT_TEXT)


class FailoverRpc:
    """Several endpoints of one chain: the first that answers wins.

    Any failure of one endpoint moves on to the next: a retriable one (down, slow, rate-limited,
    behind) and a final one alike (refused credentials, an error answer, garbage), since another
    node may well answer. The endpoint that answered is tried first next time, so a dead primary
    costs one timeout per call, not one per round. When every endpoint fails: a final error from
    any of them is raised at once; otherwise the round is retried with exponential back-off and
    the last retriable error raised in the end.

    ``verify`` checks an endpoint before it is first read and again after any failure of it (the
    node behind it may have been replaced): an endpoint on the wrong network raises
    ``ConfigError`` there, is taken out of the rotation and reported, and is never read. Only
    when no endpoint is left does the ``ConfigError`` propagate. ``verify_all`` runs the check
    on every endpoint at start, so a wrong backup is found before the primary fails.
    """

    def __init__(
        self,
        endpoints: Sequence[JsonRpc],
        *,
        rounds: int = 3,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        verify: Callable[[JsonRpc], None] | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("FailoverRpc needs at least one endpoint")
        self._endpoints = list(endpoints)
        self._rounds = rounds
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._verify = verify
        self._verified: set[int] = set()
        self.excluded: dict[str, ConfigError] = {}
        self.failovers = 0

    @property
    def endpoint(self) -> str:
        return self._endpoints[0].endpoint

    def verify_all(self) -> None:
        """Check every endpoint now; one that is down is checked when it is first used."""
        for rpc in list(self._endpoints):
            try:
                self._check(rpc)
            except _Excluded:
                continue
            except RetriableRpcError as exc:
                log.warning("cannot check %s yet: %s", rpc.endpoint, exc)
        self._raise_if_none_left()

    def call(self, method: str, params: Sequence[Any]) -> Any:
        last: RetriableRpcError | None = None
        for attempt in range(self._rounds):
            final: DrainwatchError | None = None
            for position, rpc in enumerate(list(self._endpoints)):
                try:
                    self._check(rpc)
                    result = rpc.call(method, params)
                except _Excluded:
                    continue
                except RetriableRpcError as exc:
                    log.warning("RPC endpoint failed, trying the next: %s", exc)
                    self._verified.discard(id(rpc))
                    last = exc
                    continue
                except (RpcError, MalformedRpcResponse) as exc:
                    self._verified.discard(id(rpc))
                    final = final or exc
                    continue
                if position:
                    # Promote the endpoint that answered so the failing one is not tried first.
                    self._endpoints.insert(0, self._endpoints.pop(position))
                    self.failovers += 1
                return result
            self._raise_if_none_left()
            if final is not None:
                raise final
            if attempt + 1 < self._rounds:
                self._sleep(self._backoff * 2**attempt)
        assert last is not None
        raise last

    def _check(self, rpc: JsonRpc) -> None:
        if self._verify is None or id(rpc) in self._verified:
            return
        try:
            self._verify(rpc)
        except ConfigError as exc:
            log.error("endpoint taken out of rotation: %s", exc)
            self._endpoints.remove(rpc)
            self.excluded[rpc.endpoint] = exc
            raise _Excluded from None
        self._verified.add(id(rpc))

    def _raise_if_none_left(self) -> None:
        if not self._endpoints:
            raise next(iter(self.excluded.values()))


class _Excluded(Exception):
    """Raised by ``FailoverRpc._check`` for an endpoint it has just taken out of rotation."""
