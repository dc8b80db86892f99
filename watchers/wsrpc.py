"""JSON-RPC over a WebSocket (ws://, wss://): the ``JsonRpc`` port, plus ``eth_subscribe``.

One connection per endpoint, opened on the first call and again on the first call after a
drop. Any number of threads may call at once: a request is sent under a lock and its answer is
picked out by id by the connection's one reader thread, which also hands subscription
notifications to their handlers. Errors are sorted as ``HttpJsonRpc`` sorts them: a refused or
lost connection, a handshake timeout or a call left unanswered past ``timeout`` is retriable
(``RetriableRpcError``); a JSON-RPC error object goes through ``unwrap_response``; a handshake
refused for credentials is an ``RpcError``; a server that is not a WebSocket JSON-RPC endpoint,
or a frame that is not JSON-RPC, is ``MalformedRpcResponse``. Messages name the endpoint by
``redact_url`` and quote no exception text (it may hold the URL and so an API key).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from drainwatch.errors import DrainwatchError, MalformedRpcResponse, RetriableRpcError, RpcError
from watchers.jsonrpc import redact_url, unwrap_response

log = logging.getLogger(__name__)

WS_SCHEMES = ("ws", "wss")
#: Blocks with full transactions and call traces run to many MiB: no practical cap on a frame.
MAX_MESSAGE_BYTES = 256 * 2**20

Notify = Callable[[Any], None]

#: Handshake answers that say "not now": overloaded, or a gateway without its backend.
_BUSY_STATUSES = {429, 500, 502, 503, 504}


@dataclass
class _Waiter:
    method: str
    #: For ``eth_subscribe``: (handler of notifications, callback when the connection is lost)
    subscription: tuple[Notify, Callable[[], None]] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    body: Any = None
    error: DrainwatchError | None = None


@dataclass
class _Link:
    """One open connection with what is waiting on it; dropped as a whole."""

    conn: ClientConnection
    pending: dict[int, _Waiter] = field(default_factory=dict)
    subscriptions: dict[str, tuple[Notify, Callable[[], None]]] = field(default_factory=dict)


class WsJsonRpc:
    """One JSON-RPC endpoint over a WebSocket.

    ``headers`` carry the credentials (``Authorization: Bearer …`` or ``Basic …``), taken from
    the environment by the wiring; they are sent with the opening handshake and are never part
    of ``endpoint``.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        open_timeout: float | None = None,
    ) -> None:
        if urlsplit(url).scheme not in WS_SCHEMES:
            raise ValueError("WsJsonRpc needs a ws:// or wss:// URL")
        self._url = url
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._open_timeout = timeout if open_timeout is None else open_timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _link and every _Link's dicts
        self._send_lock = threading.Lock()
        self._link: _Link | None = None
        self._closed = False
        self.endpoint = redact_url(url)
        self.connects = 0

    def call(self, method: str, params: Sequence[Any]) -> Any:
        [result] = self._request([(_Waiter(method), params)])
        return result

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls sent back to back on the connection (no JSON-RPC batch frame is
        needed: answers are matched by id), results in call order; the first error raises."""
        return self._request([(_Waiter(method), params) for method, params in calls])

    def subscribe(
        self, params: Sequence[Any], on_notification: Notify, on_lost: Callable[[], None]
    ) -> str:
        """``eth_subscribe(params)``; returns the subscription id.

        ``on_notification(result)`` runs in the reader thread for each notification (keep it
        short); ``on_lost()`` runs once when the connection carrying the subscription is gone,
        after which nothing more arrives: subscribe again. The handler is registered by the
        reader before it reads the next frame, so no notification slips between the answer and
        the registration.
        """
        waiter = _Waiter("eth_subscribe", (on_notification, on_lost))
        [result] = self._request([(waiter, params)])
        if not isinstance(result, str):
            raise MalformedRpcResponse(
                self.endpoint, "eth_subscribe", "the subscription id is not a string"
            )
        return result

    def close(self) -> None:
        """Close the connection; ``on_lost`` of its subscriptions runs. Calls after this fail."""
        with self._lock:
            self._closed = True
            link = self._link
        if link is not None:
            link.conn.close()

    # -- requests ---------------------------------------------------------------------------

    def _request(self, requests: Sequence[tuple[_Waiter, Sequence[Any]]]) -> list[Any]:
        if not requests:
            return []
        first = requests[0][0].method
        with self._lock:
            link = self._link or self._open(first)
            ids = [next(self._ids) for _ in requests]
            for request_id, (waiter, _params) in zip(ids, requests, strict=True):
                link.pending[request_id] = waiter
        try:
            with self._send_lock:
                for request_id, (waiter, params) in zip(ids, requests, strict=True):
                    payload = {
                        "jsonrpc": "2.0",
                        "id": request_id,
                        "method": waiter.method,
                        "params": list(params),
                    }
                    link.conn.send(json.dumps(payload))
        except (ConnectionClosed, OSError) as exc:
            self._drop(link, exc)
            raise self._lost(first, exc) from None
        deadline = time.monotonic() + self._timeout
        try:
            pairs = zip(ids, requests, strict=True)
            return [self._answer(link, i, waiter, deadline) for i, (waiter, _) in pairs]
        finally:
            with self._lock:  # what is left unanswered after an error: a late answer is dropped
                for request_id in ids:
                    link.pending.pop(request_id, None)

    def _answer(self, link: _Link, request_id: int, waiter: _Waiter, deadline: float) -> Any:
        if not waiter.done.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                unanswered = link.pending.pop(request_id, None) is not None
            if unanswered:
                # A server that keeps the connection open but stops answering would hold every
                # later call too: the connection goes, the next call opens a fresh one.
                self._drop(link, TimeoutError(f"no answer to {waiter.method}"))
                raise RetriableRpcError(
                    f"{self.endpoint}: {waiter.method} got no answer within {self._timeout:g} s"
                )
        if waiter.error is not None:
            raise waiter.error
        return unwrap_response(self.endpoint, waiter.method, waiter.body)

    def _open(self, method: str) -> _Link:
        """Connect (under ``_lock``: callers that arrive meanwhile wait for this one)."""
        if self._closed:
            raise RpcError(f"{self.endpoint}: {method} failed: the connection was closed")
        try:
            conn = connect(
                self._url,
                additional_headers=self._headers,
                open_timeout=self._open_timeout,
                max_size=MAX_MESSAGE_BYTES,
                legacy=True,
            )
        except InvalidStatus as exc:
            raise self._refused(method, exc.response.status_code) from None
        except InvalidHandshake as exc:
            if isinstance(exc.__cause__, EOFError | OSError):  # the server went away meanwhile
                raise self._lost(method, exc.__cause__) from None
            raise MalformedRpcResponse(
                self.endpoint,
                method,
                f"not a WebSocket endpoint (handshake failed: {type(exc).__name__})",
            ) from None
        except (OSError, TimeoutError) as exc:
            raise RetriableRpcError(
                f"{self.endpoint}: {method} failed: cannot connect ({type(exc).__name__})"
            ) from None
        link = _Link(conn)
        self._link = link
        self.connects += 1
        threading.Thread(
            target=self._read, args=(link,), name=f"ws-read {self.endpoint}", daemon=True
        ).start()
        return link

    def _refused(self, method: str, status: int) -> DrainwatchError:
        text = f"{self.endpoint}: {method}: the WebSocket handshake was refused with HTTP {status}"
        if status in _BUSY_STATUSES:
            return RetriableRpcError(text)
        if status in (401, 403):
            return RpcError(f"{text}: check the credentials named by auth_env")
        return MalformedRpcResponse(
            self.endpoint,
            method,
            f"the server answered the WebSocket handshake with HTTP {status}, not 101: "
            "is this an http(s):// endpoint, or the wrong path?",
        )

    def _lost(self, method: str, exc: BaseException) -> RetriableRpcError:
        return RetriableRpcError(
            f"{self.endpoint}: {method} failed: connection lost ({type(exc).__name__})"
        )

    # -- the reader thread ------------------------------------------------------------------

    def _read(self, link: _Link) -> None:
        cause: Exception
        try:
            while True:
                self._dispatch(link, link.conn.recv())
        except (ConnectionClosed, OSError) as exc:
            cause = exc
        except MalformedRpcResponse as exc:
            log.warning("%s: dropping the connection: %s", self.endpoint, exc)
            cause = exc
        except Exception as exc:  # never a dead reader behind a live-looking connection
            log.warning("%s: dropping the connection: %s", self.endpoint, type(exc).__name__)
            cause = exc
        self._drop(link, cause)

    def _dispatch(self, link: _Link, raw: str | bytes) -> None:
        try:
            body = json.loads(raw, parse_float=Decimal)
        except (ValueError, RecursionError):
            raise MalformedRpcResponse(self.endpoint, "the call", "a frame is not JSON") from None
        if not isinstance(body, dict):
            raise MalformedRpcResponse(self.endpoint, "the call", "a frame is not a JSON object")
        if body.get("method") == "eth_subscription":
            self._notify(link, body.get("params"))
            return
        with self._lock:
            request_id = body.get("id")
            if request_id is None and "error" in body:
                # An error the server could not tie to a request (id null): it may be any one's.
                waiters = list(link.pending.values())
                link.pending.clear()
            else:
                found = link.pending.pop(request_id, None) if isinstance(request_id, int) else None
                waiters = [found] if found is not None else []
            for waiter in waiters:
                if waiter.subscription is not None and isinstance(body.get("result"), str):
                    link.subscriptions[body["result"]] = waiter.subscription
                waiter.body = body
                waiter.done.set()

    def _notify(self, link: _Link, params: Any) -> None:
        if not isinstance(params, dict):
            return
        with self._lock:
            handlers = link.subscriptions.get(str(params.get("subscription")))
        if handlers is None:
            return  # cancelled, or a subscription of an earlier connection
        try:
            handlers[0](params.get("result"))
        except Exception:  # a handler's bug must not stop the answers to every call
            log.exception("%s: subscription handler failed", self.endpoint)

    def _drop(self, link: _Link, cause: Exception) -> None:
        """Forget a connection: its waiting calls fail (with ``cause`` when it is drainwatch's
        own error, else as lost), its subscriptions end."""
        with self._lock:
            if self._link is link:
                self._link = None
            waiters = list(link.pending.values())
            link.pending.clear()
            lost = [on_lost for _notify, on_lost in link.subscriptions.values()]
            link.subscriptions.clear()
            for waiter in waiters:
                own = cause if isinstance(cause, DrainwatchError) else None
                waiter.error = own or self._lost(waiter.method, cause)
                waiter.done.set()
        link.conn.close()
        for on_lost in lost:
            try:
                on_lost()
            except Exception:
                log.exception("%s: subscription loss handler failed", self.endpoint)
